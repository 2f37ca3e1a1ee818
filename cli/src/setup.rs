//! The on-disk layout of a deployment: the generated configuration, secrets,
//! keys and the bundled examples, and loading each role's configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use toml::{Table, Value};

use arf_core::target::Inventory;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/examples.rs"));
}

/// Writer identities of the audit log, one per process that appends.
pub const WRITERS: [&str; 3] = ["agent", "governor", "executor"];

/// The record kinds each writer may append.
pub const WRITER_KINDS: [(&str, &[&str]); 3] = [
    ("agent", &["signal", "incident", "snapshot", "investigation", "diagnosis"]),
    ("governor", &["decision", "approval"]),
    ("executor", &["execution_started", "execution_finished", "verification", "rollback", "outcome"]),
];

/// The identities a generated deployment knows (`[[identities]]`, read by the
/// agent, governor and executor): the processes that call each other, the people,
/// and one signal source for webhooks. Name, role.
pub const IDENTITIES: [(&str, &str); 7] = [
    ("agent", "agent"),
    ("governor", "governor"),
    ("alice", "oncall"),
    ("bob", "oncall"),
    ("sam", "security"),
    ("admin", "admin"),
    ("alertmanager", "source"),
];

/// Who may read the audit log besides its writers: the people, and an `auditor`
/// whose token reads the log and nothing else.
pub const AUDIT_READERS: [&str; 5] = ["alice", "bob", "sam", "admin", "auditor"];

/// Paths under one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data directory `{}`", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        Ok(Self { data_dir })
    }

    /// Where `arf up --store` writes the configurations of its replicas.
    pub fn replicas_dir(&self) -> PathBuf {
        self.data_dir.join("replicas")
    }

    pub fn config_file(&self) -> PathBuf {
        self.data_dir.join("arf.toml")
    }

    pub fn examples(&self) -> PathBuf {
        self.data_dir.join("config")
    }

    pub fn writer_token(&self, writer: &str) -> PathBuf {
        self.data_dir.join("secrets").join(format!("audit-{writer}.token"))
    }

    /// The bearer token of a governor identity.
    pub fn identity_token(&self, name: &str) -> PathBuf {
        self.data_dir.join("secrets").join(format!("{name}.token"))
    }

    pub fn signing_key(&self) -> PathBuf {
        self.data_dir.join("keys").join("governor.key")
    }

    /// The key the audit log signs its checkpoints with; governor and executor pin its `.pub`.
    pub fn checkpoint_key(&self) -> PathBuf {
        self.data_dir.join("keys").join("audit-checkpoint.key")
    }

    pub fn logs(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The CA and the certificates for mutual TLS (`arf certs init`).
    pub fn certs(&self) -> PathBuf {
        self.data_dir.join("certs")
    }

    /// The certificate files of `name` (a service's role, or `client`).
    pub fn tls(&self, name: &str) -> arf_core::tls::TlsFiles {
        arf_core::tls::TlsFiles::in_dir(&self.certs(), name)
    }

    /// The CLI's client certificate here, for the demo and the evaluation harness.
    pub fn client_tls(&self) -> Result<std::sync::Arc<arf_proto::tls::ClientTls>> {
        Ok(arf_proto::tls::ClientTls::load(&self.tls("client"))?)
    }

}

/// An HTTPS client for the agent's webhook port, trusting the deployment's CA
/// (what Alertmanager's `tls_config.ca_file` does).
pub fn webhook_client(layout: &Layout) -> Result<reqwest::Client> {
    let ca = std::fs::read(layout.tls("client").ca_file).context("the deployment's CA certificate")?;
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .build()?)
}

/// Where each service listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub audit: SocketAddr,
    pub agent: SocketAddr,
    pub webhook: SocketAddr,
    pub governor: SocketAddr,
    pub executor: SocketAddr,
    /// Each service's metrics and health endpoint: audit, agent, governor, executor
    /// (none for the demo and the evaluation harness, which do not need them).
    pub metrics: Option<[SocketAddr; 4]>,
}

impl Ports {
    /// Ports the system has free now, on loopback: for the demo and the evaluation
    /// harness, which run beside whatever else listens. No metrics endpoints: every
    /// port picked this way can be taken by someone else before the service binds
    /// it, so they pick no more than they use.
    pub fn free() -> Result<Self> {
        let free = || -> Result<SocketAddr> { Ok(arf_core::net::free_loopback_port()?) };
        Ok(Self { audit: free()?, agent: free()?, webhook: free()?, governor: free()?, executor: free()?, metrics: None })
    }
}

impl Ports {
    /// The default layout moved to start at `base`: audit `base`, agent `base + 1`,
    /// governor `base + 2`, executor `base + 3`, metrics `base + 10` to `base + 13`,
    /// the webhook `base + 80` (the defaults are base 7400).
    pub fn from_base(base: u16) -> Result<Self> {
        let at = |offset: u16| -> Result<SocketAddr> {
            let port = base.checked_add(offset).filter(|&p| p > 0).with_context(|| format!("`--port-base {base}`: port {base} + {offset} is past 65535; the ports run from the base to the base + 80"))?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        };
        Ok(Self {
            audit: at(0)?,
            agent: at(1)?,
            governor: at(2)?,
            executor: at(3)?,
            webhook: at(80)?,
            metrics: Some([at(10)?, at(11)?, at(12)?, at(13)?]),
        })
    }
}

/// Moves the deployment in `file` to `ports`, keeping everything else in it (and
/// each address's host): the services' listen addresses, the addresses they
/// reach each other at, and the metrics endpoints that are configured.
pub fn set_ports(file: &Path, ports: &Ports) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut document: toml_edit::DocumentMut = text.parse().with_context(|| format!("`{}` is not valid TOML", file.display()))?;
    let metrics = ports.metrics.map(|m| m.map(|a| a.port()));
    let fields: [(&str, &str, Option<u16>); 14] = [
        ("audit", "listen", Some(ports.audit.port())),
        ("audit", "metrics_listen", metrics.map(|m| m[0])),
        ("agent", "listen", Some(ports.agent.port())),
        ("agent", "webhook_listen", Some(ports.webhook.port())),
        ("agent", "audit_addr", Some(ports.audit.port())),
        ("agent", "governor_addr", Some(ports.governor.port())),
        ("agent", "metrics_listen", metrics.map(|m| m[1])),
        ("governor", "listen", Some(ports.governor.port())),
        ("governor", "audit_addr", Some(ports.audit.port())),
        ("governor", "executor_addr", Some(ports.executor.port())),
        ("governor", "metrics_listen", metrics.map(|m| m[2])),
        ("executor", "listen", Some(ports.executor.port())),
        ("executor", "audit_addr", Some(ports.audit.port())),
        ("executor", "metrics_listen", metrics.map(|m| m[3])),
    ];
    for (section, key, port) in fields {
        let Some(port) = port else { continue };
        // Only what the file has: a metrics endpoint left out stays out.
        let Some(item) = document.get_mut(section).and_then(|s| s.get_mut(key)) else { continue };
        let Some(current) = item.as_str() else { bail!("`{section}.{key}` in `{}` is not an address", file.display()) };
        let host = current.rsplit_once(':').map_or(current, |(host, _)| host).to_owned();
        *item = toml_edit::value(format!("{host}:{port}"));
    }
    std::fs::write(file, document.to_string()).with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(())
}

impl Default for Ports {
    fn default() -> Self {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            audit: at(7400),
            agent: at(7401),
            webhook: at(7480),
            governor: at(7402),
            executor: at(7403),
            metrics: Some([at(7410), at(7411), at(7412), at(7413)]),
        }
    }
}

/// Writes the bundled examples under `layout.examples()`, leaving files a user already has alone.
pub fn materialize_examples(layout: &Layout) -> Result<()> {
    for (relative, contents) in embedded::EXAMPLES {
        let path = layout.examples().join(relative);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}

/// Creates the tokens and the signing key that do not exist yet (all mode 0600).
pub fn ensure_secrets(layout: &Layout) -> Result<()> {
    for writer in WRITERS {
        arf_core::keys::load_or_generate_token(&layout.writer_token(writer))?;
    }
    for (name, _) in IDENTITIES {
        arf_core::keys::load_or_generate_token(&layout.identity_token(name))?;
    }
    for name in AUDIT_READERS {
        arf_core::keys::load_or_generate_token(&layout.identity_token(name))?;
    }
    arf_core::keys::load_or_generate(&layout.signing_key())?;
    arf_core::keys::load_or_generate(&layout.checkpoint_key())?;
    crate::certs::init(&layout.certs(), &[])?;
    Ok(())
}

fn path(p: PathBuf) -> Value {
    Value::String(p.display().to_string())
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Which reasoner a generated configuration uses.
#[derive(Debug, Clone, Default)]
pub enum Reasoning {
    /// Answers written in advance (`examples/scripted/`).
    #[default]
    Scripted,
    /// The deterministic runbook rules (`examples/runbooks/`).
    Rules,
    /// A live OpenAI-compatible endpoint, falling back to the runbook rules when it is down.
    Openai { base_url: String, model: String, api_key_env: Option<String> },
}

impl Reasoning {
    /// `scripted` or `rules`, by name.
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "scripted" => Ok(Self::Scripted),
            "rules" => Ok(Self::Rules),
            other => anyhow::bail!("unknown reasoner `{other}`; expected `scripted` or `rules`"),
        }
    }
}

/// The configuration `arf up` writes at first start.
pub fn generate_config(layout: &Layout, ports: Ports, targets: &Inventory, reasoning: &Reasoning) -> Result<String> {
    let examples = layout.examples();
    let mut audit = Table::new();
    audit.insert("listen".into(), string(ports.audit.to_string()));
    audit.insert("data_dir".into(), path(layout.data_dir.join("audit")));
    let writers: Table = WRITERS.iter().map(|w| ((*w).to_owned(), path(layout.writer_token(w)))).collect();
    audit.insert("writers".into(), Value::Table(writers));
    let readers: Table = AUDIT_READERS.iter().map(|r| ((*r).to_owned(), path(layout.identity_token(r)))).collect();
    audit.insert("readers".into(), Value::Table(readers));
    // Each process appends only its own kinds of record: a compromised agent cannot
    // forge a decision, and nothing but the executor can claim an execution started.
    let kinds: Table = WRITER_KINDS
        .iter()
        .map(|(writer, kinds)| {
            let list: toml::value::Array = kinds.iter().map(|k| string((*k).to_owned())).collect();
            ((*writer).to_owned(), Value::Array(list))
        })
        .collect();
    audit.insert("writer_kinds".into(), Value::Table(kinds));
    audit.insert("checkpoint_key".into(), path(layout.checkpoint_key()));

    let mut agent = Table::new();
    agent.insert("listen".into(), string(ports.agent.to_string()));
    agent.insert("webhook_listen".into(), string(ports.webhook.to_string()));
    agent.insert("audit_addr".into(), string(ports.audit.to_string()));
    agent.insert("audit_token_file".into(), path(layout.writer_token("agent")));
    agent.insert("governor_addr".into(), string(ports.governor.to_string()));
    agent.insert("governor_token_file".into(), path(layout.identity_token("agent")));
    agent.insert("catalog_dir".into(), path(examples.join("pathways")));
    match reasoning {
        Reasoning::Scripted => {
            agent.insert("reasoner".into(), string("scripted"));
        }
        Reasoning::Rules => {
            agent.insert("reasoner".into(), string("rules"));
        }
        Reasoning::Openai { base_url, model, api_key_env } => {
            agent.insert("reasoner".into(), string("openai"));
            let mut openai = Table::new();
            openai.insert("base_url".into(), string(base_url.clone()));
            openai.insert("model".into(), string(model.clone()));
            if let Some(name) = api_key_env {
                openai.insert("api_key_env".into(), string(name.clone()));
            }
            openai.insert("on_unavailable".into(), string("rules"));
            agent.insert("openai".into(), Value::Table(openai));
        }
    }
    agent.insert("scripted_dir".into(), path(examples.join("scripted")));
    agent.insert("runbooks_dir".into(), path(examples.join("runbooks")));
    // Read-only tools the model may call before it answers (the `openai` reasoner, or
    // scripted answers that investigate); `allow` limits them per environment.
    let mut investigation = Table::new();
    investigation.insert("tools_dir".into(), path(examples.join("tools")));
    agent.insert("investigation".into(), Value::Table(investigation));
    // Restarts start from a state snapshot the log vouches for, and read only the log after it.
    agent.insert("state_dir".into(), path(layout.data_dir.join("agent")));

    let mut governor = Table::new();
    governor.insert("listen".into(), string(ports.governor.to_string()));
    governor.insert("data_dir".into(), path(layout.data_dir.join("governor")));
    governor.insert("audit_addr".into(), string(ports.audit.to_string()));
    governor.insert("audit_token_file".into(), path(layout.writer_token("governor")));
    governor.insert("executor_addr".into(), string(ports.executor.to_string()));
    governor.insert("executor_token_file".into(), path(layout.identity_token("governor")));
    governor.insert("policies_dir".into(), path(examples.join("policies")));
    governor.insert("catalog_dir".into(), path(examples.join("pathways")));
    governor.insert("signing_key_file".into(), path(layout.signing_key()));
    governor.insert("audit_checkpoint_key".into(), path(arf_core::keys::public_path(&layout.checkpoint_key())));
    let identities: Vec<Value> = IDENTITIES
        .iter()
        .map(|(name, role)| {
            let mut t = Table::new();
            t.insert("name".into(), string(*name));
            t.insert("role".into(), string(*role));
            t.insert("token_file".into(), path(layout.identity_token(name)));
            Value::Table(t)
        })
        .collect();

    let mut executor = Table::new();
    executor.insert("listen".into(), string(ports.executor.to_string()));
    executor.insert("data_dir".into(), path(layout.data_dir.join("executor")));
    executor.insert("audit_addr".into(), string(ports.audit.to_string()));
    executor.insert("audit_token_file".into(), path(layout.writer_token("executor")));
    executor.insert("catalog_dir".into(), path(examples.join("pathways")));
    executor.insert("audit_checkpoint_key".into(), path(arf_core::keys::public_path(&layout.checkpoint_key())));
    executor.insert(
        "trusted_keys".into(),
        Value::Array(vec![path(arf_core::keys::public_path(&layout.signing_key()))]),
    );

    // Mutual TLS between the services, each with its own certificate (`arf certs init`),
    // and each its metrics and health endpoint.
    let sections = [(&mut audit, "audit"), (&mut agent, "agent"), (&mut governor, "governor"), (&mut executor, "executor")];
    for (i, (section, role)) in sections.into_iter().enumerate() {
        if let Some(metrics) = ports.metrics {
            section.insert("metrics_listen".into(), string(metrics[i].to_string()));
        }
        let files = layout.tls(role);
        let mut mtls = Table::new();
        mtls.insert("ca_file".into(), path(files.ca_file));
        mtls.insert("cert_file".into(), path(files.cert_file));
        mtls.insert("key_file".into(), path(files.key_file));
        if let Some(crl_file) = files.crl_file {
            mtls.insert("crl_file".into(), path(crl_file));
        }
        section.insert("mtls".into(), Value::Table(mtls));
    }
    let mut root = Table::new();
    root.insert("audit".into(), Value::Table(audit));
    root.insert("agent".into(), Value::Table(agent));
    root.insert("governor".into(), Value::Table(governor));
    root.insert("executor".into(), Value::Table(executor));
    root.insert("identities".into(), Value::Array(identities));
    let targets_empty = targets.is_empty();
    let targets = Value::try_from(targets).context("cannot encode the target inventory")?;
    root.insert("targets".into(), targets);
    let mut body = toml::to_string_pretty(&root).context("cannot encode the configuration")?;
    if targets_empty {
        // `[targets]` is the file's last table: the example goes under it.
        body.push_str(TARGETS_EXAMPLE);
    }
    Ok(format!(
        "# ARF configuration, written by `arf` at first start; edit freely.\n\
         # Each section configures one process; `[targets]` is the reviewed target\n\
         # inventory, and `[[identities]]` who may call the services and as what,\n\
         # both read by the agent, governor and executor (`arf token create` adds one).\n\n{body}"
    ))
}

/// What a new configuration says under its empty `[targets]`: the inventory's
/// format, by example. Nothing acts until a target is described here.
pub const TARGETS_EXAMPLE: &str = r#"
# Nothing can act until the inventory says what there is to act on. One table per
# target; its name is what policies, approvals and the log show. For example:
#
# [targets.checkout-production]
# service = "checkout"             # as its alerts name it (label `service`, `app`, `app_kubernetes_io_name`, `job` or `namespace`)
# environment = "production"       # as its alerts name it (label `env`, `environment`, `stage` or `cluster`)
# kind = "service"                 # matched against each pathway's `target_kind` (default `service`)
# tier = "critical"                # critical, standard (default) or best_effort: weighs in the risk score
# security_sensitive = false       # identity, secrets or network exposure: a person approves
# depends_on = ["checkout-db-production"]   # targets an incident of `checkout` may also touch (a person approves)
#
# [targets.checkout-production.facts]   # what pathways read as {{target.NAME}}
# url = "https://checkout.internal"     # restart_service, revert_config_commit
# repo = "/srv/gitops/checkout"         # revert_config_commit, pin_dependency, scale_deployment
# kube_context = "prod"                 # rollback_deployment, isolate_workload
# namespace = "shop"
# prometheus = "http://prometheus.monitoring:9090"   # verification probes
#
# [targets.checkout-db-production]
# service = "checkout-db"
# environment = "production"
# kind = "database"
"#;

/// The whole configuration file, with each role's section.
pub struct Deployment {
    pub audit: arf_audit::Config,
    pub agent: arf_agent::Config,
    pub governor: arf_governor::Config,
    pub executor: arf_executor::Config,
}

/// Reads a configuration file. Unknown keys are errors, named with their section.
pub fn load(file: &Path) -> Result<Deployment> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read configuration `{}`", file.display()))?;
    let root = arf_core::deployment::parse(&text, file).map_err(anyhow::Error::msg)?;
    Ok(Deployment { audit: part(&root, "audit")?, agent: part(&root, "agent")?, governor: part(&root, "governor")?, executor: part(&root, "executor")? })
}

fn part<T: serde::de::DeserializeOwned>(root: &Table, name: &str) -> Result<T> {
    arf_core::deployment::section(root, name).map_err(anyhow::Error::msg)
}

/// The processes of a local cluster on PostgreSQL (`arf up --store`): from the
/// deployment `file`, a configuration for each of `replicas` audit front-ends,
/// governors, executors and agents (the first of each on the deployment's ports,
/// the others on free loopback ports, each with its own name and data), every
/// role's shared state in `store`, and every client given every replica's
/// address. `file` itself is left as it is; the configurations go to
/// `replicas_dir`.
pub fn replicated(file: &Path, layout: &Layout, store: &arf_pg::Settings, replicas: usize) -> Result<Vec<crate::supervisor::Planned>> {
    use crate::Role;
    use crate::supervisor::Planned;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read configuration `{}`", file.display()))?;
    let mut root: Table = toml::from_str(&text).with_context(|| format!("`{}`", file.display()))?;
    let deployment = load(file)?;
    let store = Value::try_from(store).context("the database settings")?;
    // The deployment's own ports (every `*listen` of every section, metrics too) are
    // not bound yet when replicas' ports are picked: never hand one of them out.
    let taken: std::collections::BTreeSet<u16> = root
        .values()
        .filter_map(Value::as_table)
        .flat_map(|table| table.iter().filter(|(k, _)| k.ends_with("listen")).filter_map(|(_, v)| v.as_str()))
        .filter_map(|addr| addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port()))
        .collect();
    let free = || -> Result<std::net::SocketAddr> {
        for _ in 0..64 {
            let addr = arf_core::net::free_loopback_port().context("no free loopback port for a replica")?;
            if !taken.contains(&addr.port()) {
                return Ok(addr);
            }
        }
        bail!("no free loopback port for a replica outside the deployment's own")
    };
    let ports = |first: std::net::SocketAddr| -> Result<Vec<std::net::SocketAddr>> { std::iter::once(Ok(first)).chain((1..replicas).map(|_| free())).collect() };
    let audits = ports(deployment.audit.listen)?;
    let governors = ports(deployment.governor.listen)?;
    let executors = ports(deployment.executor.listen)?;
    let agents = ports(deployment.agent.listen)?;
    let webhooks = ports(deployment.agent.webhook_listen)?;
    let list = |addrs: &[std::net::SocketAddr]| Value::String(addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    let mut section = |name: &str| -> Result<Table> {
        match root.remove(name) {
            Some(Value::Table(table)) => Ok(table),
            _ => bail!("`{}` has no [{name}] section", file.display()),
        }
    };
    let mut audit = section("audit")?;
    let mut governor = section("governor")?;
    let mut executor = section("executor")?;
    let mut agent = section("agent")?;
    audit.insert("postgres".into(), store.clone());
    for (table, role) in [(&mut governor, "governor"), (&mut executor, "executor"), (&mut agent, "agent")] {
        table.insert("postgres".into(), store.clone());
        table.insert("audit_addr".into(), list(&audits));
        table.insert("replica".into(), Value::String(format!("{role}-1")));
    }
    governor.insert("executor_addr".into(), list(&executors));
    agent.insert("governor_addr".into(), list(&governors));

    let dir = layout.replicas_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let base = [("audit", audit), ("governor", governor), ("executor", executor), ("agent", agent)];
    // Replica `i` of `role`: its own ports (metrics too), name and data (the first
    // replica keeps the deployment's); every other section as shared.
    let write = |role: &str, i: usize| -> Result<PathBuf> {
        let mut whole = root.clone();
        for (name, table) in &base {
            whole.insert((*name).into(), Value::Table(table.clone()));
        }
        if i > 1
            && let Some(Value::Table(own)) = whole.get_mut(role)
        {
            let at = |addrs: &[std::net::SocketAddr]| Value::String(addrs[i - 1].to_string());
            // Its own metrics port, when the deployment serves metrics.
            if own.contains_key("metrics_listen") {
                own.insert("metrics_listen".into(), Value::String(free()?.to_string()));
            }
            if role != "audit" {
                own.insert("replica".into(), Value::String(format!("{role}-{i}")));
            }
            let own_dir = |key: &str, own: &mut Table| {
                if own.contains_key(key) {
                    own.insert(key.into(), path(layout.data_dir.join(format!("{role}-{i}")).join(key)));
                }
            };
            match role {
                "audit" => drop(own.insert("listen".into(), at(&audits))),
                "governor" => {
                    own.insert("listen".into(), at(&governors));
                    own.insert("data_dir".into(), path(layout.data_dir.join(format!("{role}-{i}"))));
                }
                "executor" => {
                    own.insert("listen".into(), at(&executors));
                    own.insert("data_dir".into(), path(layout.data_dir.join(format!("{role}-{i}"))));
                }
                _ => {
                    own.insert("listen".into(), at(&agents));
                    own.insert("webhook_listen".into(), at(&webhooks));
                    own_dir("state_dir", own);
                }
            }
        }
        let name = if i == 1 && role == "audit" { "arf".to_owned() } else { format!("{role}-{i}") };
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&whole)?).with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(path)
    };
    let mut plan = Vec::new();
    for (role, name) in [(Role::Audit, "audit"), (Role::Governor, "governor"), (Role::Executor, "executor"), (Role::Agent, "agent")] {
        for i in 1..=replicas {
            plan.push(Planned { role, name: format!("{name}-{i}"), config: write(name, i)? });
        }
    }
    Ok(plan)
}

/// Prepares a data directory: examples, secrets, and a configuration if there is none.
/// Returns the configuration file to use.
pub fn prepare(layout: &Layout, ports: Ports, targets: &Inventory, reasoning: &Reasoning) -> Result<PathBuf> {
    materialize_examples(layout)?;
    ensure_secrets(layout)?;
    let file = layout.config_file();
    if !file.exists() {
        std::fs::write(&file, generate_config(layout, ports, targets, reasoning)?)
            .with_context(|| format!("cannot write `{}`", file.display()))?;
    }
    Ok(file)
}

/// An empty inventory, for `arf up` before anyone has described their targets.
pub fn no_targets() -> Inventory {
    BTreeMap::new()
}

/// Brings a deployment file written by an older `arf` up to what this one
/// writes, keeping every setting it has: mutual TLS where a section has neither
/// it nor `insecure_loopback_only` (certificates made with `arf certs init` if
/// missing), the CA's revocation list where a section trusts the deployment's own
/// CA without one, record kinds added since to each writer's `audit.writer_kinds`,
/// `[agent.investigation]` and `agent.state_dir`. The old file is kept beside it as
/// `arf.toml.before-migrate`. Returns what changed (nothing: the file is untouched).
pub fn migrate(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut old: Table = toml::from_str(&text).with_context(|| format!("`{}` is not TOML", file.display()))?;
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let layout = Layout::new(dir)?;
    materialize_examples(&layout)?;
    ensure_secrets(&layout)?;
    let fresh: Table = toml::from_str(&generate_config(&layout, Ports::default(), &no_targets(), &Reasoning::Rules)?)?;
    let mut changes = Vec::new();
    for role in ["audit", "agent", "governor", "executor"] {
        let (Some(section), Some(new)) = (old.get_mut(role).and_then(Value::as_table_mut), fresh.get(role).and_then(Value::as_table)) else { continue };
        let plain = section.get("insecure_loopback_only").and_then(Value::as_bool).unwrap_or(false);
        match (section.get_mut("mtls").and_then(Value::as_table_mut), new.get("mtls")) {
            (None, Some(mtls)) if !plain => {
                section.insert("mtls".into(), mtls.clone());
                changes.push(format!("[{role}.mtls]: mutual TLS with the deployment's certificates (`{}`)", layout.certs().display()));
            }
            (Some(mtls), Some(Value::Table(new_mtls))) if !mtls.contains_key("crl_file") && mtls.get("ca_file") == new_mtls.get("ca_file") => {
                if let Some(crl) = new_mtls.get("crl_file") {
                    mtls.insert("crl_file".into(), crl.clone());
                    changes.push(format!("[{role}.mtls] crl_file: the deployment CA's revocation list"));
                }
            }
            _ => {}
        }
    }
    let fresh_kinds = fresh.get("audit").and_then(|a| a.get("writer_kinds")).and_then(Value::as_table).cloned().unwrap_or_default();
    if let Some(kinds) = old.get_mut("audit").and_then(|a| a.get_mut("writer_kinds")).and_then(Value::as_table_mut) {
        for (writer, wanted) in &fresh_kinds {
            let Some(have) = kinds.get_mut(writer).and_then(Value::as_array_mut) else { continue };
            for kind in wanted.as_array().into_iter().flatten() {
                if !have.contains(kind) {
                    have.push(kind.clone());
                    changes.push(format!("audit.writer_kinds.{writer}: + {kind}"));
                }
            }
        }
    }
    if let (Some(agent), Some(investigation)) = (old.get_mut("agent").and_then(Value::as_table_mut), fresh.get("agent").and_then(|a| a.get("investigation")))
        && !agent.contains_key("investigation")
    {
        agent.insert("investigation".into(), investigation.clone());
        changes.push("[agent.investigation]: the bundled read-only investigation tools".to_owned());
    }
    if let (Some(agent), Some(state_dir)) = (old.get_mut("agent").and_then(Value::as_table_mut), fresh.get("agent").and_then(|a| a.get("state_dir")))
        && !agent.contains_key("state_dir")
    {
        agent.insert("state_dir".into(), state_dir.clone());
        changes.push(format!("agent.state_dir = {state_dir}: restarts start from a state snapshot the log vouches for"));
    }
    if changes.is_empty() {
        return Ok(changes);
    }
    let backup = file.with_extension("toml.before-migrate");
    std::fs::write(&backup, &text).with_context(|| format!("cannot keep the old file as `{}`", backup.display()))?;
    let body = toml::to_string_pretty(&old).context("cannot encode the configuration")?;
    std::fs::write(file, format!("# ARF configuration, migrated by `arf config migrate` (the file before: `{}`).\n\n{body}", backup.display()))
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(changes)
}
