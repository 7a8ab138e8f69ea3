//! The pure rules of a server's health: up/down with hysteresis (N
//! failures in a row to go down, M successes to come back), the figures of
//! its last good poll, and the load reserved for meetings placed since.
//!
//! No I/O and no locking: each server's [`Health`] lives in `state`, which
//! changes it through its own methods; `poller` feeds it poll results.

use crate::xml;
use std::time::{Duration, Instant, SystemTime};

/// Health rules: how many polls in a row flip a server.
#[derive(Clone, Copy, Debug)]
pub struct HealthPolicy {
    pub down_after: u32,
    pub up_after: u32,
}

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

/// A server's health. `state` holds one per server and hands out copies.
#[derive(Clone, Debug, Default)]
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

    /// Marks a poll as under way; false when one already is.
    pub fn begin_poll(&mut self) -> bool {
        !std::mem::replace(&mut self.polling, true)
    }

    pub fn end_poll(&mut self) {
        self.polling = false;
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
