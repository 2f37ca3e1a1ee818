//! The redaction corpus against the redactor itself, item by item: every secret
//! form (planted in free text, a label value, a label key and a JSON payload) loses
//! its secret, and every look-alike an engineer needs comes out unchanged. The
//! services' outputs are checked with the same corpus in `redaction.rs` (model
//! request, audit log) and `cli/tests/redaction.rs` (CLI and tracing output).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use arf_agent::redact::Redactor;

#[test]
fn no_secret_passes_and_no_lookalike_is_destroyed() {
    let corpus = support::corpus::load();
    assert!(corpus.secrets.len() >= 100, "{} secret forms", corpus.secrets.len());
    assert!(corpus.lookalikes.len() >= 100, "{} look-alikes", corpus.lookalikes.len());
    let redactor = Redactor::new(&[]).unwrap();
    let mut failures = Vec::new();
    for secret in &corpus.secrets {
        let planted = [
            format!("upstream said: {}", secret.text),
            secret.text.clone(),
            serde_json::json!({"log": secret.text}).to_string(),
        ];
        for text in planted {
            let out = redactor.text(&text);
            if out.contains(&secret.core) {
                failures.push(format!("secret `{}` passed: {out}", secret.name));
            }
        }
        let signal = arf_core::signal::Signal {
            id: "sig-1".into(),
            kind: arf_core::signal::SignalKind::Alert,
            source: "test".into(),
            status: arf_core::signal::SignalStatus::Firing,
            title: "t".into(),
            description: String::new(),
            severity: "warning".into(),
            service: "svc".into(),
            environment: "staging".into(),
            labels: [(format!("k {}", secret.text), secret.text.clone())].into(),
            annotations: Default::default(),
            observed_at_ms: 0,
            fingerprint: "f".into(),
        };
        let all = serde_json::to_string(&redactor.signal(signal)).unwrap();
        if all.contains(&secret.core) {
            failures.push(format!("secret `{}` passed in a label: {all}", secret.name));
        }
    }
    for lookalike in &corpus.lookalikes {
        let out = redactor.text(&lookalike.text);
        if out != lookalike.text {
            failures.push(format!("look-alike destroyed:\n  in:  {}\n  out: {out}", lookalike.text));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
