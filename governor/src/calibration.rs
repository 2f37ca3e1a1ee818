//! Calibrated confidence: what a model's stated confidence is worth, judged by how
//! its proposals on the same pathway turned out.
//!
//! A model sets its own confidence, so a model that answers 1.0 would otherwise
//! buy autonomy by saying so. The governor reports, next to the stated value, the
//! posterior mean of "a proposal of this model on this pathway verifies": a Beta
//! prior centred on the stated confidence, capped at `prior_cap` (a model without
//! history is trusted no further than that) and worth `prior_weight` runs, updated
//! with the verified and failed outcomes the governor has counted for that model
//! and pathway:
//!
//! ```text
//! calibrated = (prior_weight * min(stated, prior_cap) + verified) / (prior_weight + runs)
//! ```
//!
//! With no history it is `min(stated, prior_cap)`; each verified run pulls it up,
//! each rollback or failure pulls it down, and after many runs it is the model's
//! observed success rate on that pathway. The default policy's autonomy floor reads
//! the calibrated value; the confidence floor (a model that doubts itself) reads
//! the stated one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::OutcomeStats;

/// The prior, from configuration (`[governor.calibration]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    /// The most a model without history is trusted, whatever it states.
    #[serde(default = "default_cap")]
    pub prior_cap: f64,
    /// How many runs the prior is worth against observed outcomes.
    #[serde(default = "default_weight")]
    pub prior_weight: f64,
}

fn default_cap() -> f64 {
    0.7
}

fn default_weight() -> f64 {
    5.0
}

impl Default for Prior {
    fn default() -> Self {
        Self { prior_cap: default_cap(), prior_weight: default_weight() }
    }
}

impl Prior {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.prior_cap) {
            return Err(format!("`calibration.prior_cap` must be in [0, 1], got {}", self.prior_cap));
        }
        if !(self.prior_weight > 0.0 && self.prior_weight.is_finite()) {
            return Err(format!("`calibration.prior_weight` must be a positive number, got {}", self.prior_weight));
        }
        Ok(())
    }
}

/// The calibrated confidence of a stated one, given the model's record on the pathway.
pub fn calibrate(stated: f64, record: &OutcomeStats, prior: &Prior) -> f64 {
    let stated = if stated.is_finite() { stated.clamp(0.0, 1.0) } else { 0.0 };
    let prior_mean = stated.min(prior.prior_cap);
    let (verified, runs) = (record.verified as f64, record.runs as f64);
    ((prior.prior_weight * prior_mean + verified) / (prior.prior_weight + runs)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verified: u64, failed: u64) -> OutcomeStats {
        OutcomeStats { runs: verified + failed, verified, rolled_back: failed, failed: 0 }
    }

    #[test]
    fn stated_confidence_buys_no_more_than_the_prior_and_history_moves_it() {
        let prior = Prior::default();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(calibrate(1.0, &record(0, 0), &prior), 0.7), "a model saying 1.0 with no history");
        assert!(close(calibrate(0.5, &record(0, 0), &prior), 0.5), "below the cap, the stated value");
        assert!(close(calibrate(1.0, &record(0, 2), &prior), 3.5 / 7.0), "two rollbacks pull it under the autonomy floor");
        assert!(close(calibrate(0.9, &record(20, 0), &prior), 23.5 / 25.0), "a good record earns trust");
        assert!(close(calibrate(f64::NAN, &record(0, 0), &prior), 0.0));
        assert!(calibrate(1.0, &record(1000, 1000), &prior) < 0.51, "many runs: the observed rate");
    }
}
