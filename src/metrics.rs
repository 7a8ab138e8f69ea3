//! Prometheus metrics and the health check, served on their own address
//! (`TINYSCALE_METRICS_BIND`, loopback by default) so they are never exposed
//! with the API.
//!
//! Owns the metric families and how they are named (`tinyscale_…_total`,
//! `…_seconds`), recording a request or a backend call, and the `/metrics`
//! and `/healthz` answers. Per-server figures are read from `state` at
//! scrape time, so they are never stale and cost nothing per request.

use crate::config::ServerState;
use crate::errors::{self, Body};
use crate::state::State;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallResult {
    call: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerStateLabel {
    server: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackResult {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The label set of a family's one unlabelled sample. A family, unlike a
/// lone gauge, may have no sample at all and still be exported (see
/// [`Exported`]), so its name is there before it has a value.
type NoLabels = [(&'static str, &'static str); 0];

/// A metric family exported even while it has no sample: its HELP and TYPE
/// lines name it from the start. prometheus-client leaves an empty family
/// out of the exposition unless its `is_empty` says otherwise; a fresh
/// tinyscale should export every name its dashboard and alert rules use
/// (no error yet is not "no such metric").
#[derive(Debug)]
struct Exported<M>(M);

impl<M: EncodeMetric> EncodeMetric for Exported<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// From 0.25 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<CallResult, Counter>,
    request_seconds: Family<CallLabel, Histogram, fn() -> Histogram>,
    backend_seconds: Family<ServerLabel, Histogram, fn() -> Histogram>,
    backend_errors: Family<ServerLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    recreated: Counter,
    callbacks: Family<CallbackResult, Counter>,
    callback_deliveries: Family<CallbackResult, Counter>,
    server_up: Family<ServerLabel, Gauge>,
    server_state: Family<ServerStateLabel, Gauge>,
    server_meetings: Family<ServerLabel, Gauge>,
    server_participants: Family<ServerLabel, Gauge>,
    server_videos: Family<ServerLabel, Gauge>,
    server_load: Family<ServerLabel, FloatGauge>,
    server_poll_seconds: Family<ServerLabel, FloatGauge>,
    known_meetings: Gauge,
    /// A sample only when Redis is configured: without Redis the name is
    /// exported with no value (not a 0 that would read as "Redis down").
    redis_up: Family<NoLabels, Gauge>,
    /// Serialises scrapes: the per-server families are cleared and refilled.
    scraping: std::sync::Mutex<()>,
    /// False once a stop signal came: `/healthz` answers 503.
    serving: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family is registered from the start, so a fresh tinyscale
    /// exports every name (dashboards and alert rules can rely on it).
    pub fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            backend_seconds: Family::new_with_constructor(latency_histogram),
            backend_errors: Family::default(),
            reloads: Family::default(),
            recreated: Counter::default(),
            callbacks: Family::default(),
            callback_deliveries: Family::default(),
            server_up: Family::default(),
            server_state: Family::default(),
            server_meetings: Family::default(),
            server_participants: Family::default(),
            server_videos: Family::default(),
            server_load: Family::default(),
            server_poll_seconds: Family::default(),
            known_meetings: Gauge::default(),
            redis_up: Family::default(),
            scraping: std::sync::Mutex::new(()),
            serving: AtomicBool::new(true),
        };
        let mut registry = Registry::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("tinyscale_build_info", "The running version", build_info);
        registry.register(
            "tinyscale_redis_up",
            "1 while Redis (shared state of several instances) answers, 0 while it does not; no value without Redis",
            Exported(metrics.redis_up.clone()),
        );
        registry.register(
            "tinyscale_requests",
            "API requests by call and result (returncode, or messageKey of a failure)",
            Exported(metrics.requests.clone()),
        );
        registry.register_with_unit(
            "tinyscale_request_duration",
            "Time to answer an API request",
            Unit::Seconds,
            Exported(metrics.request_seconds.clone()),
        );
        registry.register_with_unit(
            "tinyscale_backend_request_duration",
            "Time for a BigBlueButton server to answer a call tinyscale made",
            Unit::Seconds,
            Exported(metrics.backend_seconds.clone()),
        );
        registry.register(
            "tinyscale_backend_errors",
            "Calls to a BigBlueButton server that got no answer (refused, timed out, broken)",
            Exported(metrics.backend_errors.clone()),
        );
        registry.register(
            "tinyscale_reloads",
            "Reloads of the servers file by result (ok, refused)",
            Exported(metrics.reloads.clone()),
        );
        registry.register(
            "tinyscale_recreated_meetings",
            "Meetings made again on another server from their kept create call, their own being down, disabled or removed",
            metrics.recreated.clone(),
        );
        registry.register(
            "tinyscale_callbacks",
            "Callbacks from the servers to the LMS (recording-ready, analytics) by result (accepted, refused)",
            Exported(metrics.callbacks.clone()),
        );
        registry.register(
            "tinyscale_callback_deliveries",
            "Tries to deliver an accepted callback to the LMS by result (delivered, failed: tried again later, dropped: gave up)",
            Exported(metrics.callback_deliveries.clone()),
        );
        registry.register(
            "tinyscale_server_up",
            "1 if the server is up (answering polls), 0 if down",
            Exported(metrics.server_up.clone()),
        );
        registry.register(
            "tinyscale_server_state",
            "1 for the server's configured state (enabled, cordoned, disabled)",
            Exported(metrics.server_state.clone()),
        );
        registry.register(
            "tinyscale_server_meetings",
            "Meetings on the server at its last good poll",
            Exported(metrics.server_meetings.clone()),
        );
        registry.register(
            "tinyscale_server_participants",
            "Participants on the server at its last good poll",
            Exported(metrics.server_participants.clone()),
        );
        registry.register(
            "tinyscale_server_videos",
            "Video streams on the server at its last good poll",
            Exported(metrics.server_videos.clone()),
        );
        registry.register(
            "tinyscale_server_load",
            "Load used for placement: participants plus reservations for new meetings, divided by weight",
            Exported(metrics.server_load.clone()),
        );
        registry.register_with_unit(
            "tinyscale_server_poll_duration",
            "How long the server's last good poll took",
            Unit::Seconds,
            Exported(metrics.server_poll_seconds.clone()),
        );
        registry.register(
            "tinyscale_known_meetings",
            "Meetings whose server tinyscale knows",
            metrics.known_meetings.clone(),
        );
        // Both results from the start, at 0: Prometheus' increase() and
        // rate() do not count a series' first sample, so a counter that
        // appeared at 1 with the first refused reload would never alert.
        for ok in [true, false] {
            metrics.reloads.get_or_create(&reload_label(ok)).inc_by(0);
        }
        for kind in ["recording-ready", "analytics"] {
            for result in ["accepted", "refused"] {
                metrics.callback(kind, result, 0);
            }
            for result in ["delivered", "failed", "dropped"] {
                metrics.callback_delivery(kind, result, 0);
            }
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// One API request answered.
    pub fn request(&self, call: &str, result: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&CallResult {
                call: call.into(),
                result: result.into(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&CallLabel { call: call.into() })
            .observe(elapsed.as_secs_f64());
    }

    /// One call to a BBB server: answered after `elapsed`, or failed.
    pub fn backend(&self, server: &str, elapsed: Option<Duration>) {
        let label = ServerLabel {
            server: server.into(),
        };
        match elapsed {
            Some(elapsed) => self
                .backend_seconds
                .get_or_create(&label)
                .observe(elapsed.as_secs_f64()),
            None => {
                self.backend_errors.get_or_create(&label).inc();
            }
        }
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&reload_label(ok)).inc();
    }

    /// One meeting made again from its kept create call.
    pub fn recreated(&self) {
        self.recreated.inc();
    }

    /// A callback from a server, accepted or refused.
    pub fn callback(&self, kind: &str, result: &str, count: u64) {
        self.callbacks
            .get_or_create(&CallbackResult {
                kind: kind.into(),
                result: result.into(),
            })
            .inc_by(count);
    }

    /// One try to deliver a callback to the LMS.
    pub fn callback_delivery(&self, kind: &str, result: &str, count: u64) {
        self.callback_deliveries
            .get_or_create(&CallbackResult {
                kind: kind.into(),
                result: result.into(),
            })
            .inc_by(count);
    }

    /// From now on `/healthz` says the balancer is stopping.
    pub fn stopping(&self) {
        self.serving.store(false, Ordering::Relaxed);
    }

    /// The exposition text, per-server figures read from `state` now.
    pub fn render(&self, state: &State, new_meeting_load: f64) -> String {
        let _scraping = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        let families_by_server = [
            &self.server_up,
            &self.server_meetings,
            &self.server_participants,
            &self.server_videos,
        ];
        for family in families_by_server {
            family.clear();
        }
        self.server_state.clear();
        self.server_load.clear();
        self.server_poll_seconds.clear();
        for server in state.cluster().list.iter() {
            let label = ServerLabel {
                server: server.name().into(),
            };
            for s in [
                ServerState::Enabled,
                ServerState::Cordoned,
                ServerState::Disabled,
            ] {
                self.server_state
                    .get_or_create(&ServerStateLabel {
                        server: server.name().into(),
                        state: s.name().into(),
                    })
                    .set(i64::from(server.spec.state == s));
            }
            // At 0 before its first error, for the reason given for the
            // reloads: rate() then sees the first error too.
            self.backend_errors.get_or_create(&label).inc_by(0);
            let health = server.health();
            self.server_up
                .get_or_create(&label)
                .set(i64::from(health.up));
            let gauge = |family: &Family<ServerLabel, Gauge>, value: u64| {
                family
                    .get_or_create(&label)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            gauge(&self.server_meetings, health.load.meetings);
            gauge(&self.server_participants, health.load.participants);
            gauge(&self.server_videos, health.load.videos);
            self.server_load
                .get_or_create(&label)
                .set(health.load(new_meeting_load) / server.spec.weight);
            if let Some(latency) = health.latency {
                self.server_poll_seconds
                    .get_or_create(&label)
                    .set(latency.as_secs_f64());
            }
        }
        self.known_meetings
            .set(i64::try_from(state.known_meetings()).unwrap_or(i64::MAX));
        if let Some(redis) = state.redis() {
            self.redis_up
                .get_or_create(&[])
                .set(i64::from(redis.is_up()));
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// `/healthz`: 200 while serving with at least one server up, 503
    /// otherwise; one line saying why.
    pub fn health(&self, state: &State) -> (StatusCode, String) {
        if !self.serving.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into());
        }
        let cluster = state.cluster();
        let up = cluster.list.iter().filter(|s| s.is_usable()).count();
        if up == 0 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no BigBlueButton server is up (0 of {})\n",
                    cluster.list.len()
                ),
            )
        } else {
            (
                StatusCode::OK,
                format!(
                    "ok: {up} of {} BigBlueButton servers up\n",
                    cluster.list.len()
                ),
            )
        }
    }
}

fn reload_label(ok: bool) -> ResultLabel {
    ResultLabel {
        result: if ok { "ok" } else { "refused" }.into(),
    }
}

/// Answers the metrics address: `/metrics` and `/healthz`.
pub fn handle(
    metrics: &Metrics,
    state: &State,
    new_meeting_load: f64,
    request: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    match request.uri().path() {
        "/metrics" => errors::response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(state, new_meeting_load),
        ),
        "/healthz" => {
            let (status, text) = metrics.health(state);
            errors::response(status, "text/plain; charset=utf-8", text)
        }
        _ => errors::not_found_page(),
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    state: Arc<State>,
    new_meeting_load: f64,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    tokio::pin!(stop);
    // A scraper that connects and sends nothing, or stays idle, is closed
    // after this long (hyper's header timeout counts idle time too), so idle
    // connections cannot pile up here.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(METRICS_IDLE_TIMEOUT);
    loop {
        // Never fails: errors such as EMFILE are retried after a pause.
        let stream = tokio::select! {
            stream = crate::connections::accept(&listener, "metrics") => stream,
            _ = &mut stop => return,
        };
        let (metrics, state) = (metrics.clone(), state.clone());
        let connection = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request| {
                let response = handle(&metrics, &state, new_meeting_load, &request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            }),
        );
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// How long a connection to the metrics address may wait for a request.
const METRICS_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Algorithm;
    use crate::config::ServerSpec;

    #[test]
    fn names_follow_prometheus_conventions_and_move_with_traffic() {
        let metrics = Metrics::new();
        let state = State::with_defaults(vec![ServerSpec::new(
            "http://127.0.0.1:1",
            "s",
            Algorithm::Sha1,
        )]);
        metrics.request("create", "SUCCESS", Duration::from_millis(3));
        metrics.request("create", "SUCCESS", Duration::from_millis(5));
        metrics.backend("http://127.0.0.1:1", Some(Duration::from_millis(2)));
        metrics.backend("http://127.0.0.1:1", None);
        metrics.reload(false);
        let text = metrics.render(&state, 15.0);
        for line in [
            "tinyscale_requests_total{call=\"create\",result=\"SUCCESS\"} 2",
            "tinyscale_request_duration_seconds_count{call=\"create\"} 2",
            "tinyscale_backend_request_duration_seconds_count{server=\"http://127.0.0.1:1\"} 1",
            "tinyscale_backend_errors_total{server=\"http://127.0.0.1:1\"} 1",
            "tinyscale_reloads_total{result=\"refused\"} 1",
            "tinyscale_server_up{server=\"http://127.0.0.1:1\"} 0",
            "tinyscale_server_state{server=\"http://127.0.0.1:1\",state=\"enabled\"} 1",
            "tinyscale_server_state{server=\"http://127.0.0.1:1\",state=\"disabled\"} 0",
            "tinyscale_known_meetings 0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(metrics.health(&state).0, StatusCode::SERVICE_UNAVAILABLE);
        state.mark_up(&state.cluster().list[0]);
        assert_eq!(metrics.health(&state).0, StatusCode::OK);
        metrics.stopping();
        assert_eq!(
            metrics.health(&state),
            (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into())
        );
    }

    #[test]
    fn a_fresh_instance_exports_every_family_without_redis() {
        let metrics = Metrics::new();
        let state = State::with_defaults(vec![ServerSpec::new(
            "http://127.0.0.1:1",
            "s",
            Algorithm::Sha1,
        )]);
        let text = metrics.render(&state, 15.0);
        for family in [
            "tinyscale_build_info gauge",
            "tinyscale_redis_up gauge",
            "tinyscale_requests counter",
            "tinyscale_request_duration_seconds histogram",
            "tinyscale_backend_request_duration_seconds histogram",
            "tinyscale_backend_errors counter",
            "tinyscale_reloads counter",
            "tinyscale_recreated_meetings counter",
            "tinyscale_server_up gauge",
            "tinyscale_server_state gauge",
            "tinyscale_server_meetings gauge",
            "tinyscale_server_participants gauge",
            "tinyscale_server_videos gauge",
            "tinyscale_server_load gauge",
            "tinyscale_server_poll_duration_seconds gauge",
            "tinyscale_known_meetings gauge",
        ] {
            let line = format!("# TYPE {family}");
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Counters that alerts take the increase of start at 0.
        for line in [
            "tinyscale_reloads_total{result=\"ok\"} 0",
            "tinyscale_reloads_total{result=\"refused\"} 0",
            "tinyscale_backend_errors_total{server=\"http://127.0.0.1:1\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Without Redis its gauge has no value: a 0 would read as "down".
        assert!(
            !text.lines().any(|l| l.starts_with("tinyscale_redis_up")),
            "{text}"
        );
    }
}
