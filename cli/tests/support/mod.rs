//! What the CLI's process-level tests share: a deployment made by `arf init` on
//! free loopback ports, whose services run as separate `arf serve` processes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test support fails loudly")]

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use arf_audit::{AuditClient, Record};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub fn free_port() -> SocketAddr {
    arf_core::net::free_loopback_port().unwrap()
}

/// A port base (`arf init --port-base`) whose ports (0–3, 10–13, 80) are free now.
pub fn free_port_base() -> u16 {
    (0..200)
        .map(|_| free_port().port() / 100 * 100)
        .find(|&base| [0, 1, 2, 3, 10, 11, 12, 13, 80].iter().all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok()))
        .expect("no free port base")
}

pub struct Plane {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    ports: [(&'static str, SocketAddr); 4],
    pub webhook: SocketAddr,
    children: Vec<(&'static str, Child)>,
    /// The network namespace each role runs in, if not this one.
    namespaces: Vec<(&'static str, String)>,
    own_binaries: bool,
    /// Environment variables every service started from now on gets.
    pub env: Vec<(String, String)>,
}

/// Where the services listen, what their certificates name, and which network
/// namespace each runs in (none: this one).
pub struct Placement {
    pub ports: [(&'static str, SocketAddr); 4],
    pub webhook: SocketAddr,
    pub hosts: Vec<String>,
    pub namespaces: Vec<(&'static str, String)>,
    /// Run each service's own binary (`arf-agent --config F`) instead of `arf serve agent --config F`.
    pub own_binaries: bool,
}

const SCRIPT: &str = r#"
[[response]]
name = "wedged-worker"
match = { alertname = "WorkerWedged" }
completion = '''
{"hypotheses": [{
  "root_cause": "The worker process is wedged: its queue stopped draining with no recent change.",
  "evidence": ["{{ signals[0].id }}"],
  "confidence": 0.95,
  "uncertainty": "No change in the window; a restart is the usual fix.",
  "expected_impact": "The queue drains within a minute of the restart.",
  "remediations": [{"pathway": "restart_service", "target": "{{ target }}", "parameters": {"reason": "wedged worker"}}]
}]}
'''
"#;

/// Another scripted response like the plane's own, for alerts named `alertname`:
/// restart the worker. A test writes it into the plane's scripted directory.
pub fn restart_script(alertname: &str) -> String {
    SCRIPT.replace("wedged-worker", &format!("{}-worker", alertname.to_lowercase())).replace("\"WorkerWedged\"", &format!("\"{alertname}\""))
}

impl Plane {
    /// `arf init`, then the configuration pointed at free loopback ports, the
    /// counting target and a scripted model that proposes restarting it.
    pub async fn prepare(target_url: &str) -> Self {
        let ports = [("audit", free_port()), ("governor", free_port()), ("executor", free_port()), ("agent", free_port())];
        Self::prepare_at(target_url, Placement { ports, webhook: free_port(), hosts: Vec::new(), namespaces: Vec::new(), own_binaries: false }).await
    }

    /// [`Plane::prepare`] with the services where `placement` puts them.
    pub async fn prepare_at(target_url: &str, placement: Placement) -> Self {
        let Placement { ports, webhook, hosts, namespaces, own_binaries } = placement;
        let dir = tempfile::tempdir().unwrap();
        if !hosts.is_empty() {
            // The certificates first, naming the addresses the services are reached at.
            let mut certs = std::process::Command::new(env!("CARGO_BIN_EXE_arf"));
            certs.args(["certs", "init", "--data-dir"]).arg(dir.path());
            for host in &hosts {
                certs.args(["--host", host]);
            }
            let made = certs.output().unwrap();
            assert!(made.status.success(), "arf certs init: {}", String::from_utf8_lossy(&made.stderr));
        }
        let init = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).arg("init").arg("--data-dir").arg(dir.path()).output().unwrap();
        assert!(init.status.success(), "arf init: {}", String::from_utf8_lossy(&init.stderr));
        let config = dir.path().join("arf.toml");
        assert!(config.exists(), "arf init writes {}", config.display());
        let scripted = dir.path().join("crash-scripted");
        std::fs::create_dir_all(&scripted).unwrap();
        std::fs::write(scripted.join("crash.toml"), SCRIPT).unwrap();

        let addr = |role: &str| ports.iter().find(|(r, _)| *r == role).unwrap().1.to_string();
        let mut root: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        let mut set = |section: &str, key: &str, value: toml::Value| {
            root.get_mut(section).unwrap().as_table_mut().unwrap().insert(key.into(), value);
        };
        set("audit", "listen", addr("audit").into());
        set("agent", "listen", addr("agent").into());
        set("agent", "webhook_listen", webhook.to_string().into());
        set("agent", "audit_addr", addr("audit").into());
        set("agent", "governor_addr", addr("governor").into());
        set("agent", "reasoner", "scripted".into());
        set("agent", "scripted_dir", scripted.display().to_string().into());
        set("governor", "listen", addr("governor").into());
        set("governor", "audit_addr", addr("audit").into());
        set("governor", "executor_addr", addr("executor").into());
        set("executor", "listen", addr("executor").into());
        set("executor", "audit_addr", addr("audit").into());
        // No metrics endpoints unless a test asks (`enable_metrics`): each port picked
        // free here may be taken by another test before the service binds it.
        for section in ["audit", "agent", "governor", "executor"] {
            root.get_mut(section).unwrap().as_table_mut().unwrap().remove("metrics_listen");
        }
        let target: toml::Table = toml::from_str(&format!(
            "service = \"worker\"\nenvironment = \"staging\"\nkind = \"service\"\n[facts]\nurl = \"{target_url}\"\n"
        ))
        .unwrap();
        root.insert("targets".into(), toml::Value::Table([("worker-staging".to_owned(), toml::Value::Table(target))].into_iter().collect()));
        std::fs::write(&config, toml::to_string(&root).unwrap()).unwrap();
        Self { dir, config, ports, webhook, children: Vec::new(), namespaces, own_binaries, env: Vec::new() }
    }

    pub fn addr(&self, role: &str) -> SocketAddr {
        self.ports.iter().find(|(r, _)| *r == role).unwrap().1
    }

    /// Starts `role`, with the crash point `crash_at` armed if given, and waits for its health check.
    pub async fn start(&mut self, role: &'static str, crash_at: Option<&str>) {
        self.spawn(role, crash_at);
        self.wait_serving(role, Duration::from_millis(100)).await;
    }

    /// Waits until `role` answers its health check SERVING, polling every `every`.
    pub async fn wait_serving(&self, role: &str, every: Duration) {
        let addr = self.addr(role);
        let dial = self.dial(role);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !serving_tls(addr, &dial).await {
            assert!(Instant::now() < deadline, "{role} did not become healthy; log:\n{}", self.log(role));
            tokio::time::sleep(every).await;
        }
    }

    /// The process id of `role`, while it runs.
    pub fn pid(&self, role: &str) -> Option<u32> {
        self.children.iter().find(|(r, _)| *r == role).and_then(|(_, child)| child.id())
    }

    /// Starts `role` without waiting for it.
    pub fn spawn(&mut self, role: &'static str, crash_at: Option<&str>) {
        let logs = self.dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(logs.join(format!("{role}.log"))).unwrap();
        let program = if self.own_binaries {
            let own = std::path::Path::new(env!("CARGO_BIN_EXE_arf")).with_file_name(format!("arf-{role}"));
            assert!(own.exists(), "{} is built by `cargo test --workspace`", own.display());
            own
        } else {
            PathBuf::from(env!("CARGO_BIN_EXE_arf"))
        };
        let mut command = match self.namespaces.iter().find(|(r, _)| *r == role) {
            Some((_, namespace)) => {
                // `ip netns exec` enters the namespace and then execs the program: the child is the service itself.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace.as_str()]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        if !self.own_binaries {
            command.args(["serve", role]);
        }
        command
            .arg("--config")
            .arg(&self.config)
            .env_remove(arf_core::crash::ENV)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(point) = crash_at {
            command.env(arf_core::crash::ENV, point);
        }
        let child = command.spawn().unwrap();
        self.children.retain(|(r, _)| *r != role);
        self.children.push((role, child));
    }

    /// Gives each service a metrics endpoint on a free port (before the services start).
    pub fn enable_metrics(&self) {
        let mut root: toml::Table = toml::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        for section in ["audit", "agent", "governor", "executor"] {
            root.get_mut(section).unwrap().as_table_mut().unwrap().insert("metrics_listen".into(), free_port().to_string().into());
        }
        std::fs::write(&self.config, toml::to_string(&root).unwrap()).unwrap();
    }

    /// Stops `role` (SIGKILL) and waits until it has exited, so its ports are free.
    pub async fn stop(&mut self, role: &str) {
        if let Some((_, child)) = self.children.iter_mut().find(|(r, _)| *r == role) {
            let _ = child.kill().await;
        }
        self.children.retain(|(r, _)| *r != role);
    }

    pub async fn start_all(&mut self, crash_role: &str, crash_at: &str) {
        for role in ["audit", "governor", "executor", "agent"] {
            self.start(role, (role == crash_role).then_some(crash_at)).await;
        }
    }

    /// Waits for `role` to die at its crash point, and checks it was a SIGKILL.
    pub async fn wait_killed(&mut self, role: &str) {
        let child = &mut self.children.iter_mut().find(|(r, _)| *r == role).unwrap().1;
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("the crash point was never reached").unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{role} died by SIGKILL at its crash point: {status:?}");
    }

    pub fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{role}.log"))).unwrap_or_default()
    }

    /// The token `arf init` wrote for identity `name`.
    pub fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("secrets").join(format!("{name}.token"))).unwrap().trim().to_owned()
    }

    /// The deployment's certificates (`arf init` made them).
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// How a client with the CLI's certificate (`client.pem`) reaches `role`.
    pub fn dial(&self, role: &str) -> arf_proto::tls::Dial {
        client_dial(&self.certs(), role)
    }

    /// A channel to `role` over mutual TLS, with the CLI's certificate.
    pub fn channel(&self, role: &str) -> tonic::transport::Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr(role))).unwrap();
        self.dial(role).channel(endpoint)
    }

    /// An HTTPS client for the webhook port that trusts the deployment's CA.
    pub fn webhook_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.certs().join("ca.pem")).unwrap()).unwrap();
        reqwest::Client::builder().add_root_certificate(ca).build().unwrap()
    }

    pub fn auditor(&self) -> AuditClient {
        let token = std::fs::read_to_string(self.dir.path().join("secrets").join("auditor.token")).unwrap();
        AuditClient::connect_dial(&self.addr("audit").to_string(), Some(token.trim().to_owned()), &self.dial("audit")).unwrap()
    }

    /// A running deployment whose worker is declared in staging and in production
    /// (where a person must approve), at a target that counts its restarts; for the
    /// console's tests. Returns the plane and the count.
    pub async fn with_production_worker() -> (Self, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let (target, restarts) = counting_target("127.0.0.1").await;
        let mut plane = Self::prepare(&target).await;
        plane.add_worker("worker-production", "production", &target);
        for role in ["audit", "governor", "executor", "agent"] {
            plane.start(role, None).await;
        }
        (plane, restarts)
    }

    /// Declares the worker in `environment` too, as target `name` at `url`
    /// (before the services start).
    pub fn add_worker(&self, name: &str, environment: &str, url: &str) {
        let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        let target: toml::Table = toml::from_str(&format!("service = \"worker\"\nenvironment = \"{environment}\"\nkind = \"service\"\n[facts]\nurl = \"{url}\"\n")).unwrap();
        config["targets"].as_table_mut().unwrap().insert(name.into(), toml::Value::Table(target));
        std::fs::write(&self.config, toml::to_string(&config).unwrap()).unwrap();
    }

    /// Posts a firing Alertmanager alert named `alertname` about the worker in `environment`.
    pub async fn fire_about(&self, alertname: &str, environment: &str) {
        let labels = json!({"alertname": alertname, "service": "worker", "env": environment, "severity": "critical"});
        let body = json!({
            "version": "4", "status": "firing", "receiver": "arf", "groupKey": "{}", "groupLabels": {}, "commonLabels": labels,
            "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "worker queue stalled"}, "startsAt": "2026-11-26T03:00:00Z"}]
        });
        let url = format!("https://{}/v1/webhooks/alertmanager", self.webhook);
        let response = self.webhook_client().post(&url).bearer_auth(self.token("alertmanager")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Starts `arf console` for this deployment on a free loopback port; returns
    /// the process (killed on drop) and its base URL.
    pub fn console(&self) -> (Child, String) {
        let listen = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_arf"))
            .args(["console", "--listen", &listen.to_string(), "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        (child, format!("http://{listen}"))
    }

    /// Posts a firing Alertmanager alert and returns its incident.
    pub async fn fire(&self) -> String {
        let labels = json!({"alertname": "WorkerWedged", "service": "worker", "env": "staging", "severity": "critical"});
        let body = json!({
            "version": "4", "groupKey": "{}:{alertname=\"WorkerWedged\"}", "status": "firing", "receiver": "arf",
            "groupLabels": {"alertname": "WorkerWedged"}, "commonLabels": labels, "commonAnnotations": {"summary": "worker queue stalled"},
            "externalURL": "http://alertmanager.example:9093",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "worker queue stalled"},
                        "startsAt": arf_core::time::format_ms(arf_core::time::now_ms() - 60_000), "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus.example:9090/graph"}]
        });
        let url = format!("https://{}/v1/webhooks/alertmanager", self.webhook);
        let response = self.webhook_client().post(&url).bearer_auth(self.token("alertmanager")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let accepted: Value = response.json().await.unwrap();
        accepted["accepted"][0]["incident_id"].as_str().unwrap().to_owned()
    }

    /// Follows the incident's trail until `done` holds, within `limit`.
    pub async fn trail_until(&self, incident: &str, limit: Duration, what: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        let audit = self.auditor();
        let deadline = Instant::now() + limit;
        loop {
            let trail = audit.read_incident(incident).await.unwrap_or_default();
            if done(&trail) {
                return trail;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {limit:?}; trail:\n{}\ngovernor log:\n{}\nagent log:\n{}",
                summary(&trail),
                self.log("governor"),
                self.log("agent")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A TLS client that trusts the deployment's CA (in `certs`) and presents no
/// certificate of its own.
pub fn trusting_ca_only(certs: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// How a client with the certificate `client.pem` in `certs` reaches `role`.
pub fn client_dial(certs: &std::path::Path, role: &str) -> arf_proto::tls::Dial {
    let tls = arf_proto::tls::ClientTls::load(&arf_core::tls::TlsFiles::in_dir(certs, "client")).unwrap();
    arf_proto::tls::Dial::to(Some(&tls), arf_core::identity::Role::parse(role).unwrap())
}

/// Whether the service at `addr` answers its health check SERVING, reached as `dial` says.
pub async fn serving_tls(addr: SocketAddr, dial: &arf_proto::tls::Dial) -> bool {
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().timeout(Duration::from_secs(2));
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    HealthClient::new(dial.channel(endpoint)).check(request).await.map(|r| r.into_inner().status == 1).unwrap_or(false)
}


/// One line per record: seq, writer, kind and state or event.
pub fn summary(trail: &[Record]) -> String {
    trail.iter().map(|r| format!("  {} {} {:?} {}\n", r.seq, r.writer, r.kind, r.payload.get("state").or(r.payload.get("event")).unwrap_or(&Value::Null))).collect()
}

/// A target that counts the restarts it is asked for (the one true count of
/// executions), listening on `host`.
pub async fn counting_target(host: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicU64, Ordering};
    let restarts = std::sync::Arc::new(AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&restarts);
    let app = axum::Router::new().route("/health", get(|| async { "ok" })).route(
        "/-/restart",
        post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "restarted" }
        }),
    );
    let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, restarts)
}
