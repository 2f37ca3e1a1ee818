//! Rendering the versioned prompt templates in `prompts/`.
//!
//! The templates are compiled into the binary (so `arf` runs from anywhere), and
//! the prompt's id and the hash of the rendered text go into the log with every
//! diagnosis, so any diagnosis can be reproduced.

use minijinja::Environment;
use serde_json::Value;

use arf_core::canonical::sha256_hex;
use arf_core::diagnosis::Snapshot;

pub const SYSTEM_TEMPLATE: &str = include_str!("../../prompts/system.j2");
pub const DIAGNOSIS_TEMPLATE: &str = include_str!("../../prompts/diagnosis.j2");
/// Names the template pair; bump it when the templates change meaningfully.
pub const PROMPT_ID: &str = "diagnosis@v1";

/// A rendered prompt.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub id: String,
    /// SHA-256 over the templates and the rendered text.
    pub hash: String,
    pub system: String,
    pub user: String,
}

pub fn render(snapshot: &Snapshot, pathways: &[Value], targets: &[Value]) -> Result<Prompt, String> {
    let mut env = Environment::new();
    env.add_template("system", SYSTEM_TEMPLATE).map_err(|e| e.to_string())?;
    env.add_template("diagnosis", DIAGNOSIS_TEMPLATE).map_err(|e| e.to_string())?;
    let context = minijinja::context! { snapshot => snapshot, pathways => pathways, targets => targets };
    let system = env.get_template("system").and_then(|t| t.render(&context)).map_err(|e| e.to_string())?;
    let user = env.get_template("diagnosis").and_then(|t| t.render(&context)).map_err(|e| e.to_string())?;
    let hash = sha256_hex(format!("{SYSTEM_TEMPLATE}\0{DIAGNOSIS_TEMPLATE}\0{system}\0{user}").as_bytes());
    Ok(Prompt { id: PROMPT_ID.to_owned(), hash, system, user })
}
