//! `arf token create`: a new identity whose token is printed once and stored only hashed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use arf_core::identity::Role;

/// Adds `[[identities]]` `{ name, role, token_sha256 }` to the configuration file and
/// returns the token, which exists nowhere else afterwards. The file is replaced
/// atomically, keeping its comments and its mode, and only when the result still loads.
/// `services` and `environments` limit what a sender of signals may send about.
pub fn create(config: &Path, name: &str, role: &str, services: &[String], environments: &[String]) -> Result<String> {
    if Role::parse(role).is_none() {
        bail!("unknown role `{role}`; expected one of {}", Role::expected());
    }
    if name.trim().is_empty() || name.trim() != name || name.chars().any(char::is_control) {
        bail!("the name must be non-empty, without surrounding spaces or control characters");
    }
    if let Some(service) = Role::parse(name).filter(|r| r.is_service() && r.as_str() != role) {
        bail!("`{name}` is the name of the {service} service (its certificate's); pick another name");
    }
    let text = std::fs::read_to_string(config).with_context(|| format!("cannot read configuration `{}`", config.display()))?;
    let mut document: toml_edit::DocumentMut = text.parse().with_context(|| format!("`{}` is not valid TOML", config.display()))?;
    let identities = document
        .entry("identities")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .with_context(|| format!("`{}`: `identities` is not a list of `[[identities]]` tables", config.display()))?;
    if identities.iter().any(|t| t.get("name").and_then(toml_edit::Item::as_str) == Some(name)) {
        bail!("`{}` already has an identity `{name}`; pick another name (tokens are never re-issued)", config.display());
    }
    let (token, hash) = arf_core::identity::new_token()?;
    let mut table = toml_edit::Table::new();
    table.insert("name", toml_edit::value(name));
    table.insert("role", toml_edit::value(role));
    table.insert("token_sha256", toml_edit::value(hash));
    if !services.is_empty() {
        table.insert("services", toml_edit::value(services.iter().collect::<toml_edit::Array>()));
    }
    if !environments.is_empty() {
        table.insert("environments", toml_edit::value(environments.iter().collect::<toml_edit::Array>()));
    }
    identities.push(table);
    let updated = document.to_string();
    let staged = config.with_extension("toml.new");
    std::fs::write(&staged, &updated).with_context(|| format!("cannot write `{}`", staged.display()))?;
    if let Ok(metadata) = std::fs::metadata(config) {
        std::fs::set_permissions(&staged, metadata.permissions())?;
    }
    if let Err(error) = crate::setup::load(&staged) {
        let _ = std::fs::remove_file(&staged);
        return Err(error.context("the configuration would not load with the new identity; nothing was changed"));
    }
    std::fs::rename(&staged, config).with_context(|| format!("cannot replace `{}`", config.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails loudly at the first surprise")]

    use crate::setup;

    /// A sender created with `--service` and `--environment` is limited to both in
    /// the agent's configuration as loaded, and its token is stored only hashed.
    #[test]
    fn a_limited_sender_is_limited_to_its_services_and_environments() {
        let dir = tempfile::tempdir().unwrap();
        let layout = setup::Layout::new(&dir.path().join(".arf")).unwrap();
        let file = setup::prepare(&layout, setup::Ports::default(), &setup::no_targets(), &setup::Reasoning::Rules).unwrap();
        let token = super::create(&file, "alertmanager-staging", "source", &["checkout".to_owned()], &["staging".to_owned()]).unwrap();
        assert!(!std::fs::read_to_string(&file).unwrap().contains(&token));
        let scopes = setup::load(&file).unwrap().agent.sender_scopes();
        let scope = &scopes["alertmanager-staging"];
        assert_eq!(scope.services.iter().collect::<Vec<_>>(), ["checkout"]);
        assert_eq!(scope.environments.iter().collect::<Vec<_>>(), ["staging"]);
    }
}
