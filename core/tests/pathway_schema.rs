//! The JSON Schema published in `docs/pathways.md` is the one generated from the
//! catalog types; `UPDATE_GOLDEN=1` rewrites the document's block.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

const START: &str = "<!-- pathway-schema:start -->\n```json\n";
const END: &str = "```\n<!-- pathway-schema:end -->";

#[test]
fn the_published_schema_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pathways.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let generated = format!("{}\n", serde_json::to_string_pretty(&arf_core::catalog::pathway_schema()).unwrap());
    let start = doc.find(START).expect("docs/pathways.md has the schema markers") + START.len();
    let end = doc[start..].find(END).expect("the schema block is closed") + start;
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let updated = format!("{}{generated}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(&doc[start..end], generated, "run with UPDATE_GOLDEN=1 to publish the schema");
    // And the schema accepts every shipped pathway.
    let validator = jsonschema::validator_for(&arf_core::catalog::pathway_schema()).unwrap();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pathways");
    for entry in std::fs::read_dir(examples).unwrap() {
        let file = entry.unwrap().path();
        let value: toml::Value = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let json = serde_json::to_value(value).unwrap();
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}
