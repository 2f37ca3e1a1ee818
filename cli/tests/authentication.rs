//! Authenticated everything, over real processes made by `arf init`: every gRPC
//! method that reflection lists on every port, and every webhook path, refuses a
//! call without credentials or with a token nobody issued; and each role may do
//! what it is for and nothing else.
//!
//! The methods are not listed here: they come from each server's reflection, so a
//! method added later is checked without anyone remembering to add it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use arf_proto::v1 as pb;

const SERVICES: [(&str, &str); 4] =
    [("audit", "arf.v1.AuditLog"), ("governor", "arf.v1.Governor"), ("executor", "arf.v1.Executor"), ("agent", "arf.v1.Agent")];

async fn reflect(client: &mut ServerReflectionClient<Channel>, request: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut answers = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    answers.message().await.unwrap().unwrap().message_response.unwrap()
}

/// Every method (`/package.Service/Method`) of every service the server's reflection lists.
async fn reflected_methods(channel: Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let MessageResponse::ListServicesResponse(list) = reflect(&mut client, MessageRequest::ListServices(String::new())).await else {
        panic!("reflection did not list services")
    };
    let mut methods = Vec::new();
    for service in list.service {
        let MessageResponse::FileDescriptorResponse(files) = reflect(&mut client, MessageRequest::FileContainingSymbol(service.name.clone())).await
        else {
            panic!("no descriptor for {}", service.name)
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for declared in &file.service {
                let full = format!("{}.{}", file.package(), declared.name());
                if full == service.name {
                    methods.extend(declared.method.iter().map(|m| format!("/{full}/{}", m.name())));
                }
            }
        }
    }
    methods.sort();
    methods.dedup();
    methods
}

/// The services reflection v1alpha lists (what grpcurl before 1.8.8 asks), sorted.
async fn v1alpha_services(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha as alpha;
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha did not list services")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

/// Calls `path` with an empty message and the given `authorization` value; returns the refusal.
async fn call(channel: Channel, path: &str, authorization: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let uri = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
    match grpc.unary::<(), (), _>(request, uri, tonic_prost::ProstCodec::default()).await {
        Ok(_) => panic!("{path} answered a call without valid credentials"),
        Err(status) => status,
    }
}

async fn started() -> support::Plane {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }
    plane
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_a_call_without_credentials() {
    let plane = started().await;
    let mut checked = std::collections::BTreeSet::new();
    for (role, service) in SERVICES {
        let channel = plane.channel(role);
        let methods = reflected_methods(channel.clone()).await;
        assert!(methods.iter().any(|m| m.starts_with(&format!("/{service}/"))), "{role} lists {service}: {methods:?}");
        let others: Vec<_> = methods.iter().filter(|m| m.starts_with("/arf.v1.") && !m.starts_with(&format!("/{service}/"))).collect();
        assert!(others.is_empty(), "{role}'s port lists only its own service, not {others:?}");
        assert_eq!(v1alpha_services(channel.clone()).await, [service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"], "{role}");
        for path in methods.iter().filter(|m| !arf_proto::auth::is_open(m)) {
            let refused = call(channel.clone(), path, None).await;
            assert_eq!(refused.code(), Code::Unauthenticated, "{role} {path}: {refused:?}");
            assert!(refused.message().contains("needs credentials"), "{role} {path}: {}", refused.message());
            let refused = call(channel.clone(), path, Some(&format!("Bearer {}", "0".repeat(64)))).await;
            assert_eq!(refused.code(), Code::Unauthenticated, "{role} {path}: {refused:?}");
            assert!(refused.message().contains("belongs to no identity"), "{role} {path}: {}", refused.message());
            let refused = call(channel.clone(), path, Some("Basic YWxpY2U6eA==")).await;
            assert_eq!(refused.code(), Code::Unauthenticated, "{role} {path}: {refused:?}");
            checked.insert(path.clone());
        }
        // Health stays open to any client of the deployment: it carries no data.
        assert!(support::serving_tls(plane.addr(role), &plane.dial(role)).await, "{role} answers a health check without a token");
    }
    // The four services have 28 methods; reflection must not list fewer.
    assert!(checked.len() >= 28, "only {} methods were checked: {checked:?}", checked.len());

    let http = plane.webhook_client();
    let paths = arf_agent::ingest::FORMATS.iter().map(|f| format!("/v1/webhooks/{f}")).chain(["/v1/webhooks/no-such-format".to_owned(), "/".to_owned()]);
    for path in paths {
        let url = format!("https://{}{path}", plane.webhook);
        for authorization in [None, Some(format!("Bearer {}", "0".repeat(64))), Some("Basic YWxlcnRtYW5hZ2VyOng=".to_owned())] {
            let mut request = http.post(&url).body("{}");
            if let Some(value) = &authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "POST {path} with {authorization:?}");
            assert!(response.headers().contains_key("www-authenticate"), "POST {path}");
        }
        assert_eq!(http.get(&url).send().await.unwrap().status(), 401, "GET {path}");
    }
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    arf_proto::server::with_bearer(tonic::Request::new(message), token)
}

fn alert(alertname: &str) -> serde_json::Value {
    serde_json::json!({"version": "4", "status": "firing", "receiver": "arf", "groupKey": "{}", "alerts": [{"status": "firing",
        "labels": {"alertname": alertname, "service": "worker", "env": "staging", "severity": "warning"},
        "annotations": {"summary": "queue slow"}, "startsAt": arf_core::time::format_ms(arf_core::time::now_ms())}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_it_is_for_and_nothing_else() {
    let mut plane = started().await;
    let (source, alice, admin) = (plane.token("alertmanager"), plane.token("alice"), plane.token("admin"));
    let webhook = format!("https://{}/v1/webhooks/alertmanager", plane.webhook);
    let http = plane.webhook_client();

    // A signal source sends, with a bearer token or basic auth as Alertmanager's `http_config` does.
    let sent = http.post(&webhook).bearer_auth(&source).json(&alert("QueueSlow")).send().await.unwrap();
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let sent = http.post(&webhook).basic_auth("alertmanager", Some(&source)).json(&alert("QueueSlow")).send().await.unwrap();
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    // …and does nothing else: it reads no incident, decision or execution.
    let mut agent = pb::agent_client::AgentClient::new(plane.channel("agent"));
    let refused = agent.list_incidents(bearer(pb::ListIncidentsRequest {}, &source)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("`alertmanager` (source) may not read incidents"), "{}", refused.message());
    let mut governor = pb::governor_client::GovernorClient::new(plane.channel("governor"));
    let refused = governor.list_pending(bearer(pb::ListPendingRequest {}, &source)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mut executor = pb::executor_client::ExecutorClient::new(plane.channel("executor"));
    let lookup = || pb::GetExecutionRequest { decision_id: "dec-none".into() };
    assert_eq!(executor.get_execution(bearer(lookup(), &source)).await.unwrap_err().code(), Code::PermissionDenied);

    // A person reads incidents and executions, sends signals, and cannot make the executor act.
    let incidents = agent.list_incidents(bearer(pb::ListIncidentsRequest {}, &alice)).await.unwrap().into_inner().incidents;
    assert_eq!(incidents.len(), 1, "one incident from the two alerts");
    assert_eq!(executor.get_execution(bearer(lookup(), &alice)).await.unwrap_err().code(), Code::NotFound, "alice may look executions up");
    let refused = executor.execute(bearer(pb::SignedDecision::default(), &alice)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("may not ask the executor to act"), "{}", refused.message());
    // Only the agent proposes.
    let refused = governor.evaluate(bearer(pb::EvaluateRequest::default(), &admin)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The kill switch belongs to whoever is on call; switching autonomy back on is an admin's.
    let off = |enabled: bool| pb::SetAutonomyRequest { enabled, reason: "ARF restarted the wrong thing twice".into() };
    let status = governor.set_autonomy(bearer(off(false), &alice)).await.unwrap().into_inner();
    assert!(!status.enabled, "alice (oncall) switched autonomy off");
    let refused = governor.set_autonomy(bearer(off(true), &alice)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let status = governor.set_autonomy(bearer(off(true), &admin)).await.unwrap().into_inner();
    assert!(status.enabled, "the admin switched it back on");
    let switches: Vec<_> = plane
        .auditor()
        .read_range(1, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.payload["event"] == "autonomy_switched")
        .map(|r| (r.payload["identity"].as_str().unwrap().to_owned(), r.payload["enabled"].as_bool().unwrap()))
        .collect();
    assert_eq!(switches, [("alice".to_owned(), false), ("admin".to_owned(), true)], "who switched, in the log");

    // `arf token create`: a new identity, printed once, stored hashed, usable after a restart.
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["token", "create", "carol", "--role", "oncall", "--config"])
        .arg(&plane.config)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let carol = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert_eq!(carol.len(), 64, "the token, alone on stdout");
    let config = std::fs::read_to_string(&plane.config).unwrap();
    assert!(!config.contains(&carol) && config.contains(&arf_core::keys::token_hash(&carol)), "only the hash is kept");
    plane.stop("agent").await;
    plane.start("agent", None).await;
    let mut agent = pb::agent_client::AgentClient::new(plane.channel("agent"));
    assert_eq!(agent.list_incidents(bearer(pb::ListIncidentsRequest {}, &carol)).await.unwrap().into_inner().incidents.len(), 1);
}

/// The error chain of a failed call, flattened: tonic puts the TLS alert in the sources.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

async fn health(plane: &support::Plane, role: &str, dial: &arf_proto::tls::Dial) -> Result<(), String> {
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", plane.addr(role))).unwrap().timeout(std::time::Duration::from_secs(5));
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    HealthClient::new(dial.channel(endpoint)).check(request).await.map(|_| ()).map_err(|status| chain(&status))
}

/// A TLS client that trusts the deployment's CA but presents no certificate: the
/// handshake's answer, or the first read after it, carries the server's alert.
async fn without_certificate(plane: &support::Plane, role: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = support::trusting_ca_only(&plane.certs());
    let tcp = tokio::net::TcpStream::connect(plane.addr(role)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(arf_core::tls::service_name(arf_core::identity::Role::parse(role).unwrap())).unwrap();
    let mut stream = match tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await {
        Ok(stream) => stream,
        Err(error) => return error.to_string(),
    };
    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer).await {
        Ok(n) => panic!("{role} answered {n} bytes to a client without a certificate"),
        Err(error) => error.to_string(),
    }
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_refuses_a_peer_the_deployment_did_not_certify() {
    let plane = started().await;
    // Another deployment's CA and certificates, made the same way.
    let other = tempfile::tempdir().unwrap();
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).args(["certs", "init", "--dir"]).arg(other.path()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let foreign = arf_core::tls::TlsFiles {
        ca_file: plane.certs().join("ca.pem"),
        cert_file: other.path().join("client.pem"),
        key_file: other.path().join("client.key"),
        crl_file: None,
    };
    let foreign = arf_proto::tls::ClientTls::load(&foreign).unwrap();
    for role in ["audit", "governor", "executor", "agent"] {
        let identity = arf_core::identity::Role::parse(role).unwrap();
        // Plain text to a TLS port goes nowhere.
        let plain = health(&plane, role, &arf_proto::tls::Dial::Plain).await.unwrap_err();
        assert!(!plain.is_empty(), "{role}");
        // No client certificate: the server's alert says so.
        let refused = without_certificate(&plane, role).await;
        assert!(refused.contains("CertificateRequired"), "{role}: {refused}");
        // A certificate from another CA: under TLS 1.3 the client learns only that the
        // connection closed; the server's log (checked below) names the reason.
        assert!(health(&plane, role, &arf_proto::tls::Dial::to(Some(&foreign), identity)).await.is_err(), "{role}");
        // A server that is not the service the client meant to reach.
        let wrong = if role == "audit" { arf_core::identity::Role::Agent } else { arf_core::identity::Role::Audit };
        let refused = health(&plane, role, &plane_dial(&plane, wrong)).await.unwrap_err();
        assert!(refused.contains("NotValidForName") || refused.contains("not valid for"), "{role}: {refused}");
        // The server names what it refused in its log (written once the handshake task ends).
        let reasons = ["peer sent no certificates", "invalid peer certificate"];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !reasons.iter().all(|r| plane.log(role).contains(r)) {
            assert!(std::time::Instant::now() < deadline, "{role} log lacks {reasons:?}:\n{}", plane.log(role));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // The console's certificate is for serving browsers only: no service takes it from a client.
    let mut console_files = arf_core::tls::TlsFiles::in_dir(&plane.certs(), "console");
    console_files.crl_file = None;
    let as_console = arf_proto::tls::ClientTls::load(&console_files).unwrap();
    for role in ["audit", "governor", "executor", "agent"] {
        let identity = arf_core::identity::Role::parse(role).unwrap();
        assert!(health(&plane, role, &arf_proto::tls::Dial::to(Some(&as_console), identity)).await.is_err(), "{role} took the console's certificate");
    }

    // A certificate of the wrong role: the agent's own certificate asking the executor to act.
    let agent_files = arf_core::tls::TlsFiles::in_dir(&plane.certs(), "agent");
    let as_agent = arf_proto::tls::ClientTls::load(&agent_files).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", plane.addr("executor"))).unwrap();
    let channel = arf_proto::tls::Dial::to(Some(&as_agent), arf_core::identity::Role::Executor).channel(endpoint);
    let refused = pb::executor_client::ExecutorClient::new(channel).execute(pb::SignedDecision::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("`agent` (agent) may not ask the executor to act"), "{}", refused.message());

    // A service's token is worth nothing without its certificate.
    let mut governor = pb::governor_client::GovernorClient::new(plane.channel("governor"));
    let refused = governor.evaluate(bearer(pb::EvaluateRequest::default(), &plane.token("agent"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("is a service"), "{}", refused.message());
}

/// The CLI's certificate, but expecting `role` at the other end.
fn plane_dial(plane: &support::Plane, role: arf_core::identity::Role) -> arf_proto::tls::Dial {
    let tls = arf_proto::tls::ClientTls::load(&arf_core::tls::TlsFiles::in_dir(&plane.certs(), "client")).unwrap();
    arf_proto::tls::Dial::to(Some(&tls), role)
}

/// `arf certs revoke`, against running services: the CLI's certificate is refused
/// at every port within seconds, the connection a client already holds is closed,
/// the services still reach each other, and `arf certs renew` restores the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_every_port_until_renewed() {
    let plane = started().await;
    let roles = ["audit", "governor", "executor", "agent"];
    let arf = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).args(args).arg("--dir").arg(plane.certs()).output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    // A connection the CLI's certificate holds open to the governor, proved open.
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", plane.addr("governor"))).unwrap().timeout(std::time::Duration::from_secs(5));
    let mut held = HealthClient::new(plane_dial(&plane, arf_core::identity::Role::Governor).channel(endpoint));
    let check = || tonic_health::pb::HealthCheckRequest { service: String::new() };
    held.check(check()).await.unwrap();

    let (ok, out) = arf(&["certs", "revoke", "client"]);
    assert!(ok && out.contains("revoked client.pem (serial ") && out.contains("lists 1 certificate"), "{out}");
    let (ok, out) = arf(&["certs", "revoke", "nobody"]);
    assert!(!ok && out.contains("no certificate `nobody`"), "{out}");
    let (ok, out) = arf(&["certs", "revoke", "--serial", "zz"]);
    assert!(!ok && out.contains("not a serial number"), "{out}");

    // The held connection is closed (every service looks at its files every 2 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while held.check(check()).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the held connection survived the revocation");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for role in roles {
        let identity = arf_core::identity::Role::parse(role).unwrap();
        // Every server refuses the revoked certificate, and names the reason in its log.
        let refused = health(&plane, role, &plane_dial(&plane, identity)).await;
        assert!(refused.is_err(), "{role} still accepts the revoked certificate");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !plane.log(role).contains("Revoked") {
            assert!(std::time::Instant::now() < deadline, "{role} log does not name the revocation:\n{}", plane.log(role));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert!(plane.log("governor").contains("no longer trusted; connection closed"), "{}", plane.log("governor"));
    // The services' own certificates are untouched: the agent still reaches the governor.
    let as_agent = arf_proto::tls::ClientTls::load(&arf_core::tls::TlsFiles::in_dir(&plane.certs(), "agent")).unwrap();
    health(&plane, "governor", &arf_proto::tls::Dial::to(Some(&as_agent), arf_core::identity::Role::Governor)).await.unwrap();

    // A new certificate for the CLI, the old one's serial still listed.
    let (ok, out) = arf(&["certs", "renew", "client", "--revoke-old"]);
    assert!(ok && out.contains("client.pem") && out.contains("crl.pem"), "{out}");
    for role in roles {
        let identity = arf_core::identity::Role::parse(role).unwrap();
        health(&plane, role, &plane_dial(&plane, identity)).await.unwrap_or_else(|e| panic!("{role} refuses the renewed certificate: {e}"));
    }
}
