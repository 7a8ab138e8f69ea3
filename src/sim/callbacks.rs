//! The two callbacks a BBB server signs with its secret, sent the way
//! bbb-web's record-and-playback scripts send them:
//!
//! - recording ready (`post_publish_recording_ready_callback.rb`): to the
//!   URL in meta `bbb-recording-ready-url`, else `bn-recording-ready-url`,
//!   else `canvas-recording-ready-url`; a form POST with one field,
//!   `signed_parameters`, a JWT (HS256, no `exp`) of
//!   `{meeting_id, record_id}`;
//! - analytics (`post_events_analytics_callback.rb`): to the URL in meta
//!   `analytics-callback-url`; JSON `{version, meeting_id,
//!   internal_meeting_id, data}` with `Authorization: Bearer` a JWT (HS512)
//!   of `{exp: now + 24 h}`.

use super::state::Meeting;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Meta names bbb-web's script reads for recording ready, in its order.
const RECORDING_READY: [&str; 3] = [
    "bbb-recording-ready-url",
    "bn-recording-ready-url",
    "canvas-recording-ready-url",
];

/// A callback ready to be sent.
pub(super) struct Callback {
    url: String,
    content_type: &'static str,
    authorization: Option<String>,
    body: Bytes,
}

fn token(algorithm: Algorithm, claims: &serde_json::Value, secret: &str) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).map_err(|e| e.to_string())
}

/// Recording ready for `record_id` of `meeting`; `None` if the meeting
/// names no URL for it.
pub(super) fn recording_ready(
    meeting: &Meeting,
    record_id: &str,
    secret: &str,
) -> Result<Option<Callback>, String> {
    let Some(url) = RECORDING_READY
        .iter()
        .find_map(|name| meeting.metadata.get(*name).filter(|u| !u.is_empty()))
    else {
        return Ok(None);
    };
    let claims = json!({ "meeting_id": meeting.meeting_id, "record_id": record_id });
    let signed = token(Algorithm::HS256, &claims, secret)?;
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("signed_parameters", &signed)
        .finish();
    Ok(Some(Callback {
        url: url.clone(),
        content_type: "application/x-www-form-urlencoded",
        authorization: None,
        body: Bytes::from(body),
    }))
}

/// The analytics of `meeting`; `None` if it names no URL for them.
pub(super) fn analytics(meeting: &Meeting, secret: &str) -> Result<Option<Callback>, String> {
    let Some(url) = meeting
        .metadata
        .get("analytics-callback-url")
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let exp = jsonwebtoken::get_current_timestamp() + 24 * 60 * 60;
    let signed = token(Algorithm::HS512, &json!({ "exp": exp }), secret)?;
    let body = json!({
        "version": "1.0",
        "meeting_id": meeting.meeting_id,
        "internal_meeting_id": meeting.internal_id,
        "data": {
            "metadata": { "meeting_name": meeting.name },
            "duration": 0,
            "start": meeting.start_time,
            "attendees": meeting.attendees.iter().map(|a| json!({
                "ext_user_id": a.user_id,
                "name": a.full_name,
                "moderator": a.role.as_str() == "MODERATOR",
            })).collect::<Vec<_>>(),
        },
    });
    Ok(Some(Callback {
        url: url.clone(),
        content_type: "application/json",
        authorization: Some(format!("Bearer {signed}")),
        body: Bytes::from(body.to_string()),
    }))
}

/// POSTs the callback (plain HTTP: the tests' receivers are on loopback)
/// and gives the HTTP status of the answer.
pub(super) async fn send(callback: Callback) -> Result<u16, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::post(&callback.url).header(CONTENT_TYPE, callback.content_type);
    if let Some(authorization) = &callback.authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let request = request
        .body(Full::new(callback.body))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok(status)
}
