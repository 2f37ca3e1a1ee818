//! The policy input's JSON Schema, generated from the Rust types, is the one
//! published in `docs/governance.md`. Run with `UPDATE_GOLDEN=1` to rewrite it there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

use std::path::PathBuf;

use arf_governor::policy::{INPUT_VERSION, PolicyInput, input_schema};

const BEGIN: &str = "<!-- policy-input-schema: begin (generated; UPDATE_GOLDEN=1 cargo test -p arf-governor --test input_schema) -->\n```json\n";
const END: &str = "```\n<!-- policy-input-schema: end -->";

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/governance.md")
}

#[test]
fn the_published_schema_is_the_generated_one() {
    let generated = format!("{}\n", serde_json::to_string_pretty(&input_schema()).unwrap());
    let text = std::fs::read_to_string(docs()).unwrap();
    let start = text.find(BEGIN).unwrap_or_else(|| panic!("`docs/governance.md` lacks the schema block")) + BEGIN.len();
    let end = start + text[start..].find(END).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let updated = format!("{}{generated}{}", &text[..start], &text[end..]);
        std::fs::write(docs(), updated).unwrap();
        return;
    }
    assert_eq!(&text[start..end], generated, "the published schema is stale; run with UPDATE_GOLDEN=1");
}

#[test]
fn the_schema_is_versioned_and_describes_every_top_level_field() {
    let schema = input_schema();
    assert_eq!(schema["$id"], format!("https://arf.dev/schemas/policy-input/v{INPUT_VERSION}.json"));
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/tests/base.input.json"))
            .unwrap(),
    )
    .unwrap();
    // The cases' base input is a valid input, and has every field the schema names.
    let input: PolicyInput = serde_json::from_value(base.clone()).unwrap();
    assert_eq!(input.version, INPUT_VERSION);
    for field in schema["properties"].as_object().unwrap().keys() {
        assert!(base.get(field).is_some(), "the base input lacks `{field}`");
    }
    for field in ["action", "pathway", "target", "environment", "risk", "confidence", "requester", "autonomy", "freeze_windows", "outcome_stats"] {
        assert!(schema["properties"].get(field).is_some(), "the schema lacks `{field}`");
    }
}
