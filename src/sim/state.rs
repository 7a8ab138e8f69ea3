//! What a simulated server remembers: meetings with their attendees,
//! recordings with their text tracks, and join sessions. Plain data and the
//! rules that change it; no I/O and no answer formatting.

use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Everything one simulated server holds.
#[derive(Debug, Default)]
pub(super) struct State {
    /// In creation order, as `getMeetings` lists them.
    pub meetings: Vec<Meeting>,
    /// In seeding order.
    pub recordings: Vec<Recording>,
    /// Session token → (meetingID, user ID), so the HTML5 join page can say
    /// who joined where.
    pub sessions: HashMap<String, (String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Moderator,
    Viewer,
}

impl Role {
    /// `MODERATOR` or `VIEWER`, any case (the `role` parameter of join).
    pub fn parse(value: &str) -> Option<Role> {
        if value.eq_ignore_ascii_case("MODERATOR") {
            Some(Role::Moderator)
        } else if value.eq_ignore_ascii_case("VIEWER") {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "MODERATOR",
            Role::Viewer => "VIEWER",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Attendee {
    pub user_id: String,
    pub full_name: String,
    pub role: Role,
    pub is_presenter: bool,
    pub is_listening_only: bool,
    pub has_joined_voice: bool,
    pub has_video: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Meeting {
    pub name: String,
    pub meeting_id: String,
    pub internal_id: String,
    pub attendee_pw: String,
    pub moderator_pw: String,
    pub create_time: u64,
    pub voice_bridge: u32,
    pub dial_number: String,
    pub duration: u64,
    pub record: bool,
    pub max_users: u64,
    pub logout_url: String,
    /// `meta_*` parameters, names lower-cased as bbb-web stores them.
    pub metadata: BTreeMap<String, String>,
    /// Set by the first join; a created meeting is not running before.
    pub running: bool,
    pub has_user_joined: bool,
    /// 0 until the first join.
    pub start_time: u64,
    pub attendees: Vec<Attendee>,
    /// Bodies of `insertDocument` calls and of slides posted with create.
    pub documents: usize,
}

/// Users kept per meeting; a join beyond it drops the earliest.
pub const MAX_ATTENDEES: usize = 50;
/// Join sessions kept per server; one beyond it drops another.
pub const MAX_SESSIONS: usize = 50_000;

impl Meeting {
    /// Adds a user and marks the meeting as running; returns the user ID.
    pub fn add_attendee(
        &mut self,
        full_name: &str,
        role: Role,
        user_id: Option<&str>,
        video: bool,
    ) -> String {
        let user_id = match user_id {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("w_{}", random_token(12)),
        };
        if self.attendees.len() >= MAX_ATTENDEES {
            // As if the earliest user had left: a long benchmark of joins
            // must not make every answer about this meeting grow.
            self.attendees.remove(0);
        }
        let is_presenter = self.attendees.is_empty();
        self.attendees.push(Attendee {
            user_id: user_id.clone(),
            full_name: full_name.to_string(),
            role,
            is_presenter,
            is_listening_only: false,
            has_joined_voice: true,
            has_video: video,
        });
        self.running = true;
        self.has_user_joined = true;
        if self.start_time == 0 {
            self.start_time = now_millis();
        }
        user_id
    }

    /// Is `id` this meeting's internal ID or its meetingID?
    pub fn names(&self, id: &str) -> bool {
        self.internal_id == id || self.meeting_id == id
    }

    pub fn listener_count(&self) -> usize {
        self.attendees
            .iter()
            .filter(|a| a.is_listening_only)
            .count()
    }

    pub fn voice_count(&self) -> usize {
        self.attendees.iter().filter(|a| a.has_joined_voice).count()
    }

    pub fn video_count(&self) -> usize {
        self.attendees.iter().filter(|a| a.has_video).count()
    }

    pub fn moderator_count(&self) -> usize {
        self.attendees
            .iter()
            .filter(|a| a.role == Role::Moderator)
            .count()
    }
}

/// The parameters of a create, already decoded.
#[derive(Debug, Default)]
pub(super) struct MeetingSpec {
    pub meeting_id: String,
    pub name: String,
    pub attendee_pw: Option<String>,
    pub moderator_pw: Option<String>,
    pub voice_bridge: Option<u32>,
    pub dial_number: Option<String>,
    pub duration: u64,
    pub record: bool,
    pub max_users: u64,
    pub logout_url: String,
    pub metadata: BTreeMap<String, String>,
    pub with_document: bool,
    /// A breakout's internal ID: the meetingID it was created with (bbb-web
    /// keeps it as is and rewrites the external one). None: derived.
    pub internal_id: Option<String>,
}

/// What a create did.
pub(super) enum Created<'a> {
    New(&'a Meeting),
    /// Same meetingID again with matching (or no) passwords.
    Duplicate(&'a Meeting),
    /// Same meetingID with other passwords, or only one of them.
    NotUnique,
}

#[derive(Debug, Clone)]
pub(super) struct TextTrack {
    pub kind: String,
    pub lang: String,
    pub label: String,
    pub source: String,
}

#[derive(Debug, Clone)]
pub(super) struct Recording {
    pub record_id: String,
    pub meeting_id: String,
    pub internal_meeting_id: String,
    pub name: String,
    pub published: bool,
    /// `published` or `unpublished` (what `state=` filters on).
    pub state: String,
    pub start_time: u64,
    pub end_time: u64,
    pub metadata: BTreeMap<String, String>,
    pub tracks: Vec<TextTrack>,
}

/// The filters of `getRecordings`; empty lists match everything.
#[derive(Debug, Default)]
pub(super) struct RecordingFilter<'a> {
    /// Exact matches against the external or internal meeting ID.
    pub meeting_ids: Vec<&'a str>,
    /// Prefix matches, as bbb-web does.
    pub record_ids: Vec<&'a str>,
    /// `any` matches every state.
    pub states: Vec<&'a str>,
    /// `meta_*` parameters: the recording's metadata must hold each value.
    pub metadata: Vec<(String, String)>,
}

impl RecordingFilter<'_> {
    fn matches(&self, r: &Recording) -> bool {
        let meeting_ok = self.meeting_ids.is_empty()
            || self
                .meeting_ids
                .iter()
                .any(|id| *id == r.meeting_id || *id == r.internal_meeting_id);
        let record_ok = self.record_ids.is_empty()
            || self.record_ids.iter().any(|id| r.record_id.starts_with(id));
        let state_ok = self.states.is_empty()
            || self
                .states
                .iter()
                .any(|s| *s == "any" || *s == r.state.as_str());
        let meta_ok = self
            .metadata
            .iter()
            .all(|(k, v)| r.metadata.get(k) == Some(v));
        meeting_ok && record_ok && state_ok && meta_ok
    }
}

impl State {
    /// The meeting a call names: by its internal ID or its meetingID, as
    /// bbb-web's `ServiceUtils.findMeetingFromMeetingID` finds it (a
    /// breakout's parent is often named by its internal ID).
    pub fn meeting(&self, meeting_id: &str) -> Option<&Meeting> {
        self.meetings.iter().find(|m| m.names(meeting_id))
    }

    pub fn meeting_mut(&mut self, meeting_id: &str) -> Option<&mut Meeting> {
        self.meetings.iter_mut().find(|m| m.names(meeting_id))
    }

    /// A breakout's external meetingID as bbb-web (ParamsProcessorUtil)
    /// rewrites it: `sha1(<parent internal ID>-<time>-<sequence>)-<time>`,
    /// where `<time>` is what follows the first `-` of the meetingID given.
    pub fn breakout_id(parent_internal_id: &str, given: &str, sequence: &str) -> String {
        let time = given.split_once('-').map_or("", |(_, after)| after);
        let hash = Sha1::digest(format!("{parent_internal_id}-{time}-{sequence}").as_bytes());
        format!("{}-{time}", hex::encode(hash))
    }

    /// Creates a meeting, or applies bbb-web's rule for an existing one:
    /// both passwords given and equal to the stored ones, or neither given,
    /// is a duplicate (SUCCESS); anything else is not unique (FAILED).
    pub fn create(&mut self, spec: MeetingSpec) -> Created<'_> {
        if let Some(i) = self
            .meetings
            .iter()
            .position(|m| m.meeting_id == spec.meeting_id)
        {
            let existing = &self.meetings[i];
            let same = match (&spec.attendee_pw, &spec.moderator_pw) {
                (None, None) => true,
                (Some(a), Some(m)) => *a == existing.attendee_pw && *m == existing.moderator_pw,
                _ => false,
            };
            return if same {
                Created::Duplicate(existing)
            } else {
                Created::NotUnique
            };
        }
        let create_time = now_millis();
        let internal_id = spec.internal_id.unwrap_or_else(|| {
            format!(
                "{}-{create_time}",
                hex::encode(Sha1::digest(spec.meeting_id.as_bytes()))
            )
        });
        let meeting = Meeting {
            name: spec.name,
            meeting_id: spec.meeting_id,
            internal_id,
            attendee_pw: spec.attendee_pw.unwrap_or_else(|| random_token(8)),
            moderator_pw: spec.moderator_pw.unwrap_or_else(|| random_token(8)),
            create_time,
            voice_bridge: spec
                .voice_bridge
                .unwrap_or_else(|| 70000 + (random_u64() % 10000) as u32),
            dial_number: spec
                .dial_number
                .unwrap_or_else(|| "613-555-1234".to_string()),
            duration: spec.duration,
            record: spec.record,
            max_users: spec.max_users,
            logout_url: spec.logout_url,
            metadata: spec.metadata,
            running: false,
            has_user_joined: false,
            start_time: 0,
            attendees: Vec::new(),
            documents: usize::from(spec.with_document),
        };
        self.meetings.push(meeting);
        match self.meetings.last() {
            Some(m) => Created::New(m),
            None => Created::NotUnique,
        }
    }

    /// Removes a meeting and its sessions; false if there was none.
    pub fn end(&mut self, meeting_id: &str) -> bool {
        let before = self.meetings.len();
        self.meetings.retain(|m| m.meeting_id != meeting_id);
        self.sessions.retain(|_, (m, _)| m != meeting_id);
        self.meetings.len() != before
    }

    pub fn recording(&self, record_id: &str) -> Option<&Recording> {
        self.recordings.iter().find(|r| r.record_id == record_id)
    }

    pub fn recording_mut(&mut self, record_id: &str) -> Option<&mut Recording> {
        self.recordings
            .iter_mut()
            .find(|r| r.record_id == record_id)
    }

    pub fn find_recordings(&self, filter: &RecordingFilter<'_>) -> Vec<&Recording> {
        self.recordings
            .iter()
            .filter(|r| filter.matches(r))
            .collect()
    }

    /// Moves a recording's start (its end an hour later).
    pub fn set_recording_start(&mut self, record_id: &str, start_time: u64) {
        if let Some(r) = self.recording_mut(record_id) {
            r.start_time = start_time;
            r.end_time = start_time + 3_600_000;
        }
    }

    /// Adds a recording, or replaces one with the same record ID.
    pub fn seed_recording(
        &mut self,
        record_id: &str,
        meeting_id: &str,
        name: &str,
        published: bool,
    ) {
        let end_time = now_millis();
        let recording = Recording {
            record_id: record_id.to_string(),
            meeting_id: meeting_id.to_string(),
            internal_meeting_id: record_id.to_string(),
            name: name.to_string(),
            published,
            state: state_name(published).to_string(),
            start_time: end_time.saturating_sub(3_600_000),
            end_time,
            metadata: BTreeMap::new(),
            tracks: Vec::new(),
        };
        match self.recording_mut(record_id) {
            Some(existing) => *existing = recording,
            None => self.recordings.push(recording),
        }
    }

    /// Applies `change` to each listed recording that exists; false if none
    /// of them exists (then nothing changed).
    pub fn change_recordings(
        &mut self,
        record_ids: &[&str],
        mut change: impl FnMut(&mut Recording),
    ) -> bool {
        let mut found = false;
        for r in self.recordings.iter_mut() {
            if record_ids.contains(&r.record_id.as_str()) {
                change(r);
                found = true;
            }
        }
        found
    }

    /// Deletes the listed recordings that exist; false if none existed.
    pub fn delete_recordings(&mut self, record_ids: &[&str]) -> bool {
        let before = self.recordings.len();
        self.recordings
            .retain(|r| !record_ids.contains(&r.record_id.as_str()));
        self.recordings.len() != before
    }
}

pub(super) fn state_name(published: bool) -> &'static str {
    if published {
        "published"
    } else {
        "unpublished"
    }
}

pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A non-cryptographic random number: enough for passwords and tokens of a
/// simulator. Each call hashes a fresh counter with std's random keys.
pub(super) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// `len` random lower-case letters and digits, like bbb-web's tokens.
pub(super) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut bits = random_u64();
    for i in 0..len {
        if i % 10 == 9 {
            bits = random_u64();
        }
        out.push(char::from(ALPHABET[(bits % 36) as usize]));
        bits /= 36;
    }
    out
}

/// A time as Java's `Date.toString()` prints it (`createDate`), in UTC:
/// `Wed Jan 20 09:56:59 UTC 2016`.
pub(super) fn java_date(millis: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = millis / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[weekday],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_date_matches_known_instants() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        // The fixture's createTime 1453283819419 is Wed Jan 20 04:56:59 EST 2016.
        assert_eq!(java_date(1_453_283_819_419), "Wed Jan 20 09:56:59 UTC 2016");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn tokens_are_lowercase_alphanumeric_and_differ() {
        let a = random_token(16);
        let b = random_token(16);
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn recording_filter_prefix_and_state() {
        let mut s = State::default();
        s.seed_recording("abc-1", "m1", "one", true);
        s.seed_recording("abc-2", "m2", "two", false);
        s.seed_recording("xyz-3", "m1", "three", true);
        let f = RecordingFilter {
            record_ids: vec!["abc"],
            ..Default::default()
        };
        assert_eq!(s.find_recordings(&f).len(), 2);
        let f = RecordingFilter {
            meeting_ids: vec!["m1"],
            states: vec!["unpublished"],
            ..Default::default()
        };
        assert!(s.find_recordings(&f).is_empty());
    }
}
