//! Who sent a webhook: the credentials real senders can send.
//!
//! - `Authorization: Bearer TOKEN`: Alertmanager's `http_config.authorization`,
//!   and most tools that post JSON.
//! - `Authorization: Basic base64(NAME:TOKEN)`: Alertmanager's `http_config.basic_auth`;
//!   the user name must be the identity's name and the password its token.
//! - `X-Hub-Signature-256: sha256=HEX` with `X-ARF-Timestamp: SECONDS`: senders
//!   that sign with a shared secret (`agent.webhook_hmac`). The HMAC-SHA256 covers
//!   `SECONDS.PATH_AND_QUERY.BODY` (`1764129600./v1/webhooks/generic?service=web.{...}`),
//!   so neither the time, the format nor the attribution can be changed; a signature
//!   is accepted within [`SIGNATURE_WINDOW_SECS`] of its timestamp and only once.
//!
//! Every path on the webhook port goes through this, unknown ones included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use arf_core::identity::{Caller, Identities};

/// How far a signed request's timestamp may be from the agent's clock.
pub const SIGNATURE_WINDOW_SECS: i64 = 300;

/// At most this many signatures are remembered for replay protection; when full,
/// signed requests are refused (503) rather than accepted unchecked.
const MAX_REMEMBERED: usize = 200_000;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const TIMESTAMP_HEADER: &str = "x-arf-timestamp";

/// The agent's webhook credentials.
pub struct WebhookAuth {
    identities: Identities,
    signers: Vec<(Caller, Vec<u8>)>,
    /// Signature → its timestamp, for as long as the timestamp is in the window.
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

/// Why a webhook was refused: 401 for missing or wrong credentials, 403 for a
/// caller whose role may not send signals, 503 when replays cannot be checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

fn unauthorized(message: impl Into<String>) -> Refused {
    Refused { status: StatusCode::UNAUTHORIZED, message: message.into() }
}

impl WebhookAuth {
    pub fn new(identities: Identities, signers: Vec<(Caller, Vec<u8>)>) -> Self {
        Self { identities, signers, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether the request must be read whole before it can be judged (it is signed).
    fn is_signed(headers: &HeaderMap) -> bool {
        headers.contains_key(SIGNATURE_HEADER)
    }

    /// The caller a token or basic-auth header names.
    fn by_header(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "the agent's webhooks need credentials: `Authorization: Bearer TOKEN`, basic auth (identity name and token), or an `X-Hub-Signature-256` signature",
            ));
        };
        let value = value.to_str().map_err(|_| unauthorized("the `Authorization` header is not text"))?;
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        let caller = if scheme.eq_ignore_ascii_case("bearer") {
            self.identities.by_token(credentials).cloned().ok_or_else(|| unauthorized("the token presented belongs to no identity the agent knows"))?
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| unauthorized("basic credentials are not base64 of `NAME:TOKEN`"))?;
            let (name, token) = decoded.split_once(':').ok_or_else(|| unauthorized("basic credentials are not `NAME:TOKEN`"))?;
            self.identities
                .by_token(token)
                .filter(|caller| caller.name == name)
                .cloned()
                .ok_or_else(|| unauthorized("the basic credentials name no identity the agent knows"))?
        } else {
            // The scheme is not echoed: a bare `Authorization: TOKEN` would send the token back.
            return Err(unauthorized("unsupported authorization scheme; use `Bearer` or `Basic`"));
        };
        Ok(caller)
    }

    /// The signature and timestamp of a signed request, checked for form and
    /// freshness before its body is read.
    fn signed_headers(headers: &HeaderMap, now_secs: i64) -> Result<([u8; 32], String), Refused> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let signature = text(SIGNATURE_HEADER)
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(|v| hex::decode(v).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| unauthorized("`X-Hub-Signature-256` is not `sha256=` and 64 hex digits"))?;
        let timestamp_text = text(TIMESTAMP_HEADER)
            .ok_or_else(|| unauthorized("a signed webhook needs `X-ARF-Timestamp` (Unix seconds), which the signature covers"))?;
        let timestamp: i64 = timestamp_text.parse().map_err(|_| unauthorized("`X-ARF-Timestamp` is not Unix seconds"))?;
        if now_secs.abs_diff(timestamp) > SIGNATURE_WINDOW_SECS.unsigned_abs() {
            return Err(unauthorized(format!(
                "`X-ARF-Timestamp` {timestamp} is more than {SIGNATURE_WINDOW_SECS} s from the agent's clock ({now_secs})"
            )));
        }
        Ok((signature, timestamp_text.to_owned()))
    }

    /// The signer of a signed request (`path_and_query` as sent), checked for freshness and replay.
    fn by_signature(&self, headers: &HeaderMap, path_and_query: &str, body: &[u8], now_secs: i64) -> Result<Caller, Refused> {
        let (signature, timestamp_text) = Self::signed_headers(headers, now_secs)?;
        let timestamp: i64 = timestamp_text.parse().unwrap_or_default();
        let signed = signed_content(&timestamp_text, path_and_query, body);
        let caller = self
            .signers
            .iter()
            .find(|(_, secret)| arf_core::keys::constant_time_eq(&arf_core::keys::hmac_sha256(secret, &signed), &signature))
            .map(|(caller, _)| caller.clone())
            .ok_or_else(|| unauthorized("the signature matches no configured sender's secret"))?;
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, at| now_secs.abs_diff(*at) <= SIGNATURE_WINDOW_SECS.unsigned_abs());
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err(Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "too many signed webhooks in the replay window to check this one; retry shortly".to_owned(),
            });
        }
        if seen.insert(signature, timestamp).is_some() {
            return Err(unauthorized("this signature was already accepted: a replay is refused"));
        }
        Ok(caller)
    }
}

/// What a sender signs: `TIMESTAMP.PATH_AND_QUERY.BODY`.
pub fn signed_content(timestamp: &str, path_and_query: &str, body: &[u8]) -> Vec<u8> {
    let mut signed = Vec::with_capacity(timestamp.len() + path_and_query.len() + 2 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(path_and_query.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    signed
}

fn refusal(refused: Refused) -> Response {
    let mut response = (refused.status, axum::Json(serde_json::json!({"error": refused.message}))).into_response();
    if refused.status == StatusCode::UNAUTHORIZED
        && let Ok(value) = "Bearer realm=\"arf-agent\"".parse()
    {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The middleware: names the caller (into the request's extensions) or refuses.
pub async fn authenticate(State(auth): State<Arc<WebhookAuth>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let (caller, body) = if WebhookAuth::is_signed(&parts.headers) {
        let now_secs = arf_core::time::now_ms().div_euclid(1000);
        // The form and freshness first: a stale or malformed request is not read.
        if let Err(refused) = WebhookAuth::signed_headers(&parts.headers, now_secs) {
            return refusal(refused);
        }
        let bytes = match axum::body::to_bytes(body, crate::ingest::MAX_BODY_BYTES).await {
            Ok(bytes) => bytes,
            Err(_) => {
                return refusal(Refused {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("the body is larger than {} bytes, or was cut off", crate::ingest::MAX_BODY_BYTES),
                });
            }
        };
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        match auth.by_signature(&parts.headers, path_and_query, &bytes, now_secs) {
            Ok(caller) => (caller, Body::from(bytes)),
            Err(refused) => return refusal(refused),
        }
    } else {
        match auth.by_header(&parts.headers) {
            Ok(caller) => (caller, body),
            Err(refused) => return refusal(refused),
        }
    };
    if !caller.role.may_submit_signals() {
        return refusal(Refused { status: StatusCode::FORBIDDEN, message: format!("{caller} may not send signals") });
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arf_core::identity::{Identity, Role};

    fn auth() -> (WebhookAuth, String) {
        let (token, hash) = arf_core::identity::new_token().unwrap();
        let identities = Identities::load(
            &[Identity { name: "am".into(), role: "source".into(), token_file: None, token_sha256: Some(hash), services: Vec::new(), environments: Vec::new() }],
            "agent.identities",
        )
        .unwrap();
        let signer = (Caller { name: "ci".into(), role: Role::Source }, b"0123456789abcdef0123456789abcdef".to_vec());
        (WebhookAuth::new(identities, vec![signer]), token)
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    const PATH: &str = "/v1/webhooks/generic?service=web";

    fn sign(timestamp: i64, body: &[u8]) -> HeaderMap {
        let signed = signed_content(&timestamp.to_string(), PATH, body);
        let mac = arf_core::keys::hmac_sha256(b"0123456789abcdef0123456789abcdef", &signed);
        headers(&[(SIGNATURE_HEADER, format!("sha256={}", hex::encode(mac))), (TIMESTAMP_HEADER, timestamp.to_string())])
    }

    #[test]
    fn bearer_and_basic_name_the_identity() {
        let (auth, token) = auth();
        let basic = |user: &str, pass: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        assert_eq!(auth.by_header(&headers(&[("authorization", format!("Bearer {token}"))])).unwrap().name, "am");
        assert_eq!(auth.by_header(&headers(&[("authorization", format!("Basic {}", basic("am", &token)))])).unwrap().name, "am");
        for (value, why) in [
            (format!("Basic {}", basic("someone-else", &token)), "basic credentials name no identity"),
            (format!("Bearer {}x", token), "belongs to no identity"),
            (format!("Token{token}"), "unsupported authorization scheme"),
            ("Basic !!!".to_owned(), "not base64"),
        ] {
            let refused = auth.by_header(&headers(&[("authorization", value)])).unwrap_err();
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
            assert!(!refused.message.contains(&token), "the token is not echoed: {}", refused.message);
            assert!(refused.message.contains(why), "{}", refused.message);
        }
        assert!(auth.by_header(&HeaderMap::new()).unwrap_err().message.contains("need credentials"));
    }

    #[test]
    fn a_signature_is_accepted_once_within_its_window_and_covers_body_and_time() {
        let (auth, _) = auth();
        let now = 1_800_000_000;
        let body = br#"{"title":"x"}"#;
        assert_eq!(auth.by_signature(&sign(now - 10, body), PATH, body, now).unwrap().name, "ci");
        let replay = auth.by_signature(&sign(now - 10, body), PATH, body, now).unwrap_err();
        assert!(replay.message.contains("replay"), "{}", replay.message);
        let changed = auth.by_signature(&sign(now - 5, body), PATH, br#"{"title":"y"}"#, now).unwrap_err();
        assert!(changed.message.contains("matches no configured sender"), "{}", changed.message);
        // The timestamp is signed: moving it forward breaks the signature.
        let mut moved = sign(now - 4, body);
        moved.insert(TIMESTAMP_HEADER, (now - 3).to_string().parse().unwrap());
        assert!(auth.by_signature(&moved, PATH, body, now).unwrap_err().message.contains("matches no configured sender"));
        let stale = auth.by_signature(&sign(now - SIGNATURE_WINDOW_SECS - 1, body), PATH, body, now).unwrap_err();
        assert!(stale.message.contains("more than 300 s"), "{}", stale.message);
        // Another path (format or attribution) under the same signature is refused.
        let elsewhere = auth.by_signature(&sign(now - 6, body), "/v1/webhooks/generic?service=payments", body, now).unwrap_err();
        assert!(elsewhere.message.contains("matches no configured sender"), "{}", elsewhere.message);
        // Timestamps at the ends of i64 are refused, not overflowed.
        for extreme in [i64::MIN, i64::MAX, i64::MIN + now] {
            let mut headers = sign(now, body);
            headers.insert(TIMESTAMP_HEADER, extreme.to_string().parse().unwrap());
            assert!(auth.by_signature(&headers, PATH, body, now).unwrap_err().message.contains("more than 300 s"));
        }
        let mut unsigned_time = sign(now, body);
        unsigned_time.remove(TIMESTAMP_HEADER);
        assert!(auth.by_signature(&unsigned_time, PATH, body, now).unwrap_err().message.contains("X-ARF-Timestamp"));
    }
}
