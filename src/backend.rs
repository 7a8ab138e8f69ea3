//! The one pooled HTTP(S) client that talks to the BBB servers.
//!
//! Owns connection reuse, TLS (rustls with the system's roots plus
//! `SSL_CERT_FILE`), the connect and response timeouts, and telling apart a
//! request that never reached a server (safe to send elsewhere) from one that
//! may have. Does not own signing (see `api`) or what to do with an answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

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

/// The pooled client. Cheap to clone.
#[derive(Clone)]
pub struct Backend {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Built once (the CA files are read once), shared by every pool.
    tls: std::sync::Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_answer: usize,
}

impl Backend {
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        max_answer: usize,
    ) -> Backend {
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(root_store())
        .with_no_client_auth();
        Backend::with_tls(
            std::sync::Arc::new(tls),
            connect_timeout,
            response_timeout,
            max_answer,
        )
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
        tls: std::sync::Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        response_timeout: Duration,
        max_answer: usize,
    ) -> Backend {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool's idle timeout silently does nothing.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(https);
        Backend {
            client,
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
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| BackendError::NotConnected(format!("bad request: {e}")))?;
        let started = std::time::Instant::now();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    BackendError::NotConnected(describe(&e))
                } else {
                    BackendError::Broken(describe(&e))
                }
            })?;
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
            Ok(Answer {
                status: parts.status,
                content_type: parts.headers.get(CONTENT_TYPE).cloned(),
                location: parts.headers.get(hyper::header::LOCATION).cloned(),
                body,
                elapsed: started.elapsed(),
            })
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(self.response_timeout)),
        }
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
