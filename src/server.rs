//! The HTTP front: accepting connections, reading a request (within the body
//! limit), verifying it, handing it to routing, and the one log line per
//! request. Also graceful shutdown.
//!
//! Owns nothing of BBB's rules beyond calling `api` and `routing`.

use crate::api::{self, ApiRequest, Target};
use crate::checksum::Algorithm;
use crate::errors::{self, ApiError, Body};
use crate::routing::{Outcome, Router};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Everything a request needs.
pub struct App {
    pub router: Router,
    pub secret: String,
    pub algorithms: Vec<Algorithm>,
    pub max_body: usize,
}

impl App {
    /// The balancer for `settings` in front of `specs`.
    pub fn new(settings: &crate::config::Settings, specs: Vec<crate::config::ServerSpec>) -> App {
        App {
            router: Router {
                state: Arc::new(crate::state::State::new(specs)),
                backend: crate::backend::Backend::new(
                    settings.connect_timeout,
                    settings.response_timeout,
                    settings.max_body,
                ),
            },
            secret: settings.secret.clone(),
            algorithms: settings.algorithms.clone(),
            max_body: settings.max_body,
        }
    }

    /// Logs the start-up line and probes every server in the background,
    /// so a slow server does not delay serving.
    pub fn announce(&self, address: std::net::SocketAddr) {
        let servers = self.router.state.servers();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            servers = servers.len(),
            checksums = self
                .algorithms
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
            "tinyscale listening on {address}"
        );
        let backend = self.router.backend.clone();
        tokio::spawn(async move {
            crate::health::probe_all(&backend, &servers).await;
        });
    }
}

/// Binds the listening socket and builds the balancer; returns the actual
/// address (for `PORT=0`) with them. Nothing is served until [`serve`].
pub async fn start(
    settings: &crate::config::Settings,
    specs: Vec<crate::config::ServerSpec>,
) -> Result<(TcpListener, Arc<App>, std::net::SocketAddr), String> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(App::new(settings, specs));
    app.announce(address);
    Ok((listener, app, address))
}

/// How long connections in flight may take to finish after a stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` completes, then stops accepting and lets the
/// requests in flight finish (up to [`SHUTDOWN_GRACE`]).
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off a
                        // little instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |request| {
                            let app = app.clone();
                            async move { Ok::<_, Infallible>(handle(&app, request).await) }
                        }),
                    );
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("stopped listening; finishing requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}

/// One request, start to end, with its log line.
pub async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let (call_name, meeting_id, outcome) = match api::target(&path) {
        Target::Root => (
            "api".to_string(),
            None,
            Outcome {
                response: errors::api_root(),
                server: None,
                result: "SUCCESS".into(),
            },
        ),
        Target::Other => return errors::not_found_page(),
        Target::Unsupported(name) => {
            let name = name.to_string();
            let error = ApiError::Unsupported;
            (
                name,
                None,
                Outcome {
                    result: error.key().into(),
                    response: error.to_xml(),
                    server: None,
                },
            )
        }
        Target::Api(call) => {
            let (parts, body) = request.into_parts();
            let outcome = match Limited::new(body, app.max_body).collect().await {
                Err(_) => Err(ApiError::BodyTooLarge(app.max_body)),
                Ok(body) => ApiRequest::parse(
                    call,
                    parts.method,
                    parts.uri.query(),
                    parts.headers.get(CONTENT_TYPE).cloned(),
                    body.to_bytes(),
                    &app.secret,
                    &app.algorithms,
                ),
            };
            match outcome {
                Ok(request) => {
                    let meeting_id = request.meeting_id().map(str::to_string);
                    let outcome = app.router.route(request).await;
                    (call.name().to_string(), meeting_id, outcome)
                }
                Err(error) => {
                    let response = if call.answers_json() {
                        error.to_json()
                    } else {
                        error.to_xml()
                    };
                    (
                        call.name().to_string(),
                        None,
                        Outcome {
                            result: error.key().into(),
                            response,
                            server: None,
                        },
                    )
                }
            }
        }
    };
    tracing::info!(
        call = call_name,
        meeting = meeting_id.as_deref().unwrap_or("-"),
        server = outcome.server.as_deref().unwrap_or("-"),
        result = outcome.result,
        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    outcome.response
}
