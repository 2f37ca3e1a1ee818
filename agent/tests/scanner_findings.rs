//! Scanner findings that used to be merged or dropped (issue 15): two hits of one
//! Semgrep rule in one file stay two findings, and a `trivy config` report's failed
//! checks, secrets and licenses become findings, not `200 {"accepted": []}`.
//!
//! The payloads are written after the tools' documented output (Semgrep OSS's SARIF
//! with its placeholder fingerprint; Trivy's schema-2 JSON), not captured from a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use serde_json::json;

use arf_agent::ingest::{self, Defaults};

fn defaults() -> Defaults {
    Defaults { now_ms: 1, service: "api".into(), environment: "staging".into() }
}

#[test]
fn two_hits_of_one_semgrep_rule_in_one_file_are_two_findings() {
    let hit = |line: u64| {
        json!({"ruleId": "python.lang.security.audit.subprocess-shell-true", "level": "error",
               "message": {"text": "subprocess call with shell=True"},
               "fingerprints": {"matchBasedId/v1": "requires login"},
               "locations": [{"physicalLocation": {"artifactLocation": {"uri": "app/run.py"}, "region": {"startLine": line, "startColumn": 5}}}]})
    };
    let sarif = json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "Semgrep OSS"}}, "results": [hit(3), hit(9)]}]});
    let signals = ingest::parse("sarif", &serde_json::to_vec(&sarif).unwrap(), &defaults()).unwrap();
    assert_eq!(signals.len(), 2);
    assert_ne!(signals[0].fingerprint, signals[1].fingerprint, "the line tells them apart");
    assert_eq!(signals[1].labels["line"], "9");
    // The same hit reported again is the same finding.
    let again = ingest::parse("sarif", &serde_json::to_vec(&sarif).unwrap(), &defaults()).unwrap();
    assert_eq!(again[1].fingerprint, signals[1].fingerprint);
}

#[test]
fn a_trivy_config_report_becomes_findings() {
    let check = |id: &str, status: &str| {
        json!({"Type": "Terraform Security Check", "ID": id, "AVDID": id, "Title": "S3 Access block should block public ACL",
               "Description": "S3 buckets should block public ACLs", "Message": "No public access block so not blocking public acls",
               "Resolution": "Enable blocking any PUT calls with a public ACL specified", "Severity": "HIGH",
               "PrimaryURL": format!("https://avd.aquasec.com/misconfig/{}", id.to_lowercase()), "Status": status,
               "CauseMetadata": {"Resource": "aws_s3_bucket.logs", "Provider": "AWS", "Service": "s3", "StartLine": 1, "EndLine": 4}})
    };
    let report = json!({
        "SchemaVersion": 2, "ArtifactName": "infra", "ArtifactType": "filesystem",
        "Results": [{
            "Target": "main.tf", "Class": "config", "Type": "terraform",
            "MisconfSummary": {"Successes": 1, "Failures": 3},
            "Misconfigurations": [check("AVD-AWS-0086", "FAIL"), check("AVD-AWS-0087", "FAIL"), check("AVD-AWS-0093", "FAIL"), check("AVD-AWS-0088", "PASS")]
        }, {
            "Target": "config/prod.env", "Class": "secret",
            "Secrets": [{"RuleID": "aws-access-key-id", "Category": "AWS", "Severity": "CRITICAL", "Title": "AWS Access Key ID",
                         "StartLine": 3, "EndLine": 3, "Match": "AWS_ACCESS_KEY_ID=AKIAZ7QK3MW9XR2TLPVB"}]
        }, {
            "Target": "OS Packages", "Class": "license",
            "Licenses": [{"Severity": "HIGH", "Category": "restricted", "PkgName": "libgpl", "Name": "GPL-3.0", "Confidence": 1}]
        }]
    });
    let signals = ingest::parse("trivy", &serde_json::to_vec(&report).unwrap(), &defaults()).unwrap();
    let ids: Vec<&str> = signals.iter().map(|s| s.labels["check_id"].as_str()).collect();
    assert_eq!(ids, ["AVD-AWS-0086", "AVD-AWS-0087", "AVD-AWS-0093", "aws-access-key-id", "GPL-3.0"], "every failure, no pass");
    assert_eq!(signals[0].severity, "high");
    assert!(signals[0].title.contains("AVD-AWS-0086") && signals[0].description.contains("Resolution:"), "{:?}", signals[0]);
    assert_eq!(signals[0].labels["resource"], "aws_s3_bucket.logs");
    let all = serde_json::to_string(&signals).unwrap();
    assert!(!all.contains("AKIAZ7QK3MW9XR2TLPVB"), "a secret finding never carries the secret: {all}");
}
