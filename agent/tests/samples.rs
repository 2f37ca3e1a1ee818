//! Every real payload in `../shared/samples/` parses into sensible signals, and its
//! format is detected from its content.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::PathBuf;

use arf_agent::ingest::{self, Defaults};
use arf_core::signal::{SignalKind, SignalStatus};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples")
}

struct Case {
    file: &'static str,
    format: &'static str,
    count: usize,
    kind: Option<SignalKind>,
    status: Option<SignalStatus>,
    /// A few words the first signal's title must contain.
    title: &'static str,
    severity: &'static str,
}

const fn case(file: &'static str, format: &'static str, count: usize, kind: Option<SignalKind>, status: Option<SignalStatus>, title: &'static str, severity: &'static str) -> Case {
    Case { file, format, count, kind, status, title, severity }
}

const FIRING: Option<SignalStatus> = Some(SignalStatus::Firing);
const RESOLVED: Option<SignalStatus> = Some(SignalStatus::Resolved);

fn cases() -> Vec<Case> {
    use SignalKind::*;
    vec![
        case("alertmanager/alertmanager-bot-firing.json", "alertmanager", 1, Some(Alert), FIRING, "Fire", "critical"),
        case("alertmanager/alertmanager-bot-resolved.json", "alertmanager", 1, Some(Alert), RESOLVED, "Fire", "critical"),
        case("alertmanager/alertmanager-exec-testdata-firing.json", "alertmanager", 1, Some(Alert), FIRING, "unnamed alert", "warning"),
        case("alertmanager/alertmanager-exec-testdata-resolved-empty.json", "alertmanager", 0, None, None, "", ""),
        case("alertmanager/msteams-prom-post-request-firing.json", "alertmanager", 1, Some(Alert), FIRING, "high_memory_load", "warning"),
        case("alertmanager/msteams-prom-post-request-2-alerts-firing.json", "alertmanager", 2, Some(Alert), FIRING, "high_memory_load", "warning"),
        case("trivy/alpine-310.json", "trivy", 4, Some(Finding), FIRING, "CVE-2019-1549 in libcrypto1.1", "warning"),
        case("asff/trivy-alpine-310.asff.json", "asff", 4, Some(Finding), FIRING, "CVE-2019-1549", "warning"),
        case("sarif/trivy-alpine-310.sarif.json", "sarif", 8, Some(Finding), FIRING, "CVE-2019-1549", "warning"),
        case("sarif/semgrep-test-output-format.sarif.json", "sarif", 1, Some(Finding), FIRING, "rules.eqeq-is-bad in targets/basic/stupid.py", "high"),
        case("sarif/codeql-action-valid-sarif.sarif.json", "sarif", 3, Some(Finding), FIRING, "js/unused-local-variable in main.js", "info"),
        case("falco/falco-read-sensitive-file-untrusted.json", "falco", 1, Some(Detection), FIRING, "Read sensitive file untrusted", "warning"),
        case("falco/falco-write-below-binary-dir.json", "falco", 1, Some(Detection), FIRING, "Write below binary dir", "high"),
        case("k8s-events/knative-docs-apiserversource-event-started.json", "kubernetes", 1, Some(Event), FIRING, "Started Pod/busybox", "info"),
        case("k8s-events/holmesgpt-kubectl-events-backoff.txt", "kubectl", 5, Some(Event), FIRING, "Scheduled Pod/giant-narwhal", "info"),
        case("k8s-events/holmesgpt-kubectl-describe-pod-failedscheduling.txt", "kubectl", 1, Some(Event), FIRING, "FailedScheduling Pod/user-profile-resources", "warning"),
        case("cloudevents/json-format-example-batch.json", "cloudevents", 2, Some(Event), FIRING, "com.example.someevent", "info"),
        case("cloudevents/json-format-example-binary-data_base64.json", "cloudevents", 1, Some(Event), FIRING, "com.example.someevent", "info"),
        case("cloudevents/json-format-example-json-object-data.json", "cloudevents", 1, Some(Event), FIRING, "com.example.someevent", "info"),
        case("cloudevents/json-format-example-json-string-data.json", "cloudevents", 1, Some(Event), FIRING, "com.example.someevent", "info"),
        case("cloudevents/json-format-example-xml-string-data.json", "cloudevents", 1, Some(Event), FIRING, "com.example.someevent", "info"),
        case("cdevents/change_merged.json", "cdevents", 1, Some(Change), FIRING, "change merged", "info"),
        case("cdevents/service_deployed.json", "cdevents", 1, Some(Change), FIRING, "service deployed", "info"),
        case("cdevents/incident_detected.json", "cdevents", 1, Some(Alert), FIRING, "incident detected", "warning"),
        case("cdevents/incident_reported.json", "cdevents", 1, Some(Alert), FIRING, "incident reported", "warning"),
        case("cdevents/incident_resolved.json", "cdevents", 1, Some(Alert), RESOLVED, "incident resolved", "warning"),
    ]
}

#[test]
fn every_sample_parses_into_sensible_signals() {
    let dir = samples();
    let mut seen = std::collections::BTreeSet::new();
    for case in cases() {
        let body = std::fs::read(dir.join(case.file)).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        seen.insert(case.file.to_owned());
        let signals = ingest::parse(case.format, &body, &Defaults::at(1_000)).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert_eq!(signals.len(), case.count, "{}", case.file);
        let detected = ingest::detect(&body);
        let expected_detection = if case.format == "cdevents" { "cloudevents" } else { case.format };
        assert_eq!(detected, Some(expected_detection), "{}: format detected from content", case.file);
        let Some(first) = signals.first() else { continue };
        assert!(first.title.contains(case.title), "{}: title `{}` should contain `{}`", case.file, first.title, case.title);
        if let Some(kind) = case.kind {
            assert_eq!(first.kind, kind, "{}", case.file);
        }
        if let Some(status) = case.status {
            assert_eq!(first.status, status, "{}", case.file);
        }
        if !case.severity.is_empty() {
            assert_eq!(first.severity, case.severity, "{}", case.file);
        }
        for signal in &signals {
            assert!(signal.id.starts_with("sig-") && !signal.fingerprint.is_empty(), "{}: ids and fingerprints are set", case.file);
            assert!(!signal.service.is_empty() && !signal.environment.is_empty(), "{}", case.file);
        }
    }
    // Every sample in the directory is covered by a case.
    for format in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        for file in std::fs::read_dir(format.path()).unwrap().filter_map(Result::ok) {
            let relative = format!("{}/{}", format.file_name().to_string_lossy(), file.file_name().to_string_lossy());
            assert!(seen.contains(&relative), "no case for sample `{relative}`");
        }
    }
}

#[test]
fn specific_fields_are_read_right() {
    let dir = samples();
    let trivy = ingest::parse("trivy", &std::fs::read(dir.join("trivy/alpine-310.json")).unwrap(), &Defaults::at(0)).unwrap();
    assert_eq!(trivy[0].labels["fixed_version"], "1.1.1d-r0");
    assert_eq!(trivy[0].labels["package"], "libcrypto1.1");

    let backoff = ingest::parse("kubectl", &std::fs::read(dir.join("k8s-events/holmesgpt-kubectl-events-backoff.txt")).unwrap(), &Defaults::at(0)).unwrap();
    let warning = backoff.iter().find(|s| s.severity == "warning").unwrap();
    assert_eq!(warning.labels["reason"], "BackOff");
    assert_eq!(warning.annotations["count"], "256");
    assert_eq!(warning.service, "giant-narwhal");

    let falco = ingest::parse("falco", &std::fs::read(dir.join("falco/falco-read-sensitive-file-untrusted.json")).unwrap(), &Defaults::at(0)).unwrap();
    assert_eq!(falco[0].labels["fd_name"], "/etc/shadow");

    let attributed = Defaults { now_ms: 0, service: "billing".into(), environment: "production".into() };
    let asff = ingest::parse("asff", &std::fs::read(dir.join("asff/trivy-alpine-310.asff.json")).unwrap(), &attributed).unwrap();
    assert_eq!((asff[0].service.as_str(), asff[0].environment.as_str()), ("billing", "production"));

    let detected = ingest::parse("cdevents", &std::fs::read(dir.join("cdevents/incident_detected.json")).unwrap(), &Defaults::at(0)).unwrap();
    let resolved = ingest::parse("cdevents", &std::fs::read(dir.join("cdevents/incident_resolved.json")).unwrap(), &Defaults::at(0)).unwrap();
    assert_eq!(detected[0].fingerprint, resolved[0].fingerprint, "a resolution finds the incident it resolves");
}

#[test]
fn malformed_or_unknown_input_names_what_is_wrong() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("trivy", br#"{"SchemaVersion":1}"#, "`SchemaVersion`"),
        ("trivy", br#"{"SchemaVersion":2,"Results":[{"Vulnerabilities":[{"PkgName":"x"}]}]}"#, "`Results[0].Vulnerabilities[0].VulnerabilityID`"),
        ("sarif", br#"{"version":"2.0.0","runs":[]}"#, "`version`"),
        ("sarif", br#"{"version":"2.1.0","runs":[{"results":[{"ruleId":"x"}]}]}"#, "`runs[0].results[0].message.text`"),
        ("asff", br#"{"Findings":[{"Id":"x"}]}"#, "`Findings[0].Title`"),
        ("falco", br#"{"rule":"x"}"#, "`$.output`"),
        ("kubernetes", br#"{"kind":"Pod"}"#, "`kind`"),
        ("cloudevents", br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#, "`$.specversion`"),
        ("cloudevents", br#"{"specversion":"1.0","source":"s","type":"t"}"#, "`$.id`"),
        ("kubectl", b"nothing useful here", "no `kubectl events` table"),
        ("smoke-signals", b"{}", "unknown signal format `smoke-signals`"),
        ("trivy", b"{not json", "not valid JSON"),
    ];
    for (format, body, expected) in cases {
        let error = ingest::parse(format, body, &Defaults::at(0)).unwrap_err().to_string();
        assert!(error.contains(expected), "{format}: `{error}` should mention {expected}");
    }
}
