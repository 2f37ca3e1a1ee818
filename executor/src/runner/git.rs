//! The GitOps runner: structured edits, a templated patch or a revert, committed to
//! a real working tree with the decision id as an `ARF-Decision` trailer, optionally pushed.
//!
//! Every git invocation goes through [`command::run`] (argv only, a cleared
//! environment, a timeout that kills the process group). The runner refuses to
//! act on a dirty working tree, on a branch other than the one the pathway names,
//! or when the remote branch has moved away from the local one. It is idempotent
//! per decision: a commit that already carries the decision's trailer is not made
//! again, and a rollback finds the commit to revert by its trailer, never by
//! position, and does nothing when that commit was never made and the tree is clean.
//!
//! A step is all or nothing. When it fails after it began to change the tree and
//! before its commit is in place (and pushed, when it pushes), it puts the tree back
//! exactly as it found it: a hard reset to the commit it started from, which it may
//! do because it started on a clean tree, and the removal of the files and
//! directories its patch created, and of nothing else.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use arf_core::catalog::{EditFormat, KeySegment};

use super::command::{self, CommandSpec};
use super::edit;
use super::processes::Tracker;

/// The trailer naming the decision that made a commit.
pub const DECISION_TRAILER: &str = "ARF-Decision";
/// The trailer naming the decision a rollback commit undoes.
pub const ROLLBACK_TRAILER: &str = "ARF-Rollback";

/// How long restoring the tree after a failure may take, even when the failure
/// was the step's own timeout: a tree left half-changed is worse than a late step.
const RESTORE_GRACE: Duration = Duration::from_secs(30);

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
    /// A unified diff, applied with `git apply --index`.
    Patch { patch: String },
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
    /// False only when the step failed before touching the working tree (a
    /// refusal, a failed check): then there is nothing to undo.
    pub changed: bool,
}

struct Git<'a> {
    repo: &'a str,
    deadline: Instant,
    tracker: Option<&'a Tracker>,
    log: Vec<String>,
    /// The step wrote to the working tree (even if it then restored it).
    touched: bool,
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
            let why = reason(&outcome.stderr.text);
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

    /// The first line `git status --porcelain` prints, if the tree is dirty.
    async fn dirt(&mut self) -> Result<Option<String>, String> {
        let status = self.run(&["status", "--porcelain"]).await?;
        Ok(status.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned))
    }

    /// Gives the commands that clean up after a failure their own short bound.
    fn extend_for_cleanup(&mut self) {
        self.deadline = self.deadline.max(Instant::now() + RESTORE_GRACE);
    }
}

/// Why git failed: its last line of stderr, after what a remote said and the refs
/// it rejected, which is where a push's reason is.
fn reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut picked: Vec<&str> =
        lines.iter().copied().filter(|l| l.starts_with("remote: ") || l.starts_with("! [")).take(5).collect();
    if let Some(last) = lines.last()
        && !picked.contains(last)
    {
        picked.push(last);
    }
    picked.join("; ")
}

/// What a failed step must undo: set once it starts to change the tree.
struct Undo {
    /// The commit the step started from, on a clean tree.
    head: String,
    touched: bool,
    /// Files and directories that did not exist before the step, which it may create.
    created_files: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
}

impl Undo {
    /// Notes that the step may create `relative`, if it does not exist yet, and any
    /// of its missing parent directories.
    fn note_new(&mut self, repo: &str, relative: &str) {
        let root = Path::new(repo);
        let path = root.join(relative);
        if path.symlink_metadata().is_ok() {
            return;
        }
        let mut dir = path.parent();
        while let Some(d) = dir
            && d != root
            && d.starts_with(root)
            && d.symlink_metadata().is_err()
        {
            self.created_dirs.push(d.to_owned());
            dir = d.parent();
        }
        self.created_files.push(path);
    }
}

/// Runs one git step before `deadline`.
pub async fn run(spec: &GitSpec, deadline: Instant, tracker: Option<&Tracker>) -> GitOutcome {
    let mut git = Git { repo: &spec.repo, deadline, tracker, log: Vec::new(), touched: false };
    let result = act(&mut git, spec).await;
    let (ok, detail, commit) = match result {
        Ok((detail, commit)) => (true, detail, commit),
        Err(detail) => (false, detail, None),
    };
    GitOutcome { ok, detail, commit, log: git.log, changed: ok || git.touched }
}

async fn act(git: &mut Git<'_>, spec: &GitSpec) -> Result<(String, Option<String>), String> {
    // A rollback of an action that never committed has nothing to undo, even when
    // the tree is in a state the action refused, but only when the tree is clean:
    // changes without a commit are what an action cut off halfway (a crash) leaves,
    // and no one can tell from here whose they are.
    if spec.change == GitChange::RevertDecision && git.find_trailer(DECISION_TRAILER, &spec.decision_id).await?.is_none() {
        if let Some(first) = git.dirt().await? {
            return Err(format!(
                "no commit carries `{DECISION_TRAILER}: {}`, but the working tree of `{}` is dirty (`{first}`): \
                 an action cut off before its commit may have left changes; a human must look",
                spec.decision_id, spec.repo
            ));
        }
        return Ok((format!("no commit carries `{DECISION_TRAILER}: {}` and the working tree is clean; nothing to revert", spec.decision_id), None));
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
    if let Some(first) = git.dirt().await? {
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

    let mut undo = Undo { head: head.clone(), touched: false, created_files: Vec::new(), created_dirs: Vec::new() };
    match change(git, spec, &branch, &mut undo).await {
        Err(why) if undo.touched => {
            git.touched = true;
            git.extend_for_cleanup();
            Err(match restore(git, &undo).await {
                Ok(()) => format!("{why}; the working tree was restored to {head}"),
                Err(failure) => {
                    format!("{why}; restoring the working tree to {head} failed, so it needs a human: {failure}")
                }
            })
        }
        result => result,
    }
}

/// Makes the change, commits it and pushes it; `undo` learns what to put back.
async fn change(
    git: &mut Git<'_>,
    spec: &GitSpec,
    branch: &str,
    undo: &mut Undo,
) -> Result<(String, Option<String>), String> {
    let subject = match &spec.change {
        GitChange::Edits { edits } => {
            let mut changed: Vec<&str> = Vec::new();
            for e in edits {
                check_editable(git, &spec.repo, &e.file).await?;
                undo.touched = true;
                edit_file(&spec.repo, e)?;
                changed.push(&e.file);
            }
            git.run(&[&["add", "--"][..], &changed[..]].concat()).await?;
            if git.run(&["diff", "--cached", "--quiet"]).await.is_ok() {
                return Ok(("every value is already in place; nothing committed".to_owned(), None));
            }
            spec.message.clone()
        }
        GitChange::Patch { patch } => {
            apply_patch(git, spec, patch, undo).await?;
            if git.run(&["diff", "--cached", "--quiet"]).await.is_ok() {
                return Ok(("the patch changes nothing; nothing committed".to_owned(), None));
            }
            spec.message.clone()
        }
        GitChange::Revert { commit } => {
            let full = git.run(&["rev-parse", "--verify", &format!("{commit}^{{commit}}")]).await?.trim().to_owned();
            // Only a commit the branch holds is undone: "reverting" a commit from
            // another branch (or one merely fetched into the object store) would
            // apply the inverse of a change the branch never had, that is, any
            // content at all, under the name of a rollback.
            if git.run(&["merge-base", "--is-ancestor", &full, "HEAD"]).await.is_err() {
                return Err(format!("refusing to act: commit {full} is not on `{branch}`, so reverting it would not undo anything the branch holds"));
            }
            // A merge has no one change to undo (which parent is meant is not said).
            if git.run(&["rev-parse", "--verify", "--quiet", &format!("{full}^2")]).await.is_ok() {
                return Err(format!("refusing to act: commit {full} is a merge, which has no single change to revert"));
            }
            // And only a change the branch made itself, on its first-parent line: a
            // commit that came in with a merge (a branch that added something and took
            // it away again) would, reverted, add what the branch never had.
            let after = git.run(&["rev-list", "--first-parent", "--reverse", &format!("{full}..HEAD")]).await?;
            let own = match after.lines().next().map(str::trim) {
                None | Some("") => true,
                Some(child) => git.run(&["rev-parse", "--verify", &format!("{child}^1")]).await?.trim() == full,
            };
            if !own {
                return Err(format!("refusing to act: commit {full} came into `{branch}` with a merge, not as one of its own changes, so reverting it would not undo anything the branch did"));
            }
            undo.touched = true;
            revert(git, &full).await?;
            format!("{} (revert {full})", spec.message)
        }
        GitChange::RevertDecision => {
            let Some(commit) = git.find_trailer(DECISION_TRAILER, &spec.decision_id).await? else {
                return Err(format!("no commit carries `{DECISION_TRAILER}: {}` any more", spec.decision_id));
            };
            if git.run(&["merge-base", "--is-ancestor", &commit, "HEAD"]).await.is_err() {
                return Err(format!("refusing to act: commit {commit} of this decision is not on `{branch}`"));
            }
            undo.touched = true;
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
    let Some(remote) = &spec.push else {
        return Ok((format!("committed {commit} on `{branch}`"), Some(commit)));
    };
    let refspec = format!("HEAD:refs/heads/{branch}");
    if let Err(why) = git.run(&["push", "--quiet", remote, &refspec]).await {
        // A push can fail after the remote took it (a timeout, say), so look
        // before undoing the commit: undoing a pushed commit would hide it from
        // the rollback, which finds what to revert by its trailer.
        git.extend_for_cleanup();
        return match remote_has(git, remote, branch, &commit).await {
            Ok(true) => Ok((
                format!("committed {commit} on `{branch}` and pushed to `{remote}`, which has it although the push reported: {why}"),
                Some(commit),
            )),
            Ok(false) => Err(format!("the push was refused: {why}")),
            Err(unknown) => {
                // Keep the commit: the rollback finds it, and refuses to act if the remote
                // disagrees. The step changed the branch, so it must be rolled back.
                undo.touched = false;
                git.touched = true;
                Err(format!(
                    "the push failed and whether `{remote}` has commit {commit} is unknown ({unknown}), so it stays on `{branch}`: {why}"
                ))
            }
        };
    }
    Ok((format!("committed {commit} on `{branch}` and pushed to `{remote}`"), Some(commit)))
}

/// Whether `remote`'s `branch` contains `commit`.
async fn remote_has(git: &mut Git<'_>, remote: &str, branch: &str, commit: &str) -> Result<bool, String> {
    git.run(&["fetch", "--quiet", remote, branch]).await?;
    let base = git.run(&["merge-base", commit, "FETCH_HEAD"]).await?;
    Ok(base.trim() == commit)
}

fn trailer_key(change: &GitChange) -> &'static str {
    match change {
        GitChange::RevertDecision => ROLLBACK_TRAILER,
        GitChange::Edits { .. } | GitChange::Patch { .. } | GitChange::Revert { .. } => DECISION_TRAILER,
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

/// Puts the tree back as the step found it: the commit it started from, without
/// the files and directories the step created.
async fn restore(git: &mut Git<'_>, undo: &Undo) -> Result<(), String> {
    git.run(&["reset", "--quiet", "--hard", &undo.head]).await?;
    for file in &undo.created_files {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(format!("cannot remove `{}`: {err}", file.display())),
        }
    }
    // Deepest first, and only while empty: a directory someone else filled meanwhile stays.
    let mut dirs: Vec<&PathBuf> = undo.created_dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
    match git.dirt().await? {
        Some(first) => Err(format!("the working tree is still dirty (`{first}`)")),
        None => Ok(()),
    }
}

/// Applies `patch` to the tree and the index, after checking that all of it applies.
async fn apply_patch(git: &mut Git<'_>, spec: &GitSpec, patch: &str, undo: &mut Undo) -> Result<(), String> {
    // Git reads a patch from a file (commands get a null stdin); the repository's
    // own git directory holds it, outside the working tree and private to its owner.
    let git_dir = git.run(&["rev-parse", "--absolute-git-dir"]).await?.trim().to_owned();
    let name: String =
        spec.decision_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let file = Path::new(&git_dir).join(format!("arf-{name}.patch"));
    let mut text = patch.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    std::fs::write(&file, text).map_err(|err| format!("cannot write the patch to `{}`: {err}", file.display()))?;
    let result = apply_patch_file(git, &spec.repo, &file.to_string_lossy(), undo).await;
    let _ = std::fs::remove_file(&file);
    result
}

async fn apply_patch_file(git: &mut Git<'_>, repo: &str, file: &str, undo: &mut Undo) -> Result<(), String> {
    let refuse = |why: String| format!("the patch does not apply, so nothing was changed: {why}");
    git.run(&["apply", "--check", "--index", file]).await.map_err(refuse)?;
    let listed = git.run(&["apply", "--numstat", "-z", file]).await?;
    for path in numstat_paths(&listed) {
        undo.note_new(repo, path);
    }
    undo.touched = true;
    git.run(&["apply", "--index", file]).await.map_err(|why| format!("the patch failed to apply: {why}"))?;
    Ok(())
}

/// The paths `git apply --numstat -z` lists: `added TAB deleted TAB path NUL`, or
/// for a rename or copy `added TAB deleted TAB NUL from NUL to NUL`.
fn numstat_paths(listed: &str) -> Vec<&str> {
    let mut paths = Vec::new();
    let mut fields = listed.split('\0');
    while let Some(record) = fields.next() {
        if record.trim().is_empty() {
            continue;
        }
        match record.splitn(3, '\t').nth(2) {
            Some(path) if !path.is_empty() => paths.push(path),
            _ => paths.extend(fields.next().into_iter().chain(fields.next())),
        }
    }
    paths
}

/// Refuses to edit a file git does not track (a reset could not put it back) or
/// one reached through a symbolic link (the write could land outside the tree).
async fn check_editable(git: &mut Git<'_>, repo: &str, file: &str) -> Result<(), String> {
    let relative = Path::new(file);
    if file.is_empty() || relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("`{file}` is not a path inside the repository"));
    }
    let mut path = PathBuf::from(repo);
    for component in relative.components() {
        path.push(component);
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("refusing to edit `{file}`: `{}` is a symbolic link", path.display()));
        }
    }
    if git.run(&["cat-file", "-e", &format!("HEAD:{file}")]).await.is_err() {
        return Err(format!("refusing to edit `{file}`: git does not track it"));
    }
    Ok(())
}

/// Applies one edit to its file.
fn edit_file(repo: &str, e: &RenderedEdit) -> Result<(), String> {
    let path = Path::new(repo).join(&e.file);
    let text = std::fs::read_to_string(&path).map_err(|err| format!("cannot read `{}`: {err}", e.file))?;
    let edited = edit::apply(e.format, &text, &e.path_segments, &e.value)
        .map_err(|err| format!("cannot set `{}` in `{}`: {err}", e.path, e.file))?;
    std::fs::write(&path, edited).map_err(|err| format!("cannot write `{}`: {err}", e.file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_lists_plain_paths_and_both_sides_of_a_rename() {
        let cases: [(&str, &[&str]); 3] = [
            ("1\t0\tapp.yaml\0", &["app.yaml"]),
            ("0\t0\tb.yaml\x001\t0\td/e/n.txt\0", &["b.yaml", "d/e/n.txt"]),
            ("2\t1\t\0old.yaml\0new.yaml\0", &["old.yaml", "new.yaml"]),
        ];
        for (listed, expected) in cases {
            assert_eq!(numstat_paths(listed), expected, "{listed:?}");
        }
    }
}
