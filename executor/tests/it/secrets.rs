//! Least privilege: a pathway's steps see only the secrets it names, in headers
//! and command `env`, and no secret value reaches the audit log or the caller.

use std::collections::BTreeMap;

use serde_json::json;

use arf_core::catalog::Step;

use crate::harness::{Harness, Setup, command_probe, path_str, pathway, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_only_their_pathway_and_never_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    std::fs::write(secrets_dir.join("DEPLOY_TOKEN"), "tok-4f9a1c-very-secret\n").unwrap();
    std::fs::write(secrets_dir.join("OTHER_TOKEN"), "other-77e2-also-secret\n").unwrap();

    // The command echoes its environment, so the log would show any secret it saw.
    let show_env = Step::Command {
        argv: ["sh", "-c", "env; env > \"$1\"", "sh", "{{target.dir}}/env.txt"].map(str::to_owned).to_vec(),
        env_allow: vec![],
        env: BTreeMap::from([("DEPLOY_TOKEN".to_owned(), "{{secret.DEPLOY_TOKEN}}".to_owned())]),
        cwd: None,
        timeout_secs: None,
    };
    let mut p = pathway("uses_token", vec![show_env], vec![command_probe("fails", &["false"])], vec![crate::harness::command(&["true"])]);
    p.secrets = vec!["DEPLOY_TOKEN".into()];
    let targets = [("web".to_owned(), target(&[("dir", path_str(dir.path()))]))].into();
    let mut setup = Setup::new(vec![p], targets);
    setup.secrets_dir = Some(secrets_dir);
    let h = Harness::start(dir.path(), setup).await;

    let body = h.body("uses_token", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);

    // The runner saw its own secret and nothing else.
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    assert!(env.contains("DEPLOY_TOKEN=tok-4f9a1c-very-secret"), "{env}");
    assert!(!env.contains("other-77e2"), "{env}");

    // The log holds the redaction marker where the secret was, and never the value.
    let trail = h.trail(&body.incident_id).await;
    let text = serde_json::to_string(&trail.iter().map(|r| &r.payload).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("tok-4f9a1c"), "a secret reached the audit log: {text}");
    assert!(text.contains("DEPLOY_TOKEN=[redacted]"), "{text}");
    assert!(!execution.detail.contains("tok-4f9a1c"));
}
