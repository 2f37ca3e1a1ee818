//! A PostgreSQL server for tests. `ARF_TEST_POSTGRES` (a superuser's URL, as
//! `.ci/run` exports for the server it starts) names a running one; otherwise each
//! [`TestServer`] starts its own from the installed binaries (`pg_config --bindir`,
//! or `ARF_PG_BIN`), in a temporary directory, on a loopback port, as `nobody`
//! when the tests run as root (PostgreSQL refuses to run as root), and stops it
//! when dropped. Each test takes a fresh database of its own ([`TestServer::database`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Settings;

/// TLS for a server of the test's own: it then takes TCP connections over TLS
/// only (plain text rejected), and asks clients for a certificate from
/// `client_ca_pem` when one is given; its administrator connects over a Unix socket.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

pub struct TestServer {
    admin: Settings,
    /// The port TCP clients reach it on, for a server reached by a Unix socket.
    port: Option<u16>,
    _own: Option<Own>,
}

struct Own {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Own {
    fn drop(&mut self) {
        // A fast shutdown: the server ends its sessions and stops.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("ARF_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL installed (/usr/lib/postgresql: {e}); install Debian's `postgresql` or set ARF_TEST_POSTGRES"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| "no PostgreSQL binaries under /usr/lib/postgresql".to_owned())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// `program` run as `nobody` when the tests run as root.
fn command(program: &Path, as_nobody: bool) -> Command {
    if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn dir_of(own: &Own) -> &Path {
    own.dir.path()
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl TestServer {
    pub async fn start() -> Result<Self, String> {
        Self::start_in(None).await
    }

    /// [`TestServer::start`], with a server of its own (if one is started) in a
    /// temporary directory under `parent` (a benchmark puts it on the disk it measures).
    pub async fn start_in(parent: Option<&Path>) -> Result<Self, String> {
        if let Ok(url) = std::env::var("ARF_TEST_POSTGRES") {
            return Ok(Self { admin: Settings::new(url), port: None, _own: None });
        }
        Self::own(parent, None).await
    }

    /// A server of the test's own, whatever `ARF_TEST_POSTGRES` says: for a test
    /// that stops it.
    pub async fn start_own() -> Result<Self, String> {
        Self::own(None, None).await
    }

    /// A server of the test's own that takes TCP connections over TLS only.
    pub async fn start_tls(tls: ServerTls) -> Result<Self, String> {
        Self::own(None, Some(tls)).await
    }

    async fn own(parent: Option<&Path>, tls: Option<ServerTls>) -> Result<Self, String> {
        let bin = bin_dir()?;
        let as_nobody = running_as_root();
        let mut builder = tempfile::Builder::new();
        builder.prefix("arf-pg-");
        let mut dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(|e| e.to_string())?;
        if as_nobody {
            let status = Command::new("chown").arg("65534:65534").arg(dir.path()).status().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("cannot hand the test database's directory to `nobody`".to_owned());
            }
        }
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), as_nobody)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut options: Vec<String> = vec!["listen_addresses=127.0.0.1".to_owned(), "unix_socket_directories=".to_owned()];
        if let Some(tls) = &tls {
            let write = |name: &str, text: &str| -> Result<String, String> {
                let path = data.join(name);
                std::fs::write(&path, text).map_err(|e| e.to_string())?;
                let owner = if as_nobody { "65534:65534" } else { "" };
                if !owner.is_empty() {
                    Command::new("chown").arg(owner).arg(&path).status().map_err(|e| e.to_string())?;
                }
                Command::new("chmod").arg("600").arg(&path).status().map_err(|e| e.to_string())?;
                Ok(path.display().to_string())
            };
            options = vec![
                "listen_addresses=127.0.0.1".to_owned(),
                format!("unix_socket_directories={}", dir.path().display()),
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", write("server.crt", &tls.cert_pem)?),
                format!("ssl_key_file={}", write("server.key", &tls.key_pem)?),
            ];
            let client_cert = match &tls.client_ca_pem {
                Some(ca) => {
                    options.push(format!("ssl_ca_file={}", write("client-ca.crt", ca)?));
                    " clientcert=verify-ca"
                }
                None => "",
            };
            let hba = format!("local all all trust\nhostssl all all 127.0.0.1/32 trust{client_cert}\nhostnossl all all 127.0.0.1/32 reject\n");
            write("pg_hba.conf", &hba)?;
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.path().join(format!("server-{port}.log"))).map_err(|e| e.to_string())?;
            let mut postgres = command(&bin.join("postgres"), as_nobody);
            postgres.arg("-D").arg(&data).args(["-p", &port.to_string()]);
            for option in &options {
                postgres.args(["-c", option]);
            }
            let child = postgres
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("postgres: {e}"))?;
            let mut own = Own { child, dir };
            let admin = match &tls {
                Some(_) => Settings::new(format!("host={} port={port} user=postgres dbname=postgres", dir_of(&own).display())),
                None => Settings::new(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if admin.connect().await.is_ok() {
                    return Ok(Self { admin, port: Some(port), _own: Some(own) });
                }
                if let Ok(Some(status)) = own.child.try_wait() {
                    last = format!("postgres exited with {status}: {}", std::fs::read_to_string(own.dir.path().join(format!("server-{port}.log"))).unwrap_or_default());
                    break;
                }
                if Instant::now() > deadline {
                    return Err("the test PostgreSQL did not accept connections within 30 s".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            dir = std::mem::replace(&mut own.dir, tempfile::tempdir().map_err(|e| e.to_string())?);
        }
        Err(last)
    }

    /// A new, empty database on the server, for one test.
    pub async fn database(&self) -> Result<Settings, String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        let name = format!("arf_test_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let client = self.admin.connect().await.map_err(|e| e.to_string())?;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(|e| e.to_string())?;
        let mut config = self.admin.config().map_err(|e| e.to_string())?;
        config.dbname(&name);
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let port = self.port.or_else(|| config.get_ports().first().copied()).unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_owned();
        Ok(Settings::new(format!("postgres://{user}@{host}:{port}/{name}")))
    }
}

/// A certificate authority for tests, and certificates it signs.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Result<Self, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).map_err(|e| e.to_string())?.pem();
        Ok(Self { issuer: rcgen::Issuer::new(params, key), pem })
    }

    /// A server certificate for `names` and its key, as PEM.
    pub fn server(&self, names: &[&str]) -> Result<(String, String), String> {
        self.leaf(names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate and its key, as PEM.
    pub fn client(&self) -> Result<(String, String), String> {
        self.leaf(&[], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> Result<(String, String), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("arf"));
        params.extended_key_usages = vec![usage];
        Ok((params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?.pem(), key.serialize_pem()))
    }
}

/// Waits until `member`'s lease in `table` (a `*_members` table) is renewed, then
/// makes it lapse in the database, as a replica paused past its lease finds it
/// when it resumes: its own clock still counts the lease live for the third of a
/// lease until its next renewal, and the database says otherwise.
pub async fn lapse_behind_its_back(client: &crate::Client, table: &str, member: &str) -> Result<(), String> {
    let select = format!("SELECT lease_until::text FROM {table} WHERE name = $1");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The lease as first seen (once the member joined), until it changes.
    let mut first = None;
    loop {
        let seen = client.query_opt(&select, &[&member]).await.map_err(|e| e.to_string())?.map(|r| r.get::<_, String>(0));
        match (&first, seen) {
            (None, Some(lease)) => first = Some(lease),
            (Some(first), Some(lease)) if lease != *first => break,
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!("`{member}` never renewed its lease"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lapse = format!("UPDATE {table} SET lease_until = now() - interval '1 hour' WHERE name = $1");
    client.execute(&lapse, &[&member]).await.map_err(|e| e.to_string())?;
    Ok(())
}
