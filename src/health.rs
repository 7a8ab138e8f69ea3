//! What tinyscale knows about each server's health and load, and the poller
//! that keeps it fresh.
//!
//! - [`Health`]: up/down with hysteresis (N failures in a row to go down, M
//!   successes to come back), the figures of the last good poll, and the
//!   load reserved for meetings placed since;
//! - the start-up probe: every server asked once before serving, so those
//!   that answer take meetings at once;
//! - the poller: every server asked `getMeetings` at a fixed interval, each
//!   on its own clock and with its own timeout, so one slow server never
//!   delays the others' figures.
//!
//! Routing reads health through `state`; it reports failed calls here.

use crate::api;
use crate::backend::Backend;
use crate::config::ServerState;
use crate::state::{HealthPolicy, Server, State};
use crate::xml;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A server's figures from its last good poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub meetings: u64,
    pub participants: u64,
    pub listeners: u64,
    pub voice_participants: u64,
    pub videos: u64,
    /// Participants of its largest meeting.
    pub largest_meeting: u64,
}

impl Load {
    pub fn from_meetings(meetings: &[xml::MeetingSummary]) -> Load {
        let mut load = Load {
            meetings: meetings.len() as u64,
            ..Load::default()
        };
        for m in meetings {
            load.participants += m.participants;
            load.listeners += m.listeners;
            load.voice_participants += m.voice_participants;
            load.videos += m.videos;
            load.largest_meeting = load.largest_meeting.max(m.participants);
        }
        load
    }
}

/// A change of a server's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Down(String),
    Up,
}

#[derive(Debug, Default)]
pub struct Health {
    pub up: bool,
    failures_in_row: u32,
    successes_in_row: u32,
    pub latency: Option<Duration>,
    pub load: Load,
    pub version: Option<String>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<(SystemTime, String)>,
    /// Meetings placed here since the last poll began.
    reservations: Vec<Instant>,
    /// A poll of this server is under way (the next tick skips it).
    polling: bool,
}

impl Health {
    /// Counts one poll (or forwarded call) result. Returns the change of
    /// state it caused, if any.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        policy: HealthPolicy,
    ) -> Option<Transition> {
        match result {
            Ok(()) => {
                self.failures_in_row = 0;
                self.successes_in_row = self.successes_in_row.saturating_add(1);
                self.last_success = Some(SystemTime::now());
                if !self.up && self.successes_in_row >= policy.up_after {
                    self.up = true;
                    return Some(Transition::Up);
                }
            }
            Err(why) => {
                self.successes_in_row = 0;
                self.failures_in_row = self.failures_in_row.saturating_add(1);
                self.last_error = Some((SystemTime::now(), why.clone()));
                if self.up && self.failures_in_row >= policy.down_after {
                    self.up = false;
                    return Some(Transition::Down(why));
                }
            }
        }
        None
    }

    /// A server that answered the start-up probe is up from then on.
    pub fn mark_up_after_probe(&mut self) {
        self.up = true;
        self.failures_in_row = 0;
        self.last_success = Some(SystemTime::now());
    }

    /// Participants plus `per_meeting` for each meeting placed since the
    /// last poll.
    pub fn load(&self, per_meeting: f64) -> f64 {
        self.load.participants as f64 + per_meeting * self.reservations.len() as f64
    }

    pub fn reserve(&mut self) {
        self.reservations.push(Instant::now());
    }

    pub fn clear_reservations_before(&mut self, started: Instant) {
        self.reservations.retain(|&t| t > started);
    }
}

/// Records a result and logs a change of state, once, when it happens.
pub fn note(state: &State, server: &Server, result: Result<(), String>) {
    match state.record(server, result) {
        Some(Transition::Down(why)) => {
            tracing::warn!(server = server.name(), "server went down: {why}")
        }
        Some(Transition::Up) => tracing::info!(server = server.name(), "server is up again"),
        None => {}
    }
}

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
    let uri = api::signed_url(&server.spec, "getMeetings", "");
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
            {
                let mut health = server.health();
                health.load = Load::from_meetings(&meetings);
                health.latency = Some(started.elapsed());
            }
            if server.health().version.is_none() {
                let version = bbb_version(backend, server, timeout).await;
                server.health().version = version;
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
                server.health().mark_up_after_probe();
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
            note(state, &server, Err(why));
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
            {
                let mut health = server.health();
                if health.polling {
                    continue;
                }
                health.polling = true;
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
                server.health().polling = false;
                note(&state, &server, result.failure().map_or(Ok(()), Err));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy {
        down_after: 2,
        up_after: 2,
    };

    #[test]
    fn one_failure_does_not_flip_a_server() {
        let mut h = Health::default();
        h.mark_up_after_probe();
        assert_eq!(h.record(Err("x".into()), POLICY), None);
        assert!(h.up);
        assert_eq!(h.record(Ok(()), POLICY), None);
        assert_eq!(h.record(Err("x".into()), POLICY), None);
        assert_eq!(
            h.record(Err("y".into()), POLICY),
            Some(Transition::Down("y".into()))
        );
        assert!(!h.up);
        assert_eq!(h.record(Err("z".into()), POLICY), None, "logged once");
        assert_eq!(h.record(Ok(()), POLICY), None);
        assert!(!h.up, "one good poll is not enough");
        assert_eq!(h.record(Ok(()), POLICY), Some(Transition::Up));
        assert_eq!(h.record(Ok(()), POLICY), None);
    }

    #[test]
    fn load_counts_reservations_until_the_next_poll() {
        let mut h = Health::default();
        h.load.participants = 7;
        h.reserve();
        h.reserve();
        assert_eq!(h.load(15.0), 37.0);
        h.clear_reservations_before(Instant::now());
        assert_eq!(h.load(15.0), 7.0);
    }

    #[test]
    fn load_from_meetings() {
        let m = |participants, videos| xml::MeetingSummary {
            meeting_id: "m".into(),
            participants,
            listeners: 1,
            voice_participants: 2,
            videos,
            create_time: None,
        };
        let load = Load::from_meetings(&[m(5, 1), m(12, 0)]);
        assert_eq!(
            load,
            Load {
                meetings: 2,
                participants: 17,
                listeners: 2,
                voice_participants: 4,
                videos: 1,
                largest_meeting: 12
            }
        );
    }
}
