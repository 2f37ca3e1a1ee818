//! Running the services as separate child processes: `arf up`, and the demo.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::Role;
use crate::setup::{self, Layout};

/// A line on standard output that may go nowhere: `arf up` runs on when whoever
/// read its output has gone (`arf up | head`), where `println!` would panic.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// One running service.
pub struct Service {
    pub role: Role,
    /// Its name where a role has replicas (`audit-2`), else the role's.
    pub name: String,
    pub addr: SocketAddr,
    pub child: Child,
    /// How its health is checked: over mutual TLS with its own certificate when it has one.
    pub dial: arf_proto::tls::Dial,
    /// Where its output goes, when not to the terminal.
    pub log: Option<PathBuf>,
    /// Its configuration file and log format, to start it again.
    config: PathBuf,
    log_format: Option<crate::LogFormat>,
}

impl Service {
    /// The last lines of its log, to show why it stopped.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n");
        format!("; the end of its log ({}):\n{tail}", path.display())
    }
}

/// A process to start: its role, its name, and its configuration file.
pub struct Planned {
    pub role: Role,
    pub name: String,
    pub config: PathBuf,
}

/// The children, stopped (SIGTERM, then SIGKILL) when dropped or asked.
pub struct Supervisor {
    pub services: Vec<Service>,
}

impl Supervisor {
    /// Starts every role from `config_file`, logs to `logs` (or inherited when `None`),
    /// and waits until each answers its health check.
    pub async fn start(config_file: &Path, logs: Option<&Path>) -> Result<Self> {
        Self::start_with(config_file, logs, None).await
    }

    /// [`Supervisor::start`], each service writing its log in `log_format`.
    pub async fn start_with(config_file: &Path, logs: Option<&Path>, log_format: Option<crate::LogFormat>) -> Result<Self> {
        let plan = Role::ALL.into_iter().map(|role| Planned { role, name: role.as_str().to_owned(), config: config_file.to_owned() }).collect();
        Self::start_plan(plan, logs, log_format).await
    }

    /// Starts each planned process, in order, each from its own configuration file,
    /// waiting for each to answer its health check before the next.
    pub async fn start_plan(plan: Vec<Planned>, logs: Option<&Path>, log_format: Option<crate::LogFormat>) -> Result<Self> {
        // Every address is checked before anything starts: a service that cannot bind
        // would die after start-up, and a health check answered by whatever already
        // listens there (another ARF, say) would pass for it.
        for Planned { role, name, config } in &plan {
            let deployment = setup::load(config)?;
            let (what, addresses): (&str, Vec<Option<std::net::SocketAddr>>) = match role {
                Role::Audit => ("audit", vec![Some(deployment.audit.listen), deployment.audit.metrics_listen]),
                Role::Agent => ("agent", vec![Some(deployment.agent.listen), Some(deployment.agent.webhook_listen), deployment.agent.metrics_listen]),
                Role::Governor => ("governor", vec![Some(deployment.governor.listen), deployment.governor.metrics_listen]),
                Role::Executor => ("executor", vec![Some(deployment.executor.listen), deployment.executor.metrics_listen]),
            };
            for (i, addr) in addresses.into_iter().enumerate() {
                let Some(addr) = addr else { continue };
                let kind = match (role, i) {
                    (_, 0) => String::new(),
                    (Role::Agent, 1) => " webhook".to_owned(),
                    _ => " metrics".to_owned(),
                };
                let label = if name == what { what.to_owned() } else { name.clone() };
                if let Err(error) = std::net::TcpListener::bind(addr) {
                    bail!("the {label}{kind} address {addr} is not free ({error}): is ARF already running? Nothing was started");
                }
            }
        }
        let exe = std::env::current_exe().context("cannot find the `arf` executable")?;
        let mut supervisor = Self { services: Vec::new() };
        for Planned { role, name, config } in plan {
            let deployment = setup::load(&config)?;
            let (addr, mtls) = match role {
                Role::Audit => (deployment.audit.listen, &deployment.audit.mtls),
                Role::Agent => (deployment.agent.listen, &deployment.agent.mtls),
                Role::Governor => (deployment.governor.listen, &deployment.governor.mtls),
                Role::Executor => (deployment.executor.listen, &deployment.executor.mtls),
            };
            let tls = mtls.as_ref().map(arf_proto::tls::ClientTls::load).transpose()?;
            let dial = arf_proto::tls::Dial::to(tls.as_ref(), role.identity());
            let log = logs.map(|dir| dir.join(format!("{name}.log")));
            if let Some(path) = &log {
                std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
                std::fs::File::create(path)?;
            }
            let child = spawn(&exe, role, &config, log_format, log.as_deref()).with_context(|| format!("cannot start the {name} service"))?;
            supervisor.services.push(Service { role, name: name.clone(), addr, child, dial, log, config, log_format });
            // Each service waits for its own readiness before the next starts, so
            // the ones that depend on it find it up.
            let started = Instant::now();
            let service = supervisor.services.last_mut().context("no service")?;
            wait_healthy(service, Duration::from_secs(60)).await?;
            tracing::debug!(service = %name, elapsed_ms = started.elapsed().as_millis() as u64, "healthy");
        }
        Ok(supervisor)
    }

    /// Stops every child: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        for service in &self.services {
            if let Some(pid) = service.child.id() {
                terminate(pid);
            }
        }
        for service in &mut self.services {
            let waited = tokio::time::timeout(Duration::from_secs(5), service.child.wait()).await;
            if waited.is_err() {
                let _ = service.child.kill().await;
            }
        }
    }

    /// Starts the service `name` again, as it was started (its log appended to).
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the `arf` executable")?;
        let service = self.services.iter_mut().find(|s| s.name == name).with_context(|| format!("no service `{name}`"))?;
        service.child = spawn(&exe, service.role, &service.config, service.log_format, service.log.as_deref()).with_context(|| format!("cannot start the {name} service again"))?;
        Ok(())
    }

    /// Resolves when any child exits, with its name and status.
    pub async fn any_exit(&mut self) -> (String, std::io::Result<std::process::ExitStatus>) {
        let waits = self.services.iter_mut().map(|s| {
            let name = s.name.clone();
            Box::pin(async move { (name, s.child.wait().await) })
        });
        futures::future::select_all(waits).await.0
    }
}

/// `arf serve ROLE --config CONFIG`, its output appended to `log` (or inherited).
fn spawn(exe: &Path, role: Role, config: &Path, log_format: Option<crate::LogFormat>, log: Option<&Path>) -> Result<Child> {
    let mut command = Command::new(exe);
    command.arg("serve").arg(role.as_str()).arg("--config").arg(config).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(format) = log_format {
        command.arg("--log-format").arg(format.service().as_str());
    }
    if let Some(path) = log {
        let file = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
        command.stdout(file.try_clone()?).stderr(file);
    }
    Ok(command.spawn()?)
}

#[expect(unsafe_code, reason = "sending SIGTERM to our own child needs libc::kill")]
fn terminate(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; the pid is our own child's.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Polls the standard gRPC health check until it says SERVING, the child exits, or time runs out.
pub async fn wait_healthy(service: &mut Service, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = service.child.try_wait()? {
            bail!("the {} service exited during start-up ({status}){}", service.name, service.log_tail());
        }
        if health(service.addr, &service.dial).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the {} service did not become healthy on {} within {limit:?}", service.name, service.addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the service at `addr` answers the standard health check with SERVING.
pub async fn health(addr: impl std::fmt::Display, dial: &arf_proto::tls::Dial) -> bool {
    health_of(addr, dial, "").await
}

/// Whether `service` (`""`: the process) at `addr` answers the health check with SERVING.
pub async fn health_of(addr: impl std::fmt::Display, dial: &arf_proto::tls::Dial, service: &str) -> bool {
    use tonic_health::pb::health_client::HealthClient;
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else { return false };
    let channel = dial.channel(endpoint.connect_timeout(Duration::from_millis(500)).timeout(Duration::from_secs(2)));
    let mut client = HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
    matches!(
        client.check(request).await.map(|r| r.into_inner().status),
        Ok(status) if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

/// `arf up`: the four services in the foreground until Ctrl-C; with `store`, the
/// log and every role's shared state in that PostgreSQL database, migrated first,
/// with `replicas` processes of every role.
pub async fn up(
    config: Option<PathBuf>,
    data_dir: &Path,
    port_base: Option<u16>,
    log_format: Option<crate::LogFormat>,
    store: Option<arf_pg::Settings>,
    replicas: usize,
) -> Result<ExitCode> {
    let file = crate::serve::config_file_at(config, data_dir, port_base)?;
    if let Err(error) = setup::load(&file) {
        eprintln!("error: bad configuration: {error:#}");
        return Ok(ExitCode::from(crate::exit::CONFIG));
    }
    let layout = Layout::new(data_dir)?;
    let plan = match &store {
        None => Role::ALL.into_iter().map(|role| Planned { role, name: role.as_str().to_owned(), config: file.clone() }).collect(),
        Some(settings) => {
            let mut client = settings.connect().await?;
            for version in arf_pg::migrate(&mut client).await? {
                tell!("database: applied migration {version:04}");
            }
            arf_pg::check(&client).await?;
            setup::replicated(&file, &layout, settings, replicas.max(1))?
        }
    };
    let mut supervisor = Supervisor::start_plan(plan, None, log_format).await?;
    tell!("ARF is up (configuration `{}`):", file.display());
    if let Some(settings) = &store {
        tell!("  the log and every role's shared state in {} (configurations under `{}`)", settings.describe(), layout.replicas_dir().display());
    }
    for service in &supervisor.services {
        tell!("  {:<10} {}  pid {}", service.name, service.addr, service.child.id().unwrap_or(0));
    }
    tell!("Press Ctrl-C to stop.");
    let mut stopping = std::pin::pin!(crate::serve::shutdown_signal());
    // Restarts after a lost lease, bounded: a replica that keeps losing its lease
    // (a database that keeps failing) stops the cluster rather than loop.
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        tokio::select! {
            () = &mut stopping => {
                tell!("stopping");
                supervisor.stop().await;
                return Ok(ExitCode::SUCCESS);
            }
            (name, status) = supervisor.any_exit() => {
                // A replica that lost its lease exits 75 (EX_TEMPFAIL) to be started
                // again; it rejoins as any restarted replica does.
                restarts.retain(|at| at.elapsed() < Duration::from_secs(600));
                if status.as_ref().is_ok_and(|s| s.code() == Some(75)) && restarts.len() < 10 {
                    eprintln!("the {name} service lost its lease and exited (75); starting it again in a second");
                    restarts.push(Instant::now());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if supervisor.restart(&name).is_ok() {
                        continue;
                    }
                }
                eprintln!("error: the {name} service exited unexpectedly ({status:?}); stopping the others");
                supervisor.stop().await;
                return Ok(ExitCode::from(crate::exit::FAILURE));
            }
        }
    }
}
