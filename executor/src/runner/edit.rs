//! Structured edits of YAML, TOML and JSON text: set one value at a key path.
//!
//! Pure functions on text. TOML keeps its formatting and comments (toml_edit).
//! YAML is edited in place on the line that holds the value, so comments and
//! layout survive, and the result is checked by parsing both texts: the edited
//! document must equal the original with exactly that one value changed. When
//! the in-place edit cannot be made (flow style, multi-line scalars), the
//! document is rewritten from its parsed form instead, which loses comments.
//! JSON is rewritten pretty-printed.

use serde_json::Value;

use arf_core::catalog::{EditFormat, KeySegment};

/// Sets `value` at `path` in `text`. Every key and index on the path but the last
/// must exist; the last key of a mapping may be new.
pub fn apply(format: EditFormat, text: &str, path: &[KeySegment], value: &Value) -> Result<String, String> {
    match format {
        EditFormat::Json => {
            let mut document: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
            set(&mut document, path, value.clone())?;
            let mut out = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
            out.push('\n');
            Ok(out)
        }
        EditFormat::Toml => edit_toml(text, path, value),
        EditFormat::Yaml => edit_yaml(text, path, value),
    }
}

/// Describes a key path for messages: `a.b[0].c`.
pub fn describe(path: &[KeySegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            KeySegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            KeySegment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Sets a value in a parsed JSON document.
fn set(document: &mut Value, path: &[KeySegment], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else { return Err("the key path is empty".to_owned()) };
    let mut node = document;
    for (depth, segment) in parents.iter().enumerate() {
        let here = describe(&path[..=depth]);
        node = match segment {
            KeySegment::Key(key) => node.get_mut(key.as_str()),
            KeySegment::Index(index) => node.get_mut(*index),
        }
        .ok_or_else(|| format!("`{here}` does not exist"))?;
    }
    match (last, node) {
        (KeySegment::Key(key), Value::Object(map)) => {
            map.insert(key.clone(), value);
            Ok(())
        }
        (KeySegment::Index(index), Value::Array(items)) if *index < items.len() => {
            items[*index] = value;
            Ok(())
        }
        _ => Err(format!("`{}` cannot be set: its parent is not a mapping or the index is out of range", describe(path))),
    }
}

fn edit_toml(text: &str, path: &[KeySegment], value: &Value) -> Result<String, String> {
    let mut document: toml_edit::DocumentMut = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let new = match value {
        Value::String(s) => toml_edit::value(s.as_str()),
        Value::Bool(b) => toml_edit::value(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml_edit::value(i),
            (None, Some(f)) => toml_edit::value(f),
            _ => return Err(format!("`{n}` cannot be written to TOML")),
        },
        other => return Err(format!("`{other}` is not a scalar")),
    };
    let Some((last, parents)) = path.split_last() else { return Err("the key path is empty".to_owned()) };
    let mut item = document.as_item_mut();
    for (depth, segment) in parents.iter().enumerate() {
        let here = describe(&path[..=depth]);
        item = match segment {
            KeySegment::Key(key) => item.get_mut(key.as_str()),
            // Arrays of tables too: their elements are items.
            KeySegment::Index(index) => item.get_mut(*index),
        }
        .ok_or_else(|| format!("`{here}` does not exist"))?;
    }
    match last {
        KeySegment::Key(key) => {
            let Some(table) = item.as_table_like_mut() else {
                return Err(format!("`{}` cannot be set: its parent is not a table", describe(path)));
            };
            match table.get_mut(key) {
                // Keep the value's surrounding whitespace and comment.
                Some(existing) if existing.is_value() => {
                    let decor = existing.as_value().map(|v| v.decor().clone());
                    *existing = new;
                    if let (Some(decor), Some(v)) = (decor, existing.as_value_mut()) {
                        *v.decor_mut() = decor;
                    }
                }
                _ => {
                    table.insert(key, new);
                }
            }
        }
        KeySegment::Index(index) => {
            let Some(array) = item.as_array_mut() else {
                return Err(format!("`{}` cannot be set: its parent is not an array", describe(path)));
            };
            let Some(slot) = array.get_mut(*index) else {
                return Err(format!("`{}` is out of range", describe(path)));
            };
            let decor = slot.decor().clone();
            if let Ok(v) = new.into_value() {
                *slot = v;
                *slot.decor_mut() = decor;
            }
        }
    }
    Ok(document.to_string())
}

fn edit_yaml(text: &str, path: &[KeySegment], value: &Value) -> Result<String, String> {
    let original: Value = serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut expected = original;
    set(&mut expected, path, value.clone())?;
    let parses_as_expected = |candidate: &str| {
        serde_norway::from_str::<Value>(candidate).is_ok_and(|parsed| parsed == expected)
    };
    for scalar in yaml_scalars(value) {
        if let Some(candidate) = yaml_in_place(text, path, &scalar)
            && parses_as_expected(&candidate)
        {
            return Ok(candidate);
        }
    }
    let rewritten = serde_norway::to_string(&expected).map_err(|e| format!("cannot write YAML: {e}"))?;
    if parses_as_expected(&rewritten) {
        Ok(rewritten)
    } else {
        Err(format!("cannot set `{}` without changing anything else", describe(path)))
    }
}

/// Ways to write a scalar in YAML, plainest first.
fn yaml_scalars(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone(), Value::String(s.clone()).to_string()],
        other => vec![other.to_string()],
    }
}

/// One line's indentation and where its content starts.
#[derive(Debug, Clone, Copy)]
struct Line {
    indent: usize,
    /// Content that is not blank and not a comment.
    content: bool,
}

/// Replaces the scalar at `path` on its own line, leaving every other byte alone.
/// Handles block mappings and block sequences (`- ` items); anything else is `None`.
fn yaml_in_place(text: &str, path: &[KeySegment], scalar: &str) -> Option<String> {
    let mut lines: Vec<(usize, usize)> = Vec::new(); // (start byte, end byte without newline)
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        lines.push((at, at + body.len()));
        at += line.len();
    }
    let info: Vec<Line> = lines
        .iter()
        .map(|&(s, e)| {
            let line = &text[s..e];
            let trimmed = line.trim_start_matches(' ');
            Line {
                indent: line.len() - trimmed.len(),
                content: !trimmed.is_empty() && !trimmed.starts_with('#') && trimmed != "---",
            }
        })
        .collect();
    // The region being searched: lines [from, to), with the first line possibly
    // starting at a column past its indentation (the content after `- `).
    let (mut from, mut to) = (0, lines.len());
    let mut first_column: Option<usize> = None;
    for (depth, segment) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        let column_of = |i: usize| if Some(i) == first_column.map(|_| from) { first_column.unwrap_or(0) } else { info[i].indent };
        let child_indent = (from..to).find(|&i| info[i].content).map(column_of)?;
        match segment {
            KeySegment::Key(key) => {
                let mut found = None;
                for i in from..to {
                    if !info[i].content || column_of(i) != child_indent {
                        continue;
                    }
                    let rest = &text[lines[i].0 + child_indent..lines[i].1];
                    let after = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")]
                        .into_iter()
                        .find_map(|k| rest.strip_prefix(k.as_str()).map(|_| k.len()));
                    if let Some(after) = after {
                        found = Some((i, lines[i].0 + child_indent + after));
                        break;
                    }
                }
                let (i, value_at) = found?;
                if last {
                    let line_end = lines[i].1;
                    let tail = &text[value_at..line_end];
                    let current = tail.split(" #").next().unwrap_or("").trim();
                    if current.is_empty() || current.starts_with(['|', '>', '{', '[', '&', '*', '!']) {
                        return None;
                    }
                    let start = value_at + (tail.len() - tail.trim_start().len());
                    let end = start + current.len();
                    let mut out = String::with_capacity(text.len() + scalar.len());
                    out.push_str(&text[..start]);
                    out.push_str(scalar);
                    out.push_str(&text[end..]);
                    return Some(out);
                }
                let block_end = (i + 1..to).find(|&j| info[j].content && info[j].indent <= child_indent).unwrap_or(to);
                // The value may be a sequence at the same indentation (`key:\n- a`).
                let block_end = if block_end < to && text[lines[block_end].0..].trim_start().starts_with("- ") && info[block_end].indent == child_indent {
                    (block_end..to)
                        .find(|&j| info[j].content && info[j].indent <= child_indent && !text[lines[j].0 + info[j].indent..].starts_with("- "))
                        .unwrap_or(to)
                } else {
                    block_end
                };
                from = i + 1;
                to = block_end;
                first_column = None;
            }
            KeySegment::Index(index) => {
                let items: Vec<usize> = (from..to)
                    .filter(|&i| info[i].content && column_of(i) == child_indent && text[lines[i].0 + child_indent..lines[i].1].starts_with("- "))
                    .collect();
                let &i = items.get(*index)?;
                let next = items.get(index + 1).copied().unwrap_or(to);
                if last {
                    return None;
                }
                from = i;
                to = next;
                first_column = Some(child_indent + 2);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_core::catalog::parse_key_path;
    use serde_json::json;

    fn check(format: EditFormat, text: &str, path: &str, value: Value, expected: &str) {
        let out = apply(format, text, &parse_key_path(path).unwrap(), &value).unwrap();
        assert_eq!(out, expected, "{path}");
    }

    #[test]
    fn yaml_edits_keep_comments_and_layout() {
        let text = "# the web deployment\napiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 2 # scaled by hand\n  template:\n    spec:\n      containers:\n        - name: web\n          image: web:1.0\n        - name: sidecar\n          image: proxy:2.0\n";
        check(EditFormat::Yaml, text, "spec.replicas", json!(5), &text.replace("replicas: 2", "replicas: 5"));
        check(
            EditFormat::Yaml,
            text,
            "spec.template.spec.containers[1].image",
            json!("proxy:2.1"),
            &text.replace("proxy:2.0", "proxy:2.1"),
        );
        check(
            EditFormat::Yaml,
            text,
            "spec.template.spec.containers[0].name",
            json!("true"),
            &text.replace("- name: web", "- name: \"true\""),
        );
    }

    #[test]
    fn yaml_falls_back_to_a_rewrite_and_refuses_missing_parents() {
        let out = apply(EditFormat::Yaml, "a: {b: 1}\n", &parse_key_path("a.b").unwrap(), &json!(2)).unwrap();
        assert_eq!(serde_norway::from_str::<Value>(&out).unwrap(), json!({"a": {"b": 2}}));
        let err = apply(EditFormat::Yaml, "a: 1\n", &parse_key_path("x.y").unwrap(), &json!(2)).unwrap_err();
        assert!(err.contains("`x` does not exist"), "{err}");
    }

    #[test]
    fn toml_and_json() {
        check(
            EditFormat::Toml,
            "# pins\n[dependencies]\nserde = \"1.0.1\" # keep\n",
            "dependencies.serde",
            json!("1.0.2"),
            "# pins\n[dependencies]\nserde = \"1.0.2\" # keep\n",
        );
        check(
            EditFormat::Json,
            "{\"bucket\": {\"public\": true}}",
            "bucket.public",
            json!(false),
            "{\n  \"bucket\": {\n    \"public\": false\n  }\n}\n",
        );
    }
}
