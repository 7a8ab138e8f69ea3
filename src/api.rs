//! A request, parsed once: which BBB call it is, whether its checksum holds,
//! the parameters routing needs (meetingID, recordID), and how to re-sign it
//! for a backend without touching the client's bytes.
//!
//! Pure: no I/O. Owns the BBB rules about *where* the signed string comes
//! from (URL query, or the sorted form body of a POST with an empty query).
//! Does not own routing (see `routing`) or the hash rules (see `checksum`).

use crate::checksum::{self, Algorithm};
use crate::config::ServerSpec;
use crate::errors::ApiError;
use crate::upload::Upload;
use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;

/// The BBB API calls tinyscale knows how to route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Create,
    Join,
    IsMeetingRunning,
    GetMeetingInfo,
    End,
    GetMeetings,
    /// BBB 3.0: the users' sessions on a server; no parameters.
    GetSessions,
    InsertDocument,
    SendChatMessage,
    GetRecordings,
    PublishRecordings,
    DeleteRecordings,
    UpdateRecordings,
    GetRecordingTextTracks,
    PutRecordingTextTrack,
}

impl Call {
    pub fn from_name(name: &str) -> Option<Call> {
        Some(match name {
            "create" => Call::Create,
            "join" => Call::Join,
            "isMeetingRunning" => Call::IsMeetingRunning,
            "getMeetingInfo" => Call::GetMeetingInfo,
            "end" => Call::End,
            "getMeetings" => Call::GetMeetings,
            "getSessions" => Call::GetSessions,
            "insertDocument" => Call::InsertDocument,
            "sendChatMessage" => Call::SendChatMessage,
            "getRecordings" => Call::GetRecordings,
            "publishRecordings" => Call::PublishRecordings,
            "deleteRecordings" => Call::DeleteRecordings,
            "updateRecordings" => Call::UpdateRecordings,
            "getRecordingTextTracks" => Call::GetRecordingTextTracks,
            "putRecordingTextTrack" => Call::PutRecordingTextTrack,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::Create => "create",
            Call::Join => "join",
            Call::IsMeetingRunning => "isMeetingRunning",
            Call::GetMeetingInfo => "getMeetingInfo",
            Call::End => "end",
            Call::GetMeetings => "getMeetings",
            Call::GetSessions => "getSessions",
            Call::InsertDocument => "insertDocument",
            Call::SendChatMessage => "sendChatMessage",
            Call::GetRecordings => "getRecordings",
            Call::PublishRecordings => "publishRecordings",
            Call::DeleteRecordings => "deleteRecordings",
            Call::UpdateRecordings => "updateRecordings",
            Call::GetRecordingTextTracks => "getRecordingTextTracks",
            Call::PutRecordingTextTrack => "putRecordingTextTrack",
        }
    }

    /// The calls that carry an upload (slides, a document, a text track):
    /// their body streams to the one server the call goes to. Every other
    /// call's body is small and read whole.
    pub fn takes_upload(self) -> bool {
        matches!(
            self,
            Call::Create | Call::InsertDocument | Call::PutRecordingTextTrack
        )
    }

    /// The recording text-track calls answer in JSON, errors included.
    pub fn answers_json(self) -> bool {
        matches!(
            self,
            Call::GetRecordingTextTracks | Call::PutRecordingTextTrack
        )
    }
}

/// What the path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/`, `/bigbluebutton/`, `/bigbluebutton/api`, `/bigbluebutton/api/`
    /// (bbb-web maps `/bigbluebutton/` to the same index: clients given
    /// the base URL check it is alive that way).
    Root,
    Api(Call),
    /// A call name BBB has but tinyscale does not route (or none at all).
    Unsupported(&'a str),
    /// Not an API path at all.
    Other,
}

pub fn target(path: &str) -> Target<'_> {
    match path {
        "/" | "/bigbluebutton/" | "/bigbluebutton/api" | "/bigbluebutton/api/" => Target::Root,
        _ => match path.strip_prefix("/bigbluebutton/api/") {
            Some(name) => Call::from_name(name).map_or(Target::Unsupported(name), Target::Api),
            None => Target::Other,
        },
    }
}

/// Where the client put its signature, and so how a backend's must be put.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Signing {
    /// The usual case: the URL query minus its checksum, byte for byte.
    Query(String),
    /// A form POST with an empty URL query (bbb-web 2.7+): the body carries
    /// the parameters and the checksum.
    FormBody,
}

/// An API request whose checksum has been verified. Its `Debug` shows the
/// call and meeting only: the query carries a checksum.
pub struct ApiRequest {
    pub call: Call,
    pub method: Method,
    pub content_type: Option<HeaderValue>,
    /// A body read whole (a form, a small body); empty with an upload.
    pub body: Bytes,
    /// An upload still on its way from the client: it goes to one server.
    pub upload: Option<Upload>,
    signing: Signing,
    /// The URL query as sent; with `form_params`, where `param` looks.
    raw_query: String,
    /// The body is a form whose parameters count as the request's too.
    form_params: bool,
    /// Decoded once: every call routed by meeting reads it more than once.
    meeting_id: Option<String>,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("call", &self.call)
            .field("method", &self.method)
            .field("meeting_id", &self.meeting_id)
            .field("body_bytes", &self.body.len())
            .field("upload", &self.upload)
            .finish_non_exhaustive()
    }
}

/// An `application/x-www-form-urlencoded` body: its parameters are the
/// call's too.
pub fn is_form(content_type: Option<&HeaderValue>) -> bool {
    content_type.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    })
}

impl ApiRequest {
    /// Verifies the checksum exactly as bbb-web does and parses the
    /// parameters routing needs.
    pub fn parse(
        call: Call,
        method: Method,
        raw_query: Option<&str>,
        content_type: Option<HeaderValue>,
        body: Bytes,
        secret: &str,
        allowed: &[Algorithm],
    ) -> Result<ApiRequest, ApiError> {
        let raw_query = raw_query.unwrap_or("");
        let form = method == Method::POST && is_form(content_type.as_ref());
        let signing = if raw_query.is_empty() && form {
            let (signed, checksums) = checksum::form_body_signing_string(&body);
            // None, or more than one: both are a checksumError in bbb-web.
            let [given] = checksums.as_slice() else {
                return Err(ApiError::Checksum);
            };
            checksum::verify(call.name(), &signed, given, secret, allowed)
                .map_err(|_| ApiError::Checksum)?;
            Signing::FormBody
        } else {
            let split = checksum::split_checksum(raw_query).map_err(|_| ApiError::Checksum)?;
            // bbb-web sees the query's and the form body's parameters as one
            // map: a second checksum in the body is a duplicate too.
            if form && form_urlencoded::parse(&body).any(|(k, _)| k == "checksum") {
                return Err(ApiError::Checksum);
            }
            checksum::verify(
                call.name(),
                &split.unsigned,
                split.checksum,
                secret,
                allowed,
            )
            .map_err(|_| ApiError::Checksum)?;
            Signing::Query(split.unsigned)
        };
        let mut request = ApiRequest {
            call,
            method,
            content_type,
            body,
            upload: None,
            signing,
            raw_query: raw_query.to_string(),
            form_params: form,
            meeting_id: None,
        };
        request.meeting_id = request
            .param("meetingID")
            .filter(|id| !id.is_empty())
            .map(|id| id.into_owned());
        Ok(request)
    }

    /// The request with the client's upload, which streams to the server.
    pub fn with_upload(mut self, upload: Upload) -> ApiRequest {
        self.upload = Some(upload);
        self
    }

    /// The first value of a parameter, decoded (`+` and `%20` are spaces):
    /// from the URL query, then from a form body. Decoded when asked for,
    /// so the parameters nobody reads cost nothing.
    pub fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let body: &[u8] = if self.form_params { &self.body } else { &[] };
        // Only the pair asked for is decoded: decoding every value on the
        // way (a `+` or `%` costs an allocation) was a tenth of a join.
        self.raw_query
            .as_bytes()
            .split(|&b| b == b'&')
            .chain(body.split(|&b| b == b'&'))
            .find(|pair| !pair.is_empty() && is_named(pair, name))
            .and_then(|pair| form_urlencoded::parse(pair).next())
            .map(|(_, v)| v)
    }

    /// The meetingID, if given and not empty.
    pub fn meeting_id(&self) -> Option<&str> {
        self.meeting_id.as_deref()
    }

    /// The recordIDs of a comma-separated `recordID`, without blanks.
    pub fn record_ids(&self) -> Vec<String> {
        self.param("recordID")
            .map(|ids| {
                ids.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The request as `server` must receive it: the same bytes, signed with
    /// its secret. `record_ids`, when given, replaces the value of
    /// `recordID` (for a call whose recordings live on several servers).
    pub fn for_server(&self, server: &ServerSpec, record_ids: Option<&[String]>) -> Outgoing {
        let replacement = record_ids.map(|ids| {
            let joined = ids.join(",");
            (
                "recordID",
                form_urlencoded::byte_serialize(joined.as_bytes()).collect::<String>(),
            )
        });
        self.for_server_replacing(server, replacement.as_ref().map(|(n, v)| (*n, v.as_str())))
    }

    /// The request as `server` must receive it, asking for `limit`
    /// recordings from `offset` on: the client's own `limit` and `offset`
    /// left out, every other parameter as sent.
    pub fn for_server_paged(&self, server: &ServerSpec, limit: usize, offset: usize) -> Outgoing {
        let paging = format!("limit={limit}&offset={offset}");
        let paged = |raw: &[u8]| {
            let mut kept: Vec<u8> = remove_param(&remove_param(raw, "limit"), "offset")
                .split(|&b| b == b'&')
                .filter(|pair| !pair.is_empty())
                .collect::<Vec<_>>()
                .join(&b'&');
            if !kept.is_empty() {
                kept.push(b'&');
            }
            kept.extend_from_slice(paging.as_bytes());
            kept
        };
        self.for_server_editing(server, Some(&paged))
    }

    /// The request as `server` must receive it, with the raw value of the
    /// parameter `name` replaced by `raw_value` (already encoded); every
    /// other byte as the client sent it.
    pub fn for_server_replacing(
        &self,
        server: &ServerSpec,
        replacement: Option<(&str, &str)>,
    ) -> Outgoing {
        match replacement {
            Some((name, value)) => {
                self.for_server_editing(server, Some(&|raw| replace_param(raw, name, value)))
            }
            None => self.for_server_editing(server, None),
        }
    }

    /// The request as `server` must receive it, its signed parameters (the
    /// URL query, or the form body that carries the checksum) passed
    /// through `edit` first. `edit` works on bytes, not text: what is not
    /// UTF-8 goes on as it came.
    pub fn for_server_editing(&self, server: &ServerSpec, edit: Option<&Edit<'_>>) -> Outgoing {
        let call = self.call.name();
        match &self.signing {
            Signing::Query(unsigned) => {
                let unsigned = match edit {
                    Some(edit) => {
                        // A query that arrived is text; cut at ASCII `&`/`=`
                        // with ASCII put in, it stays text.
                        let edited = edit(unsigned.as_bytes());
                        std::borrow::Cow::Owned(String::from_utf8_lossy(&edited).into_owned())
                    }
                    None => std::borrow::Cow::Borrowed(unsigned.as_str()),
                };
                Outgoing {
                    uri: signed_url(server, self.call, &unsigned),
                    body: self.body.clone(),
                }
            }
            Signing::FormBody => {
                let mut body = remove_param(&self.body, "checksum");
                if let Some(edit) = edit {
                    body = edit(&body);
                }
                let (signed, _) = checksum::form_body_signing_string(&body);
                let sum = checksum::sign(call, &signed, &server.secret, server.checksum);
                if !body.is_empty() {
                    body.push(b'&');
                }
                body.extend_from_slice(b"checksum=");
                body.extend_from_slice(sum.as_bytes());
                Outgoing {
                    uri: format!("{}{call}", server.api_root()),
                    body: Bytes::from(body),
                }
            }
        }
    }

    /// The URL query a server's checksum is computed over (the client's,
    /// without its checksum); `None` for a form POST signed in its body,
    /// whose parameters are then [`ApiRequest::body_without_checksum`].
    pub fn unsigned_query(&self) -> Option<&str> {
        match &self.signing {
            Signing::Query(unsigned) => Some(unsigned),
            Signing::FormBody => None,
        }
    }

    /// The body read whole, without the client's checksum when the body
    /// carried it.
    pub fn body_without_checksum(&self) -> Bytes {
        match &self.signing {
            Signing::Query(_) => self.body.clone(),
            Signing::FormBody => Bytes::from(remove_param(&self.body, "checksum")),
        }
    }

    /// A call tinyscale makes again from what it kept of one it verified
    /// earlier (see `recreate`): `unsigned_query` as
    /// [`ApiRequest::unsigned_query`] gave it (`None`: the parameters are
    /// the form `body`). Re-signed for each server like any request.
    pub fn replayed(
        call: Call,
        method: Method,
        unsigned_query: Option<String>,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> ApiRequest {
        let form_params = method == Method::POST && is_form(content_type.as_ref());
        let (signing, raw_query) = match unsigned_query {
            Some(query) => (Signing::Query(query.clone()), query),
            None => (Signing::FormBody, String::new()),
        };
        let mut request = ApiRequest {
            call,
            method,
            content_type,
            body,
            upload: None,
            signing,
            raw_query,
            form_params,
            meeting_id: None,
        };
        request.meeting_id = request
            .param("meetingID")
            .filter(|id| !id.is_empty())
            .map(|id| id.into_owned());
        request
    }
}

/// A change made to a request's raw parameters before it is re-signed.
pub type Edit<'a> = dyn Fn(&[u8]) -> Vec<u8> + 'a;

/// A request ready for one backend.
pub struct Outgoing {
    /// Absolute URL including the backend's checksum. Never log it.
    pub uri: String,
    pub body: Bytes,
}

/// The absolute URL of `call` with `query` (raw, sent byte for byte),
/// signed for `server`. For the client's own query, and for the calls
/// tinyscale makes on its own behalf (owner search, recording lookup),
/// whose query we build and encode ourselves.
pub fn signed_url(server: &ServerSpec, call: Call, query: &str) -> String {
    let call = call.name();
    let root = server.api_root();
    let mut uri = String::with_capacity(root.len() + call.len() + 1);
    uri.push_str(root);
    uri.push_str(call);
    uri.push('?');
    checksum::push_signed_query(&mut uri, call, query, &server.secret, server.checksum);
    uri
}

/// Whether a raw `name=value` pair is named `name` once decoded, as
/// `param` and the form-body signing string read it: a client may escape
/// any letter of a name (`%72ecordID`).
fn is_named(pair: &[u8], name: &str) -> bool {
    let raw = pair.split(|&b| b == b'=').next().unwrap_or_default();
    raw == name.as_bytes()
        || (raw.iter().any(|&b| b == b'%' || b == b'+')
            && form_urlencoded::parse(raw)
                .next()
                .is_some_and(|(k, _)| k == name))
}

/// Replaces the raw value of every `name=` pair, leaving every other byte.
fn replace_param(raw: &[u8], name: &str, raw_value: &str) -> Vec<u8> {
    raw.split(|&b| b == b'&')
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) if is_named(pair, name) => [&pair[..=eq], raw_value.as_bytes()].concat(),
            _ => pair.to_vec(),
        })
        .collect::<Vec<_>>()
        .join(&b'&')
}

fn remove_param(raw: &[u8], name: &str) -> Vec<u8> {
    raw.split(|&b| b == b'&')
        .filter(|pair| !is_named(pair, name))
        .collect::<Vec<_>>()
        .join(&b'&')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "client-secret";

    fn server() -> ServerSpec {
        ServerSpec::new("http://127.0.0.1:1", "backend-secret", Algorithm::Sha256)
    }

    fn get(call: Call, unsigned: &str) -> Result<ApiRequest, ApiError> {
        let q = checksum::signed_query(call.name(), unsigned, SECRET, Algorithm::Sha1);
        ApiRequest::parse(
            call,
            Method::GET,
            Some(&q),
            None,
            Bytes::new(),
            SECRET,
            &Algorithm::ALL,
        )
    }

    #[test]
    fn targets() {
        assert_eq!(target("/"), Target::Root);
        assert_eq!(target("/bigbluebutton/api/"), Target::Root);
        assert_eq!(target("/bigbluebutton/"), Target::Root);
        assert_eq!(target("/bigbluebutton"), Target::Other);
        assert_eq!(
            target("/bigbluebutton/api/getSessions"),
            Target::Api(Call::GetSessions)
        );
        assert_eq!(
            target("/bigbluebutton/api/create"),
            Target::Api(Call::Create)
        );
        assert_eq!(
            target("/bigbluebutton/api/hooks/list"),
            Target::Unsupported("hooks/list")
        );
        assert_eq!(target("/favicon.ico"), Target::Other);
    }

    #[test]
    fn parses_params_with_both_space_encodings() {
        let r = get(Call::Create, "name=A+b%20c&meetingID=x%26y+%C3%BC").unwrap();
        assert_eq!(r.param("name").as_deref(), Some("A b c"));
        assert_eq!(r.meeting_id(), Some("x&y ü"));
    }

    #[test]
    fn refuses_bad_and_duplicate_checksums() {
        let q = "meetingID=a&checksum=0000000000000000000000000000000000000000";
        let r = ApiRequest::parse(
            Call::End,
            Method::GET,
            Some(q),
            None,
            Bytes::new(),
            SECRET,
            &Algorithm::ALL,
        );
        assert_eq!(r.unwrap_err(), ApiError::Checksum);
        let good = checksum::signed_query("end", "meetingID=a", SECRET, Algorithm::Sha1);
        let twice = format!("{good}&{}", good.split('&').nth(1).unwrap());
        let r = ApiRequest::parse(
            Call::End,
            Method::GET,
            Some(&twice),
            None,
            Bytes::new(),
            SECRET,
            &Algorithm::ALL,
        );
        assert_eq!(r.unwrap_err(), ApiError::Checksum);
    }

    #[test]
    fn forwards_raw_query_byte_for_byte() {
        let unsigned = "name=A+b%20c&meetingID=x%26y";
        let r = get(Call::Create, unsigned).unwrap();
        let out = r.for_server(&server(), None);
        let expected =
            checksum::signed_query("create", unsigned, "backend-secret", Algorithm::Sha256);
        assert_eq!(
            out.uri,
            format!("http://127.0.0.1:1/bigbluebutton/api/create?{expected}")
        );
    }

    #[test]
    fn replaces_record_ids_only() {
        let r = get(Call::PublishRecordings, "recordID=a,b,c&publish=true").unwrap();
        assert_eq!(r.record_ids(), vec!["a", "b", "c"]);
        let out = r.for_server(&server(), Some(&["b".to_string(), "c".to_string()]));
        assert!(
            out.uri
                .contains("publishRecordings?recordID=b%2Cc&publish=true&checksum=")
        );
    }

    #[test]
    fn paged_for_a_server() {
        let r = get(Call::GetRecordings, "limit=5&meetingID=m&offset=20").unwrap();
        let out = r.for_server_paged(&server(), 100, 200);
        let expected = checksum::signed_query(
            "getRecordings",
            "meetingID=m&limit=100&offset=200",
            "backend-secret",
            Algorithm::Sha256,
        );
        assert_eq!(
            out.uri,
            format!("http://127.0.0.1:1/bigbluebutton/api/getRecordings?{expected}")
        );
        let r = get(Call::GetRecordings, "limit=5").unwrap();
        let out = r.for_server_paged(&server(), 100, 0);
        assert!(
            out.uri
                .contains("getRecordings?limit=100&offset=0&checksum=")
        );
    }

    #[test]
    fn escaped_names_are_the_names_they_decode_to() {
        // A narrowed recordID replaces the one record_ids read...
        let r = get(Call::PublishRecordings, "%72ecordID=a,b&publish=true").unwrap();
        assert_eq!(r.record_ids(), vec!["a", "b"]);
        let out = r.for_server(&server(), Some(&["b".to_string()]));
        assert!(out.uri.contains("?%72ecordID=b&publish=true&checksum="));
        // ...and a form body's checksum, found by its decoded name, is not
        // forwarded next to the backend's.
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        let (signed, _) = checksum::form_body_signing_string(b"meetingID=m");
        let sum = checksum::sign("end", &signed, SECRET, Algorithm::Sha1);
        let body = Bytes::from(format!("meetingID=m&%63hecksum={sum}"));
        let r = ApiRequest::parse(
            Call::End,
            Method::POST,
            None,
            Some(form),
            body,
            SECRET,
            &Algorithm::ALL,
        )
        .unwrap();
        let out = r.for_server(&server(), None);
        let expected = checksum::sign("end", &signed, "backend-secret", Algorithm::Sha256);
        assert_eq!(
            out.body,
            Bytes::from(format!("meetingID=m&checksum={expected}"))
        );
    }

    #[test]
    fn form_body_that_is_not_utf8_is_forwarded_as_it_came() {
        // A raw lead byte then an escaped continuation byte: the client means
        // "ü"; made text first, the backend would get two U+FFFD instead.
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        let (signed, _) = checksum::form_body_signing_string(b"name=\xC3%BC\xFF&meetingID=m");
        let sum = checksum::sign("create", &signed, SECRET, Algorithm::Sha1);
        let mut body = b"name=\xC3%BC\xFF&checksum=".to_vec();
        body.extend_from_slice(sum.as_bytes());
        body.extend_from_slice(b"&meetingID=m");
        let r = ApiRequest::parse(
            Call::Create,
            Method::POST,
            None,
            Some(form),
            Bytes::from(body),
            SECRET,
            &Algorithm::ALL,
        )
        .unwrap();
        let out = r.for_server(&server(), None);
        let expected = checksum::sign("create", &signed, "backend-secret", Algorithm::Sha256);
        let mut expected_body = b"name=\xC3%BC\xFF&meetingID=m&checksum=".to_vec();
        expected_body.extend_from_slice(expected.as_bytes());
        assert_eq!(out.body, Bytes::from(expected_body));
    }

    #[test]
    fn param_reads_names_as_bbb_web_does_and_decodes_only_the_one_asked() {
        let request = get(
            Call::Join,
            "fullName=Ada+L%C3%B6w&%72ole=VIEWER&&meetingID=m&createTime&userID=%2B1&meetingID=second",
        )
        .unwrap();
        // The reference: every pair decoded, the first of that name.
        let reference = |name: &str| {
            form_urlencoded::parse(request.raw_query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        for name in [
            "fullName",
            "role",
            "meetingID",
            "createTime",
            "userID",
            "checksum",
            "none",
            "",
        ] {
            assert_eq!(
                request.param(name).map(|v| v.into_owned()),
                reference(name),
                "{name}"
            );
        }
        assert_eq!(request.param("fullName").as_deref(), Some("Ada Löw"));
        assert_eq!(request.param("createTime").as_deref(), Some(""));
    }

    #[test]
    fn form_body_signed_post() {
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        let (signed, _) = checksum::form_body_signing_string(b"meetingID=m+1&name=N");
        let sum = checksum::sign("create", &signed, SECRET, Algorithm::Sha256);
        let body = Bytes::from(format!("name=N&meetingID=m+1&checksum={sum}"));
        let r = ApiRequest::parse(
            Call::Create,
            Method::POST,
            None,
            Some(form.clone()),
            body,
            SECRET,
            &Algorithm::ALL,
        )
        .unwrap();
        assert_eq!(r.meeting_id(), Some("m 1"));
        let out = r.for_server(&server(), None);
        assert_eq!(out.uri, "http://127.0.0.1:1/bigbluebutton/api/create");
        let expected = checksum::sign("create", &signed, "backend-secret", Algorithm::Sha256);
        assert_eq!(
            out.body,
            Bytes::from(format!("name=N&meetingID=m+1&checksum={expected}"))
        );

        let bad = Bytes::from("name=N&meetingID=m+1&checksum=00");
        let r = ApiRequest::parse(
            Call::Create,
            Method::POST,
            None,
            Some(form),
            bad,
            SECRET,
            &Algorithm::ALL,
        );
        assert_eq!(r.unwrap_err(), ApiError::Checksum);
    }
}
