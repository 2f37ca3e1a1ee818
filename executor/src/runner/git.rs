//! The GitOps runner: a structured edit or a revert, committed to a real working
//! tree with the decision id as an `ARF-Decision` trailer, optionally pushed.
//!
//! Every git invocation goes through [`command::run`] (argv only, a cleared
//! environment, a timeout that kills the process group). The runner refuses to
//! act on a dirty working tree, on a branch other than the one the pathway names,
//! or when the remote branch has moved away from the local one. It is idempotent
//! per decision: a commit that already carries the decision's trailer is not made
//! again, and a rollback finds the commit to revert by its trailer, never by
//! position, and does nothing when that commit was never made or is already reverted.

use std::path::{Component, Path};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use arf_core::catalog::{EditFormat, KeySegment};

use super::command::{self, CommandSpec};
use super::processes::Tracker;
use super::edit;

/// The trailer naming the decision that made a commit.
pub const DECISION_TRAILER: &str = "ARF-Decision";
/// The trailer naming the decision a rollback commit undoes.
pub const ROLLBACK_TRAILER: &str = "ARF-Rollback";

/// One rendered edit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedEdit {
    pub file: String,
    pub format: EditFormat,
    #[serde(skip)]
    pub path_segments: Vec<KeySegment>,
    pub path: String,
    pub value: Value,
}

/// What a git step changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum GitChange {
    Edits { edits: Vec<RenderedEdit> },
    Revert { commit: String },
    RevertDecision,
}

/// A rendered git step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GitSpec {
    pub repo: String,
    pub branch: Option<String>,
    #[serde(flatten)]
    pub change: GitChange,
    pub message: String,
    pub push: Option<String>,
    pub decision_id: String,
    pub pathway: String,
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitOutcome {
    pub ok: bool,
    pub detail: String,
    /// The commit made, if any.
    pub commit: Option<String>,
    /// Each git command run, with how it ended.
    pub log: Vec<String>,
}

struct Git<'a> {
    repo: &'a str,
    deadline: Instant,
    tracker: Option<&'a Tracker>,
    log: Vec<String>,
}

impl Git<'_> {
    /// Runs `git ARGS` in the repository; the output on success, the reason otherwise.
    async fn run(&mut self, args: &[&str]) -> Result<String, String> {
        let mut argv: Vec<String> = ["git", "-C", self.repo, "-c", "user.name=arf-executor", "-c", "user.email=arf-executor@localhost", "-c", "commit.gpgsign=false"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("the step's timeout passed".to_owned());
        }
        // Git must never wait for a password or an editor.
        let env = [
            ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
            ("GIT_EDITOR".to_owned(), "true".to_owned()),
            ("GIT_CONFIG_NOSYSTEM".to_owned(), "1".to_owned()),
        ];
        let spec = CommandSpec {
            argv: &argv,
            env_allow: &[],
            env: &env,
            cwd: None,
            timeout: remaining.min(Duration::from_secs(300)),
            output_limit: command::OUTPUT_LIMIT,
            tracker: self.tracker,
        };
        let outcome = command::run(&spec).await;
        self.log.push(format!("git {}: {}", args.join(" "), outcome.describe()));
        if outcome.exit_code() == Some(0) {
            Ok(outcome.stdout.text)
        } else {
            let why = outcome.stderr.text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
            Err(format!("`git {}` {}{}{}", args.join(" "), outcome.describe(), if why.is_empty() { "" } else { ": " }, why))
        }
    }

    /// The newest commit on HEAD whose `key` trailer is exactly `value`.
    async fn find_trailer(&mut self, key: &str, value: &str) -> Result<Option<String>, String> {
        let grep = format!("--grep={key}: {value}");
        let format = format!("--format=%H%x1f%(trailers:key={key},valueonly,separator=%x1f)%x1e");
        let out = self.run(&["log", "--fixed-strings", &grep, &format, "HEAD"]).await?;
        Ok(out.split('\x1e').find_map(|entry| {
            let mut fields = entry.trim_start_matches('\n').split('\x1f');
            let commit = fields.next()?.trim();
            fields.any(|v| v.trim() == value).then(|| commit.to_owned()).filter(|c| !c.is_empty())
        }))
    }
}

/// Runs one git step before `deadline`.
pub async fn run(spec: &GitSpec, deadline: Instant, tracker: Option<&Tracker>) -> GitOutcome {
    let mut git = Git { repo: &spec.repo, deadline, tracker, log: Vec::new() };
    let result = act(&mut git, spec).await;
    let (ok, detail, commit) = match result {
        Ok((detail, commit)) => (true, detail, commit),
        Err(detail) => (false, detail, None),
    };
    GitOutcome { ok, detail, commit, log: git.log }
}

async fn act(git: &mut Git<'_>, spec: &GitSpec) -> Result<(String, Option<String>), String> {
    // A rollback of an action that never committed has nothing to undo, even when
    // the tree is in a state the action refused.
    if spec.change == GitChange::RevertDecision && git.find_trailer(DECISION_TRAILER, &spec.decision_id).await?.is_none() {
        return Ok((format!("no commit carries `{DECISION_TRAILER}: {}`; nothing to revert", spec.decision_id), None));
    }
    let branch = git.run(&["rev-parse", "--abbrev-ref", "HEAD"]).await?.trim().to_owned();
    if let Some(expected) = &spec.branch
        && &branch != expected
    {
        return Err(format!("refusing to act: `{}` has `{branch}` checked out, not `{expected}`", spec.repo));
    }
    if branch == "HEAD" {
        return Err(format!("refusing to act: `{}` has a detached HEAD", spec.repo));
    }
    let dirty = git.run(&["status", "--porcelain"]).await?;
    if !dirty.trim().is_empty() {
        let first = dirty.lines().next().unwrap_or("").trim();
        return Err(format!("refusing to act: the working tree of `{}` is dirty (`{first}`)", spec.repo));
    }
    let head = git.run(&["rev-parse", "HEAD"]).await?.trim().to_owned();
    if let Some(remote) = &spec.push {
        git.run(&["fetch", "--quiet", remote, &branch]).await?;
        let upstream = git.run(&["rev-parse", "FETCH_HEAD"]).await?.trim().to_owned();
        if upstream != head {
            // A retry after a push that went through finds its own commit upstream.
            let ours = git.find_trailer(trailer_key(&spec.change), &spec.decision_id).await?;
            if ours.as_deref() != Some(upstream.as_str()) {
                return Err(format!(
                    "refusing to act: branch `{branch}` moved: `{remote}` is at {upstream}, the working tree at {head}"
                ));
            }
        }
    }

    // Idempotency: this decision's change may already be committed.
    if let Some(commit) = git.find_trailer(trailer_key(&spec.change), &spec.decision_id).await? {
        return Ok((format!("already committed as {commit}; nothing to do"), Some(commit)));
    }

    let subject = match &spec.change {
        GitChange::Edits { edits } => {
            let mut changed = Vec::new();
            for e in edits {
                changed.push(edit_file(&spec.repo, e)?);
            }
            git.run(&[&["add", "--"][..], &changed.iter().map(String::as_str).collect::<Vec<_>>()].concat()).await?;
            if git.run(&["diff", "--cached", "--quiet"]).await.is_ok() {
                return Ok(("every value is already in place; nothing committed".to_owned(), None));
            }
            spec.message.clone()
        }
        GitChange::Revert { commit } => {
            let full = git.run(&["rev-parse", "--verify", &format!("{commit}^{{commit}}")]).await?.trim().to_owned();
            revert(git, &full).await?;
            format!("{} (revert {full})", spec.message)
        }
        GitChange::RevertDecision => {
            let Some(commit) = git.find_trailer(DECISION_TRAILER, &spec.decision_id).await? else {
                return Ok((format!("no commit carries `{DECISION_TRAILER}: {}`; nothing to revert", spec.decision_id), None));
            };
            if git.run(&["merge-base", "--is-ancestor", &commit, "HEAD"]).await.is_err() {
                return Err(format!("refusing to act: commit {commit} of this decision is not on `{branch}`"));
            }
            revert(git, &commit).await?;
            format!("Revert {commit}: roll back decision {}", spec.decision_id)
        }
    };
    let message = format!(
        "{subject}\n\nMade by the ARF executor for pathway `{}`.\n\n{}: {}\nARF-Pathway: {}\n",
        spec.pathway,
        trailer_key(&spec.change),
        spec.decision_id,
        spec.pathway
    );
    git.run(&["commit", "--quiet", "--no-verify", "-m", &message]).await?;
    let commit = git.run(&["rev-parse", "HEAD"]).await?.trim().to_owned();
    if let Some(remote) = &spec.push {
        let refspec = format!("HEAD:refs/heads/{branch}");
        if let Err(why) = git.run(&["push", "--quiet", remote, &refspec]).await {
            // Undo the local commit so that a failed push leaves nothing behind.
            let _ = git.run(&["reset", "--quiet", "--keep", &head]).await;
            return Err(why);
        }
    }
    let pushed = spec.push.as_deref().map(|r| format!(" and pushed to `{r}`")).unwrap_or_default();
    Ok((format!("committed {commit} on `{branch}`{pushed}"), Some(commit)))
}

fn trailer_key(change: &GitChange) -> &'static str {
    match change {
        GitChange::RevertDecision => ROLLBACK_TRAILER,
        GitChange::Edits { .. } | GitChange::Revert { .. } => DECISION_TRAILER,
    }
}

/// Stages a revert of `commit`, aborting it cleanly on a conflict.
async fn revert(git: &mut Git<'_>, commit: &str) -> Result<(), String> {
    if let Err(why) = git.run(&["revert", "--no-commit", commit]).await {
        let _ = git.run(&["revert", "--abort"]).await;
        return Err(format!("cannot revert {commit}: {why}"));
    }
    Ok(())
}

/// Applies one edit to its file; returns the file's path for `git add`.
fn edit_file(repo: &str, e: &RenderedEdit) -> Result<String, String> {
    let relative = Path::new(&e.file);
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("`{}` is not a path inside the repository", e.file));
    }
    let path = Path::new(repo).join(relative);
    let text = std::fs::read_to_string(&path).map_err(|err| format!("cannot read `{}`: {err}", e.file))?;
    let edited = edit::apply(e.format, &text, &e.path_segments, &e.value)
        .map_err(|err| format!("cannot set `{}` in `{}`: {err}", e.path, e.file))?;
    std::fs::write(&path, edited).map_err(|err| format!("cannot write `{}`: {err}", e.file))?;
    Ok(e.file.clone())
}
