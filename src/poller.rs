//! The poller: the I/O that keeps each server's health and load fresh.
//!
//! - the start-up probe: every server asked once before serving, so those
//!   that answer take meetings at once;
//! - the poller: every server asked `getMeetings` at a fixed interval, each
//!   on its own clock and with its own timeout, so one slow server never
//!   delays the others' figures.
//!
//! What a result means for a server (hysteresis, load) is `health`'s; the
//! results go in through `state`'s methods, as routing's failed calls do.

use crate::api::{self, Call};
use crate::backend::Backend;
use crate::config::ServerState;
use crate::health::Load;
use crate::state::{Server, State};
use crate::xml;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one poll of one server found.
#[derive(Debug)]
pub enum Poll {
    Ok { meetings: usize },
    ChecksumRefused,
    Unreachable(String),
    Unexpected(String),
}

impl Poll {
    /// What went wrong, in words; `None` for a good poll.
    pub fn failure(&self) -> Option<String> {
        match self {
            Poll::Ok { .. } => None,
            Poll::ChecksumRefused => {
                Some("it refuses our checksum (wrong secret in servers.json?)".into())
            }
            Poll::Unreachable(why) | Poll::Unexpected(why) => Some(why.clone()),
        }
    }
}

/// Asks one server `getMeetings` within `timeout` and takes in what it
/// says: its meetings, its figures, its health.
pub async fn poll(state: &State, backend: &Backend, server: &Server, timeout: Duration) -> Poll {
    let started = Instant::now();
    let uri = api::signed_url(&server.spec, Call::GetMeetings, "");
    match tokio::time::timeout(timeout, backend.get(&uri)).await {
        Err(_) => Poll::Unreachable(format!("did not answer within {timeout:?}")),
        Ok(Err(e)) => Poll::Unreachable(e.to_string()),
        Ok(Ok(answer)) if xml::is_success(&answer.body) => {
            let meetings = xml::meeting_summaries(&answer.body);
            let listed: Vec<(String, Option<u64>)> = meetings
                .iter()
                .map(|m| (m.meeting_id.clone(), m.create_time))
                .collect();
            state.apply_poll(server, started, &listed).await;
            tracing::debug!(
                server = server.name(),
                meetings = listed.len(),
                ms = started.elapsed().as_millis() as u64,
                "polled"
            );
            state.take_figures(server, Load::from_meetings(&meetings), started.elapsed());
            if server.health().version.is_none() {
                let version = bbb_version(backend, server, timeout).await;
                state.set_version(server, version);
            }
            Poll::Ok {
                meetings: listed.len(),
            }
        }
        Ok(Ok(answer)) => match xml::field(&answer.body, "messageKey") {
            Some("checksumError") => Poll::ChecksumRefused,
            Some(key) => Poll::Unexpected(format!("answered {key}")),
            None => Poll::Unexpected(format!(
                "answered HTTP {} without a BBB answer (is this the root of a BigBlueButton server?)",
                answer.status
            )),
        },
    }
}

/// The BBB version from the API root (`bbbVersion`, else `version`).
async fn bbb_version(backend: &Backend, server: &Server, timeout: Duration) -> Option<String> {
    let uri = server.spec.api_root();
    let answer = tokio::time::timeout(timeout, backend.get(uri))
        .await
        .ok()?
        .ok()?;
    xml::field(&answer.body, "bbbVersion")
        .or_else(|| xml::field(&answer.body, "version"))
        .map(str::to_string)
}

/// Asks `servers` once, all at once, before they take traffic: those that
/// answer are up at once; each gets one plain log line.
pub async fn probe(
    state: &Arc<State>,
    backend: &Backend,
    servers: &[Arc<Server>],
    timeout: Duration,
) {
    let mut asks = tokio::task::JoinSet::new();
    for server in servers
        .iter()
        .filter(|s| s.spec.state != ServerState::Disabled)
    {
        let (state, backend, server) = (state.clone(), backend.clone(), server.clone());
        asks.spawn(async move {
            let result = poll(&state, &backend, &server, timeout).await;
            (server, result)
        });
    }
    while let Some(Ok((server, result))) = asks.join_next().await {
        let name = server.name();
        match &result {
            Poll::Ok { meetings } => {
                state.mark_up(&server);
                tracing::info!(
                    server = name,
                    meetings,
                    state = server.spec.state.name(),
                    "server ok"
                )
            }
            Poll::ChecksumRefused => tracing::error!(
                server = name,
                "server refuses our checksum: the secret in servers.json is not this server's (bbb-conf --secret shows it)"
            ),
            Poll::Unreachable(why) => tracing::warn!(server = name, "server unreachable: {why}"),
            Poll::Unexpected(why) => tracing::warn!(server = name, "server not usable: {why}"),
        }
        if let Some(why) = result.failure() {
            state.note(&server, Err(why));
        }
    }
    for server in servers
        .iter()
        .filter(|s| s.spec.state == ServerState::Disabled)
    {
        tracing::info!(
            server = server.name(),
            "server disabled: no requests are sent to it"
        );
    }
}

/// Polls every server that is not disabled every `interval`, until
/// `shutdown` completes. Each server's poll runs on its own; one still under
/// way at the next tick (a slow server) is not started again.
pub async fn run_poller(
    state: Arc<State>,
    backend: Backend,
    interval: Duration,
    timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The start-up probe was the first poll.
    ticker.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => return,
        }
        let cluster = state.cluster();
        let count = cluster.list.len().max(1) as u32;
        for (n, server) in cluster.list.iter().enumerate() {
            if server.spec.state == ServerState::Disabled {
                continue;
            }
            if !state.begin_poll(server) {
                continue;
            }
            // Spread over the interval: each server is still polled once
            // per interval, but their getMeetings answers (all meetings,
            // all attendees) are not all in memory at the same moment, nor
            // parsed in one burst.
            let offset = interval / count * n as u32;
            let (state, backend, server) = (state.clone(), backend.clone(), server.clone());
            tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let result = poll(&state, &backend, &server, timeout).await;
                state.end_poll(&server);
                state.note(&server, result.failure().map_or(Ok(()), Err));
            });
        }
    }
}
