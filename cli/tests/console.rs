//! The web console over real HTTP, against a real deployment: log in with a
//! token, see a production decision waiting with its explanation, approve it
//! (CSRF and origin checked), see it verified as someone else, read an incident's
//! trail proved against the log's signed checkpoint, and hostile alert text
//! rendered as text, under a policy that lets no script run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, ORIGIN, SET_COOKIE};

struct Console {
    base: String,
    http: reqwest::Client,
    _child: tokio::process::Child,
}

impl Console {
    async fn start(plane: &support::Plane) -> Self {
        let (child, base) = plane.console();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/login")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the console never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { base, http, _child: child }
    }

    /// Logs in with `token`; returns the session cookie.
    async fn login(&self, token: &str) -> String {
        let response = self.http.post(format!("{}/login", self.base)).form(&[("token", token)]).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(flag), "{cookie}");
        }
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn get(&self, session: &str, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.base)).header(COOKIE, session).send().await.unwrap();
        let policy = response.headers().get(CONTENT_SECURITY_POLICY).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(policy.contains("default-src 'none'") && !policy.contains("script-src"), "no script may run: {policy}");
        (response.status(), response.text().await.unwrap())
    }

    async fn post(&self, session: &str, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> (StatusCode, String) {
        let mut request = self.http.post(format!("{}{path}", self.base)).header(COOKIE, session).form(form);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Polls `path` until its page contains `text`.
    async fn until(&self, session: &str, path: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(session, path).await;
            if status == StatusCode::OK && body.contains(text) {
                return body;
            }
            assert!(Instant::now() < deadline, "`{path}` never showed `{text}`:\n{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The text between `before` and the next `"` in `body`.
fn after(body: &str, before: &str) -> String {
    let start = body.find(before).unwrap_or_else(|| panic!("no `{before}` in:\n{body}")) + before.len();
    body[start..].chars().take_while(|c| *c != '"' && *c != '<').collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_approves_from_the_console_and_sees_the_outcome() {
    // The same worker in production, where an on-call engineer must approve.
    let (plane, restarts) = support::Plane::with_production_worker().await;
    let console = Console::start(&plane).await;

    // No page without a session; a token that names no one is refused.
    let response = console.http.get(format!("{}/", console.base)).send().await.unwrap();
    assert_eq!((response.status(), response.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/login"));
    let (status, body) = console.post("", "/login", &[("token", "not-a-token")], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("names no identity"), "{body}");
    // The agent is the one identity that makes requests (proposals): it may not even
    // log in, so no one approves a request of their own from the console.
    for who in ["governor", "alertmanager", "agent"] {
        let (status, body) = console.post("", "/login", &[("token", &plane.token(who))], None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{who}: {body}");
        assert!(body.contains("may not use the console"), "{body}");
    }
    let alice = console.login(&plane.token("alice")).await;

    // A production alert: the decision waits for alice, with its explanation.
    plane.fire_about("WorkerWedged", "production").await;
    let queue = console.until(&alice, "/", "worker-production").await;
    assert!(queue.contains("restart_service") && queue.contains("Approve"), "{queue}");
    assert!(queue.contains("an on-call engineer must approve"), "the policy's reason is on the page: {queue}");
    let decision = after(&queue, "/decisions/");
    let decision = decision.split('/').next().unwrap().to_owned();
    let csrf = after(&queue, "name=csrf value=\"");
    let approve = format!("/decisions/{decision}/approve");

    // A change needs the session's CSRF token, from this origin.
    let (status, _) = console.post(&alice, &approve, &[("csrf", "forged"), ("comment", "")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = console.post(&alice, &approve, &[("csrf", &csrf), ("comment", "")], Some("http://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(restarts.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing ran on a refused form");
    let (status, page) = console.post(&alice, &approve, &[("csrf", &csrf), ("comment", "wedged again")], Some(&console.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Your approval is logged"), "{page}");

    // Bob sees it verified; his approval of a decision no longer pending is
    // refused on the page, with the governor's reason.
    let bob = console.login(&plane.token("bob")).await;
    let seen = console.until(&bob, &format!("/decisions/{decision}"), "class=\"state verified\"").await;
    assert!(seen.contains("approve by alice"), "{seen}");
    let bob_csrf = after(&seen, "name=csrf value=\"");
    let (_, refused) = console.post(&bob, &approve, &[("csrf", &bob_csrf), ("comment", "")], None).await;
    assert!(refused.contains("Your approval did not count") && refused.contains("not pending"), "{refused}");
    assert_eq!(restarts.load(std::sync::atomic::Ordering::SeqCst), 1, "one restart, approved once");

    // The incident's trail, each record proved in the log's signed checkpoint.
    let incident = after(&seen, "/incidents/");
    // The incident itself shows what the log says: its action verified.
    let trail = console.until(&bob, &format!("/incidents/{incident}"), "class=\"state verified\"").await;
    assert!(trail.contains("execution_started"), "{trail}");
    assert!(trail.contains("<td class=ok>proved</td>"), "{trail}");
    assert!(!trail.contains("class=error"), "{trail}");

    // Hostile alert text is text: no markup, no escape bytes.
    plane.fire_about("<script>alert(1)</script>\u{1b}[2K", "staging").await;
    let list = console.until(&bob, "/incidents", "&lt;script&gt;alert(1)&lt;/script&gt;").await;
    assert!(!list.contains("<script>") && !list.contains('\u{1b}'), "{list}");

    // The CLI lists the same incidents, newest first, filtered, in aligned columns.
    let list = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
            .args(["incident", "list"])
            .args(args)
            .env("ARF_CONFIG", &plane.config)
            .env("ARF_TOKEN", plane.token("bob"))
            .output()
            .unwrap()
    };
    let staging = list(&["--environment", "staging"]);
    let text = String::from_utf8_lossy(&staging.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("OPENED") && lines.len() == 2, "{text}");
    assert!(lines[1].contains("<script>alert(1)</script>\u{FFFD}[2K") && !text.contains("worker-production"), "{text}");
    assert_eq!(lines[0].find("STATE"), lines[1].find("escalated"), "aligned columns: {text}");
    let bogus = list(&["--state", "burning"]);
    assert_eq!(bogus.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bogus.stderr).contains("possible values: open, diagnosing, proposed, waiting, acting, verified, rolled_back, failed, escalated, resolved"));

    // The kill switch is offered to whoever is on call; logging out ends the session.
    let autonomy = console.until(&alice, "/autonomy", "Switch autonomy off").await;
    let csrf = after(&autonomy, "name=csrf value=\"");
    let (status, _) = console.post(&alice, "/logout", &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let response = console.http.get(format!("{}/", console.base)).header(COOKIE, &alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "the session is over");
}

/// `arf console --tls`: HTTPS with the deployment's `console` certificate, a
/// `Secure` session cookie, and changes taken only from the console's own names:
/// a page of another name pointed at this address (DNS rebinding) is refused as
/// another origin would be. Plain HTTP stays on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_session_is_secure_and_changes_come_only_from_the_consoles_names() {
    // The console reads identities from the deployment; logging in needs no service.
    let plane = support::Plane::prepare("http://127.0.0.1:9").await;
    let listen = support::free_port();
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["console", "--tls", "--listen", &listen.to_string(), "--config"])
        .arg(&plane.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(plane.certs().join("ca.pem")).unwrap()).unwrap();
    let client = |rebound: bool| {
        let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).add_root_certificate(ca.clone()).tls_built_in_root_certs(false);
        // `evil.example` answering from this address, as a rebinding attacker's DNS would make it.
        if rebound { builder.resolve("evil.example", listen) } else { builder }.build().unwrap()
    };
    let https = client(false);
    let base = format!("https://localhost:{}", listen.port());
    let deadline = Instant::now() + Duration::from_secs(30);
    while https.get(format!("{base}/login")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the console never answered over HTTPS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = https.post(format!("{base}/login")).form(&[("token", plane.token("alice").as_str())]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = https.get(format!("{base}/")).header(COOKIE, &session).send().await.unwrap().text().await.unwrap();
    let csrf = after(&page, "name=csrf value=\"");
    let logout = |client: &reqwest::Client, base: &str, origin: &str| {
        client.post(format!("{base}/logout")).header(COOKIE, &session).header(ORIGIN, origin).form(&[("csrf", csrf.as_str())]).send()
    };
    // Plain HTTP's origin is another origin.
    assert_eq!(logout(&https, &base, &format!("http://localhost:{}", listen.port())).await.unwrap().status(), StatusCode::FORBIDDEN);
    // The certificate does not name `evil.example`, so its page cannot even be served.
    assert!(logout(&client(true), &format!("https://evil.example:{}", listen.port()), &format!("https://evil.example:{}", listen.port())).await.is_err());
    // The console's own name, over HTTPS: the change is taken, and the cookie cleared securely.
    let out = logout(&https, &base, &base).await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = out.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0") && cleared.contains("Secure"), "{cleared}");

    // Plain HTTP: loopback only, and a rebound name is refused as another origin.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).args(["console", "--listen", "192.0.2.1:7490", "--config"]).arg(&plane.config).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("plain HTTP stays on loopback"), "{}", String::from_utf8_lossy(&refused.stderr));
    let console = Console::start(&plane).await;
    let alice = console.login(&plane.token("alice")).await;
    let (_, page) = console.get(&alice, "/").await;
    let csrf = after(&page, "name=csrf value=\"");
    let port = console.base.rsplit(':').next().unwrap().to_owned();
    let rebound = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).resolve("evil.example", console.base.trim_start_matches("http://").parse().unwrap()).build().unwrap();
    let evil = format!("http://evil.example:{port}");
    let response = rebound.post(format!("{evil}/logout")).header(COOKIE, &alice).header(ORIGIN, &evil).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a name that is not the console's is another origin");
    let (status, _) = console.post(&alice, "/logout", &[("csrf", &csrf)], Some(&console.base)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}
