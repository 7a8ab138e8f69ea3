//! Every answer tinyscale makes up itself (errors, the API root, the empty
//! lists), turned into BBB's own XML or JSON in this one place.
//!
//! Owns the messageKeys and messages, taken from bbb-web so that clients,
//! which branch on the key, see exactly what a BBB server would send. Does not
//! own answers that come from a backend: those are passed through untouched.

use bytes::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

pub use crate::body::Body;

pub const XML: &str = "text/xml;charset=utf-8";
pub const JSON: &str = "application/json";

/// A call that tinyscale answers as FAILED itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Checksums do not match")]
    Checksum,
    #[error("You must provide a meeting ID")]
    MissingMeetingId,
    #[error("You must specify one or more a record IDs.")]
    MissingRecordId,
    /// getMeetingInfo, end, insertDocument of a meeting no server holds.
    #[error("A meeting with that ID does not exist")]
    MeetingNotFound,
    /// sendChatMessage of a meeting no server holds.
    #[error("Meeting not found or not active")]
    ChatMeetingNotFound,
    /// join of a meeting no server holds.
    #[error("The meeting ID that you supplied did not match any existing meetings")]
    InvalidMeetingIdentifier,
    /// publish/update/delete of recordIDs no server has.
    #[error("We could not find recordings")]
    RecordingsNotFound,
    /// getRecordingTextTracks/putRecordingTextTrack of a recordID no server has.
    #[error("No recording found for {0}")]
    NoRecording(String),
    /// A breakout room's create without its parent (bbb-web's words).
    #[error("No parent meeting ID was provided for the breakout room")]
    ParentMeetingIdMissing,
    /// A breakout room whose parent no server holds (bbb-web's words).
    #[error("No parent meeting exists for the breakout room")]
    ParentMeetingDoesNotExist,
    #[error("This request is not supported.")]
    Unsupported,
    #[error("The server for this meeting is disabled/offline.")]
    ServerUnavailable,
    /// create whose `meta_server-tag` requires (`!`) tags no available
    /// server carries. Not bbb-web's (it has no tags): Scalelite's key and
    /// message, which Greenlight 3 recognises.
    #[error("There is no available server with the required tag={0}.")]
    ServerTagUnavailable(String),
    /// BBB has no key for this (nginx in front of it answers 413); an
    /// invented key would break clients, so it is an internalError, with
    /// HTTP 413 as nginx would give. The connection is closed after it: the
    /// rest of the body is never read.
    #[error("The request body is larger than the {limit} bytes allowed ({variable}).")]
    BodyTooLarge { limit: u64, variable: &'static str },
    /// Something failed on the way; the sentence says what, never a secret.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The messageKey clients branch on.
    pub fn key(&self) -> &'static str {
        match self {
            ApiError::Checksum => "checksumError",
            ApiError::MissingMeetingId => "missingParamMeetingID",
            ApiError::MissingRecordId => "missingParamRecordID",
            ApiError::MeetingNotFound | ApiError::RecordingsNotFound => "notFound",
            ApiError::ChatMeetingNotFound => "meetingNotFound",
            ApiError::InvalidMeetingIdentifier => "invalidMeetingIdentifier",
            ApiError::NoRecording(_) => "noRecordings",
            ApiError::ParentMeetingIdMissing => "parentMeetingIDMissing",
            ApiError::ParentMeetingDoesNotExist => "parentMeetingDoesNotExist",
            ApiError::Unsupported => "unsupportedRequest",
            ApiError::ServerUnavailable => "serverUnavailable",
            ApiError::ServerTagUnavailable(_) => "serverTagUnavailable",
            ApiError::BodyTooLarge { .. } | ApiError::Internal(_) => "internalError",
        }
    }

    /// The answer to a call that failed: JSON for the calls that answer in
    /// JSON (the recording text tracks), else BBB's XML.
    pub fn to_response(&self, json: bool) -> Response<Body> {
        if json { self.to_json() } else { self.to_xml() }
    }

    /// BBB's XML error answer, HTTP 200 (413 for a body too large).
    pub fn to_xml(&self) -> Response<Body> {
        self.answer(
            XML,
            format!(
                "<response><returncode>FAILED</returncode><messageKey>{}</messageKey><message>{}</message></response>",
                self.key(),
                escape(&self.to_string())
            ),
        )
    }

    fn answer(&self, content_type: &'static str, body: String) -> Response<Body> {
        match self {
            ApiError::BodyTooLarge { .. } => {
                let mut response = response(StatusCode::PAYLOAD_TOO_LARGE, content_type, body);
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                response
            }
            _ => response(StatusCode::OK, content_type, body),
        }
    }

    /// The JSON form the recording text-track calls answer with.
    pub fn to_json(&self) -> Response<Body> {
        let body = serde_json::json!({
            "response": {
                "returncode": "FAILED",
                "messageKey": self.key(),
                "message": self.to_string(),
            }
        });
        self.answer(JSON, body.to_string())
    }
}

/// `GET /bigbluebutton/api`: answered without a checksum, as BBB does.
pub fn api_root() -> Response<Body> {
    xml_response(
        "<response><returncode>SUCCESS</returncode><version>2.0</version><apiVersion>2.0</apiVersion></response>"
            .to_string(),
    )
}

/// isMeetingRunning of a meeting no server holds: BBB says "not running".
pub fn not_running() -> Response<Body> {
    xml_response(
        "<response><returncode>SUCCESS</returncode><running>false</running></response>".to_string(),
    )
}

pub fn no_meetings() -> String {
    "<response><returncode>SUCCESS</returncode><meetings/><messageKey>noMeetings</messageKey><message>no meetings were found on this server</message></response>".to_string()
}

/// bbb-web's getSessions with no sessions; "serverr" is bbb-web's own
/// spelling (ApiController.groovy), kept so clients matching it still do.
pub fn no_sessions() -> String {
    "<response><returncode>SUCCESS</returncode><sessions/><messageKey>noSessions</messageKey><message>no sessions were found on this serverr</message></response>".to_string()
}

pub fn no_recordings() -> String {
    "<response><returncode>SUCCESS</returncode><recordings/><messageKey>noRecordings</messageKey><message>There are no recordings for the meeting(s).</message></response>".to_string()
}

pub fn xml_response(body: impl Into<Bytes>) -> Response<Body> {
    response(StatusCode::OK, XML, body)
}

pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Body::whole(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain 404 for paths outside the API, as a web server would answer.
pub fn not_found_page() -> Response<Body> {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "Not Found\n",
    )
}

/// Escapes text for an XML element.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn errors_are_bbb_xml() {
        let body = text(ApiError::Checksum.to_xml()).await;
        assert_eq!(
            body,
            "<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey><message>Checksums do not match</message></response>"
        );
        let body = text(ApiError::Internal("a <b> & c".into()).to_xml()).await;
        assert!(body.contains(
            "<messageKey>internalError</messageKey><message>a &lt;b&gt; &amp; c</message>"
        ));
    }

    #[tokio::test]
    async fn text_track_errors_are_json() {
        let body = text(ApiError::NoRecording("r1".into()).to_json()).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["response"]["messageKey"], "noRecordings");
        assert_eq!(v["response"]["message"], "No recording found for r1");
    }
}
