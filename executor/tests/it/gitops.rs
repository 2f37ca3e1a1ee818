//! The `git` runner on real repositories: a revert, structured YAML, TOML and JSON
//! edits and a templated patch, each rolled back by reverting the commit that
//! carries the decision's trailer; refusals that leave the tree as they found it
//! (a dirty tree, a patch that does not apply, an edit that fails halfway); and
//! pushes to a bare repository, refused when the remote moved and undone when the
//! remote refuses them.

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
        patch: None,
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
    // The refusal changed nothing, so there is nothing to roll back: `failed`, with
    // the reason, and no rollback that would trip over the hand edit.
    assert_eq!(execution.outcome, "failed", "{}", execution.detail);
    assert!(execution.detail.contains("action failed: step 0 failed: git: refusing to act: the working tree"), "{}", execution.detail);
    assert!(execution.detail.contains("is dirty (`M app.yaml`)"), "{}", execution.detail);
    assert!(execution.detail.contains("it failed before changing anything, so there is nothing to roll back"), "{}", execution.detail);
    assert_eq!(h.kinds(&body.incident_id).await, ["decision", "execution_started", "execution_finished", "outcome"]);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read_to_string(repo.join("app.yaml")).unwrap(), "mode: hand-edited\n");

    // A branch other than the one the pathway names is refused too.
    git(&repo, &["checkout", "--quiet", "-b", "feature"]);
    git(&repo, &["stash", "--quiet"]);
    let body = h.body("revert_config", "web", json!({"commit": bad}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert!(execution.detail.contains("has `feature` checked out, not `main`"), "{}", execution.detail);
}

/// A model that names a commit from another branch (or one the repository merely
/// fetched) gets no forward change on the reviewed branch under the name of a
/// revert: reverting a commit that removed something the branch never had would
/// add it. A merge, which has no single change to undo, is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_of_a_commit_the_branch_does_not_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repository(dir.path());
    // An unreviewed branch adds a hostile image, then a commit that removes it.
    git(&repo, &["checkout", "--quiet", "-b", "unreviewed"]);
    std::fs::write(repo.join("web.yaml"), MANIFEST.replace("registry.local/web:1.4.2", "attacker.example/evil:latest")).unwrap();
    git(&repo, &["commit", "--quiet", "-am", "add"]);
    std::fs::write(repo.join("web.yaml"), MANIFEST).unwrap();
    git(&repo, &["commit", "--quiet", "-am", "remove"]);
    let remove = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "--quiet", "main"]);
    // Git itself would revert it onto `main`: the refusal is ARF's.
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let h = Harness::start(dir.path(), Setup::new(pathways(), targets)).await;
    let head = git(&repo, &["rev-parse", "HEAD"]);

    let body = h.body("revert_config", "web", json!({"commit": &remove[..12]}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "failed", "{}", execution.detail);
    assert!(execution.detail.contains(&format!("refusing to act: commit {remove} is not on `main`")), "{}", execution.detail);
    assert!(execution.detail.contains("it failed before changing anything, so there is nothing to roll back"), "{}", execution.detail);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
    assert_clean(&repo);

    // Merged into `main`, the branch's commits are on it, but the merge is not one change.
    git(&repo, &["merge", "--quiet", "--no-ff", "-m", "merge unreviewed", "unreviewed"]);
    let merge = git(&repo, &["rev-parse", "HEAD"]);
    let body = h.body("revert_config", "web", json!({"commit": merge}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "failed", "{}", execution.detail);
    assert!(execution.detail.contains(&format!("refusing to act: commit {merge} is a merge")), "{}", execution.detail);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), merge);
    // Nor the branch's commit that came in with the merge: it is an ancestor now, but
    // reverting it would bring the hostile image back.
    let body = h.body("revert_config", "web", json!({"commit": remove}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "failed", "{}", execution.detail);
    assert!(execution.detail.contains(&format!("refusing to act: commit {remove} came into `main` with a merge")), "{}", execution.detail);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), merge);
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
}

fn with_git(step: &mut Step, change: impl FnOnce(&mut Vec<Edit>, &mut Option<String>, &mut Option<String>)) {
    if let Step::Git { edits, patch, push, .. } = step {
        change(edits, patch, push);
    }
}

fn edit(file: &str, path: &str, value: &str, value_type: ValueType) -> Edit {
    Edit { file: file.into(), format: None, path: path.into(), value: value.into(), value_type }
}

/// A pathway whose one git step `change` sets up, rolled back by its decision,
/// whose verification fails until `{{target.repo}}/healthy` exists.
fn git_pathway(
    name: &str,
    parameters: &[&str],
    change: impl FnOnce(&mut Vec<Edit>, &mut Option<String>, &mut Option<String>) + Clone,
) -> Pathway {
    let mut action = git_step(|_| {});
    with_git(&mut action, change.clone());
    let mut rollback = undo();
    with_git(&mut rollback, |_, _, push| {
        let mut edits = Vec::new();
        let mut patch = None;
        let mut action_push = None;
        change(&mut edits, &mut patch, &mut action_push);
        *push = action_push;
    });
    let mut p = pathway(name, vec![action], vec![unhealthy()], vec![rollback]);
    let properties: serde_json::Map<String, serde_json::Value> =
        parameters.iter().map(|name| ((*name).to_owned(), json!({"type": "string"}))).collect();
    p.parameters = json!({"type": "object", "properties": properties});
    p
}

/// The incident's finished records: the action's, then the rollback's.
async fn finished(h: &Harness, incident_id: &str) -> Vec<serde_json::Value> {
    let trail = h.trail(incident_id).await;
    trail.iter().filter(|r| r.kind == arf_audit::RecordKind::ExecutionFinished).map(|r| r.payload.clone()).collect()
}

/// What the action's first step and the rollback's first step reported.
async fn details(h: &Harness, incident_id: &str) -> (String, String) {
    let steps = finished(h, incident_id).await;
    let detail = |i: usize| steps[i]["steps"][0]["detail"].as_str().unwrap().to_owned();
    (detail(0), detail(1))
}

/// The full message of `commit`.
fn message(repo: &Path, commit: &str) -> String {
    git(repo, &["log", "-1", "--format=%B", commit])
}

fn assert_clean(repo: &Path) {
    assert_eq!(git(repo, &["status", "--porcelain", "--ignored"]), "", "the working tree of {} is not clean", repo.display());
}

const PATCH: &str = "diff --git a/app.yaml b/app.yaml
--- a/app.yaml
+++ b/app.yaml
@@ -1 +1 @@
-mode: bad
+mode: {{params.mode}}
diff --git a/notes/why.txt b/notes/why.txt
new file mode 100644
--- /dev/null
+++ b/notes/why.txt
@@ -0,0 +1 @@
+{{params.reason}}
";

/// Its first file applies; its second does not, since `app.yaml` says `mode: bad`.
const HALF_APPLYING_PATCH: &str = "diff --git a/web.yaml b/web.yaml
--- a/web.yaml
+++ b/web.yaml
@@ -5 +5 @@
-  replicas: 2 # autoscaler floor
+  replicas: 3 # autoscaler floor
diff --git a/app.yaml b/app.yaml
--- a/app.yaml
+++ b/app.yaml
@@ -1 +1 @@
-mode: good
+mode: better
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templated_patch_is_committed_with_its_decision_and_reverted_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let patch = git_pathway("patch_config", &["mode", "reason"], |_, patch, _| *patch = Some(PATCH.into()));
    let half = git_pathway("half_patch", &[], |_, patch, _| *patch = Some(HALF_APPLYING_PATCH.into()));
    let h = Harness::start(dir.path(), Setup::new(vec![patch, half], targets)).await;
    let head = git(&repo, &["rev-parse", "HEAD"]);

    // The patch changes a file and creates one; verification fails and the rollback reverts it.
    let body = h.body("patch_config", "web", json!({"mode": "safe", "reason": "INC-7: fail safe"}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    let patched = git(&repo, &["rev-parse", "HEAD~1"]);
    assert_eq!(git(&repo, &["rev-parse", "HEAD~2"]), head);
    assert_eq!(git(&repo, &["show", &format!("{patched}:app.yaml")]), "mode: safe");
    assert_eq!(git(&repo, &["show", &format!("{patched}:notes/why.txt")]), "INC-7: fail safe");
    let made = message(&repo, &patched);
    assert!(made.starts_with(&format!("patch_config: {}", body.decision_id)), "{made}");
    assert!(made.contains(&format!("ARF-Decision: {}", body.decision_id)), "{made}");
    assert!(message(&repo, "HEAD").contains(&format!("ARF-Rollback: {}", body.decision_id)));
    assert_eq!(std::fs::read_to_string(repo.join("app.yaml")).unwrap(), "mode: bad\n");
    assert!(!repo.join("notes").exists());
    assert_eq!(finished(&h, &body.incident_id).await[0]["steps"][0]["report"]["commit"], json!(patched));
    assert_clean(&repo);

    // A patch is all or nothing: its first file would apply, its second does not,
    // so nothing changes, and with nothing to undo, no rollback runs.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let body = h.body("half_patch", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "failed", "{}", execution.detail);
    assert!(execution.detail.contains("git: the patch does not apply, so nothing was changed: `git apply --check --index"), "{}", execution.detail);
    assert!(execution.detail.contains("app.yaml: patch does not apply"), "{}", execution.detail);
    assert!(execution.detail.ends_with("it failed before changing anything, so there is nothing to roll back"), "{}", execution.detail);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
    assert_clean(&repo);
    // The rendered patch went through a file in the git directory, removed after use.
    let leftovers: Vec<_> = std::fs::read_dir(repo.join(".git")).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".patch")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_fails_halfway_leaves_the_tree_as_it_found_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    // The first edit is written before the second finds that `app.yaml` has no `limits`.
    let half = git_pathway("half_edit", &[], |edits, _, _| {
        *edits = vec![
            edit("web.yaml", "spec.replicas", "7", ValueType::Integer),
            edit("app.yaml", "limits.cpu", "2", ValueType::String),
        ];
    });
    let h = Harness::start(dir.path(), Setup::new(vec![half], targets)).await;
    let head = git(&repo, &["rev-parse", "HEAD"]);

    let body = h.body("half_edit", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(
        execution.detail.contains(&format!("cannot set `limits.cpu` in `app.yaml`: `limits` does not exist; the working tree was restored to {head}")),
        "{}",
        execution.detail
    );
    let (_, rollback) = details(&h, &body.incident_id).await;
    assert!(rollback.ends_with("and the working tree is clean; nothing to revert"), "{rollback}");
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
    assert_clean(&repo);
    let steps = finished(&h, &body.incident_id).await;
    let log = steps[0]["steps"][0]["report"]["commands"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert!(log.iter().any(|l| l.starts_with(&format!("git reset --quiet --hard {head}: "))), "{log:?}");
}

const SETTINGS_TOML: &str = "# limits, reviewed by the platform team\n[server]\nworkers = 4 # one per core\nname = \"web\"\n\n[cache]\nenabled = false\n";
const SETTINGS_JSON: &str = "{\"name\": \"web\", \"feature\": {\"flag\": false, \"ratio\": 0.5}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_and_json_edits_in_one_step_are_committed_together_and_reverted() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = repository(dir.path());
    std::fs::write(repo.join("settings.toml"), SETTINGS_TOML).unwrap();
    std::fs::write(repo.join("settings.json"), SETTINGS_JSON).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "settings"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let settings = git_pathway("tune_settings", &["workers", "ratio"], |edits, _, _| {
        *edits = vec![
            edit("settings.toml", "server.workers", "{{params.workers}}", ValueType::Integer),
            edit("settings.toml", "cache.enabled", "true", ValueType::Boolean),
            edit("settings.json", "feature.flag", "true", ValueType::Boolean),
            edit("settings.json", "feature.ratio", "{{params.ratio}}", ValueType::Number),
        ];
    });
    let h = Harness::start(dir.path(), Setup::new(vec![settings], targets)).await;

    let body = h.body("tune_settings", "web", json!({"workers": "8", "ratio": "0.25"}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    let edited = git(&repo, &["rev-parse", "HEAD~1"]);
    assert_eq!(git(&repo, &["rev-parse", "HEAD~2"]), head);
    assert!(message(&repo, &edited).contains(&format!("ARF-Decision: {}", body.decision_id)));
    // One commit holds both files; TOML keeps its comments, JSON is rewritten.
    assert_eq!(git(&repo, &["show", "--format=", "--name-only", &edited]), "settings.json\nsettings.toml");
    let toml_text = git(&repo, &["show", &format!("{edited}:settings.toml")]);
    let expected = SETTINGS_TOML.replace("workers = 4", "workers = 8").replace("enabled = false", "enabled = true");
    assert_eq!(format!("{toml_text}\n"), expected);
    let json_text = git(&repo, &["show", &format!("{edited}:settings.json")]);
    let json_value: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(json_value, json!({"name": "web", "feature": {"flag": true, "ratio": 0.25}}));
    // The rollback restores both files byte for byte.
    assert!(message(&repo, "HEAD").contains(&format!("ARF-Rollback: {}", body.decision_id)));
    assert_eq!(std::fs::read_to_string(repo.join("settings.toml")).unwrap(), SETTINGS_TOML);
    assert_eq!(std::fs::read_to_string(repo.join("settings.json")).unwrap(), SETTINGS_JSON);
    assert_clean(&repo);
}

/// `repository` as the clone of a bare repository, its `origin`.
fn cloned_repository(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (repo, _) = repository(dir);
    let remote = dir.join("remote.git");
    git(dir, &["clone", "--quiet", "--bare", path_str(&repo), path_str(&remote)]);
    git(&repo, &["remote", "add", "origin", path_str(&remote)]);
    git(&repo, &["fetch", "--quiet", "origin"]);
    (repo, remote)
}

fn pushed_pathway() -> Pathway {
    git_pathway("pushed_edit", &["replicas"], |edits, _, push| {
        *edits = vec![edit("web.yaml", "spec.replicas", "{{params.replicas}}", ValueType::Integer)];
        *push = Some("origin".into());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_and_its_rollback_are_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, remote) = cloned_repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![pushed_pathway()], targets)).await;
    let head = git(&repo, &["rev-parse", "HEAD"]);

    let body = h.body("pushed_edit", "web", json!({"replicas": "6"}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    let (action, rollback) = details(&h, &body.incident_id).await;
    assert!(action.starts_with("git: committed ") && action.ends_with(" on `main` and pushed to `origin`"), "{action}");
    assert!(rollback.starts_with("git: committed ") && rollback.ends_with(" on `main` and pushed to `origin`"), "{rollback}");
    // The remote has the change and, on top of it, its revert.
    assert_eq!(git(&remote, &["rev-parse", "main"]), git(&repo, &["rev-parse", "HEAD"]));
    let change = git(&remote, &["rev-parse", "main~1"]);
    assert_eq!(git(&remote, &["rev-parse", "main~2"]), head);
    assert!(message(&remote, &change).contains(&format!("ARF-Decision: {}", body.decision_id)));
    assert!(git(&remote, &["show", &format!("{change}:web.yaml")]).contains("replicas: 6 # autoscaler floor"));
    assert!(message(&remote, "main").contains(&format!("ARF-Rollback: {}", body.decision_id)));
    assert_eq!(git(&remote, &["show", "main:web.yaml"]), MANIFEST.trim_end());
    let steps = finished(&h, &body.incident_id).await;
    assert_eq!(steps[0]["steps"][0]["report"]["commit"], json!(change));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_moved_is_refused_before_anything_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, remote) = cloned_repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![pushed_pathway()], targets)).await;
    let head = git(&repo, &["rev-parse", "HEAD"]);
    // Someone else pushes first.
    let other = dir.path().join("other");
    git(dir.path(), &["clone", "--quiet", path_str(&remote), path_str(&other)]);
    std::fs::write(other.join("app.yaml"), "mode: hotfix\n").unwrap();
    git(&other, &["commit", "--quiet", "-am", "hotfix"]);
    git(&other, &["push", "--quiet", "origin", "main"]);
    let theirs = git(&other, &["rev-parse", "HEAD"]);

    let body = h.body("pushed_edit", "web", json!({"replicas": "6"}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "failed", "{}", execution.detail);
    assert!(
        execution.detail.contains(&format!("refusing to act: branch `main` moved: `origin` is at {theirs}, the working tree at {head}")),
        "{}",
        execution.detail
    );
    assert!(execution.detail.contains("it failed before changing anything"), "{}", execution.detail);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&remote, &["rev-parse", "main"]), theirs);
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
    assert_clean(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_undoes_the_local_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, remote) = cloned_repository(dir.path());
    let hook = remote.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'main is frozen' >&2\nexit 1\n").unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![pushed_pathway()], targets)).await;
    let head = git(&repo, &["rev-parse", "HEAD"]);

    let body = h.body("pushed_edit", "web", json!({"replicas": "6"}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back", "{}", execution.detail);
    assert!(execution.detail.contains("git: the push was refused: `git push --quiet origin HEAD:refs/heads/main` exited with status 1"), "{}", execution.detail);
    assert!(execution.detail.contains(&format!("the working tree was restored to {head}")), "{}", execution.detail);
    let (action, rollback) = details(&h, &body.incident_id).await;
    assert!(action.contains("remote: main is frozen; ! [remote rejected] HEAD -> main (pre-receive hook declined); error: failed to push"), "{action}");
    assert!(rollback.ends_with("nothing to revert"), "{rollback}");
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&remote, &["rev-parse", "main"]), head);
    assert_eq!(git(&repo, &["log", "--all", "--format=%H", &format!("--grep=ARF-Decision: {}", body.decision_id)]), "");
    assert_eq!(std::fs::read_to_string(repo.join("web.yaml")).unwrap(), MANIFEST);
    assert_clean(&repo);
}

/// An action that changed the tree without committing (here a command that edits
/// a file and fails, as an action cut off before its commit would) leaves changes
/// no commit explains. The rollback finds no commit of the decision; on a dirty
/// tree it does not call that done: `rollback_failed`, and a human looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_finds_no_commit_but_a_dirty_tree_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _bad) = repository(dir.path());
    let targets = [("web".to_owned(), target(&[("repo", path_str(&repo))]))].into();
    let scribble = crate::harness::command(&["sh", "-c", "echo 'mode: half-done' > \"$1/app.yaml\"; exit 1", "sh", "{{target.repo}}"]);
    let p = pathway("scribble", vec![scribble], vec![unhealthy()], vec![undo()]);
    let h = Harness::start(dir.path(), Setup::new(vec![p], targets)).await;

    let body = h.body("scribble", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rollback_failed", "{}", execution.detail);
    assert!(
        execution.detail.contains(&format!("rollback failed: step 0 failed: git: no commit carries `ARF-Decision: {}`, but the working tree", body.decision_id)),
        "{}",
        execution.detail
    );
    assert!(execution.detail.contains("is dirty (`M app.yaml`)") && execution.detail.contains("a human must look"), "{}", execution.detail);
    assert_eq!(std::fs::read_to_string(repo.join("app.yaml")).unwrap(), "mode: half-done\n", "the rollback must not guess");
}
