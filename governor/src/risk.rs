//! Risk scoring: a documented, deterministic function of explicit factors.
//!
//! Each factor has a value in [0, 1] (1 is riskiest) and a configured weight. The
//! score is the weighted mean of the values, so it lies in [0, 1] whatever the
//! weights. Each factor reports its share of the total weight and its contribution
//! (value times share); the contributions add up to the score. The factors are:
//!
//! | factor | value |
//! | --- | --- |
//! | `environment` | the environment's sensitivity (production 1.0, staging 0.3, development 0.1); an unknown environment counts as 1.0 |
//! | `blast_radius` | the pathway's declared share of the target it touches |
//! | `reversibility` | 0 when the pathway declares a rollback, 1 when it is irreversible |
//! | `base_risk` | the pathway's reviewed base risk |
//! | `success_history` | 1 minus the pathway's verified-success rate; 0.5 (a neutral prior) without history |
//! | `confidence` | 1 minus the hypothesis confidence: a model that is unsure is a risk |
//! | `recent_change` | how recently the target changed (a fresh change is riskier to touch); 0.5 while unknown |
//! | `security_sensitivity` | 1 when the pathway or the target is security-sensitive, else 0 |
//!
//! Bands: `low` below 0.25, `medium` below 0.5, `high` below 0.75, `critical` from 0.75.

use arf_core::decision::{Risk, RiskFactor};
use serde::{Deserialize, Serialize};

/// The weight of each factor. Weights need not sum to 1: the score is normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskWeights {
    pub environment: f64,
    pub blast_radius: f64,
    pub reversibility: f64,
    pub base_risk: f64,
    pub success_history: f64,
    pub confidence: f64,
    pub recent_change: f64,
    pub security_sensitivity: f64,
}

impl Default for RiskWeights {
    fn default() -> Self {
        Self {
            environment: 0.20,
            blast_radius: 0.15,
            reversibility: 0.15,
            base_risk: 0.15,
            success_history: 0.05,
            confidence: 0.10,
            recent_change: 0.05,
            security_sensitivity: 0.15,
        }
    }
}

impl RiskWeights {
    fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("environment", self.environment),
            ("blast_radius", self.blast_radius),
            ("reversibility", self.reversibility),
            ("base_risk", self.base_risk),
            ("success_history", self.success_history),
            ("confidence", self.confidence),
            ("recent_change", self.recent_change),
            ("security_sensitivity", self.security_sensitivity),
        ]
    }

    /// Every weight finite and non-negative, and at least one positive.
    pub fn validate(&self) -> Result<(), String> {
        for (name, weight) in self.named() {
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!("weight `{name}` must be a finite number >= 0, got `{weight}`"));
            }
        }
        if self.named().iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
            return Err("at least one weight must be positive".to_owned());
        }
        Ok(())
    }
}

/// Everything the score depends on, gathered from the reviewed catalog and inventory
/// (never from the proposal, except the confidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskInputs {
    pub environment: String,
    /// `None` when the environment is not configured.
    pub environment_sensitivity: Option<f64>,
    pub blast_radius: f64,
    pub irreversible: bool,
    pub base_risk: f64,
    /// The pathway's verified-success rate in [0, 1]; `None` without history.
    #[serde(default)]
    pub success_rate: Option<f64>,
    pub confidence: f64,
    /// Minutes since the target last changed; `None` while unknown.
    #[serde(default)]
    pub minutes_since_last_change: Option<u64>,
    #[serde(default)]
    pub pathway_security_sensitive: bool,
    #[serde(default)]
    pub target_security_sensitive: bool,
}

/// A risk band. Not `non_exhaustive`: policy matches on these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Low,
    Medium,
    High,
    Critical,
}

impl Band {
    pub fn of(score: f64) -> Self {
        if score.is_nan() || score >= 0.75 {
            Self::Critical
        } else if score >= 0.5 {
            Self::High
        } else if score >= 0.25 {
            Self::Medium
        } else {
            Self::Low
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// A fresh change (under an hour) is the likeliest culprit and the riskiest to
/// touch again; after a day it no longer matters.
fn recent_change_value(minutes: Option<u64>) -> (f64, String) {
    match minutes {
        None => (0.5, "time since the last change is not known yet: neutral".to_owned()),
        Some(m) if m < 60 => (1.0, format!("the target changed {m} minutes ago")),
        Some(m) if m < 24 * 60 => (0.5, format!("the target changed {} hours ago", m / 60)),
        Some(m) => (0.0, format!("the target last changed {} days ago", m / (24 * 60))),
    }
}

/// Clamps into [0, 1]; a value that is not a number counts as the riskiest.
fn unit(value: f64) -> f64 {
    if value.is_nan() { 1.0 } else { value.clamp(0.0, 1.0) }
}

/// Rounds to four decimals, so scores read well and survive a JSON round trip exactly.
pub fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// Scores a proposed action. Pure and total: it cannot fail.
pub fn score(inputs: &RiskInputs, weights: &RiskWeights) -> Risk {
    let (environment, environment_detail) = match inputs.environment_sensitivity {
        Some(s) => (unit(s), format!("environment `{}` has sensitivity {:.2}", inputs.environment, unit(s))),
        None => (1.0, format!("environment `{}` is unknown, so it counts as the most sensitive", inputs.environment)),
    };
    let blast_radius = unit(inputs.blast_radius);
    let (reversibility, reversibility_detail) = if inputs.irreversible {
        (1.0, "irreversible: the pathway has no rollback".to_owned())
    } else {
        (0.0, "reversible: the pathway declares a rollback".to_owned())
    };
    let base_risk = unit(inputs.base_risk);
    let (success_history, success_detail) = match inputs.success_rate {
        Some(rate) => (1.0 - unit(rate), format!("verified in {:.0}% of past runs", unit(rate) * 100.0)),
        None => (0.5, "no outcome history yet: a neutral prior of 0.5".to_owned()),
    };
    let confidence = 1.0 - unit(inputs.confidence);
    let (recent_change, recent_detail) = recent_change_value(inputs.minutes_since_last_change);
    let security_detail = match (inputs.pathway_security_sensitive, inputs.target_security_sensitive) {
        (true, true) => "both the pathway and the target are security-sensitive",
        (true, false) => "the pathway is security-sensitive",
        (false, true) => "the target is security-sensitive",
        (false, false) => "neither the pathway nor the target is security-sensitive",
    };
    let security = if inputs.pathway_security_sensitive || inputs.target_security_sensitive { 1.0 } else { 0.0 };

    let values: [(f64, String); 8] = [
        (environment, environment_detail),
        (blast_radius, format!("the pathway touches {:.0}% of the target", blast_radius * 100.0)),
        (reversibility, reversibility_detail),
        (base_risk, format!("the pathway's reviewed base risk is {base_risk:.2}")),
        (success_history, success_detail),
        (confidence, format!("the hypothesis confidence is {:.2}; doubt counts as risk", unit(inputs.confidence))),
        (recent_change, recent_detail),
        (security, security_detail.to_owned()),
    ];
    let total_weight: f64 = weights.named().iter().map(|(_, w)| w.max(0.0)).sum();
    let factors: Vec<RiskFactor> = weights
        .named()
        .into_iter()
        .zip(values)
        .map(|((name, weight), (value, detail))| {
            // The weight reported is the factor's share of the total, so that
            // value times weight is the contribution, and the shares sum to 1.
            let share = if total_weight > 0.0 { weight.max(0.0) / total_weight } else { 0.0 };
            RiskFactor {
                name: name.to_owned(),
                value: round4(value),
                weight: round4(share),
                contribution: round4(share * value),
                detail,
            }
        })
        .collect();
    let raw: f64 = if total_weight > 0.0 {
        weights.named().iter().zip(&factors).map(|((_, w), f)| w.max(0.0) / total_weight * f.value).sum::<f64>()
    } else {
        // Weights are validated at start; without any, nothing is known, so assume the worst.
        1.0
    };
    let score = round4(unit(raw));
    Risk { score, band: Band::of(score).as_str().to_owned(), factors }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_add_up_to_the_score() {
        let inputs = RiskInputs {
            environment: "staging".into(),
            environment_sensitivity: Some(0.3),
            blast_radius: 0.3,
            irreversible: false,
            base_risk: 0.2,
            success_rate: None,
            confidence: 0.9,
            minutes_since_last_change: None,
            pathway_security_sensitive: false,
            target_security_sensitive: false,
        };
        let risk = score(&inputs, &RiskWeights::default());
        let sum: f64 = risk.factors.iter().map(|f| f.contribution).sum();
        assert!((sum - risk.score).abs() < 0.001, "{sum} vs {}", risk.score);
        assert_eq!(risk.band, "low");
    }
}
