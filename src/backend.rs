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
//! answer has been read. Not hyper-util's general-purpose pool: it does the
//! same with more work per request (see docs/PERFORMANCE.md).

use crate::body::{BoxError, HeldOr};
use crate::upload::{OutBody, Upload, UploadFailure};
use bytes::Bytes;
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

/// An answer from a BBB server, as it came.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub location: Option<HeaderValue>,
    /// The whole answer, or, when [`Answer::rest`] is set, its first bytes
    /// (BBB puts `returncode` and `messageKey` first, so they are in them).
    pub body: Bytes,
    /// The rest of a large answer, still on its way: it streams to the
    /// client, never held whole.
    pub rest: Option<Rest>,
    /// From sending the request to the answer's head and first bytes.
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
    /// The client's upload stopped (too large, client gone): the server is
    /// not to blame.
    #[error("was sent an upload that stopped: {0:?}")]
    Upload(UploadFailure),
    /// The client's upload had already gone to another server.
    #[error("cannot be sent the upload, which went to another server already")]
    UploadSpent,
}

impl BackendError {
    /// True when the server certainly did not act on the request.
    pub fn never_reached(&self) -> bool {
        matches!(self, BackendError::NotConnected(_))
    }

    /// True when the failure says something about the server's health.
    pub fn is_servers_fault(&self) -> bool {
        !matches!(self, BackendError::Upload(_) | BackendError::UploadSpent)
    }
}

/// What a request to a server carries.
pub enum Source<'a> {
    /// Bytes tinyscale holds (nothing, a form, a small body).
    Bytes(Bytes),
    /// The client's upload, taken from its slot once a connection is ready.
    Upload(&'a Upload),
}

/// How much of an answer is read before it is handed on.
#[derive(Clone, Copy)]
enum Read {
    /// All of it, up to the cap: tinyscale itself reads it (lookups, polls,
    /// one server's part of a merged list).
    Whole,
    /// Its first bytes; the rest streams through.
    Head,
}

/// The first bytes of an answer read before it is handed on: enough for
/// `returncode` and `messageKey`, and the whole of most answers.
const HEAD_BYTES: usize = 16 * 1024;

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

type Sender = http1::SendRequest<OutBody>;

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

    /// How long a server has for an answer.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// GET `uri`, a URL we signed ourselves; the whole answer, up to the
    /// cap.
    pub async fn get(&self, uri: &str) -> Result<Answer, BackendError> {
        self.request(
            Method::GET,
            uri,
            None,
            None,
            Source::Bytes(Bytes::new()),
            Read::Whole,
        )
        .await
    }

    /// Sends a client's call; the answer's first bytes are read, the rest
    /// streams on ([`Answer::rest`]). `uri` carries a checksum: it is never
    /// logged.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&HeaderValue>,
        body: Source<'_>,
    ) -> Result<Answer, BackendError> {
        self.request(method, uri, content_type, None, body, Read::Head)
            .await
    }

    /// POSTs a callback to an LMS (not a BBB server): only the status of
    /// its answer matters, the rest is not read.
    pub async fn post(
        &self,
        uri: &str,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<StatusCode, BackendError> {
        let answer = self
            .request(
                Method::POST,
                uri,
                content_type,
                authorization,
                Source::Bytes(body),
                Read::Head,
            )
            .await?;
        Ok(answer.status)
    }

    /// Sends a client's call and reads the whole answer, up to the cap.
    pub async fn send_whole(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, BackendError> {
        self.request(
            method,
            uri,
            content_type,
            None,
            Source::Bytes(body),
            Read::Whole,
        )
        .await
    }

    /// One request and as much of its answer as `read` says, within the
    /// response timeout (which also bounds the rest of a streamed answer).
    async fn request(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        body: Source<'_>,
        read: Read,
    ) -> Result<Answer, BackendError> {
        let bad_url = || BackendError::NotConnected("bad server URL".into());
        let to = Destination::parse(uri).ok_or_else(bad_url)?;
        let host = to.host().ok_or_else(bad_url)?;
        let started = Instant::now();
        // The server has the response timeout for its answer, counted from
        // the request's start or, for an upload, from the client's last
        // piece of it: a slow client's upload is not the server's delay.
        let timeout = self.response_timeout;
        let since = tokio::time::Instant::now();
        let upload = match &body {
            Source::Upload(upload) => Some(upload.state()),
            Source::Bytes(_) => None,
        };
        let deadline = move || match &upload {
            Some(upload) => upload.last_activity().max(since) + timeout,
            None => since + timeout,
        };
        let work = async {
            let (parts, incoming, sender) = self
                .exchange(&to, &method, &host, content_type, authorization, body)
                .await?;
            let (body, rest) = match read {
                Read::Whole => {
                    let body = Limited::new(incoming, self.max_answer)
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
                    checkin(&self.pool, to.origin, sender);
                    (body, None)
                }
                Read::Head => {
                    let mut incoming = incoming;
                    let head = read_head(&mut incoming).await?;
                    if incoming.is_end_stream() {
                        checkin(&self.pool, to.origin, sender);
                        (head, None)
                    } else {
                        let rest = Rest {
                            first: Some(head.clone()),
                            incoming,
                            home: Some((sender, to.origin.to_string(), self.pool.clone())),
                            budget: deadline()
                                .saturating_duration_since(tokio::time::Instant::now()),
                            waiting_since: None,
                            deadline: Box::pin(tokio::time::sleep_until(deadline())),
                            timeout: self.response_timeout,
                        };
                        (head, Some(rest))
                    }
                }
            };
            let header = |name| parts.headers.get(name).cloned();
            Ok(Answer {
                status: parts.status,
                content_type: header(CONTENT_TYPE),
                location: header(hyper::header::LOCATION),
                body,
                rest,
                elapsed: started.elapsed(),
            })
        };
        let mut work = std::pin::pin!(work);
        loop {
            let until = deadline();
            match tokio::time::timeout_at(until, &mut work).await {
                Ok(result) => return result,
                // The upload moved meanwhile: the deadline moved with it.
                Err(_) if deadline() > until => continue,
                Err(_) => return Err(BackendError::Timeout(timeout)),
            }
        }
    }

    /// Sends on an idle connection, or a new one. A request that an idle
    /// connection could not take (the server had just closed it) never left:
    /// it goes out once more on a new connection. An upload is taken from
    /// its slot only once a connection is ready, and given back if the
    /// request never left, so the next server can have it.
    async fn exchange(
        &self,
        to: &Destination<'_>,
        method: &Method,
        host: &HeaderValue,
        content_type: Option<&HeaderValue>,
        authorization: Option<&HeaderValue>,
        source: Source<'_>,
    ) -> Result<(hyper::http::response::Parts, Incoming, Sender), BackendError> {
        let mut unsent: Option<OutBody> = None;
        let give_back = |body: Option<OutBody>| {
            if let (Some(HeldOr::Stream(body)), Source::Upload(slot)) = (body, &source) {
                slot.give_back(body);
            }
        };
        loop {
            let (mut sender, reused) = match self.checkout(to.origin) {
                Some(sender) => (sender, true),
                None => match self.connect(to).await {
                    Ok(sender) => (sender, false),
                    Err(e) => {
                        give_back(unsent);
                        return Err(e);
                    }
                },
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                give_back(unsent);
                return Err(BackendError::NotConnected("connection closed".into()));
            }
            let body = match unsent.take() {
                Some(body) => body,
                None => match &source {
                    Source::Bytes(bytes) => OutBody::whole(bytes.clone()),
                    Source::Upload(slot) => {
                        HeldOr::Stream(slot.take().ok_or(BackendError::UploadSpent)?)
                    }
                },
            };
            let upload = body.upload_state();
            let mut request = Request::builder()
                .method(method.clone())
                .uri(to.target.clone())
                .header(HOST, host.clone());
            if let Some(ct) = content_type {
                request = request.header(CONTENT_TYPE, ct);
            }
            if let Some(authorization) = authorization {
                request = request.header(hyper::header::AUTHORIZATION, authorization);
            }
            let request = match request.body(body) {
                Ok(request) => request,
                Err(e) => return Err(BackendError::NotConnected(format!("bad request: {e}"))),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, incoming) = response.into_parts();
                    return Ok((parts, incoming, sender));
                }
                Err(mut e) => match e.take_message() {
                    Some(request) if reused => unsent = Some(request.into_body()),
                    Some(request) => {
                        give_back(Some(request.into_body()));
                        return Err(BackendError::NotConnected(describe(e.error())));
                    }
                    None => {
                        return Err(match upload.and_then(|u| u.failure()) {
                            Some(failure) => BackendError::Upload(failure),
                            None => BackendError::Broken(describe(e.error())),
                        });
                    }
                },
            }
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

/// Back to the pool, unless it is closing; stale ones are dropped.
fn checkin(pool: &Pool, origin: &str, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
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

/// Reads an answer's first frames, until [`HEAD_BYTES`] or its end.
async fn read_head(incoming: &mut Incoming) -> Result<Bytes, BackendError> {
    let mut head = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    while head.len() + first.as_ref().map_or(0, Bytes::len) < HEAD_BYTES {
        let Some(frame) = incoming.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| BackendError::Broken(describe(&e)))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        // One frame is the usual case: kept as it came, without a copy.
        match first.take() {
            None if head.is_empty() => first = Some(data),
            None => head.extend_from_slice(&data),
            Some(earlier) => {
                head.extend_from_slice(&earlier);
                head.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| head.freeze()))
}

/// The rest of a large answer, streaming to the client. Its connection goes
/// back to the pool when the answer has been read to its end. The server
/// has what is left of the response timeout for it, counting only the time
/// spent waiting for the server (not a slow client's time to take it):
/// past that the answer is cut (the client's connection ends, the server's
/// is closed).
pub struct Rest {
    first: Option<Bytes>,
    incoming: Incoming,
    home: Option<(Sender, String, Pool)>,
    /// What is left of the response timeout.
    budget: Duration,
    /// Since when the server is being waited for, if it is.
    waiting_since: Option<tokio::time::Instant>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rest")
    }
}

impl Rest {
    /// Waiting for the server: an error once its time is up.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.home = None;
                let timeout = self.timeout;
                Poll::Ready(Some(Err(format!(
                    "the server's answer did not finish within {timeout:?}"
                )
                .into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl http_body::Body for Rest {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let polled = Pin::new(&mut self.incoming).poll_frame(cx);
        if polled.is_ready()
            && let Some(since) = self.waiting_since.take()
        {
            self.budget = self.budget.saturating_sub(since.elapsed());
        }
        match polled {
            Poll::Ready(None) => {
                if let Some((sender, origin, pool)) = self.home.take() {
                    checkin(&pool, &origin, sender);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                if self.waiting_since.is_none() {
                    let now = tokio::time::Instant::now();
                    self.waiting_since = Some(now);
                    let until = now + self.budget;
                    self.deadline.as_mut().reset(until);
                }
                self.wait(cx)
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.incoming.size_hint();
        if let Some(first) = &self.first {
            let n = first.len() as u64;
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
            hint.set_lower(hint.lower() + n);
        }
        hint
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

/// The PEM file of extra CA certificates (`SSL_CERT_FILE`), if set and
/// readable: for clients that take their roots as PEM (Redis over TLS).
pub fn extra_ca_pem() -> Option<Vec<u8>> {
    std::fs::read(std::env::var_os("SSL_CERT_FILE")?).ok()
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
