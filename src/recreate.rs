//! Meetings that outlive their server: a meeting whose server is down,
//! disabled or removed is made again on a healthy server, from the create
//! call it was made with, when a user joins it.
//!
//! Owns the kept create call ([`KeptCreate`]: what of a create is kept, and
//! how it becomes a request again) and the pure rules around it: which
//! `createTime` a join must carry after a re-creation, and which of two
//! copies of one meetingID is the meeting (the later one; the other is
//! recorded in [`StaleCopies`] and never chosen again). Does not own when
//! to re-create (see `routing`), where kept calls are stored (see `state`,
//! and `shared` for Redis) or the copy of an upload as it streams (see
//! `upload`).

use crate::api::{ApiRequest, Call};
use crate::xml;
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest upload kept with a create call. Slides given by URL take a
/// few hundred bytes; a larger embedded file is not kept, and a re-created
/// meeting then starts with the default slides.
pub const KEEP_BODY_UP_TO: usize = 64 * 1024;

/// How long a kept call (and the record of a stale copy) lives unless its
/// meeting is seen to end first, so that nothing piles up.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// The createTimes of earlier copies kept per meeting: a meeting re-created
/// more often than this is a server farm on fire, and the oldest join links
/// are the least likely to be used.
const REPLACED_KEPT: usize = 16;

/// A meeting's create call as the client sent it: enough to send it again,
/// re-signed for another server. Plain data, stored as JSON in Redis too.
/// `Debug` shows neither the query nor the body (the meeting's passwords
/// are in them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCreate {
    /// `GET` or `POST`.
    pub method: String,
    /// The URL query without its checksum: what a server's checksum is
    /// computed over. `None` when the parameters came as a form body signed
    /// there (they are then `body`).
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// A form body (without its checksum), or an upload of at most
    /// [`KEEP_BODY_UP_TO`] bytes; empty otherwise. Hex in JSON.
    #[serde(with = "hex_bytes")]
    pub body: Vec<u8>,
    /// The client's upload was larger than [`KEEP_BODY_UP_TO`] (or could
    /// not be copied whole): the call is kept without it, as a GET.
    pub body_left_out: bool,
    /// The `createTime` of the meeting's current copy.
    pub create_time: Option<u64>,
    /// The `createTime`s of the copies it replaced, oldest first: a join
    /// carrying one of them gets `create_time` instead.
    pub replaced: Vec<u64>,
}

impl std::fmt::Debug for KeptCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptCreate")
            .field("method", &self.method)
            .field("form_signed", &self.query.is_none())
            .field("content_type", &self.content_type)
            .field("body_bytes", &self.body.len())
            .field("body_left_out", &self.body_left_out)
            .field("create_time", &self.create_time)
            .field("replaced", &self.replaced)
            .finish()
    }
}

impl KeptCreate {
    /// What is kept of a create that succeeded with `answer` (its
    /// `createTime` is the copy's). An upload is kept when it was copied
    /// whole within [`KEEP_BODY_UP_TO`] as it streamed (see
    /// `Upload::copy_up_to`).
    pub fn of(request: &ApiRequest, answer: &[u8]) -> KeptCreate {
        let content_type = request
            .content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (body, body_left_out) = match &request.upload {
            Some(upload) => match upload.copied() {
                Some(bytes) if content_type.is_some() || request.content_type.is_none() => {
                    (bytes.to_vec(), false)
                }
                _ => (Vec::new(), true),
            },
            None => (request.body_without_checksum().to_vec(), false),
        };
        let (method, content_type) = if body_left_out {
            // The query carries every parameter; without its body the call
            // is a plain GET (a POST with no body would be a broken upload).
            ("GET".to_string(), None)
        } else {
            (request.method.as_str().to_string(), content_type)
        };
        KeptCreate {
            method,
            query: request.unsigned_query().map(str::to_string),
            content_type,
            body,
            body_left_out,
            create_time: xml::create_time(answer),
            replaced: Vec::new(),
        }
    }

    /// The call again, as a request to place like any create.
    pub fn request(&self) -> ApiRequest {
        let method = Method::from_bytes(self.method.as_bytes()).unwrap_or(Method::GET);
        let content_type = self
            .content_type
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok());
        ApiRequest::replayed(
            Call::Create,
            method,
            self.query.clone(),
            content_type,
            Bytes::from(self.body.clone()),
        )
    }

    /// The meeting was made again, as a copy created at `create_time`: joins
    /// carrying the replaced copy's createTime are to get the new one.
    pub fn recreated(&mut self, create_time: Option<u64>) {
        if let Some(old) = self.create_time.take() {
            self.note_replaced(old);
        }
        self.create_time = create_time;
    }

    /// This call replaces `earlier`, the kept call of a copy that is gone
    /// (a client's create of a meeting whose server is unavailable): the
    /// earlier copies' createTimes carry over.
    pub fn replacing(mut self, earlier: &KeptCreate) -> KeptCreate {
        let mut replaced = earlier.replaced.clone();
        replaced.extend(earlier.create_time);
        for old in replaced {
            self.note_replaced(old);
        }
        self
    }

    fn note_replaced(&mut self, old: u64) {
        if Some(old) != self.create_time && !self.replaced.contains(&old) {
            self.replaced.push(old);
        }
        if self.replaced.len() > REPLACED_KEPT {
            self.replaced.remove(0);
        }
    }

    /// The createTime a join carrying `given` must have instead: the
    /// current copy's, when `given` is one of the copies it replaced.
    /// `None`: leave it (the current one, or one tinyscale does not know,
    /// which the server refuses as BBB would).
    pub fn join_create_time(&self, given: &str) -> Option<u64> {
        let given: u64 = given.trim().parse().ok()?;
        let current = self.create_time?;
        (given != current && self.replaced.contains(&given)).then_some(current)
    }

    pub fn to_json(&self) -> String {
        // Strings, numbers and a list of numbers: this cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<KeptCreate, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Is the copy created at `copy` older than the one created at `than`? Of
/// two copies of one meetingID, the later is the meeting. An unknown time
/// decides nothing.
pub fn is_earlier(copy: Option<u64>, than: Option<u64>) -> bool {
    matches!((copy, than), (Some(copy), Some(than)) if copy < than)
}

/// Copies of meetings that are not the meeting: an old server that came
/// back still holding a meeting re-created elsewhere. Never chosen again
/// (a poll listing one, or a search finding one, passes it by); each is
/// noted once, so it is logged once.
#[derive(Debug, Default)]
pub struct StaleCopies {
    /// meetingID → (server, createTime of its stale copy there, when noted).
    copies: HashMap<String, Vec<(Arc<str>, u64, Instant)>>,
}

impl StaleCopies {
    /// Notes the copy on `server` created at `create_time` as stale; true
    /// the first time.
    pub fn note(&mut self, meeting_id: &str, server: &Arc<str>, create_time: u64) -> bool {
        let copies = self.copies.entry(meeting_id.to_string()).or_default();
        if copies
            .iter()
            .any(|(s, t, _)| s == server && *t == create_time)
        {
            return false;
        }
        copies.push((server.clone(), create_time, Instant::now()));
        true
    }

    /// Is the copy on `server` created at `create_time` a stale one?
    pub fn is_stale(&self, meeting_id: &str, server: &str, create_time: Option<u64>) -> bool {
        let Some(create_time) = create_time else {
            return false;
        };
        self.copies.get(meeting_id).is_some_and(|copies| {
            copies
                .iter()
                .any(|(s, t, _)| &**s == server && *t == create_time)
        })
    }

    /// Forgets what was noted longer than [`KEPT_FOR`] ago.
    pub fn prune(&mut self, now: Instant) {
        self.copies.retain(|_, copies| {
            copies.retain(|(_, _, noted)| now.duration_since(*noted) < KEPT_FOR);
            !copies.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.copies.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

/// A body as hex in JSON: any bytes, one string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{self, Algorithm};
    use crate::config::ServerSpec;

    const SECRET: &str = "client-secret";

    fn server() -> ServerSpec {
        ServerSpec::new("http://127.0.0.1:1", "backend-secret", Algorithm::Sha256)
    }

    const ANSWER: &[u8] =
        b"<response><returncode>SUCCESS</returncode><createTime>1700000000001</createTime></response>";

    fn parsed(query: Option<&str>, content_type: Option<&str>, body: &[u8]) -> ApiRequest {
        let method = if body.is_empty() {
            Method::GET
        } else {
            Method::POST
        };
        ApiRequest::parse(
            Call::Create,
            method,
            query,
            content_type.map(|ct| HeaderValue::from_str(ct).unwrap()),
            Bytes::copy_from_slice(body),
            SECRET,
            &Algorithm::ALL,
        )
        .unwrap()
    }

    #[test]
    fn a_query_signed_create_is_sent_again_as_it_came() {
        let unsigned = "name=A+b%20c&meetingID=m%26n&moderatorPW=mp";
        let query = checksum::signed_query("create", unsigned, SECRET, Algorithm::Sha1);
        let form = "application/x-www-form-urlencoded";
        let request = parsed(Some(&query), Some(form), b"meta_x=1");
        let kept = KeptCreate::of(&request, ANSWER);
        assert_eq!(kept.query.as_deref(), Some(unsigned));
        assert_eq!(kept.create_time, Some(1_700_000_000_001));
        assert!(!kept.body_left_out);
        let again = KeptCreate::from_json(&kept.to_json()).unwrap();
        assert_eq!(again, kept);
        let replayed = again.request();
        assert_eq!(replayed.meeting_id(), Some("m&n"));
        assert_eq!(replayed.param("meta_x").as_deref(), Some("1"));
        let out = replayed.for_server(&server(), None);
        let expected = request.for_server(&server(), None);
        assert_eq!(out.uri, expected.uri);
        assert_eq!(out.body, expected.body);
        assert_eq!(replayed.method, Method::POST);
        assert_eq!(replayed.content_type.unwrap(), form);
    }

    #[test]
    fn a_form_signed_create_is_kept_without_the_clients_checksum() {
        let form = "application/x-www-form-urlencoded";
        let (signed, _) = checksum::form_body_signing_string(b"meetingID=m&name=N");
        let sum = checksum::sign("create", &signed, SECRET, Algorithm::Sha256);
        let body = format!("name=N&checksum={sum}&meetingID=m");
        let request = parsed(None, Some(form), body.as_bytes());
        let kept = KeptCreate::of(&request, ANSWER);
        assert_eq!(kept.query, None);
        assert_eq!(kept.body, b"name=N&meetingID=m");
        assert!(!kept.to_json().contains(&sum), "no checksum is kept");
        let out = kept.request().for_server(&server(), None);
        assert_eq!(out.body, request.for_server(&server(), None).body);
        assert_eq!(out.uri, "http://127.0.0.1:1/bigbluebutton/api/create");
    }

    #[test]
    fn the_body_is_hex_in_json_and_debug_shows_no_parameters() {
        let kept = KeptCreate {
            method: "POST".into(),
            query: Some("meetingID=m&moderatorPW=secret-pw".into()),
            content_type: Some("application/xml".into()),
            body: vec![0, 159, 146, 150, b'<'],
            body_left_out: false,
            create_time: None,
            replaced: vec![],
        };
        let json = kept.to_json();
        assert!(json.contains("\"body\":\"009f92963c\""), "{json}");
        assert_eq!(KeptCreate::from_json(&json).unwrap(), kept);
        assert!(KeptCreate::from_json("{\"method\":1}").is_err());
        let debug = format!("{kept:?}");
        assert!(!debug.contains("secret-pw"), "{debug}");
    }

    #[test]
    fn a_join_with_a_replaced_create_time_gets_the_current_one() {
        let mut kept = KeptCreate::of(
            &parsed(
                Some(&checksum::signed_query(
                    "create",
                    "meetingID=m&name=N",
                    SECRET,
                    Algorithm::Sha1,
                )),
                None,
                b"",
            ),
            ANSWER,
        );
        assert_eq!(kept.join_create_time("1700000000001"), None, "current");
        kept.recreated(Some(1_700_000_000_500));
        assert_eq!(kept.replaced, vec![1_700_000_000_001]);
        assert_eq!(
            kept.join_create_time(" 1700000000001"),
            Some(1_700_000_000_500)
        );
        assert_eq!(kept.join_create_time("1700000000500"), None);
        assert_eq!(kept.join_create_time("42"), None, "unknown: left alone");
        assert_eq!(kept.join_create_time("soon"), None);
        kept.recreated(Some(1_700_000_000_900));
        assert_eq!(
            kept.join_create_time("1700000000001"),
            Some(1_700_000_000_900),
            "every earlier copy"
        );
        // A client's create that replaces it carries the earlier times over.
        let mut newer = kept.clone();
        newer.replaced.clear();
        newer.create_time = Some(1_700_000_001_000);
        let newer = newer.replacing(&kept);
        assert_eq!(
            newer.replaced,
            vec![1_700_000_000_001, 1_700_000_000_500, 1_700_000_000_900]
        );
        // Bounded.
        for n in 0..40 {
            kept.recreated(Some(1_800_000_000_000 + n));
        }
        assert_eq!(kept.replaced.len(), REPLACED_KEPT);
    }

    #[test]
    fn the_later_copy_is_the_meeting() {
        assert!(is_earlier(Some(1), Some(2)));
        assert!(!is_earlier(Some(2), Some(1)));
        assert!(!is_earlier(Some(2), Some(2)));
        assert!(!is_earlier(None, Some(2)));
        assert!(!is_earlier(Some(1), None));
    }

    #[test]
    fn stale_copies_are_noted_once_and_pruned() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut stale = StaleCopies::default();
        assert!(stale.note("m", &a, 1));
        assert!(!stale.note("m", &a, 1), "once");
        assert!(stale.note("m", &b, 1));
        assert!(stale.is_stale("m", "a", Some(1)));
        assert!(!stale.is_stale("m", "a", Some(2)), "another copy there");
        assert!(!stale.is_stale("m", "a", None));
        assert!(!stale.is_stale("n", "a", Some(1)));
        assert_eq!(stale.len(), 2);
        stale.prune(Instant::now());
        assert_eq!(stale.len(), 2);
        stale.prune(Instant::now() + KEPT_FOR);
        assert!(stale.is_empty());
    }
}
