//! The pooled HTTP(S) client that talks to the BBB servers.
//!
//! Owns connection reuse, TLS (rustls with the system's roots plus
//! `SSL_CERT_FILE`), the connect and response timeouts, and telling apart a
//! request that never reached a server (safe to send elsewhere) from one that
//! may have. Does not own signing (see `api`) or what to do with an answer.
//!
//! The pool is a list of idle HTTP/1.1 connections per server, owned by one
//! event loop (each loop has its own `Backend`): a request takes the most
//! recently used idle connection, or opens one, and puts it back when the
//! answer has been read. hyper-util's general-purpose pool did the same with
//! three hash-map operations and a waiter queue per request (the README's
//! performance section has the before and after).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_service::Service;

/// An answer from a BBB server, kept as it came.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub location: Option<HeaderValue>,
    pub body: Bytes,
    /// From sending the request to the last byte of the answer.
    pub elapsed: Duration,
}

/// Why a backend call gave no answer. Displays as a sentence for the
/// `internalError` message and the log; never contains a URL or secret.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The request was never sent (refused, unreachable, TLS failed, connect
    /// timed out): no meeting can have been made there.
    #[error("could not connect ({0})")]
    NotConnected(String),
    #[error("did not answer within {0:?}")]
    Timeout(Duration),
    #[error("failed during the request ({0})")]
    Broken(String),
    #[error("sent an answer larger than {0} bytes")]
    TooLarge(usize),
}

impl BackendError {
    /// True when the server certainly did not act on the request.
    pub fn never_reached(&self) -> bool {
        matches!(self, BackendError::NotConnected(_))
    }
}

/// An idle connection is closed after this long unused (BBB's nginx closes
/// its side after 75 s; closing first avoids sending on a dying one).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per server; more are closed when put back.
const MAX_IDLE: usize = 64;

/// The most a connection buffers of an answer at a time; larger answers
/// (getMeetings, getRecordings) stream through in pieces. Without a cap
/// hyper grows a connection's buffer to fit the largest answer it has read
/// and keeps it: 100 pooled connections that once carried a getMeetings
/// would hold megabytes.
const READ_BUFFER: usize = 16 * 1024;

type Sender = http1::SendRequest<Full<Bytes>>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle connections by server (`scheme://authority`).
type Pool = Arc<Mutex<HashMap<String, Vec<Idle>>>>;

/// The client. Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct Backend {
    connector: HttpsConnector<HttpConnector>,
    pool: Pool,
    /// Built once (the CA files are read once), shared by every pool.
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_answer: usize,
}

/// Where a request goes, split out of its URL once (one parse: this runs
/// for every call to a server).
struct Destination<'a> {
    /// `scheme://authority` of the URL: the pool's key.
    origin: &'a str,
    scheme: hyper::http::uri::Scheme,
    authority: hyper::http::uri::Authority,
    /// Path and query: an HTTP/1.1 request line carries only these.
    target: Uri,
}

impl<'a> Destination<'a> {
    fn parse(url: &'a str) -> Option<Destination<'a>> {
        let uri: Uri = url.parse().ok()?;
        let mut parts = uri.into_parts();
        let scheme = parts.scheme.take()?;
        let authority = parts.authority.take()?;
        let after_scheme = url.find("://")? + 3;
        let origin = &url[..after_scheme + authority.as_str().len()];
        let target = match parts.path_and_query.take() {
            Some(pq) => Uri::from(pq),
            None => Uri::from_static("/"),
        };
        Some(Destination {
            origin,
            scheme,
            authority,
            target,
        })
    }

    /// The Host header, as hyper-util's client writes it: the port only
    /// when it is not the scheme's own.
    fn host(&self) -> Option<HeaderValue> {
        let host = self.authority.host();
        let secure = self.scheme == hyper::http::uri::Scheme::HTTPS;
        let default_port = match self.authority.port_u16() {
            None => true,
            Some(port) => port == if secure { 443 } else { 80 },
        };
        let value = if default_port {
            host.to_string()
        } else {
            format!("{host}:{}", self.authority.port_u16()?)
        };
        HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
    }

    /// What the connector needs: scheme and authority.
    fn connect_uri(&self) -> Option<Uri> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()
            .ok()
    }
}

impl Backend {
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        max_answer: usize,
    ) -> Backend {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(root_store())
        .with_no_client_auth();
        Backend::with_tls(Arc::new(tls), connect_timeout, response_timeout, max_answer)
    }

    /// A client with its own connection pool and the same settings, for
    /// another event-loop thread: a pooled connection belongs to the thread
    /// that opened it.
    pub fn for_another_thread(&self) -> Backend {
        Backend::with_tls(
            self.tls.clone(),
            self.connect_timeout,
            self.response_timeout,
            self.max_answer,
        )
    }

    fn with_tls(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        response_timeout: Duration,
        max_answer: usize,
    ) -> Backend {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Backend {
            connector,
            pool: Pool::default(),
            tls,
            connect_timeout,
            response_timeout,
            max_answer,
        }
    }

    /// GET `uri`, a URL we signed ourselves.
    pub async fn get(&self, uri: &str) -> Result<Answer, BackendError> {
        self.send(Method::GET, uri, None, Bytes::new()).await
    }

    /// Sends one request and reads the whole answer, within the response
    /// timeout. `uri` carries a checksum: it is never logged.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, BackendError> {
        let bad_url = || BackendError::NotConnected("bad server URL".into());
        let to = Destination::parse(uri).ok_or_else(bad_url)?;
        let mut request = Request::builder()
            .method(method)
            .uri(to.target.clone())
            .header(HOST, to.host().ok_or_else(bad_url)?);
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| BackendError::NotConnected(format!("bad request: {e}")))?;
        let started = Instant::now();
        match tokio::time::timeout(self.response_timeout, self.exchange(&to, request)).await {
            Ok(result) => result.map(|(status, content_type, location, body)| Answer {
                status,
                content_type,
                location,
                body,
                elapsed: started.elapsed(),
            }),
            Err(_) => Err(BackendError::Timeout(self.response_timeout)),
        }
    }

    /// Sends on an idle connection, or a new one. A request that an idle
    /// connection could not take (the server had just closed it) never left:
    /// it goes out once more on a new connection.
    async fn exchange(
        &self,
        to: &Destination<'_>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<HeaderValue>, Option<HeaderValue>, Bytes), BackendError> {
        loop {
            let (mut sender, reused) = match self.checkout(to.origin) {
                Some(sender) => (sender, true),
                None => (self.connect(to).await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(BackendError::NotConnected("connection closed".into()));
            }
            let response = match sender.try_send_request(request).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    Some(_) => return Err(BackendError::NotConnected(describe(e.error()))),
                    None => return Err(BackendError::Broken(describe(e.error()))),
                },
            };
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_answer)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        BackendError::TooLarge(self.max_answer)
                    } else {
                        BackendError::Broken(e.to_string())
                    }
                })?
                .to_bytes();
            self.checkin(to.origin, sender);
            let header = |name| parts.headers.get(name).cloned();
            return Ok((
                parts.status,
                header(CONTENT_TYPE),
                header(hyper::header::LOCATION),
                body,
            ));
        }
    }

    /// The most recently used idle connection that is still open and fresh.
    fn checkout(&self, origin: &str) -> Option<Sender> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(origin)?;
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Back to the pool, unless it is closing; stale ones are dropped.
    fn checkin(&self, origin: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = match pool.get_mut(origin) {
            Some(idle) => idle,
            None => pool.entry(origin.to_string()).or_default(),
        };
        // The oldest are at the front.
        let stale = idle
            .iter()
            .take_while(|c| c.since.elapsed() >= IDLE_TIMEOUT || c.sender.is_closed())
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Opens a connection (TCP, TLS for https) within the connect timeout;
    /// its I/O runs as a task on this event loop.
    async fn connect(&self, to: &Destination<'_>) -> Result<Sender, BackendError> {
        let uri = to
            .connect_uri()
            .ok_or_else(|| BackendError::NotConnected("bad server URL".into()))?;
        let mut connector = self.connector.clone();
        let io = async {
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(uri).await
        };
        let io = io
            .await
            .map_err(|e| BackendError::NotConnected(describe(e.as_ref())))?;
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake(io)
            .await
            .map_err(|e| BackendError::NotConnected(describe(&e)))?;
        tokio::spawn(async move {
            // Ends when the server closes or the last sender is dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The innermost cause, which says what happened ("Connection refused"),
/// without the URL.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() {
        error.to_string()
    } else {
        text
    }
}

/// The system's CA certificates plus those in `SSL_CERT_FILE`, if set.
fn root_store() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let mut certs = Vec::new();
    for dir in openssl_probe::candidate_cert_dirs() {
        certs.extend(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
    }
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        let loaded = rustls_native_certs::load_certs_from_paths(Some(file.as_ref()), None);
        for error in &loaded.errors {
            tracing::warn!("SSL_CERT_FILE: {error}");
        }
        certs.extend(loaded.certs);
    }
    let (added, ignored) = roots.add_parsable_certificates(certs);
    tracing::debug!(added, ignored, "loaded CA certificates");
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_splits_into_pool_key_host_and_request_target() {
        let url =
            "https://bbb1.example.org/bigbluebutton/api/getMeetingInfo?meetingID=a&checksum=f";
        let to = Destination::parse(url).unwrap();
        assert_eq!(to.origin, "https://bbb1.example.org");
        assert_eq!(
            to.target.to_string(),
            "/bigbluebutton/api/getMeetingInfo?meetingID=a&checksum=f"
        );
        assert_eq!(to.host().unwrap(), "bbb1.example.org");
        assert_eq!(
            to.connect_uri().unwrap().to_string(),
            "https://bbb1.example.org/"
        );
        let host = |url: &str| Destination::parse(url).unwrap().host().unwrap();
        assert_eq!(host("https://b.example.org:443/x"), "b.example.org");
        assert_eq!(host("http://b.example.org:80/x"), "b.example.org");
        assert_eq!(host("https://b.example.org:8443/x"), "b.example.org:8443");
        assert_eq!(host("http://127.0.0.1:3000/x"), "127.0.0.1:3000");
        assert_eq!(host("http://[::1]:3000/x"), "[::1]:3000");
        let to = Destination::parse("http://127.0.0.1:3000/a?b").unwrap();
        assert_eq!(to.origin, "http://127.0.0.1:3000");
        assert!(Destination::parse("not a url").is_none());
        assert!(Destination::parse("/relative?x").is_none());
    }
}
