//! The deployment file (`arf.toml`): one section per service, and the top-level
//! keys the services share (`[targets]`, `[[identities]]`; `[notify]` for the
//! governor, which sends notifications), which a section inherits unless it sets
//! its own. `arf serve ROLE` and each service's own binary
//! (`arf-agent`, …) read it the same way.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The sections a deployment file may have.
pub const SECTIONS: [&str; 7] = ["audit", "agent", "governor", "executor", "targets", "identities", "notify"];

/// The top-level keys each service's section inherits.
pub fn inherited(section: &str) -> &'static [&'static str] {
    match section {
        "audit" => &["identities"],
        "agent" | "executor" => &["targets", "identities"],
        "governor" => &["targets", "identities", "notify"],
        _ => &[],
    }
}

/// Parses a deployment file's text; an unknown top-level section is an error.
pub fn parse(text: &str, file: &Path) -> Result<Table, String> {
    let root: Table = toml::from_str(text).map_err(|e| format!("`{}` is not valid TOML: {e}", file.display()))?;
    if let Some(unknown) = root.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
        return Err(format!("`{}`: unknown section `{unknown}`; expected one of {}", file.display(), SECTIONS.join(", ")));
    }
    Ok(root)
}

/// One service's section of `root`, with the shared keys it inherits; unknown
/// keys are errors, named with their section.
pub fn section<T: DeserializeOwned>(root: &Table, name: &str) -> Result<T, String> {
    let mut table = root.get(name).and_then(Value::as_table).cloned().ok_or_else(|| format!("the configuration has no `[{name}]` section"))?;
    for key in inherited(name) {
        if let Some(value) = root.get(*key).filter(|_| !table.contains_key(*key)) {
            table.insert((*key).to_owned(), value.clone());
        }
    }
    Value::Table(table).try_into().map_err(|e: toml::de::Error| format!("in section `[{name}]`: {e}"))
}

/// Reads `file` and returns the section `name`.
pub fn load_section<T: DeserializeOwned>(file: &Path, name: &str) -> Result<T, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read configuration `{}`: {e}", file.display()))?;
    section(&parse(&text, file)?, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Agent {
        listen: String,
        #[serde(default)]
        targets: Table,
        #[serde(default)]
        identities: Vec<Table>,
    }

    #[test]
    fn a_section_inherits_shared_keys_unless_it_sets_its_own() {
        let file = Path::new("arf.toml");
        let root = parse("[agent]\nlisten = \"x\"\n[targets.web]\nkind = \"service\"\n[[identities]]\nname = \"a\"\n", file).unwrap();
        let agent: Agent = section(&root, "agent").unwrap();
        assert_eq!((agent.listen.as_str(), agent.targets.len(), agent.identities.len()), ("x", 1, 1));
        let own = parse("[agent]\nlisten = \"x\"\ntargets = {}\n[targets.web]\nkind = \"service\"\n", file).unwrap();
        assert!(section::<Agent>(&own, "agent").unwrap().targets.is_empty());
        assert!(parse("[agnet]\n", file).unwrap_err().contains("unknown section `agnet`"));
        assert!(section::<Agent>(&root, "governor").unwrap_err().contains("no `[governor]` section"));
        let typo = parse("[agent]\nlisten = \"x\"\nlisen = 1\n", file).unwrap();
        assert!(section::<Agent>(&typo, "agent").unwrap_err().contains("in section `[agent]`"));
        // `[notify]` is the governor's alone: the agent does not take it (its
        // section would refuse the unknown key), the governor does.
        let notify = parse("[agent]\nlisten = \"x\"\n[governor]\nlisten = \"y\"\n[notify]\nconsole_url = \"https://arf.example\"\n", file).unwrap();
        assert!(section::<Agent>(&notify, "agent").is_ok());
        let governor: Table = section(&notify, "governor").unwrap();
        assert_eq!(governor["notify"]["console_url"].as_str(), Some("https://arf.example"));
    }
}
