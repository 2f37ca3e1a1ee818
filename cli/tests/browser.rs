//! The console in a real browser: Debian's Chromium, driven over the W3C
//! WebDriver protocol by Debian's chromedriver (`.ci/run` installs both). Alice
//! logs in and approves the production decision waiting for her; Bob logs in and
//! sees it verified; an alert title holding `<script>` and an escape byte is shown
//! as text, and no script runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: tokio::process::Child,
    /// The process group chromedriver leads, and the browser it starts with it.
    group: Option<u32>,
    _profile: tempfile::TempDir,
}

/// Killing chromedriver alone would leave the browser running: the whole group
/// goes, whether the test passed or panicked.
impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
        }
    }
}

impl Browser {
    async fn start() -> Self {
        let port = support::free_port().port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, which .ci/run installs)");
        let group = driver.id();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let created: Value = http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        let browser = Self { http, session: format!("{base}/session/{session}"), _driver: driver, group, _profile: profile };
        // A click that submits a form returns before the next page is there: an
        // element is looked for until it appears (or 10 s pass).
        browser.call(reqwest::Method::POST, "/timeouts", Some(json!({"implicit": 10_000}))).await;
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        match found[ELEMENT].as_str() {
            Some(element) => element.to_owned(),
            None => panic!("no `{css}` on the page: {found}\n{}", self.source().await),
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{element}/text"), None).await.as_str().unwrap_or_default().to_owned()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Reloads `url` until its page contains `text`.
    async fn until(&self, url: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.open(url).await;
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(Instant::now() < deadline, "`{url}` never showed `{text}`:\n{source}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Whether the page opened an alert dialog (a script ran).
    async fn alert_open(&self) -> bool {
        let text = self.call(reqwest::Method::GET, "/alert/text", None).await;
        text.is_string()
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        std::fs::write(path, base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap()).unwrap();
    }

    async fn log_in(&self, base: &str, token: &str) {
        self.open(&format!("{base}/login")).await;
        self.type_into("input[name=token]", token).await;
        self.click("form[action='/login'] button").await;
        // The click only starts the form's POST: wait for the page it leads to (it
        // has the log-out form), or the next navigation would cancel the log-in.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let source = self.source().await;
            if source.contains("Log out") {
                return;
            }
            assert!(Instant::now() < deadline, "logging in never led past the form:\n{source}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_approves_in_chromium_and_bob_sees_it_verified() {
    let (plane, restarts) = support::Plane::with_production_worker().await;
    let (_console, base) = plane.console();
    let browser = Browser::start().await;

    plane.fire_about("WorkerWedged", "production").await;
    plane.fire_about("<script>alert(1)</script>\u{1b}[2K", "staging").await;

    // Alice: the production decision waits for her, with its explanation.
    browser.log_in(&base, &plane.token("alice")).await;
    browser.until(&format!("{base}/"), "worker-production").await;
    let explanation = browser.text("pre.explanation").await;
    assert!(explanation.contains("restart_service"), "{explanation}");
    if let Ok(path) = std::env::var("ARF_CONSOLE_SCREENSHOT") {
        browser.screenshot(std::path::Path::new(&path)).await;
    }
    browser.type_into("input[name=comment]", "wedged again").await;
    browser.click("button.approve").await;
    let notice = browser.text("p.notice").await;
    assert!(notice.starts_with("Your approval is logged"), "{notice}");
    let decision = browser.text("dl dd code").await;

    // Bob, in his own session, sees it verified, approved by alice.
    browser.click("nav form button").await;
    browser.log_in(&base, &plane.token("bob")).await;
    let page = browser.until(&format!("{base}/decisions/{decision}"), "state verified").await;
    assert!(page.contains("approve by alice"), "{page}");
    assert_eq!(restarts.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The hostile title is text, and no script ran.
    browser.until(&format!("{base}/incidents"), "alert(1)").await;
    let title = browser.text("a[href^='/incidents/inc-']").await;
    let titles = browser.source().await;
    assert!(titles.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{titles}");
    assert!(!browser.alert_open().await, "no script ran");
    // The newest incident first: its title, as the browser shows it, is the alert's text.
    assert_eq!(title, "<script>alert(1)</script>\u{FFFD}[2K");
}
