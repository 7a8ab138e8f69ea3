//! tinyscale: one BigBlueButton API URL in front of many BBB servers.
//!
//! A request's path through the crate, top to bottom:
//!
//! - [`server`]: accepts HTTP on one event loop per core, reads the request,
//!   writes the log line; SIGHUP reload and graceful stop;
//! - [`connections`]: client connections: head limits, idle and head timeouts, how many;
//! - [`api`]: which call it is, checksum verified, parameters, re-signing;
//! - [`checksum`]: BBB's checksum rules (pure);
//! - [`routing`]: where each call goes and what is answered;
//! - [`state`]: servers and health, meeting → server, creates in flight;
//! - [`meetings`]: the meeting → server map, indexed by server too;
//! - [`shared`]: what several instances share through Redis (optional);
//! - [`placement`]: round-robin / least-loaded choice of a new meeting's server,
//!   and the pool its `meta_server-tag` allows (pure);
//! - [`callbacks`]: recording-ready and analytics callbacks relayed to the LMS, re-signed;
//! - [`recreate`]: a meeting made again elsewhere when its server is gone (kept create calls);
//! - [`backend`]: the pooled HTTP(S) client to the BBB servers; a large
//!   answer streams through;
//! - [`upload`]: a client's upload streaming to its server, within the limit;
//! - [`lists`]: getMeetings/getRecordings merged as the servers answer;
//! - [`pages`]: getRecordings pages (`limit`/`offset`) right across servers;
//! - [`body`]: what an answer's body can be (held whole, or a stream);
//! - [`fanout`]: one request to many servers at once, in the calling task;
//! - [`xml`]: reading and merging BBB answers (pure);
//! - [`errors`]: tinyscale's own answers, as BBB XML/JSON;
//! - [`config`]: environment and servers.json;
//! - [`health`]: up/down hysteresis and load figures of a server (pure);
//! - [`poller`]: start-up probe and background polls of every server;
//! - [`metrics`]: Prometheus `/metrics` and `/healthz`, on their own address;
//! - [`logging`]: log lines to stderr, text or JSON;
//! - [`cli`]: subcommands and flags; [`status`]: `status` and `check`;
//! - [`sim`]: a simulated BBB server for tests and the demo;
//! - [`demo`]: the balancer in front of three simulated servers.

pub mod api;
pub mod backend;
pub mod body;
pub mod callbacks;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod connections;
pub mod demo;
pub mod errors;
pub mod fanout;
pub mod health;
pub mod lists;
pub mod logging;
pub mod meetings;
pub mod metrics;
pub mod pages;
pub mod placement;
pub mod poller;
pub mod recreate;
pub mod routing;
pub mod server;
pub mod shared;
pub mod sim;
pub mod state;
pub mod status;
pub mod upload;
pub mod xml;

pub use logging::init_logging;

/// A future that completes on SIGTERM or SIGINT (Ctrl-C). The handlers are
/// installed when this is called, not when the future is first polled, so a
/// signal that comes in between is not lost (nor does it kill the process).
/// Must be called inside a tokio runtime.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let interrupt = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        match terminate {
            Some(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt => {}
                }
            }
            None => {
                let _ = interrupt.await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = interrupt.await;
        }
        tracing::info!("stop signal received");
    }
}
