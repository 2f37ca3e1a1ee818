//! The `git` runner on a real repository: a revert and a structured YAML edit,
//! each rolled back by reverting the commit that carries the decision's trailer,
//! and a refusal to act on a dirty working tree.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use arf_core::catalog::{Edit, Pathway, Step, ValueType};

use crate::harness::{Harness, Setup, command_probe, path_str, pathway, target};

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const MANIFEST: &str = "# web, reviewed by the platform team\napiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 2 # autoscaler floor\n  template:\n    spec:\n      containers:\n        - name: web\n          image: registry.local/web:1.4.2\n";

/// A repository with a good configuration, then a commit that breaks it.
fn repository(dir: &Path) -> (std::path::PathBuf, String) {
    let repo = dir.join("config");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.join("app.yaml"), "mode: good\n").unwrap();
    std::fs::write(repo.join("web.yaml"), MANIFEST).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "good configuration"]);
    std::fs::write(repo.join("app.yaml"), "mode: bad\n").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "bad configuration"]);
    let bad = git(&repo, &["rev-parse", "HEAD"]);
    (repo, bad)
}

fn git_step(change: impl FnOnce(&mut Step)) -> Step {
    let mut step = Step::Git {
        repo: "{{target.repo}}".into(),
        branch: Some("main".into()),
        edits: vec![],
        revert: None,
        revert_decision: false,
        message: None,
        push: None,
        timeout_secs: Some(20),
    };
    change(&mut step);
    step
}

fn undo() -> Step {
    git_step(|s| {
        if let Step::Git { revert_decision, .. } = s {
            *revert_decision = true;
        }
    })
}

/// A probe that fails while `{{target.repo}}/healthy` is absent, which forces a rollback.
fn unhealthy() -> arf_core::catalog::Probe {
    command_probe("healthy", &["test", "-e", "{{target.repo}}/healthy"])
}

fn pathways() -> Vec<Pathway> {
    let revert = git_step(|s| {
        if let Step::Git { revert, message, .. } = s {
            *revert = Some("{{params.commit}}".into());
            *message = Some("Revert the bad configuration".into());
        }
    });
    let mut revert_config = pathway("revert_config", vec![revert], vec![unhealthy()], vec![undo()]);
    revert_config.parameters = json!({"type": "object", "properties": {"commit": {"type": "string"}}});

    let edit = git_step(|s| {
        if let Step::Git { edits, .. } = s {
            *edits = vec![
                Edit {
                    file: "web.yaml".into(),
                    format: None,
                    path: "spec.replicas".into(),
                    value: "{{params.replicas}}".into(),
                    value_type: ValueType::Integer,
                },
                Edit {
                    file: "web.yaml".into(),
                    format: None,
                    path: "spec.template.spec.containers[0].image".into(),
                    value: "registry.local/web:{{params.version}}".into(),
                    value_type: ValueType::String,
                },
            ];
        }
    });
    let mut scale = pathway("edit_manifest", vec![edit], vec![unhealthy()], vec![undo()]);
    scale.parameters = json!({"type": "object", "properties": {"replicas": {"type": "integer"}, "version": {"type": "string"}}});
    vec![revert_config, scale]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_changes_are_committed_with_their_decision_and_reverted_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bad) = repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let h = Harness::start(dir.path(), Setup::new(pathways(), targets)).await;

    // The revert pathway: the action reverts the bad commit; verification fails;
    // the rollback reverts the action's own commit, found by its trailer.
    let body = h.body("revert_config", "web", json!({"commit": &bad[..12]}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    let messages = git(&repo, &["log", "--format=%B%x00", "-3"]);
    let messages: Vec<&str> = messages.split('\0').map(str::trim).filter(|m| !m.is_empty()).collect();
    assert!(messages[0].contains(&format!("ARF-Rollback: {}", body.decision_id)), "{}", messages[0]);
    assert!(messages[1].starts_with("Revert the bad configuration (revert "), "{}", messages[1]);
    assert!(messages[1].contains(&format!("ARF-Decision: {}", body.decision_id)), "{}", messages[1]);
    assert_eq!(std::fs::read_to_string(repo.join("app.yaml")).unwrap(), "mode: bad\n");

    // The same pathway verified: the revert stays.
    std::fs::write(repo.join(".git/info/exclude"), "healthy\n").unwrap();
    std::fs::write(repo.join("healthy"), "").unwrap();
    let body = h.body("revert_config", "web", json!({"commit": bad}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
    assert_eq!(std::fs::read_to_string(repo.join("app.yaml")).unwrap(), "mode: good\n");
    std::fs::remove_file(repo.join("healthy")).unwrap();

    // A structured YAML edit keeps comments and layout, and its rollback restores the file.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let body = h.body("edit_manifest", "web", json!({"replicas": 5, "version": "1.4.3"}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    let edit_commit = git(&repo, &["rev-parse", "HEAD~1"]);
    assert_eq!(git(&repo, &["rev-parse", "HEAD~2"]), head);
    let edited = git(&repo, &["show", &format!("{edit_commit}:web.yaml")]);
    let expected = MANIFEST.replace("replicas: 2", "replicas: 5").replace("web:1.4.2", "web:1.4.3");
    assert_eq!(format!("{edited}\n"), expected);
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
    let trail = h.trail(&body.incident_id).await;
    let finished: Vec<_> = trail.iter().filter(|r| r.kind == arf_audit::RecordKind::ExecutionFinished).collect();
    assert_eq!(finished[0].payload["steps"][0]["report"]["commit"], json!(edit_commit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_working_tree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, bad) = repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let h = Harness::start(dir.path(), Setup::new(pathways(), targets)).await;
    std::fs::write(repo.join("app.yaml"), "mode: hand-edited\n").unwrap();
    let head = git(&repo, &["rev-parse", "HEAD"]);

    let body = h.body("revert_config", "web", json!({"commit": bad}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    // Nothing was committed, so the rollback has nothing to revert.
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(execution.detail.contains("working tree"), "{}", execution.detail);
    assert!(execution.detail.contains("is dirty"), "{}", execution.detail);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read_to_string(repo.join("app.yaml")).unwrap(), "mode: hand-edited\n");

    // A branch other than the one the pathway names is refused too.
    git(&repo, &["checkout", "--quiet", "-b", "feature"]);
    git(&repo, &["stash", "--quiet"]);
    let body = h.body("revert_config", "web", json!({"commit": bad}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert!(execution.detail.contains("has `feature` checked out, not `main`"), "{}", execution.detail);
}
