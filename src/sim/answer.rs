//! The bodies a simulated server answers, in the shapes bbb-web 2.7/3.0
//! sends: XML for most calls, JSON for the text-track calls. Every value
//! echoed from a request is escaped (or put in CDATA where BBB does).

use super::state::{Attendee, Meeting, Recording, TextTrack, java_date};
use std::fmt::Display;

pub(super) const XML: &str = "text/xml;charset=utf-8";
pub(super) const JSON: &str = "application/json";

pub(super) use crate::errors::escape;

/// A CDATA section holding `value`; a `]]>` inside is split over two
/// sections so it cannot end the first one early.
fn cdata(value: &str) -> String {
    format!("<![CDATA[{}]]>", value.replace("]]>", "]]]]><![CDATA[>"))
}

/// A `<response>` document under construction. Element names are always
/// the simulator's own (or metadata names checked by the caller).
struct Doc(String);

impl Doc {
    fn response(returncode: &str) -> Doc {
        let mut doc = Doc(String::from("<response>"));
        doc.text("returncode", returncode);
        doc
    }

    fn text(&mut self, name: &str, value: impl Display) -> &mut Doc {
        let value = escape(&value.to_string());
        self.0.push_str(&format!("<{name}>{value}</{name}>"));
        self
    }

    fn cdata(&mut self, name: &str, value: &str) -> &mut Doc {
        self.0
            .push_str(&format!("<{name}>{}</{name}>", cdata(value)));
        self
    }

    fn open(&mut self, name: &str) -> &mut Doc {
        self.0.push_str(&format!("<{name}>"));
        self
    }

    fn close(&mut self, name: &str) -> &mut Doc {
        self.0.push_str(&format!("</{name}>"));
        self
    }

    fn empty(&mut self, name: &str) -> &mut Doc {
        self.0.push_str(&format!("<{name}/>"));
        self
    }

    fn finish(mut self) -> String {
        self.0.push_str("</response>");
        self.0
    }
}

/// `FAILED` with a key and a message.
pub(super) fn failed(key: &str, message: &str) -> String {
    let mut doc = Doc::response("FAILED");
    doc.text("messageKey", key).text("message", message);
    doc.finish()
}

/// `SUCCESS` with a key and a message (end, sendChatMessage).
pub(super) fn success(key: &str, message: &str) -> String {
    let mut doc = Doc::response("SUCCESS");
    doc.text("messageKey", key).text("message", message);
    doc.finish()
}

/// `SUCCESS` and one `<name>true</name>` (publish, delete, update recordings).
pub(super) fn flag(name: &str) -> String {
    let mut doc = Doc::response("SUCCESS");
    doc.text(name, true);
    doc.finish()
}

/// `GET /bigbluebutton/api`.
pub(super) fn api_version(url: &str) -> String {
    let ws = url.replacen("http", "ws", 1);
    let mut doc = Doc::response("SUCCESS");
    doc.text("version", "2.0")
        .text("apiVersion", "2.0")
        .text("bbbVersion", "3.0.0-sim")
        .text("graphqlWebsocketUrl", format!("{ws}/graphql"))
        .text("graphqlApiUrl", format!("{url}/api/rest"));
    doc.finish()
}

/// A create's answer. A new meeting has an empty key and message, as
/// bbb-web's template prints them.
pub(super) fn created(m: &Meeting, warning: Option<(&str, &str)>) -> String {
    let (key, message) = warning.unwrap_or(("", ""));
    let mut doc = Doc::response("SUCCESS");
    doc.text("meetingID", &m.meeting_id)
        .text("internalMeetingID", &m.internal_id)
        .text("parentMeetingID", "bbb-none")
        .text("attendeePW", &m.attendee_pw)
        .text("moderatorPW", &m.moderator_pw)
        .text("createTime", m.create_time)
        .text("voiceBridge", m.voice_bridge)
        .text("dialNumber", &m.dial_number)
        .text("createDate", java_date(m.create_time))
        .text("hasUserJoined", m.has_user_joined)
        .text("duration", m.duration)
        .text("hasBeenForciblyEnded", false)
        .text("messageKey", key)
        .text("message", message);
    doc.finish()
}

/// `getMeetingInfo`.
pub(super) fn meeting_info(m: &Meeting) -> String {
    let mut doc = Doc::response("SUCCESS");
    meeting_fields(&mut doc, m);
    doc.text("isBreakout", false);
    metadata(&mut doc, m);
    doc.finish()
}

/// `getMeetings`, with the no-meetings form when empty.
pub(super) fn meetings(list: &[Meeting]) -> String {
    let mut doc = Doc::response("SUCCESS");
    if list.is_empty() {
        doc.empty("meetings")
            .text("messageKey", "noMeetings")
            .text("message", "no meetings were found on this server");
        return doc.finish();
    }
    doc.open("meetings");
    for m in list {
        doc.open("meeting");
        meeting_fields(&mut doc, m);
        metadata(&mut doc, m);
        doc.text("isBreakout", false);
        doc.close("meeting");
    }
    doc.close("meetings");
    doc.finish()
}

/// getSessions (BBB 3.0): one `<meeting>` per user in a meeting, with the
/// meeting's internal ID (as bbb-web's `get-sessions.ftlx` writes it).
pub(super) fn sessions(list: &[Meeting]) -> String {
    let mut doc = Doc::response("SUCCESS");
    let users: Vec<_> = list
        .iter()
        .flat_map(|m| m.attendees.iter().map(move |a| (m, a)))
        .collect();
    if users.is_empty() {
        doc.empty("sessions")
            .text("messageKey", "noSessions")
            // sic: bbb-web's ApiController spells it so.
            .text("message", "no sessions were found on this serverr");
        return doc.finish();
    }
    doc.open("sessions");
    for (m, a) in users {
        doc.open("meeting");
        doc.text("meetingID", &m.internal_id)
            .text("meetingName", &m.name)
            .text("userName", &a.full_name);
        doc.close("meeting");
    }
    doc.close("sessions");
    doc.finish()
}

fn meeting_fields(doc: &mut Doc, m: &Meeting) {
    doc.text("meetingName", &m.name)
        .text("meetingID", &m.meeting_id)
        .text("internalMeetingID", &m.internal_id)
        .text("createTime", m.create_time)
        .text("createDate", java_date(m.create_time))
        .text("voiceBridge", m.voice_bridge)
        .text("dialNumber", &m.dial_number)
        .text("attendeePW", &m.attendee_pw)
        .text("moderatorPW", &m.moderator_pw)
        .text("running", m.running)
        .text("duration", m.duration)
        .text("hasUserJoined", m.has_user_joined)
        .text("recording", m.record)
        .text("hasBeenForciblyEnded", false)
        .text("startTime", m.start_time)
        .text("endTime", 0)
        .text("participantCount", m.attendees.len())
        .text("listenerCount", m.listener_count())
        .text("voiceParticipantCount", m.voice_count())
        .text("videoCount", m.video_count())
        .text("maxUsers", m.max_users)
        .text("moderatorCount", m.moderator_count());
    doc.open("attendees");
    for a in &m.attendees {
        attendee(doc, a);
    }
    doc.close("attendees");
}

fn attendee(doc: &mut Doc, a: &Attendee) {
    doc.open("attendee")
        .text("userID", &a.user_id)
        .text("fullName", &a.full_name)
        .text("role", a.role.as_str())
        .text("isPresenter", a.is_presenter)
        .text("isListeningOnly", a.is_listening_only)
        .text("hasJoinedVoice", a.has_joined_voice)
        .text("hasVideo", a.has_video)
        .text("clientType", "HTML5")
        .text("customdata", "")
        .close("attendee");
}

fn metadata(doc: &mut Doc, m: &Meeting) {
    doc.open("metadata");
    for (name, value) in &m.metadata {
        doc.text(name, value);
    }
    doc.close("metadata");
}

/// `isMeetingRunning`.
pub(super) fn running(running: bool) -> String {
    let mut doc = Doc::response("SUCCESS");
    doc.text("running", running);
    doc.finish()
}

/// What a join with `redirect=false` answers.
pub(super) struct Joined<'a> {
    pub internal_meeting_id: &'a str,
    pub user_id: &'a str,
    pub auth_token: &'a str,
    pub session_token: &'a str,
    pub url: &'a str,
}

pub(super) fn joined(j: &Joined<'_>) -> String {
    let mut doc = Doc::response("SUCCESS");
    doc.text("messageKey", "successfullyJoined")
        .text("message", "You have joined successfully.")
        .text("meeting_id", j.internal_meeting_id)
        .text("user_id", j.user_id)
        .text("auth_token", j.auth_token)
        .text("session_token", j.session_token)
        .text("guestStatus", "ALLOW")
        .text("url", j.url);
    doc.finish()
}

/// `insertDocument`: the fixture has a message and no key.
pub(super) fn document_inserted() -> String {
    let mut doc = Doc::response("SUCCESS");
    doc.text("message", "Presentation is being uploaded");
    doc.finish()
}

/// `getRecordings`, with the no-recordings form when empty.
/// `total`, for a page (`limit` given), is bbb-web's `<pagination>`.
pub(super) fn recordings(list: &[&Recording], url: &str, total: Option<usize>) -> String {
    let mut doc = Doc::response("SUCCESS");
    if list.is_empty() {
        doc.empty("recordings")
            .text("messageKey", "noRecordings")
            .text("message", "There are no recordings for the meeting(s).");
        return doc.finish();
    }
    doc.open("recordings");
    for r in list {
        doc.open("recording")
            .text("recordID", &r.record_id)
            .text("meetingID", &r.meeting_id)
            .text("internalMeetingID", &r.internal_meeting_id)
            .cdata("name", &r.name)
            .text("isBreakout", false)
            .text("published", r.published)
            .text("state", &r.state)
            .text("startTime", r.start_time)
            .text("endTime", r.end_time)
            .text("participants", 0)
            .text("rawSize", 0);
        doc.open("metadata");
        for (name, value) in &r.metadata {
            doc.cdata(name, value);
        }
        doc.close("metadata");
        doc.open("playback")
            .open("format")
            .text("type", "presentation")
            .text(
                "url",
                format!("{url}/playback/presentation/2.3/{}", r.record_id),
            )
            .text("processingTime", 0)
            .text("length", r.end_time.saturating_sub(r.start_time) / 60_000)
            .text("size", 0)
            .close("format")
            .close("playback");
        doc.close("recording");
    }
    doc.close("recordings");
    if let Some(total) = total {
        doc.open("pagination")
            .text("totalElements", total)
            .close("pagination");
    }
    doc.finish()
}

/// A JSON `FAILED` (the text-track calls).
pub(super) fn json_failed(key: &str, message: &str) -> String {
    serde_json::json!({
        "response": { "returncode": "FAILED", "messageKey": key, "message": message }
    })
    .to_string()
}

/// `getRecordingTextTracks`.
pub(super) fn text_tracks(record_id: &str, tracks: &[TextTrack], url: &str) -> String {
    let tracks: Vec<serde_json::Value> = tracks
        .iter()
        .map(|t| {
            serde_json::json!({
                "href": format!(
                    "{url}/presentation/{record_id}/caption_{}.vtt",
                    form_urlencoded::byte_serialize(t.lang.as_bytes()).collect::<String>()
                ),
                "kind": t.kind,
                "label": t.label,
                "lang": t.lang,
                "source": t.source,
            })
        })
        .collect();
    serde_json::json!({ "response": { "returncode": "SUCCESS", "tracks": tracks } }).to_string()
}

/// `putRecordingTextTrack`.
pub(super) fn track_uploaded(record_id: &str) -> String {
    serde_json::json!({
        "response": {
            "messageKey": "upload_text_track_success",
            "message": "Text track uploaded successfully",
            "recordId": record_id,
            "returncode": "SUCCESS",
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_all_five() {
        assert_eq!(escape(r#"a&b<c>d"e'f"#), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escape("Grüße"), "Grüße");
    }

    #[test]
    fn cdata_cannot_be_closed_early() {
        assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
    }

    #[test]
    fn failed_shape() {
        assert_eq!(
            failed("checksumError", "Checksums do not match"),
            "<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey>\
             <message>Checksums do not match</message></response>"
        );
    }
}
