//! Running one checked tool call: PromQL, HTTP GET and read-only commands.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::catalog::{Tool, ToolKind};

/// Bytes read beyond a tool's output limit, so that a secret cut at the limit is
/// still whole when redaction looks at it.
pub const REDACTION_MARGIN: usize = 4096;
/// The most a PromQL answer may be before it is summarized.
const PROMQL_MAX_ANSWER: usize = 4 << 20;
/// Values of one series shown in a range query's summary.
const SERIES_VALUES: usize = 24;

/// What a tool's templates see: the target as the reviewed inventory declares it,
/// and the model's checked parameters. Nothing from a signal (a service or
/// environment label is attacker-controlled text) is ever rendered into a tool.
pub struct Context {
    pub target: Option<Value>,
    pub parameters: Value,
}

impl Context {
    fn render(&self, template: &str, parameters: &Value) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let context = minijinja::context! { target => self.target, parameters => parameters };
        env.render_str(template, context).map_err(|e| format!("cannot render the tool's template: {e}"))
    }
}

/// Runs `tool`; the output, read up to `limit` plus [`REDACTION_MARGIN`] bytes.
pub async fn run(tool: &Tool, context: &Context, http: &reqwest13::Client, limit: usize) -> Result<Vec<u8>, String> {
    let read = limit.saturating_add(REDACTION_MARGIN);
    match tool.kind {
        ToolKind::Promql => promql(tool, context, http).await.map(String::into_bytes),
        ToolKind::HttpGet => {
            let parameters = map_strings(&context.parameters, &|s| percent_encode(s));
            let template = tool.url.as_deref().unwrap_or_default();
            let url = context.render(template, &parameters)?;
            let url = reqwest13::Url::parse(&url).map_err(|e| format!("the URL is not valid: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("the URL is not http or https".to_owned());
            }
            // The parameters choose a path, never the server: rendered with neutral
            // values, the URL must name the same scheme, host and port.
            for neutral in ["p", "q0"] {
                let neutral = context.render(template, &map_scalars(&context.parameters, neutral))?;
                let neutral = reqwest13::Url::parse(&neutral).map_err(|e| format!("the URL is not valid: {e}"))?;
                if url.origin() != neutral.origin() {
                    return Err("the parameters would change the URL's server".to_owned());
                }
            }
            let response = send(http, url, tool).await?;
            read_body(response, read).await
        }
        ToolKind::Command => command(tool, context, read).await,
        ToolKind::IncidentMemory => Err("incident memory is answered by the session".to_owned()),
    }
}

async fn send(http: &reqwest13::Client, url: reqwest13::Url, tool: &Tool) -> Result<reqwest13::Response, String> {
    let mut request = http.get(url.clone()).timeout(std::time::Duration::from_secs(tool.timeout_secs));
    if let Some(file) = &tool.bearer_token_file {
        let token = arf_core::keys::load_token(file).map_err(|e| format!("cannot read the tool's token: {e}"))?;
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| if e.is_timeout() { format!("`{}` did not answer in time", without_query(&url)) } else { format!("cannot reach `{}`", without_query(&url)) })?;
    if !response.status().is_success() {
        let status = response.status();
        // Far more than the 300 characters the error keeps: it is redacted first and
        // cut after, so a secret cut in two here lies past what is kept.
        let body = read_body(response, 4096).await.unwrap_or_default();
        return Err(format!("`{}` answered {status}: {}", without_query(&url), String::from_utf8_lossy(&body).trim()));
    }
    Ok(response)
}

fn without_query(url: &reqwest13::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

async fn read_body(mut response: reqwest13::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while body.len() <= limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(format!("the answer broke off: {e}")),
        }
    }
    body.truncate(limit.saturating_add(1));
    Ok(body)
}

async fn promql(tool: &Tool, context: &Context, http: &reqwest13::Client) -> Result<String, String> {
    // Values go inside PromQL's double-quoted strings: escape what would end one.
    let parameters = map_strings(&context.parameters, &|s| s.replace('\\', "\\\\").replace('"', "\\\""));
    let query = context.render(tool.query.as_deref().unwrap_or_default(), &parameters)?;
    let base = tool.endpoint.as_deref().unwrap_or_default().trim_end_matches('/');
    let now = arf_core::time::now_ms() as f64 / 1000.0;
    let url = match tool.range_minutes {
        Some(minutes) => {
            let step = tool.step_secs.unwrap_or(60).to_string();
            let start = (now - f64::from(minutes) * 60.0).to_string();
            reqwest13::Url::parse_with_params(&format!("{base}/api/v1/query_range"), [("query", query.as_str()), ("start", &start), ("end", &now.to_string()), ("step", &step)])
        }
        None => reqwest13::Url::parse_with_params(&format!("{base}/api/v1/query"), [("query", query.as_str()), ("time", &now.to_string())]),
    }
    .map_err(|e| format!("the Prometheus URL is not valid: {e}"))?;
    let response = send(http, url, tool).await?;
    let body = read_body(response, PROMQL_MAX_ANSWER).await?;
    if body.len() > PROMQL_MAX_ANSWER {
        return Err(format!("Prometheus answered more than {PROMQL_MAX_ANSWER} bytes; the query should select less"));
    }
    let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("Prometheus's answer is not JSON: {e}"))?;
    if answer["status"] != "success" {
        return Err(format!("Prometheus refused the query: {}", answer["error"].as_str().unwrap_or("no reason given")));
    }
    Ok(summarize_promql(&query, &answer["data"]))
}

/// A PromQL answer as lines a model reads: one per series.
pub fn summarize_promql(query: &str, data: &Value) -> String {
    let mut lines = vec![format!("query: {query}")];
    let labels = |metric: &Value| {
        let pairs: Vec<String> = metric.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), |s| format!("{s:?}")))).collect()).unwrap_or_default();
        format!("{{{}}}", pairs.join(", "))
    };
    let value = |pair: &Value| pair.get(1).and_then(Value::as_str).unwrap_or("?").to_owned();
    let results = data["result"].as_array().cloned().unwrap_or_default();
    match data["resultType"].as_str() {
        Some("vector") => lines.extend(results.iter().map(|r| format!("{} {}", labels(&r["metric"]), value(&r["value"])))),
        Some("matrix") => {
            for series in &results {
                let values: Vec<String> = series["values"].as_array().map(|v| v.iter().map(value).collect()).unwrap_or_default();
                let numbers: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
                let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
                let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let every = values.len().div_ceil(SERIES_VALUES).max(1);
                let shown: Vec<&str> = values.iter().step_by(every).map(String::as_str).collect();
                lines.push(format!("{} {} points, min {min}, max {max}, oldest to newest: {}", labels(&series["metric"]), values.len(), shown.join(" ")));
            }
        }
        Some("scalar" | "string") => lines.push(value(&data["result"])),
        _ => lines.push(format!("an answer of type {}", data["resultType"])),
    }
    if results.is_empty() && data["resultType"] != "scalar" && data["resultType"] != "string" {
        lines.push("no series matched".to_owned());
    }
    lines.join("\n")
}

async fn command(tool: &Tool, context: &Context, read: usize) -> Result<Vec<u8>, String> {
    let program = tool.program.as_deref().unwrap_or_default();
    let name = super::catalog::program_name(program);
    let mut args = tool.args.iter().map(|a| context.render(a, &context.parameters)).collect::<Result<Vec<_>, _>>()?;
    for arg in args.iter().skip(1) {
        if let Some(why) = super::catalog::dangerous_argument(name, arg) {
            return Err(format!("refused: {why}"));
        }
    }
    if name == "git" && !args.is_empty() {
        // No hook, filesystem monitor, signature check, text conversion or external
        // diff runs: a repository's own configuration cannot make a read run a program.
        let verb = args.remove(0);
        let mut hardened: Vec<String> = [
            "core.fsmonitor=false",
            "core.hooksPath=/dev/null",
            "log.showSignature=false",
            "gpg.program=/bin/false",
            "gpg.ssh.program=/bin/false",
            "gpg.x509.program=/bin/false",
        ]
        .iter()
        .flat_map(|setting| ["-c".to_owned(), (*setting).to_owned()])
        .collect();
        hardened.push(verb.clone());
        if matches!(verb.as_str(), "log" | "show") {
            hardened.extend(["--no-textconv".to_owned(), "--no-ext-diff".to_owned()]);
        }
        hardened.append(&mut args);
        args = hardened;
    }
    let mut command = tokio::process::Command::new(program);
    command
        .args(&args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that whatever it starts is stopped with it.
        .process_group(0)
        .kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for variable in &tool.env {
        if let Ok(value) = std::env::var(variable) {
            command.env(variable, value);
        }
    }
    if name == "git" {
        // No system or user configuration, no prompts: only the declared repository's own.
        command.env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null").env("GIT_TERMINAL_PROMPT", "0");
    }
    if let Some(dir) = &tool.dir {
        let dir = context.render(dir, &context.parameters)?;
        if !std::path::Path::new(&dir).is_absolute() {
            return Err("the working directory is not an absolute path".to_owned());
        }
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| format!("cannot run `{name}`: {e}"))?;
    let group = Group(child.id());
    let mut stdout = child.stdout.take().ok_or("no output pipe")?;
    let mut stderr = child.stderr.take().ok_or("no error pipe")?;
    // Both pipes are read at once, so that a chatty stderr cannot stall the child.
    let out = async {
        let mut output = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        while output.len() <= read {
            match stdout.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => output.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("cannot read `{name}`'s output: {e}")),
            }
        }
        Ok(output)
    };
    let err = async {
        let mut errors = Vec::new();
        let mut chunk = vec![0u8; 4096];
        loop {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) if errors.len() < 2048 => errors.extend_from_slice(&chunk[..n]),
                Ok(_) => {}
            }
        }
        errors
    };
    let (output, errors) = tokio::join!(
        async {
            let output = out.await;
            // Enough output, or an error: the rest is never read, and the group is stopped.
            if output.as_ref().map_or(true, |o| o.len() > read) {
                group.kill();
            }
            output
        },
        err
    );
    let mut output = output?;
    if output.len() > read {
        output.truncate(read.saturating_add(1));
        return Ok(output);
    }
    let status = child.wait().await.map_err(|e| format!("`{name}` did not finish: {e}"))?;
    if !status.success() {
        return Err(format!("`{name} {}` exited with {status}: {}", tool.args.first().map_or("", String::as_str), String::from_utf8_lossy(&errors).trim()));
    }
    Ok(output)
}

/// A child's process group, stopped when dropped (a timeout drops the call).
struct Group(Option<u32>);

impl Group {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            arf_core::process::kill_group(pgid);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why a value may not be a tool's argument: values are names, paths, durations
/// and numbers (letters, digits, `_ . / : -`), never an option (a leading `-`), a
/// path that climbs (`..`), a negative number, or anything but a scalar.
pub fn hostile_value(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.values().find_map(|v| match v {
            Value::Object(_) | Value::Array(_) => Some("a parameter is a list or an object; values are single names or numbers".to_owned()),
            other => hostile_value(other),
        }),
        Value::Array(_) => Some("a parameter is a list; values are single names or numbers".to_owned()),
        Value::String(s) if s.is_empty() || s.len() > 256 => Some("a value is empty or longer than 256 bytes".to_owned()),
        Value::String(s) if s.starts_with('-') => Some("a value starts with `-`: a value is never an option".to_owned()),
        Value::String(s) if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '-')) => {
            Some("a value holds a character other than letters, digits and `_ . / : -`".to_owned())
        }
        Value::String(s) if s.split('/').any(|segment| segment == ".." || segment == ".") => Some("a value climbs a path (`..` or `.`)".to_owned()),
        Value::Number(n) if n.as_f64().is_some_and(|f| f < 0.0) => Some("a number is negative".to_owned()),
        _ => None,
    }
}

/// `value` with every scalar (string, number, boolean) replaced by `neutral`.
fn map_scalars(value: &Value, neutral: &str) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| map_scalars(v, neutral)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), map_scalars(v, neutral))).collect()),
        Value::Null => Value::Null,
        _ => Value::String(neutral.to_owned()),
    }
}

fn map_strings(value: &Value, f: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), map_strings(v, f))).collect()),
        other => other.clone(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `text` cut to at most `limit` bytes at a character boundary; whether it was cut.
pub fn cut(text: &str, limit: usize, already: bool) -> (String, bool) {
    if text.len() <= limit {
        return (text.to_owned(), already);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_that_look_like_options_or_carry_controls_are_refused() {
        for hostile in [
            json!({"path": "--output=/tmp/x"}),
            json!({"path": ["ok", "-n"]}),
            json!({"path": "a\nb"}),
            json!({"job": {"\"} or {__name__=~`.+`} or up{a=\"": 1}}),
            json!({"p": "@evil.example/"}),
            json!({"p": "../../etc/passwd"}),
            json!({"p": ".."}),
            json!({"q": "x\"} or up{a=\""}),
            json!({"lines": -5}),
            json!({"p": ""}),
        ] {
            assert!(hostile_value(&hostile).is_some(), "{hostile}");
        }
        assert!(hostile_value(&json!({"path": "deploy/app.yaml", "lines": 20, "window": "5m", "commit": "c0ffee12"})).is_none());
    }

    #[tokio::test]
    async fn parameters_never_change_the_server() {
        let tool: Tool = toml::from_str(
            "name = \"t\"\nkind = \"http_get\"\ndescription = \"d\"\nurl = \"{{ target.facts.url }}{{ parameters.sub }}/x\"\nparameters = { type = \"object\", properties = { sub = { type = \"string\", pattern = \"^[a-z.]+$\" } } }\n",
        )
        .unwrap();
        let context = Context { target: Some(json!({"facts": {"url": "http://internal"}})), parameters: json!({"sub": ".evil.example"}) };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let error = run(&tool, &context, &reqwest13::Client::new(), 100).await.unwrap_err();
        assert!(error.contains("change the URL's server"), "{error}");
    }

    #[test]
    fn url_values_are_percent_encoded() {
        assert_eq!(percent_encode("a/../b?x=1#y"), "a%2F..%2Fb%3Fx%3D1%23y");
    }

    #[test]
    fn cutting_keeps_characters_whole() {
        let (text, cut_) = cut("héllo", 2, false);
        assert_eq!((text.as_str(), cut_), ("h", true));
        assert_eq!(cut("hi", 8, false), ("hi".to_owned(), false));
    }

    #[test]
    fn a_range_answer_reads_as_one_line_per_series() {
        let data = json!({"resultType": "matrix", "result": [{"metric": {"job": "web"}, "values": [[1, "1"], [2, "3"], [3, "2"]]}]});
        let text = summarize_promql("up", &data);
        assert!(text.contains("{job=\"web\"} 3 points, min 1, max 3, oldest to newest: 1 3 2"), "{text}");
        let empty = summarize_promql("up", &json!({"resultType": "vector", "result": []}));
        assert!(empty.contains("no series matched"), "{empty}");
    }
}
