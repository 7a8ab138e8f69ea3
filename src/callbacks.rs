//! Callbacks from the BBB servers to the LMS, re-signed for the LMS.
//!
//! A BBB server signs two callbacks with its own secret: "recording ready"
//! (a form POST whose `signed_parameters` is a JWT) and "meeting analytics"
//! (JSON with an `Authorization: Bearer` JWT). The LMS checks them with the
//! secret it knows, which is tinyscale's. So, with `TINYSCALE_PUBLIC_URL`
//! set, a create's callback URLs are replaced by a relay URL of tinyscale's
//! ([`Relay::change_pairs`]); the relay URL names the server and the original
//! URL, and is signed by tinyscale, so no state is kept (a recording is
//! ready hours later, perhaps after a restart) and only URLs tinyscale put
//! there are ever relayed. When a server calls it, its JWT is checked with
//! that server's secret, the server is answered 202 at once, and the same
//! claims, signed with `TINYSCALE_SECRET` and the same algorithm, are
//! delivered to the original URL in the background, tried again with
//! backoff ([`DELIVERY_BACKOFF`]). Deliveries not yet made are lost on a
//! restart.
//!
//! Owns the relay URLs, the JWT checks and the deliveries. Does not own
//! where a create goes (see `routing`) or the wire (see `backend`).

use crate::backend::Backend;
use crate::body::{self, NotRead};
use crate::config::ServerSpec;
use crate::errors::{self, Body};
use crate::metrics::Metrics;
use crate::state::State;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::sync::Arc;
use std::time::Duration;

/// The waits before each new try of a delivery the LMS did not take: six
/// tries in all, over about half a minute.
pub const DELIVERY_BACKOFF: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

/// Where a server reaches tinyscale's relay, after `TINYSCALE_PUBLIC_URL`.
pub const RELAY_PATH: &str = "/tinyscale/callback/";

/// The two callbacks a server signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `meta_bbb-recording-ready-url` (Greenlight), `meta_bn-recording-ready-url`
    /// (Moodle), `meta_canvas-recording-ready-url`: a form with
    /// `signed_parameters`.
    RecordingReady,
    /// `meta_analytics-callback-url` (Moodle's meeting events): JSON with a
    /// Bearer token.
    Analytics,
}

impl Kind {
    /// Its name in the relay path, the log and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::RecordingReady => "recording-ready",
            Kind::Analytics => "analytics",
        }
    }

    /// The callback a create parameter names, as bbb-web reads it: a name
    /// `meta_` then the meta name in any case (bbb-web lower-cases it).
    pub fn of_param(name: &str) -> Option<Kind> {
        let meta = name.strip_prefix("meta_")?.to_ascii_lowercase();
        match meta.as_str() {
            "bbb-recording-ready-url" | "bn-recording-ready-url" | "canvas-recording-ready-url" => {
                Some(Kind::RecordingReady)
            }
            "analytics-callback-url" => Some(Kind::Analytics),
            _ => None,
        }
    }

    /// The callback a request path is for: any path ending in
    /// `/tinyscale/callback/<kind>`, so that a proxy may keep or strip the
    /// public URL's path prefix.
    pub fn of_path(path: &str) -> Option<Kind> {
        let at = path.rfind(RELAY_PATH)?;
        match &path[at + RELAY_PATH.len()..] {
            "recording-ready" => Some(Kind::RecordingReady),
            "analytics" => Some(Kind::Analytics),
            _ => None,
        }
    }
}

/// Why a callback is refused (401; nothing is forwarded).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("its relay URL was not issued by this tinyscale")]
    NotIssued,
    #[error("it names the server {0}, which is not in the servers file")]
    UnknownServer(String),
    #[error("it carries no token")]
    NoToken,
    #[error("its token does not verify with that server's secret ({0})")]
    BadToken(String),
}

/// What a verified relay URL says.
#[derive(Debug, PartialEq, Eq)]
pub struct Relayed {
    /// The server's identity (its base URL in servers.json).
    pub server: String,
    /// The LMS's own callback URL, as the create gave it.
    pub url: String,
}

/// Issues and checks relay URLs: signed with `TINYSCALE_SECRET` (an HMAC
/// over a text of its own, so it can be taken neither for a BBB checksum
/// nor for a JWT).
pub struct Relay {
    /// `TINYSCALE_PUBLIC_URL` without a trailing slash; `None`: callbacks
    /// pass unchanged.
    public_url: Option<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// The relay of the tinyscale with `secret` (not empty).
    pub fn new(public_url: Option<&str>, secret: &str) -> Result<Relay, String> {
        let unusable = |e: jsonwebtoken::errors::Error| format!("TINYSCALE_SECRET: {e}");
        Ok(Relay {
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(unusable)?,
            decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(unusable)?,
        })
    }

    /// Whether creates' callback URLs are replaced.
    pub fn rewrites(&self) -> bool {
        self.public_url.is_some()
    }

    fn signed_text(kind: Kind, server: &str, url: &str) -> String {
        format!("tinyscale callback relay\n{}\n{server}\n{url}", kind.name())
    }

    /// The relay URL that stands for `url` in a create sent to `server`.
    pub fn relay_url(&self, kind: Kind, server: &str, url: &str) -> Option<String> {
        let public = self.public_url.as_deref()?;
        let text = Self::signed_text(kind, server, url);
        let sig =
            jsonwebtoken::crypto::sign(text.as_bytes(), &self.encoding, Algorithm::HS256).ok()?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("server", server)
            .append_pair("url", url)
            .append_pair("sig", &sig)
            .finish();
        Some(format!("{public}{RELAY_PATH}{}?{query}", kind.name()))
    }

    /// Checks a relay URL's query: tinyscale issued it for `kind`.
    pub fn check(&self, kind: Kind, query: &str) -> Result<Relayed, Refusal> {
        let (mut server, mut url, mut sig) = (None, None, None);
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*name {
                "server" => &mut server,
                "url" => &mut url,
                "sig" => &mut sig,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(Refusal::NotIssued);
            }
        }
        let (Some(server), Some(url), Some(sig)) = (server, url, sig) else {
            return Err(Refusal::NotIssued);
        };
        let text = Self::signed_text(kind, &server, &url);
        match jsonwebtoken::crypto::verify(&sig, text.as_bytes(), &self.decoding, Algorithm::HS256)
        {
            Ok(true) => Ok(Relayed { server, url }),
            _ => Err(Refusal::NotIssued),
        }
    }

    /// A create's raw parameters (a URL query or a form body) as `server`
    /// must receive them: each callback URL (an absolute http(s) URL)
    /// replaced by its relay URL, every other byte as it came. Unchanged
    /// without `TINYSCALE_PUBLIC_URL`.
    pub fn change_pairs(&self, raw: &[u8], server: &ServerSpec) -> Vec<u8> {
        let wanted = |name: &str| Kind::of_param(name).is_some();
        change_values(raw, wanted, |name, value| {
            let kind = Kind::of_param(name).filter(|_| is_http_url(value))?;
            self.relay_url(kind, &server.base, value)
        })
    }
}

/// Raw `name=value` pairs (a URL query or a form body) with the values
/// `change(name, value)` gives (both decoded; the new value is encoded
/// here) put in, every other byte as it came. A value is decoded only when
/// `wanted(name)`: a create has many parameters, few of them callbacks.
fn change_values(
    raw: &[u8],
    wanted: impl Fn(&str) -> bool,
    change: impl Fn(&str, &str) -> Option<String>,
) -> Vec<u8> {
    raw.split(|&b| b == b'&')
        .map(|pair| {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                return pair.to_vec();
            };
            let new = form_urlencoded::parse(&pair[..eq])
                .next()
                .filter(|(name, _)| wanted(name))
                .and_then(|_| form_urlencoded::parse(pair).next())
                .and_then(|(name, value)| change(&name, &value));
            match new {
                Some(new) => {
                    let mut changed = pair[..=eq].to_vec();
                    changed.extend(
                        form_urlencoded::byte_serialize(new.as_bytes()).flat_map(str::bytes),
                    );
                    changed
                }
                None => pair.to_vec(),
            }
        })
        .collect::<Vec<_>>()
        .join(&b'&')
}

/// An absolute http(s) URL with a host: what tinyscale relays to.
fn is_http_url(value: &str) -> bool {
    value
        .parse::<hyper::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
}

/// A URL as the log may show it: scheme, host and path, no query (an LMS
/// may put a token there).
pub fn shown_url(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme_str().unwrap_or("?"),
            u.authority().map_or("?", |a| a.as_str()),
            u.path()
        ),
        Err(_) => "(not a URL)".into(),
    }
}

/// The claims of `token` if it verifies with `secret` (an HMAC algorithm,
/// as BBB signs; `exp` checked when present, never demanded: the
/// recording-ready token has none), and its algorithm.
pub fn verify_token(
    token: &str,
    secret: &str,
) -> Result<(Algorithm, serde_json::Map<String, serde_json::Value>), Refusal> {
    let bad = |e: jsonwebtoken::errors::Error| Refusal::BadToken(e.to_string());
    let header = jsonwebtoken::decode_header(token).map_err(bad)?;
    if !matches!(
        header.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(Refusal::BadToken(format!(
            "algorithm {:?} is not one BBB signs with",
            header.alg
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(secret.as_bytes()).map_err(bad)?;
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        &key,
        &validation,
    )
    .map_err(bad)?;
    Ok((header.alg, data.claims))
}

/// The same claims signed with `secret` and `algorithm`.
pub fn resign(
    algorithm: Algorithm,
    claims: &serde_json::Map<String, serde_json::Value>,
    secret: &str,
) -> Option<String> {
    let key = EncodingKey::from_secret(secret.as_bytes()).ok()?;
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).ok()
}

/// A callback ready for the LMS.
#[derive(Debug)]
pub struct Delivery {
    pub kind: Kind,
    pub url: String,
    pub content_type: Option<HeaderValue>,
    pub authorization: Option<HeaderValue>,
    pub body: Bytes,
}

/// The callback the server sent, re-signed for the LMS: the JWT checked
/// with `server`'s secret and its claims signed with `secret`.
pub fn re_signed(
    kind: Kind,
    relayed: Relayed,
    server: &ServerSpec,
    secret: &str,
    content_type: Option<HeaderValue>,
    authorization: Option<&HeaderValue>,
    body: Bytes,
) -> Result<Delivery, Refusal> {
    let resigned = |token: &str| {
        let (algorithm, claims) = verify_token(token, &server.secret)?;
        resign(algorithm, &claims, secret)
            .ok_or_else(|| Refusal::BadToken("cannot be signed again".into()))
    };
    let (body, authorization) = match kind {
        Kind::RecordingReady => {
            let token = form_urlencoded::parse(&body)
                .find(|(name, _)| name == "signed_parameters")
                .map(|(_, v)| v.into_owned())
                .ok_or(Refusal::NoToken)?;
            let token = resigned(&token)?;
            let named = |name: &str| name == "signed_parameters";
            let body = change_values(&body, named, |_, _| Some(token.clone()));
            (Bytes::from(body), None)
        }
        Kind::Analytics => {
            let token = authorization
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .ok_or(Refusal::NoToken)?;
            let bearer = HeaderValue::try_from(format!("Bearer {}", resigned(token)?))
                .map_err(|e| Refusal::BadToken(e.to_string()))?;
            (body, Some(bearer))
        }
    };
    Ok(Delivery {
        kind,
        url: relayed.url,
        content_type,
        authorization,
        body,
    })
}

/// What receiving a callback needs of the running balancer.
pub struct Receiving<'a> {
    pub relay: &'a Relay,
    /// `TINYSCALE_SECRET`: the LMS checks the callbacks with it.
    pub secret: &'a str,
    pub state: &'a State,
    pub backend: &'a Backend,
    pub metrics: &'a Arc<Metrics>,
    /// The largest callback body read (analytics of a large meeting can be
    /// large): `TINYSCALE_MAX_BODY`.
    pub max_body: usize,
}

/// A callback from a server: checked, answered 202 at once, and delivered
/// to the LMS in the background; 401 when it does not verify.
pub async fn receive(kind: Kind, request: Request<Incoming>, at: Receiving<'_>) -> Response<Body> {
    let text =
        |status, text: &'static str| errors::response(status, "text/plain; charset=utf-8", text);
    if request.method() != Method::POST {
        let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        answer
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return answer;
    }
    // `server`: the one the relay URL names, once known.
    let refused = |server: &str, why: Refusal| {
        tracing::warn!(callback = kind.name(), server, "callback refused: {why}");
        at.metrics.callback(kind.name(), "refused", 1);
        text(StatusCode::UNAUTHORIZED, "Unauthorized\n")
    };
    let relayed = match at.relay.check(kind, request.uri().query().unwrap_or("")) {
        Ok(relayed) => relayed,
        Err(why) => return refused("-", why),
    };
    let Some(server) = at.state.cluster().get(&relayed.server).cloned() else {
        return refused("-", Refusal::UnknownServer(relayed.server));
    };
    let (parts, body) = request.into_parts();
    let body = match body::read_whole(body, at.max_body).await {
        Ok(body) => body,
        Err(NotRead::TooLarge) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n");
        }
        Err(NotRead::Broken) => return text(StatusCode::BAD_REQUEST, "Bad Request\n"),
    };
    let delivery = match re_signed(
        kind,
        relayed,
        &server.spec,
        at.secret,
        parts.headers.get(CONTENT_TYPE).cloned(),
        parts.headers.get(AUTHORIZATION),
        body,
    ) {
        Ok(delivery) => delivery,
        Err(why) => return refused(server.name(), why),
    };
    tracing::info!(
        callback = kind.name(),
        server = server.name(),
        to = shown_url(&delivery.url),
        "callback accepted; delivering it to the LMS"
    );
    at.metrics.callback(kind.name(), "accepted", 1);
    tokio::spawn(deliver(at.backend.clone(), at.metrics.clone(), delivery));
    text(StatusCode::ACCEPTED, "Accepted\n")
}

/// Delivers a callback to the LMS, trying again after each wait of
/// [`DELIVERY_BACKOFF`] while the LMS does not answer 2xx.
async fn deliver(backend: Backend, metrics: Arc<Metrics>, delivery: Delivery) {
    let kind = delivery.kind.name();
    let to = shown_url(&delivery.url);
    let tries = DELIVERY_BACKOFF.len() + 1;
    for attempt in 1..=tries {
        let result = backend
            .post(
                &delivery.url,
                delivery.content_type.as_ref(),
                delivery.authorization.as_ref(),
                delivery.body.clone(),
            )
            .await;
        let why = match result {
            Ok(status) if status.is_success() => {
                metrics.callback_delivery(kind, "delivered", 1);
                tracing::info!(
                    callback = kind,
                    to,
                    attempt,
                    "callback delivered to the LMS"
                );
                return;
            }
            Ok(status) => format!("the LMS answered HTTP {}", status.as_u16()),
            Err(e) => format!("the LMS {e}"),
        };
        metrics.callback_delivery(kind, "failed", 1);
        match DELIVERY_BACKOFF.get(attempt - 1) {
            Some(wait) => {
                tracing::warn!(
                    callback = kind,
                    to,
                    attempt,
                    "callback not delivered: {why}; trying again in {}s",
                    wait.as_secs()
                );
                tokio::time::sleep(*wait).await;
            }
            None => {
                metrics.callback_delivery(kind, "dropped", 1);
                tracing::error!(
                    callback = kind,
                    to,
                    attempt,
                    "callback not delivered: {why}; gave up after {tries} tries"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Algorithm as Checksum;
    use serde_json::json;

    fn server() -> ServerSpec {
        ServerSpec::new(
            "https://bbb1.example.org",
            "server-secret",
            Checksum::Sha256,
        )
    }

    fn relay() -> Relay {
        Relay::new(Some("https://lb.example.org/"), "tinyscale-secret").unwrap()
    }

    fn jwt(algorithm: Algorithm, claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// The relay URL a rewritten parameter holds, decoded.
    fn relay_in(query: &[u8], name: &str) -> String {
        form_urlencoded::parse(query)
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .into_owned()
    }

    #[test]
    fn callback_params_are_found_as_bbb_web_reads_meta_names() {
        assert_eq!(
            Kind::of_param("meta_bbb-recording-ready-url"),
            Some(Kind::RecordingReady)
        );
        assert_eq!(
            Kind::of_param("meta_BN-Recording-Ready-URL"),
            Some(Kind::RecordingReady)
        );
        assert_eq!(
            Kind::of_param("meta_canvas-recording-ready-url"),
            Some(Kind::RecordingReady)
        );
        assert_eq!(
            Kind::of_param("meta_Analytics-Callback-Url"),
            Some(Kind::Analytics)
        );
        // Not signed by BBB, or not a meta parameter at all.
        assert_eq!(Kind::of_param("meta_endCallbackUrl"), None);
        assert_eq!(Kind::of_param("meetingEndedURL"), None);
        assert_eq!(Kind::of_param("bbb-recording-ready-url"), None);
    }

    #[test]
    fn relay_paths_may_keep_a_prefix() {
        assert_eq!(
            Kind::of_path("/tinyscale/callback/recording-ready"),
            Some(Kind::RecordingReady)
        );
        assert_eq!(
            Kind::of_path("/lb/tinyscale/callback/analytics"),
            Some(Kind::Analytics)
        );
        assert_eq!(Kind::of_path("/tinyscale/callback/other"), None);
        assert_eq!(Kind::of_path("/tinyscale/callback/analytics/x"), None);
        assert_eq!(Kind::of_path("/bigbluebutton/api/create"), None);
    }

    #[test]
    fn a_create_gets_relay_urls_and_keeps_every_other_byte() {
        let raw = b"name=A%20B&meta_bn-recording-ready-url=https%3A%2F%2Fmoodle.example.org%2Fmod%2Fbigbluebuttonbn%2Fbbb_broker.php%3Faction%3Drecording_ready%26id%3D7&meetingID=m&meta_analytics-callback-url=https://moodle.example.org/events&meta_endCallbackUrl=https%3A%2F%2Fx&meta_bbb-recording-ready-url=&checksumless";
        let changed = relay().change_pairs(raw, &server());
        let text = String::from_utf8(changed.clone()).unwrap();
        assert!(text.starts_with("name=A%20B&meta_bn-recording-ready-url=https%3A%2F%2Flb.example.org%2Ftinyscale%2Fcallback%2Frecording-ready%3F"));
        assert!(text.contains("&meetingID=m&meta_analytics-callback-url=https%3A%2F%2Flb.example.org%2Ftinyscale%2Fcallback%2Fanalytics%3F"));
        // Not signed by BBB, empty or not a URL: as they came.
        assert!(text.ends_with(
            "&meta_endCallbackUrl=https%3A%2F%2Fx&meta_bbb-recording-ready-url=&checksumless"
        ));

        let url = relay_in(&changed, "meta_bn-recording-ready-url");
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(
            path,
            "https://lb.example.org/tinyscale/callback/recording-ready"
        );
        let relayed = relay().check(Kind::RecordingReady, query).unwrap();
        assert_eq!(relayed.server, "https://bbb1.example.org");
        assert_eq!(
            relayed.url,
            "https://moodle.example.org/mod/bigbluebuttonbn/bbb_broker.php?action=recording_ready&id=7"
        );
        // A relay URL is for its own kind only.
        assert_eq!(
            relay().check(Kind::Analytics, query),
            Err(Refusal::NotIssued)
        );
    }

    #[test]
    fn without_a_public_url_nothing_changes() {
        let raw = b"meta_bbb-recording-ready-url=https%3A%2F%2Fgl.example.org%2Fready&meetingID=m";
        let relay = Relay::new(None, "tinyscale-secret").unwrap();
        assert!(!relay.rewrites());
        assert_eq!(relay.change_pairs(raw, &server()), raw.to_vec());
    }

    #[test]
    fn relay_urls_not_issued_here_are_refused() {
        let url = relay()
            .relay_url(Kind::Analytics, "https://bbb1.example.org", "https://lms/x")
            .unwrap();
        let query = url.split_once('?').unwrap().1;
        assert!(relay().check(Kind::Analytics, query).is_ok());
        // Another secret, another URL, another server, no signature, twice.
        let other = Relay::new(Some("https://lb.example.org"), "another-secret").unwrap();
        assert_eq!(other.check(Kind::Analytics, query), Err(Refusal::NotIssued));
        let forged = query.replace("lms", "evil");
        assert_eq!(
            relay().check(Kind::Analytics, &forged),
            Err(Refusal::NotIssued)
        );
        let moved = query.replace("bbb1", "bbb2");
        assert_eq!(
            relay().check(Kind::Analytics, &moved),
            Err(Refusal::NotIssued)
        );
        let unsigned = query.split("&sig=").next().unwrap();
        assert_eq!(
            relay().check(Kind::Analytics, unsigned),
            Err(Refusal::NotIssued)
        );
        let twice = format!("{query}&url=https%3A%2F%2Fevil");
        assert_eq!(
            relay().check(Kind::Analytics, &twice),
            Err(Refusal::NotIssued)
        );
    }

    #[test]
    fn recording_ready_is_resigned_with_the_same_claims_and_algorithm() {
        let claims = json!({"meeting_id": "m1", "record_id": "r1"});
        let token = jwt(Algorithm::HS256, claims.clone(), "server-secret");
        let body = Bytes::from(format!("signed_parameters={token}"));
        let relayed = Relayed {
            server: server().base,
            url: "https://lms/ready?x=1".into(),
        };
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        let d = re_signed(
            Kind::RecordingReady,
            relayed,
            &server(),
            "tinyscale-secret",
            Some(form.clone()),
            None,
            body,
        )
        .unwrap();
        assert_eq!(d.url, "https://lms/ready?x=1");
        assert_eq!(d.content_type, Some(form));
        assert_eq!(d.authorization, None);
        let new = relay_in(&d.body, "signed_parameters");
        let (algorithm, got) = verify_token(&new, "tinyscale-secret").unwrap();
        assert_eq!(algorithm, Algorithm::HS256);
        assert_eq!(serde_json::Value::Object(got), claims);
        // No exp was there, none is added.
        assert!(verify_token(&new, "server-secret").is_err());
    }

    #[test]
    fn analytics_keeps_its_json_bytes_and_gets_a_new_bearer() {
        let exp = jsonwebtoken::get_current_timestamp() + 86_400;
        let token = jwt(Algorithm::HS512, json!({ "exp": exp }), "server-secret");
        let body = Bytes::from_static(br#"{"version":"1.0","meeting_id":"m1","data":{}}"#);
        let bearer = HeaderValue::try_from(format!("Bearer {token}")).unwrap();
        let relayed = Relayed {
            server: server().base,
            url: "https://lms/events".into(),
        };
        let d = re_signed(
            Kind::Analytics,
            relayed,
            &server(),
            "tinyscale-secret",
            Some(HeaderValue::from_static("application/json")),
            Some(&bearer),
            body.clone(),
        )
        .unwrap();
        assert_eq!(d.body, body);
        let new = d.authorization.unwrap();
        let new = new.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let (algorithm, claims) = verify_token(new, "tinyscale-secret").unwrap();
        assert_eq!(algorithm, Algorithm::HS512);
        assert_eq!(claims.get("exp"), Some(&json!(exp)));
    }

    #[test]
    fn tokens_that_do_not_verify_are_refused() {
        let relayed = || Relayed {
            server: server().base,
            url: "https://lms/x".into(),
        };
        let resign = |kind, auth: Option<&HeaderValue>, body: &str| {
            re_signed(
                kind,
                relayed(),
                &server(),
                "tinyscale-secret",
                None,
                auth,
                Bytes::from(body.to_string()),
            )
            .map(|_| ())
        };
        let claims = json!({"meeting_id": "m", "record_id": "r"});
        // Signed with another server's (or tinyscale's own) secret.
        let wrong = jwt(Algorithm::HS256, claims.clone(), "tinyscale-secret");
        assert!(matches!(
            resign(
                Kind::RecordingReady,
                None,
                &format!("signed_parameters={wrong}")
            ),
            Err(Refusal::BadToken(_))
        ));
        assert_eq!(
            resign(Kind::RecordingReady, None, "other=1"),
            Err(Refusal::NoToken)
        );
        assert!(matches!(
            resign(Kind::RecordingReady, None, "signed_parameters=not.a.jwt"),
            Err(Refusal::BadToken(_))
        ));
        // Expired.
        let old = jwt(Algorithm::HS512, json!({"exp": 1_000_000}), "server-secret");
        let bearer = HeaderValue::try_from(format!("Bearer {old}")).unwrap();
        assert!(matches!(
            resign(Kind::Analytics, Some(&bearer), "{}"),
            Err(Refusal::BadToken(_))
        ));
        assert_eq!(resign(Kind::Analytics, None, "{}"), Err(Refusal::NoToken));
        let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert_eq!(
            resign(Kind::Analytics, Some(&basic), "{}"),
            Err(Refusal::NoToken)
        );
        // "none" and other algorithms are not BBB's.
        // {"alg":"none"}.{"meeting_id":"m"}. with no signature.
        let none = "eyJhbGciOiJub25lIn0.eyJtZWV0aW5nX2lkIjoibSJ9.";
        assert!(matches!(
            resign(
                Kind::RecordingReady,
                None,
                &format!("signed_parameters={none}")
            ),
            Err(Refusal::BadToken(_))
        ));
    }

    #[test]
    fn logged_urls_leave_out_the_query() {
        assert_eq!(
            shown_url("https://moodle.example.org/mod/x.php?token=secret"),
            "https://moodle.example.org/mod/x.php"
        );
    }
}
