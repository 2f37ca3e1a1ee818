//! Risk scoring, case by case: factors in, score and band out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use std::path::PathBuf;

use arf_governor::risk::{self, Band, RiskInputs, RiskWeights};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[allow(dead_code, reason = "documentation for people reading the file")]
    about: String,
    cases: Vec<Case>,
    bands: Vec<(f64, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    inputs: RiskInputs,
    #[serde(default)]
    weights: Option<RiskWeights>,
    score: f64,
    band: String,
}

fn check(case: &Case) -> Result<(), String> {
    let weights = case.weights.clone().unwrap_or_default();
    let risk = risk::score(&case.inputs, &weights);
    if (risk.score - case.score).abs() > 1e-9 || risk.band != case.band {
        return Err(format!("score {} ({}), expected {} ({})", risk.score, risk.band, case.score, case.band));
    }
    if risk.factors.len() != 8 {
        return Err(format!("{} factors, expected all 8", risk.factors.len()));
    }
    let sum: f64 = risk.factors.iter().map(|f| f.contribution).sum();
    if (sum - risk.score).abs() > 0.001 {
        return Err(format!("contributions add up to {sum}, not to the score {}", risk.score));
    }
    let shares: f64 = risk.factors.iter().map(|f| f.weight).sum();
    if (shares - 1.0).abs() > 0.001 {
        return Err(format!("weights are shares of the total and add up to 1, not {shares}"));
    }
    if let Some(f) = risk.factors.iter().find(|f| !(0.0..=1.0).contains(&f.value) || f.detail.is_empty()) {
        return Err(format!("factor `{}` has value {} and detail `{}`", f.name, f.value, f.detail));
    }
    Ok(())
}

#[test]
fn risk_cases() {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/risk_cases.json")).unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    let mut failures: Vec<String> =
        cases.cases.iter().filter_map(|case| check(case).err().map(|e| format!("case `{}`: {e}", case.name))).collect();
    for (score, band) in &cases.bands {
        if Band::of(*score).as_str() != band {
            failures.push(format!("score {score} is `{}`, expected `{band}`", Band::of(*score).as_str()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn default_weights_are_valid_and_bad_ones_are_refused() {
    assert_eq!(RiskWeights::default().validate(), Ok(()));
    let negative = RiskWeights { confidence: -0.1, ..RiskWeights::default() };
    assert!(negative.validate().unwrap_err().contains("`confidence`"));
    let zero = RiskWeights {
        environment: 0.0,
        blast_radius: 0.0,
        reversibility: 0.0,
        base_risk: 0.0,
        success_history: 0.0,
        confidence: 0.0,
        recent_change: 0.0,
        security_sensitivity: 0.0,
    };
    assert!(zero.validate().is_err());
}
