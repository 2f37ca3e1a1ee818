//! Embeds `examples/` (pathways, policies, scripted responses, runbooks) into the
//! `arf` binary, so `arf up` and `arf demo` work from any directory, and the
//! commit it was built from, for `arf --version`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, root: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, root, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push((relative.to_string_lossy().replace('\\', "/"), path.clone()));
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let examples = manifest.join("../examples").canonicalize()?;
    println!("cargo:rerun-if-changed={}", examples.display());
    let mut files = Vec::new();
    collect(&examples, &examples, &mut files)?;
    let mut code = String::from("/// `(path under examples/, contents)` of every bundled example file.\npub const EXAMPLES: &[(&str, &str)] = &[\n");
    for (relative, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(code, "    ({relative:?}, include_str!({:?})),", path.display().to_string())?;
    }
    code.push_str("];\n");
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR")?).join("examples.rs"), code)?;
    commit(&manifest.join(".."));
    Ok(())
}

/// `ARF_COMMIT`: the commit checked out, or `unknown` outside a git checkout (a
/// source tarball).
fn commit(root: &Path) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    // Whether files differ from it is not told: the build does not run again
    // when they change, so it could not be kept true.
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ARF_COMMIT={commit}");
    // Built again when the checked-out commit moves.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if root.join(path).exists() {
            println!("cargo:rerun-if-changed={}", root.join(path).display());
        }
    }
}
