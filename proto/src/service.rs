//! The `main` of each service's own binary (`arf-audit`, `arf-agent`,
//! `arf-governor`, `arf-executor`): read its section of the deployment file, log
//! to stderr, serve until SIGINT or SIGTERM. Each binary links only its own
//! service's crate; `arf serve ROLE` does the same from the one `arf` binary.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for a configuration that does not load or validate (as `arf` uses).
pub const EXIT_CONFIG: u8 = 64;

/// Why a service stopped with an error.
#[derive(Debug)]
pub enum Failure {
    /// The configuration is wrong: exit 64.
    Config(String),
    /// It failed while starting or serving: exit 1.
    Run(Box<dyn std::error::Error + Send + Sync>),
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::Run(error.into())
    }
}

fn usage(role: &str) -> String {
    format!(
        "arf-{role} {}: the ARF {role} service on its own\n\n\
         usage: arf-{role} --config FILE [--log-format text|json]\n\n  \
         --config FILE  the deployment file (`arf init` writes one); its `[{role}]` section, \
         with the shared `[targets]` and `[[identities]]`. Also `ARF_CONFIG`.\n  \
         --log-format   `text` (the default) or `json`, one object per line. Also `ARF_LOG_FORMAT`.\n  \
         RUST_LOG       the log filter (default `info`)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The allocator every ARF binary runs on (`#[global_allocator]` in each `main`):
/// mimalloc, where glibc's malloc and free took a fifth of the CPU on the ingest
/// path, measured in `docs/performance.md`.
pub type Allocator = mimalloc::MiMalloc;

/// The allocator, for `static ALLOCATOR: Allocator = ALLOCATOR;`.
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;

/// Runs `serve` with the `role` section of the file named by `--config FILE`.
pub fn main<C, F, Fut>(role: &'static str, serve: F) -> ExitCode
where
    C: serde::de::DeserializeOwned,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut args = std::env::args().skip(1);
    let mut file = std::env::var_os("ARF_CONFIG").map(PathBuf::from);
    let mut format = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => file = args.next().map(PathBuf::from),
            "--log-format" => match args.next().as_deref().map(LogFormat::parse) {
                Some(Some(chosen)) => format = Some(chosen),
                _ => {
                    eprintln!("error: `--log-format` is `text` or `json`\n\n{}", usage(role));
                    return ExitCode::from(2);
                }
            },
            "--help" | "-h" => {
                println!("{}", usage(role));
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("arf-{role} {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unexpected argument `{other}`\n\n{}", usage(role));
                return ExitCode::from(2);
            }
        }
    }
    let Some(file) = file else {
        eprintln!("error: `--config FILE` is required\n\n{}", usage(role));
        return ExitCode::from(2);
    };
    let config: C = match arf_core::deployment::load_section(&file, role) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: bad configuration: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let telemetry = init_tracing(role, format);
    tracing::info!(config = %file.display(), "configuration read");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(serve(config));
    drop(telemetry);
    match served {
        Ok(()) => {
            tracing::info!(role, "stopped");
            ExitCode::SUCCESS
        }
        Err(Failure::Config(error)) => {
            eprintln!("error: bad configuration in `{}`: {error}", file.display());
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Run(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr: text, coloured only on a terminal (a log file or a pipe gets no
/// escape codes), or one JSON object per line with `ARF_LOG_FORMAT=json` for a log
/// pipeline (`--log-format json`, else `ARF_LOG_FORMAT=json`). `RUST_LOG` filters (default `info`). With `OTEL_EXPORTER_OTLP_ENDPOINT`
/// set, spans are exported over OTLP as well (`telemetry`); keep the returned
/// guard until the service stops, so the last spans are sent.
/// How a service writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

pub fn init_tracing(role: &str, format: Option<LogFormat>) -> crate::telemetry::Telemetry {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(format) => format == LogFormat::Json,
        None => std::env::var("ARF_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let fmt = if json { fmt.json().flatten_event(true).with_current_span(false).boxed() } else { fmt.with_ansi(std::io::stderr().is_terminal()).boxed() };
    let (otel, telemetry) = match crate::telemetry::layer(role) {
        Ok(layer) => layer,
        Err(error) => {
            eprintln!("warning: traces are not exported: {error}");
            (None, crate::telemetry::Telemetry::off())
        }
    };
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    tracing::info!(role, pid = std::process::id(), otlp = crate::telemetry::enabled(), "starting");
    telemetry
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| Failure::Run(format!("cannot listen on `{addr}`: {e}").into()))
}
