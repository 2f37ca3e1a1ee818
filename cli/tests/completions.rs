//! `arf completions bash` is a script bash loads, which completes ARF's commands
//! and their arguments' possible values.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::process::Command;

#[test]
fn bash_loads_the_completions_and_completes_commands_and_values() {
    let script = Command::new(env!("CARGO_BIN_EXE_arf")).args(["completions", "bash"]).output().unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("arf.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    // Bash itself: load the script, then ask the completion function what `arf inc<TAB>`
    // and `arf signal send --format sa<TAB>` complete to.
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; _arf arf \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let output = Command::new("bash").args(["--noprofile", "--norc", "-c", &probe]).output().expect("bash");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(complete("arf inc"), ["incident"]);
    assert_eq!(complete("arf signal send --format sa"), ["sarif"]);
    assert!(complete("arf st").contains(&"status".to_owned()));
}
