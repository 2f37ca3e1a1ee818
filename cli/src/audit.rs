//! `arf audit`: verify the log offline or online, print its checkpoint, and prove
//! inclusion and consistency, recomputing everything client-side so the service is
//! never trusted to check itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;

use arf_audit::checkpoint::{self, Checkpoint, NoteVerifier};
use arf_audit::witness;
use arf_audit::merkle::{self, Tree};
use arf_audit::record::{ChainError, verify_chain};
use arf_audit::store::{self, StoreError};

use crate::client::Endpoints;
use crate::exit;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Checks the log: every frame, link and hash, the Merkle tree, every signed
    /// checkpoint, and the witnesses' checkpoints; exit 0 when intact, 1 naming the
    /// first damage otherwise.
    Verify {
        /// Read the log's files in this data directory (or the log's own directory)
        /// instead of asking the service; works while the service runs.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Read the log from this PostgreSQL database (`postgres://USER@HOST:PORT/DATABASE`, no password) instead of asking the service; `--data-dir` then only finds the key and the witnesses.
        #[arg(long)]
        postgres: Option<String>,
        /// A file holding the database's password, with `--postgres`.
        #[arg(long, requires = "postgres")]
        password_file: Option<PathBuf>,
        /// Reach the database over TLS, its certificate checked against this CA (PEM), with `--postgres`.
        #[arg(long, requires = "postgres")]
        postgres_ca_file: Option<PathBuf>,
        /// The log's public checkpoint key (hex, `.pub`); default: the deployment's.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The log's origin in its checkpoints.
        #[arg(long, default_value = "arf-audit-log")]
        origin: String,
        /// A witness folder whose `checkpoint` the log must extend (repeatable); the
        /// governor's and executor's witness state in `--data-dir` is checked too.
        #[arg(long)]
        witness: Vec<PathBuf>,
        /// Check without the log's key: the chain, and the sizes and roots that
        /// checkpoints state, but no signature. Without it, a missing key is an error.
        #[arg(long)]
        unsigned: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The latest signed checkpoint, checked against the log's key.
    Checkpoint {
        #[command(flatten)]
        key: LogKey,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// An inclusion proof of record SEQ in the latest checkpoint, verified here.
    Prove {
        /// The record's sequence number.
        seq: u64,
        #[command(flatten)]
        key: LogKey,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Writes an incident's evidence bundle: its records, an inclusion proof of each,
    /// and a signed checkpoint covering them, verified before it is written.
    Export {
        /// The incident's id (`inc-...`).
        incident: String,
        /// Where to write the bundle (JSON).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        key: LogKey,
        /// How long to wait for the log to sign a checkpoint covering the incident's
        /// last record (it signs one every `checkpoint_every_secs` while it grows).
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Verifies an evidence bundle offline, with only the log's public key.
    VerifyBundle {
        /// The bundle `arf audit export` wrote.
        file: PathBuf,
        /// The log's public checkpoint key: a hex `.pub` file, or a note verifier
        /// key `name+id+base64` (as `arf audit checkpoint` prints it).
        #[arg(long)]
        key: String,
        /// The log's origin in its checkpoints.
        #[arg(long, default_value = "arf-audit-log")]
        origin: String,
        /// `text`: a summary; `json`; `change-record`: a change-control record
        /// (SOC 2 CC8.1 / ISO 27001 A.8.32) of who proposed, approved, ran and verified what.
        #[arg(long, value_enum, default_value_t = BundleFormat::Text)]
        format: BundleFormat,
    },
    /// Keeps a witness of the log in a folder (ideally a git repository pushed to
    /// another host): accepts each newer checkpoint only with a consistency proof,
    /// cosigns it with the folder's own key (C2SP tlog-cosignature), and commits it
    /// when the folder is a git repository. Exit 2 when the log fails the check.
    Witness {
        /// The witness's folder: its checkpoint, its cosigning key, and (if a git repository) their history.
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        key: LogKey,
        /// The witness's name in its cosignatures.
        #[arg(long, default_value = "arf-witness")]
        name: String,
        /// Check once and exit, instead of every `--interval-secs`.
        #[arg(long)]
        once: bool,
        /// How often to check, in seconds.
        #[arg(long, default_value_t = 10)]
        interval_secs: u64,
    },
    /// A consistency proof between the trees of OLD and NEW records, verified here
    /// against roots recomputed from the records themselves.
    Consistency {
        /// The older tree's size (records).
        old: u64,
        /// The newer tree's size (records).
        new: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BundleFormat {
    Text,
    Json,
    ChangeRecord,
}

/// Which key the log's checkpoints are checked against.
#[derive(Debug, clap::Args)]
pub struct LogKey {
    /// The log's public checkpoint key (hex, `.pub`); default: the one under `--data-dir`.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The log's origin in its checkpoints.
    #[arg(long, default_value = "arf-audit-log")]
    origin: String,
    /// The data directory whose `keys/` holds the log's key.
    #[arg(long, default_value = ".arf")]
    data_dir: PathBuf,
}

impl LogKey {
    fn verifier(&self) -> Result<NoteVerifier> {
        verifier(self.key.as_deref(), Some(&self.data_dir), &self.origin)
    }
}

pub async fn run(endpoints: &Endpoints, command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify { data_dir, postgres, password_file, postgres_ca_file, key, origin, witness, unsigned, json } => {
            let key_dir = data_dir.clone().unwrap_or_else(|| PathBuf::from(".arf"));
            let verifier = if unsigned {
                None
            } else {
                Some(verifier(key.as_deref(), Some(&key_dir), &origin).context("pass `--unsigned` to check without signatures")?)
            };
            let tls = postgres_ca_file.map(|ca_file| arf_pg::TlsSettings { ca_file, cert_file: None, key_file: None });
            let postgres = postgres.map(|url| arf_pg::Settings { url, password_file, tls });
            verify(endpoints, data_dir.as_deref(), postgres.as_ref(), verifier.as_ref(), &witness, json).await
        }
        AuditCommand::Checkpoint { key, json } => {
            let verifier = key.verifier()?;
            let (checkpoint, note) = latest(endpoints, &verifier).await?;
            if json {
                say!("{}", json!({"origin": checkpoint.origin, "size": checkpoint.size, "root_hash": checkpoint.root_hex(), "note": note}));
            } else {
                print!("{}", arf_core::text::printable(&note, true));
                say!("(signature verified with {})", verifier.encode());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Prove { seq, key, json } => {
            if seq == 0 {
                bail!("records are numbered from 1");
            }
            let verifier = key.verifier()?;
            let (checkpoint, _) = latest(endpoints, &verifier).await?;
            let log = endpoints.audit()?;
            let record = log.get(seq).await?.with_context(|| format!("the log has no record `{seq}`"))?;
            if record.seq != seq || record.compute_hash() != record.hash {
                bail!("the log served a record that is not record {seq} or does not match its own hash");
            }
            let proof = log.inclusion_proof(seq, checkpoint.size).await?;
            let leaf = store::leaf_of(&record).map_err(anyhow::Error::msg)?;
            merkle::verify_inclusion(seq - 1, checkpoint.size, &leaf, &proof, &checkpoint.root)
                .with_context(|| format!("the log's inclusion proof of record {seq} does not verify"))?;
            let hashes: Vec<String> = proof.iter().map(hex::encode).collect();
            if json {
                say!("{}", json!({"seq": seq, "record_hash": record.hash, "tree_size": checkpoint.size, "root_hash": checkpoint.root_hex(), "proof": hashes}));
            } else {
                say!("record {seq} ({}) is in the signed tree of {} records, root {}", record.hash, checkpoint.size, checkpoint.root_hex());
                for hash in hashes {
                    say!("  {hash}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { incident, out, key, wait_secs } => {
            crate::evidence::export(endpoints, &incident, &out, &key.verifier()?, wait_secs).await
        }
        AuditCommand::VerifyBundle { file, key, origin, format } => {
            let verifier = match NoteVerifier::parse(&key) {
                Ok(verifier) => verifier,
                Err(_) => verifier(Some(Path::new(&key)), None, &origin)?,
            };
            crate::evidence::verify_bundle(&file, &verifier, format)
        }
        AuditCommand::Witness { dir, key, name, once, interval_secs } => {
            witness_folder(endpoints, &dir, &key.verifier()?, &name, once, interval_secs).await
        }
        AuditCommand::Consistency { old, new, json } => {
            let log = endpoints.audit()?;
            if old > new {
                bail!("the old size {old} is larger than the new size {new}");
            }
            let records = log.read_range(1, new.saturating_add(1)).await?;
            let tree = tree_of(&records)?;
            if tree.size() < new {
                bail!("the log holds {} records, fewer than {new}", tree.size());
            }
            let proof = log.consistency_proof(old, new).await?;
            let (old_root, new_root) = (tree.root(old)?, tree.root(new)?);
            merkle::verify_consistency(old, new, &old_root, &new_root, &proof)
                .with_context(|| format!("the log's consistency proof from {old} to {new} does not verify"))?;
            let hashes: Vec<String> = proof.iter().map(hex::encode).collect();
            if json {
                say!("{}", json!({"old_size": old, "new_size": new, "old_root": hex::encode(old_root), "new_root": hex::encode(new_root), "proof": hashes}));
            } else {
                say!("the tree of {old} records (root {}) is a prefix of the tree of {new} (root {})", hex::encode(old_root), hex::encode(new_root));
                for hash in hashes {
                    say!("  {hash}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The log's checkpoint verifier: `--key`, else the deployment's key under `data_dir`.
fn verifier(key: Option<&Path>, data_dir: Option<&Path>, origin: &str) -> Result<NoteVerifier> {
    let path = match (key, data_dir) {
        (Some(key), _) => key.to_owned(),
        (None, Some(dir)) => {
            let candidates = [
                dir.join("keys").join("audit-checkpoint.key.pub"),
                dir.join("audit").join("checkpoint.key.pub"),
                dir.join("checkpoint.key.pub"),
            ];
            candidates.into_iter().find(|p| p.exists()).with_context(|| {
                format!("no checkpoint key under `{}`; pass `--key` with the log's public key", dir.display())
            })?
        }
        (None, None) => bail!("pass `--key` with the log's public checkpoint key"),
    };
    let key = arf_core::keys::load_trusted(&path).with_context(|| format!("the checkpoint key `{}`", path.display()))?.key;
    Ok(NoteVerifier::new(origin, key))
}

async fn latest(endpoints: &Endpoints, verifier: &NoteVerifier) -> Result<(Checkpoint, String)> {
    let note = endpoints.audit()?.checkpoint().await?.context("the log has signed no checkpoint yet")?;
    let checkpoint = verifier.verify(&note).context("the log's checkpoint does not verify")?;
    Ok((checkpoint, note))
}

fn tree_of(records: &[arf_audit::Record]) -> Result<Tree> {
    let mut tree = Tree::new();
    for record in records {
        tree.push(store::leaf_of(record).map_err(anyhow::Error::msg)?);
    }
    Ok(tree)
}

/// One damage found, named for the reader.
struct Damage {
    seq: u64,
    reason: String,
}

async fn verify(
    endpoints: &Endpoints,
    data_dir: Option<&Path>,
    postgres: Option<&arf_pg::Settings>,
    verifier: Option<&NoteVerifier>,
    witnesses: &[PathBuf],
    as_json: bool,
) -> Result<ExitCode> {
    let mut witness_files: Vec<PathBuf> = witnesses.iter().map(|w| w.join("checkpoint")).collect();
    // A service that ran here but keeps no witness state: said, since a state
    // removed with the log's tail is what would hide that tail.
    let mut missing: Vec<PathBuf> = Vec::new();
    if let Some(dir) = data_dir {
        for role in ["governor", "executor"] {
            let state = dir.join(role).join("witness").join("checkpoint");
            if state.exists() {
                witness_files.push(state);
            } else if dir.join(role).is_dir() {
                missing.push(state);
            }
        }
    }
    if !as_json {
        for state in &missing {
            warn_user!("note: no witness state at `{}`: that service's checkpoint was not checked (it never witnessed the log, or its state was removed)", state.display());
        }
    }
    // Read before the log: a running service may sign newer checkpoints meanwhile,
    // which would make an older log read look truncated.
    let witness_notes: Vec<(PathBuf, std::io::Result<String>)> =
        witness_files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f))).collect();
    let outcome = match (postgres, data_dir) {
        (Some(settings), _) => match arf_audit::pg::verify(settings, verifier).await {
            Ok(verified) => Ok((verified.records, verified.head_hash, verified.checkpoints, verified.latest_checkpoint, verified.tree)),
            Err(StoreError::DamagedDb { seq, reason, .. }) => Err(Damage { seq, reason: format!("{reason} (in {})", settings.describe()) }),
            Err(StoreError::Checkpoint { reason, .. }) => Err(Damage { seq: 0, reason }),
            Err(other) => return Err(other.into()),
        },
        (None, Some(dir)) => {
            let log_dir = [dir.join("audit"), dir.to_path_buf()]
                .into_iter()
                .find(|p| p.join(store::LOG_FILE).exists() || p.join("db").exists())
                .with_context(|| format!("no audit log under `{}`", dir.display()))?;
            match store::verify_dir(&log_dir, verifier) {
                Ok(verified) => {
                    if let Some((offset, len)) = verified.torn {
                        warn_user!("note: the log ends in an incomplete write of {len} bytes at byte {offset}, never acknowledged; the service sets it aside when it next opens the log");
                    }
                    Ok((verified.records, verified.head_hash, verified.checkpoints, verified.latest_checkpoint, verified.tree))
                }
                Err(StoreError::Damaged { seq, offset, reason, .. }) => {
                    Err(Damage { seq, reason: format!("{reason} (byte {offset} of `{}`)", log_dir.join(store::LOG_FILE).display()) })
                }
                Err(StoreError::Checkpoint { reason, .. }) => Err(Damage { seq: 0, reason }),
                Err(other) => return Err(other.into()),
            }
        }
        (None, None) => {
            let records = endpoints.audit()?.read_range(1, 0).await?;
            match verify_chain(records.iter().cloned().enumerate().map(|(i, r)| Ok((i as u64 + 1, r)))) {
                Ok(summary) => {
                    let tree = tree_of(&records)?;
                    let checkpoints = records.iter().filter(|r| r.kind == arf_audit::RecordKind::Checkpoint).count() as u64;
                    match check_logged_checkpoints(&records, &tree, verifier) {
                        Ok(latest) => Ok((summary.records, summary.head_hash, checkpoints, latest, tree)),
                        Err(damage) => Err(damage),
                    }
                }
                Err(ChainError { seq, reason }) => Err(Damage { seq, reason }),
            }
        }
    };
    let outcome = outcome.and_then(|(records, head, checkpoints, latest, tree)| {
        let witnessed = check_witnesses(&witness_notes, &tree, verifier)?;
        Ok((records, head, checkpoints, latest, witnessed))
    });
    match outcome {
        Ok((records, head, checkpoints, latest, witnessed)) => {
            if as_json {
                say!(
                    "{}",
                    json!({"intact": true, "records": records, "head_hash": head, "checkpoints": checkpoints,
                           "latest_checkpoint": latest.as_ref().map(|c| json!({"size": c.size, "root_hash": c.root_hex()})),
                           "witnesses": witnessed, "missing_witness_states": missing, "signatures_checked": verifier.is_some()})
                );
            } else {
                say!("audit chain intact: {records} records, head {head}");
                match (&verifier, latest) {
                    (Some(_), Some(c)) => say!(
                        "{checkpoints} signed checkpoints verified; the latest covers {} of {records} records, root {}",
                        c.size,
                        c.root_hex()
                    ),
                    (Some(_), None) => say!("no signed checkpoint yet"),
                    (None, _) => say!("checkpoint signatures not checked (`--unsigned`)"),
                }
                if witnessed > 0 {
                    say!("{witnessed} witness checkpoints are consistent with the log");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(Damage { seq, reason }) => {
            if as_json {
                say!("{}", json!({"intact": false, "first_bad_record": seq, "reason": reason}));
            } else if seq == 0 {
                warn_user!("audit log damaged: {reason}");
            } else {
                warn_user!("audit chain broken: first bad record is {seq}: {reason}");
            }
            Ok(ExitCode::from(exit::FAILURE))
        }
    }
}

/// Online: every `checkpoint` record must be signed and name the root of the
/// records before it. Without a key (`--unsigned`) the signatures cannot be
/// checked, but the sizes and roots still are, and no checkpoint is returned.
fn check_logged_checkpoints(
    records: &[arf_audit::Record],
    tree: &Tree,
    verifier: Option<&NoteVerifier>,
) -> Result<Option<Checkpoint>, Damage> {
    let mut latest = None;
    for record in records.iter().filter(|r| r.kind == arf_audit::RecordKind::Checkpoint) {
        let bad = |reason: String| Damage { seq: record.seq, reason };
        let note = record.payload.get("note").and_then(|n| n.as_str()).ok_or_else(|| bad("a checkpoint without its note".to_owned()))?;
        let checkpoint = match verifier {
            Some(verifier) => verifier.verify(note),
            None => Checkpoint::parse_unverified(note),
        }
        .map_err(|e| bad(e.to_string()))?;
        let root = tree.root(checkpoint.size).map_err(|e| bad(e.to_string()))?;
        if checkpoint.size + 1 != record.seq || root != checkpoint.root {
            return Err(bad(format!("its signed root for size {} does not match the records before it", checkpoint.size)));
        }
        latest = verifier.map(|_| checkpoint);
    }
    Ok(latest)
}

/// `arf audit witness`: one check, or one every `interval_secs`, of the log against the folder.
async fn witness_folder(endpoints: &Endpoints, dir: &Path, verifier: &NoteVerifier, name: &str, once: bool, interval_secs: u64) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let key = arf_core::keys::load_or_generate(&dir.join("witness.key"))?;
    std::fs::write(dir.join("witness.name"), name)?;
    let state = dir.join("checkpoint");
    let log = endpoints.audit()?;
    loop {
        let old = match std::fs::read_to_string(&state) {
            Ok(note) => Some(witness::Seen { checkpoint: verifier.verify(&note).context("the folder's checkpoint")?, note }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", state.display())),
        };
        let refused = |reason: String| {
            warn_user!("WITNESS REFUSES THE LOG: {reason}");
            Ok(ExitCode::from(exit::DENIED))
        };
        match log.checkpoint().await? {
            None if old.is_some() => return refused("the log has no checkpoint, but this witness holds one".to_owned()),
            None => say!("the log has signed no checkpoint yet"),
            Some(note) => match witness::advance(verifier, old.as_ref(), &note, |o, n| log.consistency_proof(o, n)).await {
                Err(error) => return refused(error.to_string()),
                Ok(seen) if old.as_ref().is_some_and(|o| o.checkpoint.size == seen.checkpoint.size) => {
                    say!("checkpoint of {} records unchanged", seen.checkpoint.size);
                }
                Ok(seen) => {
                    let now = u64::try_from(arf_core::time::now_ms() / 1000).unwrap_or(0);
                    let cosigned = checkpoint::cosign(&seen.note, &seen.checkpoint, name, &key, now);
                    witness::write_state(&state, &cosigned)?;
                    let message = format!("witness: {} at {} records, root {}", seen.checkpoint.origin, seen.checkpoint.size, seen.checkpoint.root_hex());
                    if dir.join(".git").exists() {
                        commit(dir, &message)?;
                    }
                    say!("{message}: consistent with the last checkpoint, cosigned as `{name}`");
                }
            },
        }
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(std::time::Duration::from_secs(interval_secs.max(1))).await;
    }
}

/// Commits the folder's checkpoint, so its history can be pushed elsewhere.
fn commit(dir: &Path, message: &str) -> Result<()> {
    for args in [&["add", "checkpoint", "witness.name", "witness.key.pub"][..], &["commit", "-q", "-m", message][..]] {
        let status = std::process::Command::new("git").arg("-C").arg(dir).args(args).status().context("cannot run git")?;
        if !status.success() {
            bail!("`git {}` failed in `{}`", args.join(" "), dir.display());
        }
    }
    Ok(())
}

/// Each witness's checkpoint must be signed by the log and a prefix of it.
fn check_witnesses(notes: &[(PathBuf, std::io::Result<String>)], tree: &Tree, verifier: Option<&NoteVerifier>) -> Result<usize, Damage> {
    let mut checked = 0;
    for (file, note) in notes {
        let bad = |reason: String| Damage { seq: 0, reason: format!("witness `{}`: {reason}", file.display()) };
        let note = note.as_ref().map_err(|e| bad(e.to_string()))?;
        let checkpoint = match verifier {
            Some(verifier) => verifier.verify(note),
            None => Checkpoint::parse_unverified(note),
        }
        .map_err(|e| bad(e.to_string()))?;
        // A folder kept by `arf audit witness` cosigned what it accepted: check that too.
        let folder = file.parent().unwrap_or(Path::new("."));
        if let (Ok(name), Ok(key)) = (std::fs::read_to_string(folder.join("witness.name")), arf_core::keys::load_trusted(&folder.join("witness.key.pub"))) {
            checkpoint::verify_cosignature(note, &checkpoint, name.trim(), &key.key).map_err(|e| bad(format!("its cosignature: {e}")))?;
        }
        if checkpoint.size > tree.size() {
            return Err(bad(format!(
                "it saw {} records, but the log holds {}: the log was truncated or rolled back",
                checkpoint.size,
                tree.size()
            )));
        }
        if tree.root(checkpoint.size).map_err(|e| bad(e.to_string()))? != checkpoint.root {
            return Err(bad(format!("the log's first {} records no longer hash to the root it saw: history was rewritten", checkpoint.size)));
        }
        checked += 1;
    }
    Ok(checked)
}

/// The demo's last step, once its services have stopped: `arf audit verify
/// --data-dir` in-process, with the signed checkpoints and both witnesses.
pub fn demo_verify(data_dir: &Path, checks: &mut crate::demo::Checks) -> Result<()> {
    let verifier = verifier(None, Some(data_dir), &arf_audit::config::default_origin())?;
    let witnesses: Vec<PathBuf> = ["governor", "executor"]
        .iter()
        .map(|role| data_dir.join(role).join("witness").join("checkpoint"))
        .filter(|p| p.exists())
        .collect();
    checks.expect(witnesses.len() == 2, "the governor and the executor each keep the log's checkpoint as witnesses");
    match store::verify_dir(&data_dir.join("audit"), Some(&verifier)) {
        Ok(verified) => {
            let latest = verified.latest_checkpoint.clone();
            checks.expect(
                latest.as_ref().is_some_and(|c| c.size + 1 == verified.records),
                "the log signed a checkpoint of everything at shutdown",
            );
            let notes: Vec<(PathBuf, std::io::Result<String>)> = witnesses.iter().map(|f| (f.clone(), std::fs::read_to_string(f))).collect();
            match check_witnesses(&notes, &verified.tree, Some(&verifier)) {
                Ok(n) => checks.expect(n == witnesses.len(), "the witnesses' checkpoints are prefixes of the log"),
                Err(Damage { reason, .. }) => checks.expect(false, &format!("the witnesses agree with the log: {reason}")),
            }
            checks.expect(verified.checkpoints > 0, "every signed checkpoint in the log verifies against the records before it");
            if let Some(c) = latest {
                say!("  → latest checkpoint, signed by the log ({}):", verifier.encode());
                for line in c.body().lines() {
                    say!("      {line}");
                }
            }
        }
        Err(error) => checks.expect(false, &format!("the log verifies against its checkpoints: {error}")),
    }
    Ok(())
}
