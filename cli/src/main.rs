//! `arf`: runs ARF's services, its demo, and the commands people and tooling use.

/// Prints a line for people (and scripts): whatever it holds that came from outside
/// (alert titles, model answers, reasons) cannot carry terminal escapes, carriage
/// returns, bells or bidirectional overrides; they show as `\u{FFFD}`. A reader
/// that has gone (`arf demo | head`) is not an error: the short commands die of
/// SIGPIPE quietly, and the long-running ones go on without their output.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), "{}", arf_core::text::printable(&format!($($arg)*), true));
    }};
}

/// [`say!`] for standard error.
macro_rules! warn_user {
    ($($arg:tt)*) => { eprintln!("{}", arf_core::text::printable(&format!($($arg)*), true)) };
}

mod audit;
mod certs;
mod console;
mod db;
mod discover;
mod client;
pub(crate) mod demo;
mod eval;
mod evidence;
mod governance;
mod pathways;
mod serve;
mod setup;
mod shadow;
mod status;
mod supervisor;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes that mean something: 0 ok, 1 failure, 2 refused (a service refused
/// the call, or a witness refused the log; `arf eval run`: an unsafe run), 64 a
/// usage or configuration error.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const DENIED: u8 = 2;
    pub const CONFIG: u8 = 64;
}

#[derive(Debug, Parser)]
#[command(name = "arf", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("ARF_COMMIT"), ")"), about = "ARF: an LLM-assisted remediation control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The agent's gRPC address (default: the deployment's, from `ARF_CONFIG` or `.arf/arf.toml`, else 127.0.0.1:7401).
    #[arg(long, global = true, env = "ARF_AGENT")]
    agent: Option<String>,
    /// The governor's gRPC address (default: the deployment's, else 127.0.0.1:7402).
    #[arg(long, global = true, env = "ARF_GOVERNOR")]
    governor: Option<String>,
    /// The audit log's gRPC address (default: the deployment's, else 127.0.0.1:7400).
    #[arg(long, global = true, env = "ARF_AUDIT")]
    audit: Option<String>,
    /// The executor's gRPC address, for `arf status` (default: the deployment's, else 127.0.0.1:7403).
    #[arg(long, global = true, env = "ARF_EXECUTOR")]
    executor: Option<String>,
    /// Your bearer token for the governor.
    #[arg(long, global = true, env = "ARF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding your bearer token for the governor.
    #[arg(long, global = true, env = "ARF_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The directory with the deployment's `ca.pem` and your client certificate
    /// (`client.pem`, `client.key`), for mutual TLS; `.arf/certs` when it exists.
    #[arg(long, global = true, env = "ARF_TLS_DIR")]
    tls_dir: Option<PathBuf>,
}

/// How the services write their log lines.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

impl LogFormat {
    pub fn service(self) -> arf_proto::service::LogFormat {
        match self {
            Self::Text => arf_proto::service::LogFormat::Text,
            Self::Json => arf_proto::service::LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    Audit,
    Agent,
    Governor,
    Executor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Audit, Role::Governor, Role::Executor, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Agent => "agent",
            Self::Governor => "governor",
            Self::Executor => "executor",
        }
    }

    /// The identity of the service in this role.
    pub fn identity(self) -> arf_core::identity::Role {
        match self {
            Self::Audit => arf_core::identity::Role::Audit,
            Self::Agent => arf_core::identity::Role::Agent,
            Self::Governor => arf_core::identity::Role::Governor,
            Self::Executor => arf_core::identity::Role::Executor,
        }
    }
}

#[global_allocator]
static ALLOCATOR: arf_proto::service::Allocator = arf_proto::service::ALLOCATOR;

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a data directory (configuration, tokens, keys, the bundled examples) without starting anything; keeps what exists.
    Init {
        /// The data directory: configuration, secrets, certificates, keys, logs.
        #[arg(long, default_value = ".arf")]
        data_dir: PathBuf,
        /// The first of the services' ports: audit BASE, agent BASE+1, governor BASE+2, executor BASE+3, metrics BASE+10 to BASE+13, webhook BASE+80 (default 7400).
        #[arg(long)]
        port_base: Option<u16>,
    },
    /// Runs the four services as separate child processes in the foreground; Ctrl-C stops them.
    Up {
        /// The deployment file (default: the one in `--data-dir`, written if missing).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory: configuration, secrets, certificates, keys, logs.
        #[arg(long, default_value = ".arf")]
        data_dir: PathBuf,
        /// Move the deployment to ports from BASE (as `arf init --port-base`), writing them into its configuration first.
        #[arg(long)]
        port_base: Option<u16>,
        /// How the services write their logs (default: `ARF_LOG_FORMAT`, else text).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Keep the log and every role's shared state in this PostgreSQL database (`postgres://USER@HOST:PORT/DATABASE`, on this host), migrated first, and run `--replicas` processes of every role on it.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
        /// How many processes of each role to run, with `--store`.
        #[arg(long, default_value_t = 2, requires = "store")]
        replicas: usize,
    },
    /// The web console for the people on call: pending decisions with their explanation, approve and reject, incidents and their trail, the kill switch. Log in with your token.
    Console {
        /// Where to listen: loopback only over plain HTTP, any address over HTTPS.
        #[arg(long, default_value = "127.0.0.1:7490")]
        listen: std::net::SocketAddr,
        /// Serve HTTPS with the deployment's `console` certificate (`arf certs init`; `--host` there adds the names it is reached at).
        #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
        tls: bool,
        /// Serve HTTPS with this PEM certificate (chain) of your own.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of `--tls-cert`.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The deployment (default: `ARF_CONFIG`, else `.arf/arf.toml`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Certificates for mutual TLS between the services.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Identities: who may call the services, and as what.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Runs one service.
    Serve {
        /// The service to run.
        #[arg(value_enum)]
        role: Role,
        /// The deployment file (default: the one in `--data-dir`, written if missing).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory: configuration, secrets, certificates, keys, logs.
        #[arg(long, default_value = ".arf")]
        data_dir: PathBuf,
        /// How the service writes its log (default: `ARF_LOG_FORMAT`, else text).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Runs the bundled scenario on real processes; exits 0 when every step behaved as expected.
    Demo {
        /// Keep the demo's state here (a temporary directory otherwise).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Diagnose with a live OpenAI-compatible endpoint at this base URL (e.g. `http://127.0.0.1:11434/v1`).
        #[arg(long, env = "ARF_LLM_BASE_URL")]
        llm_base_url: Option<String>,
        /// The model to ask, with `--llm-base-url`.
        #[arg(long, env = "ARF_LLM_MODEL", requires = "llm_base_url")]
        llm_model: Option<String>,
        /// The environment variable that holds the endpoint's API key, if it needs one.
        #[arg(long, env = "ARF_LLM_API_KEY_ENV", requires = "llm_base_url")]
        llm_api_key_env: Option<String>,
        /// After the scenes, keep the services and the console up until Ctrl-C, to look around.
        #[arg(long)]
        stay: bool,
    },
    /// Signals.
    Signal {
        #[command(subcommand)]
        command: SignalCommand,
    },
    /// Incidents.
    Incident {
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// Each service: address, health, version, uptime, and its state (the log's head and checkpoint, decisions pending, autonomy, incidents); exits 1 when one is down.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Decisions waiting for acknowledgment or approval.
    Pending {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show the queue again every SECS seconds (default 2) until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// The explanation an on-call engineer reads.
    Explain {
        /// The decision's id (`dec-...`).
        decision: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approves (or acknowledges) a decision, as the authenticated caller.
    Approve {
        /// The decision's id (`dec-...`).
        decision: String,
        /// Why, for the log and the explanation.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Rejects a decision, as the authenticated caller.
    Reject {
        /// The decision's id (`dec-...`).
        decision: String,
        /// Why, for the log, the agent and the explanation (required).
        #[arg(long)]
        reason: String,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The pathway catalog.
    Pathways {
        #[command(subcommand)]
        command: pathways::PathwaysCommand,
    },
    /// Policy bundles: test cases, reload, the input schema.
    Policy {
        #[command(subcommand)]
        command: governance::PolicyCommand,
    },
    /// Shadow mode: what ARF would have done, what happened, and judgements that earn autonomy.
    Shadow {
        #[command(subcommand)]
        command: shadow::ShadowCommand,
    },
    /// The guard rails: the global kill switch, rate limits and error budgets.
    Autonomy {
        #[command(subcommand)]
        command: governance::AutonomyCommand,
    },
    /// Prints a completion script for SHELL: `source <(arf completions bash)`, or save it where your shell loads completions.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The deployment file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The PostgreSQL store's schema: apply migrations, check a database.
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Governor signing keys.
    Keys {
        #[command(subcommand)]
        command: governance::KeysCommand,
    },
    /// The evaluation harness: replays the incident corpus through real processes.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// The demo's target service (used by `arf demo`).
    #[command(hide = true)]
    DemoTarget {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

impl Command {
    /// The commands that run services or drive them (and their children) for long:
    /// they handle a closed pipe themselves and must not die of one.
    fn is_long_running(&self) -> bool {
        matches!(self, Self::Up { .. } | Self::Serve { .. } | Self::Demo { .. } | Self::Eval { .. } | Self::DemoTarget { .. } | Self::Console { .. })
    }
}

/// A command whose output is piped into `head` stops quietly when the reader goes
/// away, as Unix tools do, rather than panicking on the failed write: SIGPIPE gets
/// its default action back (Rust ignores it), for the short commands only.
#[expect(unsafe_code, reason = "restoring SIGPIPE's default action needs libc::signal")]
fn quiet_broken_pipe() {
    // SAFETY: called first thing in `main`, before any thread is started; it only
    // changes the disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Checks every section as its service would at start (settings, files, keys, certificates), without starting anything; exit 64 naming each problem.
    Check {
        /// The deployment file (default: `ARF_CONFIG`, else `.arf/arf.toml`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Brings a file written by an older `arf` up to this one, keeping every setting: mutual TLS and revocation lists, record kinds added since, investigation tools; the old file is kept as `arf.toml.before-migrate`; then checks it.
    Migrate {
        /// The deployment file (default: `ARF_CONFIG`, else `.arf/arf.toml`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Replays every incident of CORPUS through the real agent, governor and executor, and reports.
    Run(eval::RunArgs),
}

#[derive(Debug, Subcommand)]
enum SignalCommand {
    /// Submits a signal file; the format is detected from the content when `--format` is left out.
    Send {
        /// The file to send (at most 1 MiB).
        file: PathBuf,
        /// The payload's format, when it cannot be told from the content.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(arf_agent::ingest::FORMATS))]
        format: Option<String>,
        /// The service the signals belong to, when the payload does not say.
        #[arg(long)]
        service: Option<String>,
        /// The environment the signals belong to, when the payload does not say.
        #[arg(long)]
        environment: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Makes a CA and one certificate per service (`ROLE.arf.internal`) and for the CLI (`client`); keeps what exists.
    Init {
        #[command(flatten)]
        at: CertsAt,
    },
    /// Issues certificates again with new keys (renewal, or a key that may have leaked); the services read them without a restart. Needs the CA's key.
    Renew {
        /// The certificates to issue again: `audit`, `agent`, `governor`, `executor`, `client`; all when none is named.
        names: Vec<String>,
        /// Also revoke the certificates replaced (reason `superseded`): do this when a key may have leaked.
        #[arg(long)]
        revoke_old: bool,
        #[command(flatten)]
        at: CertsAt,
    },
    /// Puts certificates on the CA's revocation list (`crl.pem`); services read it within seconds, refuse them and close their connections. Copy the list to every host. Needs the CA's key.
    Revoke {
        /// The certificates to revoke, as `init` wrote them: `audit`, `agent`, `governor`, `executor`, `client`.
        names: Vec<String>,
        /// A certificate's serial number in hexadecimal (one no longer on disk, or of the operator's own issuing; repeatable).
        #[arg(long = "serial")]
        serials: Vec<String>,
        /// Why (RFC 5280 reason code).
        #[arg(long, value_enum, default_value = "key-compromise")]
        reason: certs::Reason,
        #[command(flatten)]
        at: CertsAt,
    },
}

/// Where the certificates are, and the names the services are reached at.
#[derive(Debug, clap::Args)]
struct CertsAt {
    /// The certificate directory (default: `certs/` in `--data-dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The data directory: configuration, secrets, certificates, keys, logs.
    #[arg(long, default_value = ".arf")]
    data_dir: PathBuf,
    /// A host name or address the services are reached at, in their certificates (repeatable; give `renew` the same as `init`).
    #[arg(long = "host")]
    hosts: Vec<String>,
}

impl CertsAt {
    fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| self.data_dir.join("certs"))
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Adds an identity to the configuration and prints its token, once: only its SHA-256 is kept. Restart the services to use it.
    Create {
        /// The identity's name, as approvals and the audit log will show it.
        name: String,
        /// What it may do.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(arf_core::identity::Role::ALL.map(arf_core::identity::Role::as_str)))]
        role: String,
        /// For a sender of signals: a service whose signals it may send (repeatable; any when none).
        #[arg(long = "service")]
        services: Vec<String>,
        /// For a sender of signals: an environment its signals may be about (repeatable; any when none).
        #[arg(long = "environment")]
        environments: Vec<String>,
        /// The configuration file (default: the one in `--data-dir`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data directory: configuration, secrets, certificates, keys, logs.
        #[arg(long, default_value = ".arf")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// Incidents the agent holds, newest first (done ones leave after `agent.retain_incidents_secs`; `show` still finds them).
    List {
        /// Only incidents in this state (the machine is in ARCHITECTURE.md).
        #[arg(long, value_parser = ["open", "diagnosing", "proposed", "waiting", "acting", "verified", "rolled_back", "failed", "escalated", "resolved"])]
        state: Option<String>,
        /// Only incidents about this service.
        #[arg(long)]
        service: Option<String>,
        /// Only incidents in this environment.
        #[arg(long)]
        environment: Option<String>,
        /// At most this many, newest first.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Show the list again every SECS seconds (default 2) until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// One incident's trail from signal to outcome.
    Show {
        /// The incident's id (`inc-...`).
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Commands that talk to no service with the caller's identity: the connection
/// flags (global, so still accepted) are left out of their help.
const OFFLINE: &[&str] = &["init", "up", "console", "certs", "token", "serve", "demo", "eval", "demo-target", "pathways", "keys", "config", "db", "completions"];

/// The connection flags, by argument id.
const CONNECTION: &[&str] = &["agent", "governor", "audit", "executor", "token", "token_file", "tls_dir"];

/// The command line, with the connection flags hidden where they mean nothing.
fn command() -> clap::Command {
    use clap::CommandFactory;
    fn hide(command: clap::Command) -> clap::Command {
        command.mut_args(|arg| if CONNECTION.contains(&arg.get_id().as_str()) { arg.hide(true) } else { arg }).mut_subcommands(hide)
    }
    let mut command = Cli::command();
    // Global flags are copied into every subcommand when the command is built.
    command.build();
    command.mut_subcommands(|sub| if OFFLINE.contains(&sub.get_name()) { hide(sub) } else { sub })
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let cli = match command().try_get_matches().and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Help and version were asked for; anything else is a usage error (64,
            // never 2, which means a refusal).
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(exit::CONFIG),
            };
        }
    };
    if !cli.command.is_long_running() {
        quiet_broken_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => match error.downcast_ref::<client::Refused>() {
            Some(refused) => {
                warn_user!("{refused}");
                ExitCode::from(exit::DENIED)
            }
            None => {
                warn_user!("error: {error:#}");
                ExitCode::from(exit::FAILURE)
            }
        },
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Commands that run services read their own configuration; the rest find the
    // deployment they talk to (`discover`).
    let talks = !cli.command.is_long_running() && !matches!(cli.command, Command::Init { .. } | Command::Certs { .. } | Command::Token { .. } | Command::Keys { .. } | Command::Config { .. } | Command::Completions { .. });
    let deployment = if talks { discover::find()? } else { None };
    let from = |given: Option<String>, found: fn(&discover::Deployment) -> &String, default: &str| {
        given.or_else(|| deployment.as_ref().map(|d| found(d).clone())).unwrap_or_else(|| default.to_owned())
    };
    let tls_dir = cli.tls_dir.or_else(|| deployment.as_ref().and_then(|d| d.tls_dir.clone()));
    let endpoints = client::Endpoints {
        agent: from(cli.agent, |d| &d.agent, "127.0.0.1:7401"),
        governor: from(cli.governor, |d| &d.governor, "127.0.0.1:7402"),
        audit: from(cli.audit, |d| &d.audit, "127.0.0.1:7400"),
        token: cli.token,
        token_file: cli.token_file,
        tls: client::client_tls(tls_dir.as_deref())?,
    };
    match cli.command {
        Command::Init { data_dir, port_base } => {
            let file = serve::config_file_at(None, &data_dir, port_base)?;
            say!("configuration: {}", file.display());
            say!("Edit it (`[targets]` above all), then `arf up --data-dir {}`.", data_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { config, data_dir, port_base, log_format, store, replicas } => {
            supervisor::up(config, &data_dir, port_base, log_format, store.map(arf_pg::Settings::new), replicas).await
        }
        Command::Console { listen, config, tls, tls_cert, tls_key } => {
            let serving = match (tls, tls_cert, tls_key) {
                (_, Some(cert_file), Some(key_file)) => console::Serving::Files(console::Https { cert_file, key_file }),
                (true, _, _) => console::Serving::DeploymentCertificate,
                _ => console::Serving::Plain,
            };
            console::run(listen, config, serving).await
        }
        Command::Certs { command: CertsCommand::Init { at } } => {
            let dir = at.dir();
            let written = certs::init(&dir, &at.hosts)?;
            say!("{}: {}", dir.display(), if written.is_empty() { "nothing missing".to_owned() } else { format!("wrote {}", written.join(", ")) });
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs { command: CertsCommand::Renew { names, revoke_old, at } } => {
            let dir = at.dir();
            let written = certs::renew(&dir, &names, &at.hosts, revoke_old)?;
            say!("{}: issued again {}; running services read them on their next handshake", dir.display(), written.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs { command: CertsCommand::Revoke { names, serials, reason, at } } => {
            let dir = at.dir();
            let revoked = certs::revoke(&dir, &names, &serials, reason)?;
            for (name, serial) in &revoked.certificates {
                say!("revoked {name} (serial {serial})");
            }
            say!(
                "{}: lists {} certificate(s). Copy it to every host; services read it within seconds, refuse these certificates and close their connections. Issue replacements with `arf certs renew NAME`.",
                dir.join(arf_core::tls::CRL_FILE).display(),
                revoked.listed
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command: TokenCommand::Create { name, role, services, environments, config, data_dir } } => {
            let file = serve::config_file(config, &data_dir)?;
            let token = token::create(&file, &name, &role, &services, &environments)?;
            eprintln!("identity `{name}` ({role}) added to {}; restart the services to use it.", file.display());
            eprintln!("Its token follows, shown this once (only its SHA-256 is kept):");
            say!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { role, config, data_dir, log_format } => serve::run(role, config, &data_dir, log_format).await,
        Command::Demo { data_dir, llm_base_url, llm_model, llm_api_key_env, stay } => {
            let reasoning = match llm_base_url {
                Some(base_url) => setup::Reasoning::Openai {
                    base_url,
                    model: llm_model.unwrap_or_else(|| "gpt-4o-mini".to_owned()),
                    api_key_env: llm_api_key_env,
                },
                None => setup::Reasoning::Scripted,
            };
            demo::run(data_dir, reasoning, stay).await
        }
        Command::Eval { command: EvalCommand::Run(args) } => eval::run(args).await,
        Command::DemoTarget { repo, listen } => demo::target::run(&repo, listen).await.map(|()| ExitCode::SUCCESS),
        Command::Signal { command: SignalCommand::Send { file, format, service, environment, json } } => {
            client::send_signal(&endpoints, &file, format.as_deref(), service.as_deref(), environment.as_deref(), json).await
        }
        Command::Incident { command: IncidentCommand::List { state, service, environment, limit, json, watch } } => {
            let filter = client::IncidentFilter { state, service, environment, limit };
            client::watching(watch, || client::list_incidents(&endpoints, &filter, json)).await
        }
        Command::Incident { command: IncidentCommand::Show { id, json } } => client::show_incident(&endpoints, &id, json).await,
        Command::Pending { json, watch } => client::watching(watch, || client::pending(&endpoints, json)).await,
        Command::Status { json } => {
            let at = status::Where {
                executor: from(cli.executor, |d| &d.executor, "127.0.0.1:7403"),
                metrics: deployment.as_ref().map(|d| d.metrics.clone()).unwrap_or_default(),
                tls_dir,
            };
            status::status(&endpoints, &at, json).await
        }
        Command::Explain { decision, json } => client::explain(&endpoints, &decision, json).await,
        Command::Approve { decision, comment } => client::approve(&endpoints, &decision, &comment).await,
        Command::Reject { decision, reason } => client::reject(&endpoints, &decision, &reason).await,
        Command::Pathways { command } => pathways::run(command, deployment.map(|d| d.catalog)),
        Command::Policy { command } => governance::policy(&endpoints, command).await,
        Command::Autonomy { command } => governance::autonomy(&endpoints, command).await,
        Command::Shadow { command } => shadow::run(&endpoints, command).await,
        Command::Keys { command } => governance::keys(command),
        Command::Config { command: ConfigCommand::Check { config } } => serve::check(config),
        Command::Db { command } => db::run(command).await,
        Command::Config { command: ConfigCommand::Migrate { config } } => {
            let file = config.clone().or_else(|| std::env::var_os("ARF_CONFIG").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(".arf/arf.toml"));
            let changes = setup::migrate(&file)?;
            if changes.is_empty() {
                say!("`{}` is up to date: nothing changed", file.display());
            }
            for change in &changes {
                say!("changed  {change}");
            }
            serve::check(Some(file))
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "arf", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit::run(&endpoints, command).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The connection flags (`--agent`, `--token`, ...) show in the help of the
    /// commands that call a service, and not in the others'; both still accept them.
    #[test]
    fn connection_flags_show_only_where_they_are_used() {
        let help = |path: &[&str]| {
            let mut command = super::command();
            let mut at = &mut command;
            for name in path {
                at = at.find_subcommand_mut(name).unwrap();
            }
            at.render_long_help().to_string()
        };
        for offline in [&["init"][..], &["certs", "init"], &["eval", "run"], &["config", "check"], &["db", "migrate"], &["completions"], &["up"]] {
            let text = help(offline);
            assert!(!text.contains("--governor") && !text.contains("--token-file") && !text.contains("--tls-dir"), "arf {offline:?}:\n{text}");
        }
        for online in [&["pending"][..], &["approve"], &["incident", "list"], &["status"], &["shadow", "report"]] {
            let text = help(online);
            assert!(text.contains("--governor") && text.contains("--token-file"), "arf {online:?}:\n{text}");
        }
        use clap::FromArgMatches;
        let matches = super::command().try_get_matches_from(["arf", "init", "--governor", "127.0.0.1:1"]).unwrap();
        assert_eq!(super::Cli::from_arg_matches(&matches).unwrap().governor.as_deref(), Some("127.0.0.1:1"), "still accepted");
    }

    /// Every command says what it does and every argument what it is, so `--help`
    /// answers without the README; the built-in `--help` and `--version` aside.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if command.is_hide_set() {
                return;
            }
            if command.get_about().is_none() && !path.is_empty() {
                missing.push(format!("`arf{path}` has no description"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_hide_set() || arg.is_global_set() && !path.is_empty() {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("`arf{path}` argument `{id}` has no help"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{} without help:\n{}", missing.len(), missing.join("\n"));
    }
}
