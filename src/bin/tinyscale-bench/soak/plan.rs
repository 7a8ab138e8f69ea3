//! The mixed calls of a soak: which call comes next, what a right answer to
//! it is, and what the answer changes.
//!
//! Two kinds of meeting. Seeded ones are made on every server before the
//! run and never ended: getMeetingInfo, isMeetingRunning and join of them
//! go round all the time. Rolling ones are created through tinyscale, used
//! for a few calls and ended, over and over, so tinyscale learns and forgets
//! meetings all through the run as it does over a term of classes (a leak
//! per meeting would show as growth).

use crate::load::{Call, Check};
use std::net::SocketAddr;
use tinyscale::checksum::{Algorithm, signed_query};

/// Rolling meetings in play at once.
pub const ROLLING: usize = 40;
/// Calls on a rolling meeting between its create and its end.
const USES: u32 = 8;
/// One getMeetings and one getRecordings in this many calls.
const LIST_EVERY: usize = 40;

/// The calls a soak makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Create,
    Join,
    GetMeetingInfo,
    IsMeetingRunning,
    GetMeetings,
    GetRecordings,
    End,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Create => "create (new meeting)",
            Kind::Join => "join",
            Kind::GetMeetingInfo => "getMeetingInfo",
            Kind::IsMeetingRunning => "isMeetingRunning",
            Kind::GetMeetings => "getMeetings",
            Kind::GetRecordings => "getRecordings",
            Kind::End => "end",
        }
    }
}

/// One call as planned: what to send and what it is about.
pub struct Planned {
    pub kind: Kind,
    pub call: Call,
    /// The meeting's server, when the meeting is on a known one.
    pub owner: Option<usize>,
    pub meeting_id: Option<String>,
    /// The rolling meeting it belongs to, if any.
    slot: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Create,
    /// Created on this server; `uses` calls made since.
    Use {
        owner: usize,
        uses: u32,
    },
    End {
        owner: usize,
    },
}

struct Slot {
    meeting_id: String,
    stage: Stage,
    /// A call for it is in flight: the next waits, so that an end never
    /// overtakes a join.
    busy: bool,
}

/// The meetings of the run and the next call's choice.
pub struct Plan {
    tinyscale: SocketAddr,
    secret: String,
    /// Each server's root URL, by index.
    servers: Vec<String>,
    /// (meetingID, server index), made before the run.
    seeded: Vec<(String, usize)>,
    /// What every getMeetings / getRecordings must hold: the seeded
    /// meetings and recordings of the servers that never go down.
    steady_meetings: Vec<String>,
    steady_recordings: Vec<String>,
    slots: Vec<Slot>,
    next_slot: usize,
    next_id: u64,
    seeded_turn: usize,
}

impl Plan {
    pub fn new(
        tinyscale: SocketAddr,
        secret: &str,
        servers: Vec<String>,
        seeded: Vec<(String, usize)>,
        steady_recordings: Vec<String>,
        flapping: usize,
    ) -> Plan {
        let steady_meetings = seeded
            .iter()
            .filter(|(_, owner)| *owner != flapping)
            .map(|(id, _)| id.clone())
            .collect();
        let mut plan = Plan {
            tinyscale,
            secret: secret.to_string(),
            servers,
            seeded,
            steady_meetings,
            steady_recordings,
            slots: Vec::new(),
            next_slot: 0,
            next_id: 0,
            seeded_turn: 0,
        };
        plan.slots = (0..ROLLING)
            .map(|_| Slot {
                meeting_id: plan.new_id(),
                stage: Stage::Create,
                busy: false,
            })
            .collect();
        plan
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("soak-{}", self.next_id)
    }

    /// The `n`th call of the run.
    pub fn next(&mut self, n: usize) -> Planned {
        match n % LIST_EVERY {
            0 => self.list(Kind::GetMeetings),
            i if i == LIST_EVERY / 2 => self.list(Kind::GetRecordings),
            i if i % 2 == 0 => self.rolling().unwrap_or_else(|| self.seeded()),
            _ => self.seeded(),
        }
    }

    fn call(&self, name: &str, query: &str, check: Check) -> Call {
        Call {
            addr: self.tinyscale,
            target: format!(
                "/bigbluebutton/api/{name}?{}",
                signed_query(name, query, &self.secret, Algorithm::Sha1)
            ),
            check,
        }
    }

    /// A getMeetings or getRecordings (`kind`).
    pub fn list(&self, kind: Kind) -> Planned {
        let (name, must) = match kind {
            Kind::GetMeetings => (
                "getMeetings",
                self.steady_meetings
                    .iter()
                    .map(|id| format!("<meetingID>{id}</meetingID>"))
                    .collect::<Vec<_>>(),
            ),
            _ => (
                "getRecordings",
                self.steady_recordings
                    .iter()
                    .map(|id| format!("<recordID>{id}</recordID>"))
                    .collect(),
            ),
        };
        Planned {
            kind,
            call: self.call(name, "", success_with(must)),
            owner: None,
            meeting_id: None,
            slot: None,
        }
    }

    /// A call on an existing meeting: getMeetingInfo, isMeetingRunning or
    /// join, by `turn`.
    fn meeting_call(&self, id: &str, owner: usize, turn: usize) -> (Kind, Call) {
        let query = format!("meetingID={id}");
        match turn % 3 {
            0 => (
                Kind::Join,
                self.call(
                    "join",
                    &format!("{query}&fullName=Soak+User&role=VIEWER"),
                    Check::Redirect(format!(
                        "{}/bigbluebutton/api/join?{query}&",
                        self.servers[owner]
                    )),
                ),
            ),
            1 => (
                Kind::GetMeetingInfo,
                self.call(
                    "getMeetingInfo",
                    &query,
                    success_with(vec![format!("<meetingID>{id}</meetingID>")]),
                ),
            ),
            _ => (
                Kind::IsMeetingRunning,
                self.call(
                    "isMeetingRunning",
                    &query,
                    success_with(vec!["<running>".into()]),
                ),
            ),
        }
    }

    fn seeded(&mut self) -> Planned {
        let turn = self.seeded_turn;
        self.seeded_turn += 1;
        let (id, owner) = self.seeded[turn % self.seeded.len()].clone();
        let (kind, call) = self.meeting_call(&id, owner, turn / self.seeded.len());
        Planned {
            kind,
            call,
            owner: Some(owner),
            meeting_id: Some(id),
            slot: None,
        }
    }

    /// The next step of the next rolling meeting with no call in flight.
    fn rolling(&mut self) -> Option<Planned> {
        let n = self.slots.len();
        let slot = (0..n)
            .map(|k| (self.next_slot + k) % n)
            .find(|&i| !self.slots[i].busy)?;
        self.next_slot = (slot + 1) % n;
        self.slots[slot].busy = true;
        let id = self.slots[slot].meeting_id.clone();
        let (kind, call, owner) = match self.slots[slot].stage {
            Stage::Create => (
                Kind::Create,
                self.call(
                    "create",
                    &format!("name=Soak+class&meetingID={id}&attendeePW=ap&moderatorPW=mp"),
                    success_with(vec![
                        format!("<meetingID>{id}</meetingID>"),
                        "<messageKey></messageKey>".into(),
                    ]),
                ),
                None,
            ),
            Stage::Use { owner, uses } => {
                let (kind, call) = self.meeting_call(&id, owner, uses as usize);
                (kind, call, Some(owner))
            }
            Stage::End { owner } => (
                Kind::End,
                self.call(
                    "end",
                    &format!("meetingID={id}"),
                    success_with(vec!["sentEndMeetingRequest".into()]),
                ),
                Some(owner),
            ),
        };
        Some(Planned {
            kind,
            call,
            owner,
            meeting_id: Some(id),
            slot: Some(slot),
        })
    }

    /// What an answer changes: `created_on` is the server a right create
    /// put its meeting on; `ended` says the meeting is gone (a right end,
    /// or notFound). A failed create gives its meetingID up (it may have
    /// been made on a server that hung: that one is left alone) and a
    /// failed end is tried again.
    pub fn done(&mut self, planned: &Planned, right: bool, created_on: Option<usize>, ended: bool) {
        let Some(i) = planned.slot else { return };
        let stage = self.slots[i].stage;
        self.slots[i].busy = false;
        let next = match stage {
            Stage::Create => match created_on {
                Some(owner) if right => Stage::Use { owner, uses: 0 },
                _ => Stage::Create,
            },
            Stage::Use { owner, uses } if uses + 1 >= USES => Stage::End { owner },
            Stage::Use { owner, uses } => Stage::Use {
                owner,
                uses: uses + 1,
            },
            Stage::End { .. } if ended => Stage::Create,
            Stage::End { owner } => Stage::End { owner },
        };
        if next == Stage::Create {
            self.slots[i].meeting_id = self.new_id();
        }
        self.slots[i].stage = next;
    }
}

fn success_with(mut parts: Vec<String>) -> Check {
    parts.insert(0, "<returncode>SUCCESS</returncode>".into());
    Check::Body(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(
            "127.0.0.1:1".parse().unwrap(),
            "s",
            vec!["http://127.0.0.1:2".into(), "http://127.0.0.1:3".into()],
            vec![("a".into(), 0), ("b".into(), 1)],
            vec!["r0".into()],
            1,
        )
    }

    #[test]
    fn a_rolling_meeting_is_created_used_and_ended_then_replaced() {
        let mut plan = plan();
        let mut seen = Vec::new();
        let first_id = plan.slots[0].meeting_id.clone();
        for _ in 0..(USES + 3) {
            let p = plan.rolling().expect("a free slot");
            assert_eq!(p.slot, Some(0), "one slot taken at a time here");
            seen.push(p.kind);
            let ended = p.kind == Kind::End;
            plan.done(&p, true, Some(1), ended);
            // Only slot 0 comes round again.
            plan.next_slot = 0;
        }
        assert_eq!(seen[0], Kind::Create);
        assert_eq!(seen[USES as usize + 1], Kind::End);
        assert_eq!(seen[USES as usize + 2], Kind::Create);
        assert!(seen[1..=USES as usize].contains(&Kind::Join));
        assert_ne!(plan.slots[0].meeting_id, first_id);
    }

    #[test]
    fn a_failed_end_is_tried_again_and_a_failed_create_gives_up_its_id() {
        let mut plan = plan();
        let p = plan.rolling().unwrap();
        let first = p.meeting_id.clone();
        plan.done(&p, false, None, false);
        assert_eq!(plan.slots[0].stage, Stage::Create);
        assert_ne!(Some(plan.slots[0].meeting_id.clone()), first);
        plan.slots[0].stage = Stage::End { owner: 1 };
        plan.next_slot = 0;
        let p = plan.rolling().unwrap();
        assert_eq!(p.kind, Kind::End);
        assert_eq!(p.owner, Some(1));
        plan.done(&p, false, None, false);
        assert_eq!(plan.slots[0].stage, Stage::End { owner: 1 });
    }

    #[test]
    fn a_meeting_with_a_call_in_flight_is_not_chosen() {
        let mut plan = plan();
        let taken: Vec<_> = (0..ROLLING).map(|_| plan.rolling().unwrap()).collect();
        assert!(plan.rolling().is_none());
        // next() falls back to the seeded meetings then.
        assert!(plan.next(2).slot.is_none());
        plan.done(&taken[3], true, Some(0), false);
        assert_eq!(plan.rolling().unwrap().slot, Some(3));
    }

    #[test]
    fn lists_must_hold_what_the_steady_servers_have() {
        let plan = plan();
        let Check::Body(parts) = plan.list(Kind::GetMeetings).call.check else {
            panic!("a body check");
        };
        assert!(parts.contains(&"<meetingID>a</meetingID>".to_string()));
        assert!(
            !parts.iter().any(|p| p.contains(">b<")),
            "b is on the flapping server"
        );
    }
}
