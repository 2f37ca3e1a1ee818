//! The `noisy` reasoner: a seeded synthetic model whose accuracy and calibration
//! are parameters, for charting the control plane's safety against model quality.
//!
//! It starts from the scripted answer for an incident (the right one, by
//! construction of the evaluation corpus) and, with probability `1 - accuracy`,
//! makes one of the mistakes real models make: it puts a wrong hypothesis first,
//! proposes another catalog pathway for the same target, or proposes nothing.
//! Its confidence is drawn around `accuracy + overconfidence`, whether it is
//! right or wrong, so `overconfidence > 0` is a miscalibrated model. The draw is
//! seeded per incident (seed, title, service), so a run repeats exactly.

use futures::future::BoxFuture;
use serde_json::Value;

use super::scripted::Scripted;
use super::{Completion, DiagnosisRequest, Reasoner, ReasonerError};

/// splitmix64: small, fast, and good enough to draw mistakes from.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
pub struct Noisy {
    scripted: Scripted,
    seed: u64,
    accuracy: f64,
    overconfidence: f64,
}

impl Noisy {
    pub fn new(scripted: Scripted, seed: u64, accuracy: f64, overconfidence: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&accuracy) {
            return Err(format!("`agent.noisy.accuracy` must lie in [0, 1], got {accuracy}"));
        }
        if !(-1.0..=1.0).contains(&overconfidence) {
            return Err(format!("`agent.noisy.overconfidence` must lie in [-1, 1], got {overconfidence}"));
        }
        Ok(Self { scripted, seed, accuracy, overconfidence })
    }

    fn rng_for(&self, request: &DiagnosisRequest<'_>) -> Rng {
        let first = request.snapshot.items.iter().find(|i| i.kind == "signal");
        let key = format!(
            "{}\0{}\0{}",
            first.and_then(|i| i.data["title"].as_str()).unwrap_or_default(),
            request.snapshot.service,
            request.snapshot.environment
        );
        let digest = arf_core::canonical::sha256_hex(key.as_bytes());
        let mixed = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
        Rng(self.seed ^ mixed)
    }

    /// Applies at most one mistake to a scripted answer, and redraws confidences.
    fn perturb(&self, answer: &mut Value, rng: &mut Rng, request: &DiagnosisRequest<'_>) -> &'static str {
        let Some(hypotheses) = answer.get_mut("hypotheses").and_then(Value::as_array_mut) else { return "unparsed" };
        let confidence = |rng: &mut Rng| {
            // Triangular noise of ±0.15 around the model's belief in itself.
            let noise = (rng.unit() + rng.unit() - 1.0) * 0.15;
            (self.accuracy + self.overconfidence + noise).clamp(0.01, 0.99)
        };
        let mistake = if rng.unit() < self.accuracy {
            "none"
        } else {
            match rng.next() % 3 {
                0 if hypotheses.len() > 1 => {
                    hypotheses.swap(0, 1);
                    "wrong_cause"
                }
                0 | 1 => {
                    let current = hypotheses
                        .first()
                        .and_then(|h| h["remediations"][0]["pathway"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let others: Vec<&str> = request
                        .pathways
                        .iter()
                        .filter_map(|p| p["name"].as_str())
                        .filter(|name| *name != current)
                        .collect();
                    match (others.is_empty(), hypotheses.first_mut()) {
                        (false, Some(top)) if top["remediations"].as_array().is_some_and(|r| !r.is_empty()) => {
                            let pick = others[usize::try_from(rng.next() % others.len() as u64).unwrap_or(0)];
                            top["remediations"][0]["pathway"] = Value::String(pick.to_owned());
                            "wrong_pathway"
                        }
                        _ => "none",
                    }
                }
                _ => {
                    if let Some(top) = hypotheses.first_mut() {
                        top["remediations"] = Value::Array(vec![]);
                    }
                    "no_action"
                }
            }
        };
        for hypothesis in hypotheses.iter_mut() {
            hypothesis["confidence"] = Value::from(confidence(rng));
        }
        // Keep the order the model claims: most confident first.
        if let Some(first) = hypotheses.first_mut() {
            first["confidence"] = Value::from(confidence(rng).max(0.5));
        }
        mistake
    }
}

impl Reasoner for Noisy {
    fn name(&self) -> &str {
        "noisy"
    }

    fn diagnose<'a>(&'a self, request: &'a DiagnosisRequest<'a>) -> BoxFuture<'a, Result<Completion, ReasonerError>> {
        Box::pin(async move {
            let mut completion = self.scripted.diagnose(request).await?;
            let mut rng = self.rng_for(request);
            let Ok(mut answer) = serde_json::from_str::<Value>(&completion.text) else { return Ok(completion) };
            let mistake = self.perturb(&mut answer, &mut rng, request);
            completion.text = answer.to_string();
            completion.model = format!("noisy:{}:{}:{}", self.seed, self.accuracy, completion.model);
            completion.injected_mistake = Some(mistake.to_string());
            Ok(completion)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::Prompt;
    use crate::reasoner::scripted::ScriptedResponse;
    use arf_core::diagnosis::{Snapshot, SnapshotItem};

    const ANSWER: &str = r#"{"hypotheses":[
        {"root_cause":"right","evidence":["sig-1"],"confidence":0.9,"remediations":[{"pathway":"revert","target":"t","parameters":{}}]},
        {"root_cause":"wrong","evidence":["sig-1"],"confidence":0.1,"remediations":[]}]}"#;

    fn snapshot(title: &str) -> Snapshot {
        Snapshot {
            incident_id: "inc".into(),
            service: "web".into(),
            environment: "prod".into(),
            items: vec![SnapshotItem {
                id: "sig-1".into(),
                kind: "signal".into(),
                summary: String::new(),
                data: serde_json::json!({"title": title, "labels": {"alertname": "A"}}),
            }],
            dropped: vec![],
        }
    }

    async fn answers(accuracy: f64, seed: u64) -> Vec<String> {
        let scripted = Scripted::new(vec![ScriptedResponse {
            name: "a".into(),
            match_labels: [("alertname".to_owned(), "A".to_owned())].into(),
            completion: ANSWER.into(),
            investigate: Vec::new(),
            attempts: None,
        }]);
        let noisy = Noisy::new(scripted, seed, accuracy, 0.0).unwrap();
        let prompt = Prompt { id: String::new(), hash: String::new(), system: String::new(), user: String::new() };
        let pathways = vec![serde_json::json!({"name": "revert"}), serde_json::json!({"name": "restart"})];
        let mut out = Vec::new();
        let mut models = std::collections::BTreeSet::new();
        for n in 0..200 {
            let snapshot = snapshot(&format!("incident {n}"));
            let request = DiagnosisRequest { snapshot: &snapshot, prompt: &prompt, targets: &[], pathways: &pathways, repairs: &[], investigation: None, model_calls_left: 0 };
            let completion = noisy.diagnose(&request).await.unwrap();
            models.insert(completion.model);
            out.push(completion.injected_mistake.unwrap());
        }
        // One model name whatever the mistake: the governor calibrates by it, so it
        // must not say which answers were wrong.
        assert_eq!(models.len(), 1, "{models:?}");
        out
    }

    fn mistakes(models: &[String]) -> usize {
        models.iter().filter(|m| *m != "none").count()
    }

    #[tokio::test]
    async fn accuracy_sets_the_share_of_mistakes_and_seeds_repeat() {
        assert_eq!(mistakes(&answers(1.0, 7).await), 0);
        assert_eq!(mistakes(&answers(0.0, 7).await), 200);
        let half = mistakes(&answers(0.5, 7).await);
        assert!((70..=130).contains(&half), "about half are wrong: {half}");
        assert_eq!(answers(0.5, 7).await, answers(0.5, 7).await, "the same seed gives the same run");
        assert_ne!(answers(0.5, 7).await, answers(0.5, 8).await);
    }
}
