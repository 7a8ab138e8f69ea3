//! The HTTP front: accepting connections and handing them to one
//! single-threaded event loop per core (nginx's model: a request and its
//! backend calls stay on one thread), reading a request (within the body
//! limit), verifying it, handing it to routing, and the one log line per
//! request. Also the background tasks' start, SIGHUP reload and graceful
//! shutdown.
//!
//! Owns nothing of BBB's rules beyond calling `api` and `routing`.

use crate::api::{self, ApiRequest, Call, Target};
use crate::backend::Backend;
use crate::body::NotRead;
use crate::callbacks::{self, Kind, Receiving, Relay};
use crate::checksum::Algorithm;
use crate::config::{self, ServerSpec, Settings};
use crate::connections::{self, Gate, HeadTimer, Permit, Progress};
use crate::errors::{self, ApiError, Body};
use crate::health::HealthPolicy;
use crate::metrics::{self, Metrics};
use crate::poller;
use crate::routing::{Outcome, Router};
use crate::shared::Redis;
use crate::state::{PlacementPolicy, ReloadSummary, State};
use crate::upload::{ClientBody, Upload, UploadFailure};
use bytes::Bytes;
use hyper::Method;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Everything a request needs, and what the background tasks need.
#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub secret: String,
    pub algorithms: Vec<Algorithm>,
    pub max_body: usize,
    pub max_form_body: usize,
    /// Re-read on SIGHUP.
    pub servers_path: PathBuf,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub new_meeting_load: f64,
    pub metrics: Arc<Metrics>,
    /// Event-loop threads serving requests.
    pub threads: usize,
    /// Limits on client connections.
    pub connections: connections::Limits,
}

/// The sockets tinyscale serves on, bound before anything else happens.
pub struct Listeners {
    pub api: TcpListener,
    /// `/metrics` and `/healthz`, unless turned off.
    pub metrics: Option<TcpListener>,
    /// SIGHUP, caught from before tinyscale says it is listening, so an
    /// early reload request never kills it.
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
}

impl App {
    /// The balancer for `settings` in front of `specs`.
    pub fn new(settings: &Settings, specs: Vec<ServerSpec>) -> Result<App, String> {
        let mut state = State::new(
            specs,
            HealthPolicy {
                down_after: settings.down_after,
                up_after: settings.up_after,
            },
            PlacementPolicy {
                strategy: settings.strategy,
                new_meeting_load: settings.new_meeting_load,
            },
        )
        .with_recreation(settings.recreate);
        if let Some(url) = &settings.redis_url {
            // A create lock outlives the create's own response timeout.
            let lock_ttl = settings.response_timeout + Duration::from_secs(5);
            state = state.with_redis(Redis::new(url, &settings.redis_prefix, lock_ttl)?);
        }
        let metrics = Arc::new(Metrics::new());
        Ok(App {
            router: Router {
                state: Arc::new(state),
                backend: Backend::new(
                    settings.connect_timeout,
                    settings.response_timeout,
                    settings.max_list_answer,
                ),
                metrics: metrics.clone(),
                relay: Arc::new(Relay::new(
                    settings.public_url.as_deref(),
                    &settings.secret,
                )?),
            },
            metrics,
            new_meeting_load: settings.new_meeting_load,
            secret: settings.secret.clone(),
            algorithms: settings.algorithms.clone(),
            max_body: settings.max_body,
            max_form_body: settings.max_form_body,
            servers_path: settings.servers_path.clone(),
            poll_interval: settings.poll_interval,
            poll_timeout: settings.poll_timeout,
            shutdown_timeout: settings.shutdown_timeout,
            threads: settings.threads,
            connections: connections::Limits::from_settings(settings),
        })
    }

    /// The same balancer for another event-loop thread: the same state and
    /// metrics, its own connection pool (a pooled connection belongs to the
    /// thread that opened it, so no answer has to wake another thread).
    fn for_thread(&self) -> App {
        let mut app = self.clone();
        app.router.backend = self.router.backend.for_another_thread();
        app
    }

    /// What a callback from a server needs (see `callbacks`).
    fn receiving(&self) -> Receiving<'_> {
        Receiving {
            relay: &self.router.relay,
            secret: &self.secret,
            state: &self.router.state,
            backend: &self.router.backend,
            metrics: &self.metrics,
            max_body: self.max_body,
        }
    }

    /// Re-reads the servers file. A valid one takes effect at once (servers
    /// that stay keep their health and meetings; added ones are probed); an
    /// invalid one is refused and the running configuration stays.
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let specs = config::load_servers(&self.servers_path)
            .await
            .map_err(|e| e.to_string())?;
        let state = &self.router.state;
        let summary = state.replace_servers(specs);
        let cluster = state.cluster();
        let added: Vec<_> = summary
            .added
            .iter()
            .filter_map(|id| cluster.get(id).cloned())
            .collect();
        poller::probe(state, &self.router.backend, &added, self.poll_timeout).await;
        Ok(summary)
    }
}

/// Binds the listening sockets, builds the balancer and probes every server
/// once (those that answer take meetings at once), then logs that it is
/// listening. Returns the actual API address (for `PORT=0`). Nothing is
/// answered until [`run`]; connections made meanwhile wait in the backlog.
pub async fn start(
    settings: &Settings,
    specs: Vec<ServerSpec>,
) -> Result<(Listeners, Arc<App>, SocketAddr), String> {
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address}: {e}"))
    };
    let listener = bind(settings.listen).await?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match settings.metrics_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let app = Arc::new(App::new(settings, specs)?);
    if let Some(redis) = app.router.state.redis() {
        // Asked once before serving, so the first calls already share.
        match redis.ping().await {
            Ok(()) => {
                redis.mark_up();
                tracing::info!(redis = redis.shown(), "sharing state through Redis");
            }
            Err(why) => tracing::warn!(
                redis = redis.shown(),
                "Redis is unreachable ({why}): deciding alone until it is there"
            ),
        }
    }
    let cluster = app.router.state.cluster();
    poller::probe(
        &app.router.state,
        &app.router.backend,
        &cluster.list,
        app.poll_timeout,
    )
    .await;
    #[cfg(unix)]
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}): reload by restarting");
            None
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        servers = cluster.list.len(),
        strategy = settings.strategy.name(),
        checksums = app
            .algorithms
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(","),
        "tinyscale listening on {address}"
    );
    match &metrics_listener {
        Some(l) => tracing::info!(
            "metrics and health check on http://{}/metrics and /healthz",
            l.local_addr().map_err(|e| e.to_string())?
        ),
        None => tracing::info!("metrics turned off (TINYSCALE_METRICS_BIND=off)"),
    }
    let listeners = Listeners {
        api: listener,
        metrics: metrics_listener,
        #[cfg(unix)]
        hangups,
    };
    Ok((listeners, app, address))
}

/// Serves until `shutdown` completes, with the poller, the metrics address
/// and (on unix) SIGHUP reloads running beside it; then stops them.
pub async fn run(listeners: Listeners, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    connections::prepare_open_files(app.connections.max_connections);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    if let Some(redis) = app.router.state.redis().cloned() {
        let stop = until_stopped(stopped.clone());
        tokio::spawn(async move { redis.watch(stop).await });
    }
    tokio::spawn(poller::run_poller(
        app.router.state.clone(),
        app.router.backend.clone(),
        app.poll_interval,
        app.poll_timeout,
        until_stopped(stopped.clone()),
    ));
    if let Some(listener) = listeners.metrics {
        tokio::spawn(metrics::serve(
            listener,
            app.metrics.clone(),
            app.router.state.clone(),
            app.new_meeting_load,
            until_stopped(stopped.clone()),
        ));
    }
    #[cfg(unix)]
    if let Some(hangups) = listeners.hangups {
        tokio::spawn(reload_on_sighup(
            app.clone(),
            hangups,
            until_stopped(stopped),
        ));
    }
    #[cfg(not(unix))]
    drop(stopped);

    // One event loop per thread, like nginx's workers: this thread's and
    // `threads - 1` more, each a single-threaded runtime with its own
    // connections. This thread accepts and hands each new connection to
    // the next loop in turn.
    let mut loops = Vec::new();
    let (to_here, here) = tokio::sync::mpsc::unbounded_channel();
    loops.push(to_here);
    let local = tokio::spawn(serve_connections(here, app.clone()));
    let mut threads = Vec::new();
    for n in 1..app.threads {
        let (to_loop, incoming) = tokio::sync::mpsc::unbounded_channel();
        let app = Arc::new(app.for_thread());
        let spawned = std::thread::Builder::new()
            .name(format!("tinyscale-{n}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(serve_connections(incoming, app)),
                    Err(e) => tracing::error!("cannot start event loop {n}: {e}"),
                }
            });
        match spawned {
            Ok(handle) => {
                loops.push(to_loop);
                threads.push(handle);
            }
            Err(e) => tracing::error!("cannot start event loop {n}: {e}; serving with fewer"),
        }
    }
    let metrics = app.metrics.clone();
    let shutdown = async move {
        shutdown.await;
        metrics.stopping();
    };
    let gate = Gate::new(app.connections.max_connections);
    accept(listeners.api, gate, loops, shutdown).await;
    // The loops finish their requests in flight (up to the deadline).
    let _ = local.await;
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    let _ = stop.send(true);
}

/// A client connection on its way to an event loop, with its place among
/// the TINYSCALE_MAX_CONNECTIONS.
type Handoff = (std::net::TcpStream, Permit);

/// Accepts connections until `shutdown` completes, handing them to the
/// event loops in turn; then closes the listening socket at once. With
/// every place of `gate` taken it stops accepting: new connections wait in
/// the listen backlog until one closes.
async fn accept(
    listener: TcpListener,
    gate: Gate,
    loops: Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next = 0;
    let mut last_full = None;
    loop {
        let permit = tokio::select! {
            permit = gate.enter(&mut last_full) => permit,
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            stream = connections::accept(&listener, "API") => stream,
            _ = &mut shutdown => break,
        };
        let stream = match accepted.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("cannot hand over a connection: {e}");
                continue;
            }
        };
        if loops[next % loops.len()].send((stream, permit)).is_err() {
            tracing::error!("an event loop has stopped");
        }
        next += 1;
    }
    drop(listener);
    tracing::info!("stopped listening; finishing requests in flight");
    // Dropping the senders tells every loop that no more connections come.
}

/// Reloads the servers file on each SIGHUP until `stop` completes.
#[cfg(unix)]
async fn reload_on_sighup(
    app: Arc<App>,
    mut hangups: tokio::signal::unix::Signal,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = &mut stop => return,
        }
        let result = app.reload().await;
        app.metrics.reload(result.is_ok());
        match result {
            Ok(s) => tracing::info!(
                servers = app.router.state.cluster().list.len(),
                added = s.added.join(" "),
                removed = s.removed.join(" "),
                changed = s.changed.join(" "),
                "reloaded the servers file"
            ),
            Err(e) => tracing::error!("reload refused, the running configuration stays: {e}"),
        }
    }
}

/// tokio's timer wakes its own event loop (a write to an eventfd, then one
/// more turn of the loop) whenever a timer is armed that is due earlier than
/// every timer it already has. Every call to a server arms a response
/// timeout, so that was one extra syscall and loop turn per request. A timer
/// that is always due within the second keeps those timeouts later than the
/// loop's next wake, for one wake-up a second.
async fn keep_next_wake_near() {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One event loop: serves the connections handed to it until no more come,
/// then lets the requests in flight finish (up to the shutdown timeout).
/// Each connection keeps its place (permit) until it closes.
async fn serve_connections(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    app: Arc<App>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let _near = AbortOnDrop(tokio::spawn(keep_next_wake_near()));
    let http = app.connections.http1();
    let header_timeout = app.connections.header_timeout;
    while let Some((stream, permit)) = incoming.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let progress = Arc::new(Progress::default());
        let io = HeadTimer::new(stream, progress.clone(), header_timeout);
        let connection = http.serve_connection(
            TokioIo::new(io),
            service_fn(move |request| {
                let app = app.clone();
                let answering = progress.head_read();
                async move {
                    let response = handle(&app, request).await;
                    Ok::<_, Infallible>(response.map(|body| answering.track(body)))
                }
            }),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
    let grace = app.shutdown_timeout;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {grace:?}; stopping anyway");
    }
}

/// One request's log line and metrics, written when its answer is known
/// (for a merged list: when the list has been written to its end).
struct RequestLog {
    call: String,
    meeting: Option<String>,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl RequestLog {
    fn write(self, server: Option<&str>, result: &str) {
        let elapsed = self.started.elapsed();
        self.metrics.request(&self.call, result, elapsed);
        tracing::info!(
            call = self.call,
            meeting = self.meeting.as_deref().unwrap_or("-"),
            server = server.unwrap_or("-"),
            result = result,
            ms = format_args!("{:.1}", elapsed.as_secs_f64() * 1000.0),
            "request"
        );
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
                list: None,
            },
        ),
        Target::Other => {
            return match Kind::of_path(&path) {
                Some(kind) => callbacks::receive(kind, request, app.receiving()).await,
                None => errors::not_found_page(),
            };
        }
        Target::Unsupported(name) => {
            // A public URL given as the API URL puts the relay under
            // /bigbluebutton/api/ too.
            if let Some(kind) = Kind::of_path(&path) {
                return callbacks::receive(kind, request, app.receiving()).await;
            }
            let name = name.to_string();
            (name, None, Outcome::local(ApiError::Unsupported, None))
        }
        Target::Api(call) => {
            let (parts, body) = request.into_parts();
            match read_request(app, call, parts, body).await {
                Ok(request) => {
                    let meeting_id = request.meeting_id().map(str::to_string);
                    let upload = request.upload.as_ref().map(|u| u.state());
                    let mut outcome = app.router.route(request).await;
                    match upload.and_then(|u| u.failure()) {
                        Some(UploadFailure::TooLarge) => {
                            outcome = Outcome::local(
                                ApiError::BodyTooLarge {
                                    limit: app.max_body as u64,
                                    variable: "TINYSCALE_MAX_BODY",
                                },
                                Some(call),
                            );
                        }
                        Some(UploadFailure::ClientGone) => {
                            outcome.result = "client left".into();
                        }
                        None => {}
                    }
                    (call.name().to_string(), meeting_id, outcome)
                }
                Err(error) => (
                    call.name().to_string(),
                    None,
                    Outcome::local(error, Some(call)),
                ),
            }
        }
    };
    let log = RequestLog {
        call: call_name,
        meeting: meeting_id,
        started,
        metrics: app.metrics.clone(),
    };
    let mut response = outcome.response;
    match outcome.list {
        Some(mut list) => {
            list.on_end(Box::new(move |server, result| {
                log.write(Some(&server), result)
            }));
            *response.body_mut() = Body::stream(list);
        }
        None => log.write(outcome.server.as_deref(), &outcome.result),
    }
    response
}

/// Reads what must be read of a request and verifies it. An upload is not
/// read: it streams to its server later, within `TINYSCALE_MAX_BODY`. Any
/// other body is read whole, within `TINYSCALE_MAX_FORM_BODY`. A body
/// announced larger than its limit is refused before a byte of it is read.
async fn read_request(
    app: &App,
    call: Call,
    parts: hyper::http::request::Parts,
    body: Incoming,
) -> Result<ApiRequest, ApiError> {
    let content_type = parts.headers.get(CONTENT_TYPE).cloned();
    let form = parts.method == Method::POST && api::is_form(content_type.as_ref());
    // A call without a body (a GET create, most of them) has nothing to
    // stream.
    let upload = call.takes_upload() && !form && !http_body::Body::is_end_stream(&body);
    let (limit, variable) = if upload {
        (app.max_body, "TINYSCALE_MAX_BODY")
    } else {
        (app.max_form_body, "TINYSCALE_MAX_FORM_BODY")
    };
    let too_large = ApiError::BodyTooLarge {
        limit: limit as u64,
        variable,
    };
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(too_large);
    }
    let parse = |bytes| {
        ApiRequest::parse(
            call,
            parts.method.clone(),
            parts.uri.query(),
            content_type.clone(),
            bytes,
            &app.secret,
            &app.algorithms,
        )
    };
    if upload {
        let request = parse(Bytes::new())?;
        return Ok(request.with_upload(Upload::new(ClientBody::new(body, limit as u64))));
    }
    match crate::body::read_whole(body, limit).await {
        Ok(bytes) => parse(bytes),
        Err(NotRead::TooLarge) => Err(too_large),
        Err(NotRead::Broken) => Err(ApiError::Internal(
            "The request body could not be read.".into(),
        )),
    }
}
