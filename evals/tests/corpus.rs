//! The bundled corpus loads, covers every class, and its ground truth agrees with the world model.

use std::path::Path;

use arf_evals::corpus::{self, CLASSES};

#[expect(clippy::unwrap_used, reason = "a test helper: a corpus that does not load fails the test")]
fn corpus() -> Vec<corpus::Incident> {
    corpus::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("incidents")).unwrap()
}

#[test]
fn the_corpus_loads_and_covers_every_class() {
    let incidents = corpus();
    assert!(incidents.len() >= 40, "{} incidents", incidents.len());
    for class in CLASSES {
        assert!(incidents.iter().any(|i| i.class == *class), "no incident of class `{class}`");
    }
}

#[test]
fn every_cause_is_fixed_by_a_pathway_the_truth_names_and_the_catalog_has() {
    let catalog = arf_core::catalog::Catalog::from_sources(
        arf_evals::PATHWAYS.iter().map(|(name, text)| (name.into(), (*text).to_owned())).collect(),
    )
    .unwrap();
    for incident in corpus() {
        for target in &incident.targets {
            for cause in &target.world.causes {
                let (remedy, _) = cause.remedy();
                assert!(catalog.get(remedy).is_some(), "{}: no pathway `{remedy}`", incident.id);
                assert!(incident.truth.fixes.iter().any(|f| f == remedy), "{}: truth.fixes lacks `{remedy}`", incident.id);
            }
        }
        for pathway in incident.truth.fixes.iter().chain(&incident.truth.harmful) {
            assert!(catalog.get(pathway).is_some(), "{}: truth names unknown pathway `{pathway}`", incident.id);
        }
    }
}
