//! One request in, one answer out: routes the path, checks the checksum as
//! bbb-web 2.7+ does, decodes the parameters once and applies the call to
//! the simulated state. Knows nothing of sockets or modes.

use super::answer::{self, JSON, XML};
use super::lock;
use super::state::{Created, MeetingSpec, RecordingFilter, Role, State, TextTrack, random_token};
use crate::api::Call;
use crate::checksum::{self, Algorithm};
use crate::pages::Page;
use std::collections::BTreeMap;
use std::sync::Mutex;

const API_PREFIX: &str = "/bigbluebutton/api";

/// A received request, body already read.
pub(super) struct Incoming<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Exactly as received, never decoded.
    pub raw_query: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// What to send back.
#[derive(Debug)]
pub(super) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub location: Option<String>,
    pub body: String,
}

impl Reply {
    fn xml(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: XML,
            location: None,
            body,
        }
    }

    fn json(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: JSON,
            location: None,
            body,
        }
    }

    fn redirect(location: String) -> Reply {
        Reply {
            status: 302,
            content_type: "text/plain;charset=utf-8",
            location: Some(location),
            body: String::new(),
        }
    }

    fn page(status: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            location: None,
            body,
        }
    }

    fn failed(key: &str, message: &str) -> Reply {
        Reply::xml(answer::failed(key, message))
    }
}

/// The answer and what the request log should say about it.
pub(super) struct Outcome {
    /// The API call name, `""` for the API index, or the path of a non-API
    /// request.
    pub call: String,
    pub checksum_ok: bool,
    pub reply: Reply,
}

enum Route<'a> {
    ApiIndex,
    /// A name under `/bigbluebutton/api/`, known or not.
    Api(&'a str, Option<Call>),
    Html5Join,
    Logout,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path.strip_prefix(API_PREFIX) {
        Some("" | "/") => Route::ApiIndex,
        Some(rest) => match rest.strip_prefix('/') {
            Some(name) => Route::Api(name, Call::from_name(name)),
            None => Route::NotFound,
        },
        None => match path {
            // bbb-web maps `/bigbluebutton/` to the API index too.
            "/bigbluebutton/" => Route::ApiIndex,
            "/html5client/join" => Route::Html5Join,
            "/logout" => Route::Logout,
            _ => Route::NotFound,
        },
    }
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// bbb-web's check: over the raw URL query; or, for a form POST with an
/// empty URL query, over the sorted body parameters with the body's one
/// `checksum`. A missing or repeated checksum fails.
fn checksum_ok(secret: &str, call: &str, req: &Incoming<'_>) -> bool {
    if req.method.eq_ignore_ascii_case("POST")
        && is_form(req.content_type)
        && req.raw_query.is_empty()
    {
        let (signing, sums) = checksum::form_body_signing_string(req.body);
        return match sums.as_slice() {
            [one] => checksum::verify(call, &signing, one, secret, &Algorithm::ALL).is_ok(),
            _ => false,
        };
    }
    match checksum::split_checksum(req.raw_query) {
        Ok(split) => checksum::verify(
            call,
            &split.unsigned,
            split.checksum,
            secret,
            &Algorithm::ALL,
        )
        .is_ok(),
        Err(_) => false,
    }
}

/// Decoded parameters: the URL query, then a form body's, in order. Like a
/// servlet, a lookup takes the first value of a name.
struct Params(Vec<(String, String)>);

impl Params {
    fn decode(req: &Incoming<'_>) -> Params {
        let mut all: Vec<(String, String)> = form_urlencoded::parse(req.raw_query.as_bytes())
            .into_owned()
            .collect();
        if is_form(req.content_type) {
            all.extend(form_urlencoded::parse(req.body).into_owned());
        }
        Params(all)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value if it has more than white space (bbb-web's `NotEmpty`).
    fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// A comma list, blanks dropped.
    fn list(&self, name: &str) -> Vec<&str> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// `meta_*` parameters with lower-cased names. Names that cannot be XML
    /// element names are left out (bbb-web would print broken XML).
    fn meta(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("meta_")?.to_lowercase();
                is_xml_name(&name).then(|| (name, v.clone()))
            })
            .collect()
    }
}

fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.to_ascii_lowercase().starts_with("xml")
}

const MISSING_MEETING_ID: (&str, &str) = ("missingParamMeetingID", "You must provide a meeting ID");
const MEETING_NOT_FOUND: (&str, &str) = ("notFound", "A meeting with that ID does not exist");
const MISSING_RECORD_ID: (&str, &str) = (
    "missingParamRecordID",
    "You must specify one or more a record IDs.",
);
const RECORDINGS_NOT_FOUND: (&str, &str) = ("notFound", "We could not find recordings");

/// The simulated server's identity and state, apart from any socket.
/// `Debug` shows the secret as `***`.
pub(super) struct Core {
    pub secret: String,
    /// `http://127.0.0.1:PORT`, the root every URL it hands out starts with.
    pub url: String,
    /// A std mutex: every call finishes its work without awaiting.
    pub state: Mutex<State>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("url", &self.url)
            .field("secret", &format_args!("{}", crate::config::HIDDEN))
            .finish_non_exhaustive()
    }
}

impl Core {
    pub fn respond(&self, req: &Incoming<'_>) -> Outcome {
        match route(req.path) {
            Route::ApiIndex => Outcome {
                call: String::new(),
                checksum_ok: false,
                reply: Reply::xml(answer::api_version(&self.url)),
            },
            Route::Api(name, None) => Outcome {
                call: name.to_string(),
                checksum_ok: false,
                reply: not_found(),
            },
            Route::Api(name, Some(call)) => {
                let ok = checksum_ok(&self.secret, name, req);
                let reply = if ok {
                    self.call(call, &Params::decode(req), req)
                } else {
                    Reply::failed("checksumError", "Checksums do not match")
                };
                Outcome {
                    call: name.to_string(),
                    checksum_ok: ok,
                    reply,
                }
            }
            Route::Html5Join => Outcome {
                call: req.path.to_string(),
                checksum_ok: false,
                reply: self.html5_join(&Params::decode(req)),
            },
            Route::Logout => Outcome {
                call: req.path.to_string(),
                checksum_ok: false,
                reply: Reply::page(
                    200,
                    "text/html;charset=utf-8",
                    "<!DOCTYPE html><html><body><p>You have left the meeting.</p></body></html>"
                        .to_string(),
                ),
            },
            Route::NotFound => Outcome {
                call: req.path.to_string(),
                checksum_ok: false,
                reply: not_found(),
            },
        }
    }

    fn call(&self, call: Call, p: &Params, req: &Incoming<'_>) -> Reply {
        match call {
            Call::Create => self.create(p, req),
            Call::Join => self.join(p),
            Call::IsMeetingRunning => self.is_meeting_running(p),
            Call::GetMeetingInfo => self.get_meeting_info(p),
            Call::End => self.end(p),
            Call::GetMeetings => Reply::xml(answer::meetings(&lock(&self.state).meetings)),
            Call::GetSessions => Reply::xml(answer::sessions(&lock(&self.state).meetings)),
            Call::InsertDocument => self.insert_document(p),
            Call::SendChatMessage => self.send_chat_message(p),
            Call::GetRecordings => self.get_recordings(p),
            Call::PublishRecordings => self.publish_recordings(p),
            Call::DeleteRecordings => self.delete_recordings(p),
            Call::UpdateRecordings => self.update_recordings(p),
            Call::GetRecordingTextTracks => self.get_recording_text_tracks(p),
            Call::PutRecordingTextTrack => self.put_recording_text_track(p),
        }
    }

    fn create(&self, p: &Params, req: &Incoming<'_>) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return Reply::failed(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        let Some(name) = p.non_empty("name") else {
            return Reply::failed("missingParamName", "You must provide a meeting name");
        };
        let (meeting_id, internal_id) = match self.breakout(p, meeting_id) {
            Ok(ids) => ids,
            Err(reply) => return reply,
        };
        let spec = MeetingSpec {
            meeting_id,
            internal_id,
            name: name.to_string(),
            attendee_pw: p.non_empty("attendeePW").map(str::to_string),
            moderator_pw: p.non_empty("moderatorPW").map(str::to_string),
            voice_bridge: p.number("voiceBridge"),
            dial_number: p.non_empty("dialNumber").map(str::to_string),
            duration: p.number("duration").unwrap_or(0),
            record: p.is_true("record"),
            max_users: p.number("maxParticipants").unwrap_or(0),
            logout_url: p
                .non_empty("logoutURL")
                .map_or_else(|| self.default_logout_url(), str::to_string),
            metadata: p.meta().into_iter().collect::<BTreeMap<_, _>>(),
            with_document: !req.body.is_empty() && !is_form(req.content_type),
        };
        let mut state = lock(&self.state);
        match state.create(spec) {
            Created::New(m) => Reply::xml(answer::created(m, None)),
            Created::Duplicate(m) => Reply::xml(answer::created(
                m,
                Some((
                    "duplicateWarning",
                    "This conference was already in existence and may currently be in progress.",
                )),
            )),
            Created::NotUnique => Reply::failed(
                "idNotUnique",
                "A meeting already exists with that meeting ID.  Please use a different meeting ID.",
            ),
        }
    }

    /// The IDs a create makes: for a breakout (`isBreakout=true`), bbb-web
    /// needs its parent among its own meetings, keeps the meetingID given as
    /// the internal ID and rewrites the external one; a breakout without a
    /// `sequence` is an HTTP 500 there.
    fn breakout(&self, p: &Params, meeting_id: &str) -> Result<(String, Option<String>), Reply> {
        if !p
            .get("isBreakout")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok((meeting_id.to_string(), None));
        }
        let Some(parent) = p.non_empty("parentMeetingID") else {
            return Err(Reply::failed(
                "parentMeetingIDMissing",
                "No parent meeting ID was provided for the breakout room",
            ));
        };
        let state = lock(&self.state);
        let Some(parent) = state.meeting(parent) else {
            return Err(Reply::failed(
                "parentMeetingDoesNotExist",
                "No parent meeting exists for the breakout room",
            ));
        };
        let Some(sequence) = p.non_empty("sequence") else {
            return Err(Reply::page(
                500,
                "text/html;charset=utf-8",
                "<!DOCTYPE html><html><body><p>Internal Server Error</p></body></html>".to_string(),
            ));
        };
        let external = State::breakout_id(&parent.internal_id, meeting_id, sequence);
        Ok((external, Some(meeting_id.to_string())))
    }

    /// bbb-web answers a join error by sending the browser to its default
    /// logout URL with the error as JSON in `errors`, whatever `redirect`
    /// says.
    fn join_error(&self, key: &str, message: &str) -> Reply {
        let errors = serde_json::json!([{ "key": key, "message": message }]).to_string();
        let encoded: String = form_urlencoded::byte_serialize(errors.as_bytes()).collect();
        Reply::redirect(format!("{}?errors={encoded}", self.default_logout_url()))
    }

    fn default_logout_url(&self) -> String {
        format!("{}/logout", self.url)
    }

    fn join(&self, p: &Params) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return self.join_error(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        let Some(full_name) = p.non_empty("fullName") else {
            return self.join_error(
                "missingParamFullName",
                "You must specify a name for the attendee who will be joining the meeting.",
            );
        };
        let mut state = lock(&self.state);
        let Some(meeting) = state.meeting_mut(meeting_id) else {
            return self.join_error(
                "invalidMeetingIdentifier",
                "The meeting ID that you supplied did not match any existing meetings",
            );
        };
        // bbb-web: a createTime that is not this meeting's (or not a
        // number) is refused, so that a join link made for an earlier
        // meeting of the same ID does not lead into this one.
        if let Some(given) = p.non_empty("createTime")
            && given.trim().parse::<u64>().ok() != Some(meeting.create_time)
        {
            return self.join_error(
                "mismatchCreateTimeParam",
                "The createTime parameter submitted mismatches with the current meeting.",
            );
        }
        let password = p.get("password");
        let role = p
            .get("role")
            .and_then(Role::parse)
            .or_else(|| match password {
                Some(pw) if pw == meeting.moderator_pw => Some(Role::Moderator),
                Some(pw) if pw == meeting.attendee_pw => Some(Role::Viewer),
                _ => None,
            });
        let Some(role) = role else {
            return self.join_error(
                "invalidPassword",
                "You either did not supply a password or the password supplied is neither the attendee or moderator password for this conference.",
            );
        };
        let user_id = meeting.add_attendee(full_name, role, p.get("userID"), false);
        let internal_meeting_id = meeting.internal_id.clone();
        let session_token = random_token(16);
        if state.sessions.len() >= super::state::MAX_SESSIONS
            && let Some(old) = state.sessions.keys().next().cloned()
        {
            state.sessions.remove(&old);
        }
        state.sessions.insert(
            session_token.clone(),
            (meeting_id.to_string(), user_id.clone()),
        );
        drop(state);
        let url = format!("{}/html5client/join?sessionToken={session_token}", self.url);
        if p.get("redirect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
        {
            Reply::xml(answer::joined(&answer::Joined {
                internal_meeting_id: &internal_meeting_id,
                user_id: &user_id,
                auth_token: &random_token(12),
                session_token: &session_token,
                url: &url,
            }))
        } else {
            Reply::redirect(url)
        }
    }

    /// The page the join redirect leads to; says who joined which meeting.
    fn html5_join(&self, p: &Params) -> Reply {
        let state = lock(&self.state);
        let found = p
            .get("sessionToken")
            .and_then(|t| state.sessions.get(t))
            .and_then(|(meeting_id, user_id)| {
                let m = state.meeting(meeting_id)?;
                let a = m.attendees.iter().find(|a| &a.user_id == user_id)?;
                Some((
                    m.name.clone(),
                    m.meeting_id.clone(),
                    a.full_name.clone(),
                    m.logout_url.clone(),
                ))
            });
        match found {
            Some((name, id, who, logout)) => Reply::page(
                200,
                "text/html;charset=utf-8",
                format!(
                    "<!DOCTYPE html><html><body><p>joined</p><p id=\"meeting\">{}</p><p id=\"meetingID\">{}</p><p id=\"user\">{}</p><p><a href=\"{}\">Leave</a></p></body></html>",
                    answer::escape(&name),
                    answer::escape(&id),
                    answer::escape(&who),
                    answer::escape(&logout)
                ),
            ),
            None => Reply::page(
                404,
                "text/html;charset=utf-8",
                "<!DOCTYPE html><html><body><p>Invalid session</p></body></html>".to_string(),
            ),
        }
    }

    fn is_meeting_running(&self, p: &Params) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return Reply::failed(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        let running = lock(&self.state)
            .meeting(meeting_id)
            .is_some_and(|m| m.running);
        Reply::xml(answer::running(running))
    }

    fn get_meeting_info(&self, p: &Params) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return Reply::failed(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        match lock(&self.state).meeting(meeting_id) {
            Some(m) => Reply::xml(answer::meeting_info(m)),
            None => Reply::failed(MEETING_NOT_FOUND.0, MEETING_NOT_FOUND.1),
        }
    }

    fn end(&self, p: &Params) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return Reply::failed(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        if lock(&self.state).end(meeting_id) {
            Reply::xml(answer::success(
                "sentEndMeetingRequest",
                "A request to end the meeting was sent. Please wait a few seconds, and then use the getMeetingInfo or isMeetingRunning API calls to verify that it was ended.",
            ))
        } else {
            Reply::failed(MEETING_NOT_FOUND.0, MEETING_NOT_FOUND.1)
        }
    }

    fn insert_document(&self, p: &Params) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return Reply::failed(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        match lock(&self.state).meeting_mut(meeting_id) {
            Some(m) => {
                m.documents += 1;
                Reply::xml(answer::document_inserted())
            }
            None => Reply::failed(MEETING_NOT_FOUND.0, MEETING_NOT_FOUND.1),
        }
    }

    fn send_chat_message(&self, p: &Params) -> Reply {
        let Some(meeting_id) = p.non_empty("meetingID") else {
            return Reply::failed(MISSING_MEETING_ID.0, MISSING_MEETING_ID.1);
        };
        if p.non_empty("message").is_none() {
            return Reply::failed("missingParamMessage", "You must provide the param message");
        }
        if lock(&self.state)
            .meeting(meeting_id)
            .is_some_and(|m| m.running)
        {
            Reply::xml(answer::success("", ""))
        } else {
            Reply::failed("meetingNotFound", "Meeting not found or not active")
        }
    }

    fn get_recordings(&self, p: &Params) -> Reply {
        let mut states = p.list("state");
        if states.is_empty() {
            states = vec!["processing", "processed", "published", "unpublished"];
        }
        let filter = RecordingFilter {
            meeting_ids: p.list("meetingID"),
            record_ids: p.list("recordID"),
            states,
            metadata: p.meta(),
        };
        let state = lock(&self.state);
        let mut found = state.find_recordings(&filter);
        let Some(page) = Page::asked(p.get("limit"), p.get("offset")) else {
            return Reply::xml(answer::recordings(&found, &self.url, None));
        };
        // bbb-web's order is not defined; the simulator takes the order
        // tinyscale merges pages in, so that one simulator holding every
        // recording gives the pages a cluster must equal.
        found.sort_by(|a, b| (a.start_time, &a.record_id).cmp(&(b.start_time, &b.record_id)));
        let total = found.len();
        if total > 0 && page.offset >= total {
            // bbb-web fails a page past the end.
            return Reply::page(
                500,
                "text/html;charset=utf-8",
                "<html><body>Internal Server Error</body></html>".to_string(),
            );
        }
        Reply::xml(answer::recordings(page.cut(&found), &self.url, Some(total)))
    }

    fn publish_recordings(&self, p: &Params) -> Reply {
        let ids = p.list("recordID");
        if ids.is_empty() {
            return Reply::failed(MISSING_RECORD_ID.0, MISSING_RECORD_ID.1);
        }
        let Some(publish) = p.non_empty("publish") else {
            return Reply::failed(
                "missingParamPublish",
                "You must specify a publish value true or false.",
            );
        };
        let publish = publish.trim().eq_ignore_ascii_case("true");
        let found = lock(&self.state).change_recordings(&ids, |r| {
            r.published = publish;
            r.state = super::state::state_name(publish).to_string();
        });
        if found {
            Reply::xml(answer::flag("published"))
        } else {
            Reply::failed(RECORDINGS_NOT_FOUND.0, RECORDINGS_NOT_FOUND.1)
        }
    }

    fn delete_recordings(&self, p: &Params) -> Reply {
        let ids = p.list("recordID");
        if ids.is_empty() {
            return Reply::failed(MISSING_RECORD_ID.0, MISSING_RECORD_ID.1);
        }
        if lock(&self.state).delete_recordings(&ids) {
            Reply::xml(answer::flag("deleted"))
        } else {
            Reply::failed(RECORDINGS_NOT_FOUND.0, RECORDINGS_NOT_FOUND.1)
        }
    }

    /// Sets each `meta_*` given; an empty value removes that metadata.
    fn update_recordings(&self, p: &Params) -> Reply {
        let ids = p.list("recordID");
        if ids.is_empty() {
            return Reply::failed(MISSING_RECORD_ID.0, MISSING_RECORD_ID.1);
        }
        let meta = p.meta();
        let found = lock(&self.state).change_recordings(&ids, |r| {
            for (name, value) in &meta {
                if value.is_empty() {
                    r.metadata.remove(name);
                } else {
                    r.metadata.insert(name.clone(), value.clone());
                }
            }
        });
        if found {
            Reply::xml(answer::flag("updated"))
        } else {
            Reply::failed(RECORDINGS_NOT_FOUND.0, RECORDINGS_NOT_FOUND.1)
        }
    }

    fn get_recording_text_tracks(&self, p: &Params) -> Reply {
        let Some(record_id) = p.non_empty("recordID") else {
            return Reply::json(answer::json_failed(
                MISSING_RECORD_ID.0,
                MISSING_RECORD_ID.1,
            ));
        };
        match lock(&self.state).recording(record_id) {
            Some(r) => Reply::json(answer::text_tracks(record_id, &r.tracks, &self.url)),
            None => Reply::json(answer::json_failed(
                "noRecordings",
                &format!("No recording found for {record_id}"),
            )),
        }
    }

    /// Stores the track's description; the uploaded file itself is only
    /// kept in the request log.
    fn put_recording_text_track(&self, p: &Params) -> Reply {
        let Some(record_id) = p.non_empty("recordID") else {
            return Reply::json(answer::json_failed(
                MISSING_RECORD_ID.0,
                MISSING_RECORD_ID.1,
            ));
        };
        let kind = p.get("kind").unwrap_or("");
        if kind != "subtitles" && kind != "captions" {
            return Reply::json(answer::json_failed(
                "invalidKind",
                &format!("Invalid kind parameter, expected='subtitles|captions' actual={kind}"),
            ));
        }
        let Some(lang) = p.non_empty("lang") else {
            return Reply::json(answer::json_failed(
                "invalidLang",
                "Malformed lang param, received=null",
            ));
        };
        let label = p.non_empty("label").unwrap_or(lang);
        let mut state = lock(&self.state);
        let Some(recording) = state.recording_mut(record_id) else {
            return Reply::json(answer::json_failed(
                "noRecordings",
                &format!("No recording found for {record_id}"),
            ));
        };
        recording
            .tracks
            .retain(|t| !(t.kind == kind && t.lang == lang));
        recording.tracks.push(TextTrack {
            kind: kind.to_string(),
            lang: lang.to_string(),
            label: label.to_string(),
            source: "upload".to_string(),
        });
        Reply::json(answer::track_uploaded(record_id))
    }
}

/// bbb-web's answer to a path it has no controller for.
fn not_found() -> Reply {
    Reply::page(
        404,
        "text/plain;charset=utf-8",
        "404 Not Found\n".to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        method: &'a str,
        path: &'a str,
        raw_query: &'a str,
        content_type: Option<&'a str>,
        body: &'a [u8],
    ) -> Incoming<'a> {
        Incoming {
            method,
            path,
            raw_query,
            content_type,
            body,
        }
    }

    #[test]
    fn routes() {
        assert!(matches!(route("/bigbluebutton/api"), Route::ApiIndex));
        assert!(matches!(route("/bigbluebutton/api/"), Route::ApiIndex));
        assert!(matches!(route("/bigbluebutton/"), Route::ApiIndex));
        assert!(matches!(
            route("/bigbluebutton/api/create"),
            Route::Api("create", Some(Call::Create))
        ));
        assert!(matches!(
            route("/bigbluebutton/api/hooks/list"),
            Route::Api("hooks/list", None)
        ));
        assert!(matches!(route("/bigbluebutton/apix"), Route::NotFound));
        assert!(matches!(route("/html5client/join"), Route::Html5Join));
    }

    #[test]
    fn form_post_with_empty_query_is_checked_over_the_body() {
        let unsigned = "meetingID=abc&name=Test+Meeting";
        let sum = checksum::sign("create", unsigned, "s3", Algorithm::Sha1);
        let body = format!("name=Test%20Meeting&meetingID=abc&checksum={sum}");
        let form = Some("application/x-www-form-urlencoded; charset=UTF-8");
        assert!(checksum_ok(
            "s3",
            "create",
            &req("POST", "", "", form, body.as_bytes())
        ));
        let twice = format!("{body}&checksum={sum}");
        assert!(!checksum_ok(
            "s3",
            "create",
            &req("POST", "", "", form, twice.as_bytes())
        ));
        // With a URL query, the query is what counts.
        let q = checksum::signed_query("create", "meetingID=x", "s3", Algorithm::Sha256);
        assert!(checksum_ok(
            "s3",
            "create",
            &req("POST", "", &q, form, body.as_bytes())
        ));
    }

    #[test]
    fn params_decode_plus_and_percent_and_meta() {
        let p = Params::decode(&req(
            "GET",
            "",
            "name=A+B%20C&meta_Bn-Origin=Moodle&meta_bad%20name=x&recordID=a,,b",
            None,
            b"",
        ));
        assert_eq!(p.get("name"), Some("A B C"));
        assert_eq!(
            p.meta(),
            vec![("bn-origin".to_string(), "Moodle".to_string())]
        );
        assert_eq!(p.list("recordID"), vec!["a", "b"]);
    }
}
