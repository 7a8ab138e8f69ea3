//! Routing: what each BBB call needs and where it goes.
//!
//! - meeting calls go to the server that holds the meeting (remembered, or
//!   found by asking every server `getMeetingInfo` at once);
//! - `create` of a new meeting goes to the next server round-robin (or the
//!   least loaded) among those its `meta_server-tag` allows, once per
//!   meetingID however many creates arrive together;
//! - `join` becomes a 302 to the owner's own signed join URL; a meeting
//!   whose server is down, disabled or removed is first made again on a
//!   healthy server from its kept create call (see `recreate`);
//! - lists are gathered from every server and merged;
//! - recording calls go to the servers that have the recordIDs.
//!
//! Owns these decisions and the answers that follow from them. Does not own
//! HTTP serving (see `server`), the wire to a backend (see `backend`) or
//! signing (see `api`).

use crate::api::{self, ApiRequest, Call, Outgoing};
use crate::backend::{Answer, Backend, BackendError, Source};
use crate::callbacks::Relay;
use crate::errors::{self, ApiError, Body};
use crate::fanout;
use crate::lists::{Ask, List, MergedList, Sending};
use crate::metrics::Metrics;
use crate::pages::{self, Page};
use crate::placement::{NoServerWithTag, ServerTag};
use crate::recreate::{self, KeptCreate};
use crate::state::{Server, State};
use crate::xml;
use hyper::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// create's parameter choosing among tagged servers (Scalelite's, sent by
/// Greenlight 3).
pub const SERVER_TAG: &str = "meta_server-tag";

/// How long a server's word that it holds a meeting is trusted before a
/// `join` or `create` asks it again. Short, so that a meeting that ended and
/// was created again elsewhere never sends users to the wrong server.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(2);

/// What a routed call produced, for the answer and the request's log line.
pub struct Outcome {
    pub response: Response<Body>,
    /// The server that answered (or was redirected to), if any.
    pub server: Option<String>,
    /// returncode, or the messageKey of a failure.
    pub result: Cow<'static, str>,
    /// A merged list still to be gathered while it is written: the answer's
    /// body, and its log line's server and result when it ends.
    pub list: Option<MergedList>,
}

impl Outcome {
    /// tinyscale's own answer to a call that failed, in the format `call`
    /// answers in (XML when the call is not one tinyscale knows).
    pub fn local(error: ApiError, call: Option<Call>) -> Outcome {
        Outcome {
            result: error.key().into(),
            response: error.to_response(call.is_some_and(Call::answers_json)),
            server: None,
            list: None,
        }
    }

    fn answer(answer: Answer, server: &Server) -> Outcome {
        Outcome {
            result: xml::result_word(&answer.body),
            response: pass_through(answer),
            server: Some(server.name().to_string()),
            list: None,
        }
    }
}

/// The backend's answer as it came: status, Content-Type, body (a large
/// one streams through).
fn pass_through(answer: Answer) -> Response<Body> {
    let body = match answer.rest {
        Some(rest) => Body::stream(rest),
        None => Body::whole(answer.body),
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status;
    if let Some(ct) = answer.content_type {
        response.headers_mut().insert(CONTENT_TYPE, ct);
    }
    if let Some(location) = answer.location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The routing half of the balancer: state plus the client to the servers.
#[derive(Clone)]
pub struct Router {
    pub state: Arc<State>,
    pub backend: Backend,
    pub metrics: Arc<Metrics>,
    /// Puts tinyscale's relay in place of a create's callback URLs.
    pub relay: Arc<Relay>,
}

/// What the meeting map says of a meeting, checked against the servers as
/// they are now.
enum Remembered {
    Nowhere,
    Usable(Arc<Server>, std::time::Instant),
    /// Its server is down, disabled or no longer configured.
    Unavailable(Arc<str>),
}

/// The answer to "who holds this meeting?".
enum Located {
    At(Arc<Server>),
    Nowhere,
}

impl Router {
    pub async fn route(&self, request: ApiRequest) -> Outcome {
        let call = request.call;
        let result = match call {
            Call::Create => self.create(&request).await,
            Call::Join => self.join(&request).await,
            Call::IsMeetingRunning
            | Call::GetMeetingInfo
            | Call::End
            | Call::InsertDocument
            | Call::SendChatMessage => self.meeting_call(&request).await,
            Call::GetMeetings => Ok(self.merged_list(&request, List::Meetings)),
            Call::GetRecordings => match Page::asked(
                request.param("limit").as_deref(),
                request.param("offset").as_deref(),
            ) {
                Some(page) => Ok(self.recordings_page(&request, page).await),
                None => Ok(self.merged_list(&request, List::Recordings)),
            },
            Call::GetSessions => Ok(self.merged_list(&request, List::Sessions)),
            Call::PublishRecordings | Call::DeleteRecordings | Call::UpdateRecordings => {
                self.recordings_change(&request).await
            }
            Call::GetRecordingTextTracks | Call::PutRecordingTextTrack => {
                self.text_track_call(&request).await
            }
        };
        result.unwrap_or_else(|error| Outcome::local(error, Some(call)))
    }

    /// Sends the client's request, re-signed, to one server.
    async fn forward(
        &self,
        request: &ApiRequest,
        server: &Server,
        record_ids: Option<&[String]>,
    ) -> Result<Answer, BackendError> {
        let Outgoing { uri, body } = if request.call == Call::Create && self.relay.rewrites() {
            let spec = &server.spec;
            request.for_server_editing(spec, Some(&|raw| self.relay.change_pairs(raw, spec)))
        } else {
            request.for_server(&server.spec, record_ids)
        };
        let body = match &request.upload {
            Some(upload) => Source::Upload(upload),
            None => Source::Bytes(body),
        };
        let result = self
            .backend
            .send(
                request.method.clone(),
                &uri,
                request.content_type.as_ref(),
                body,
            )
            .await;
        self.noted(server, result)
    }

    /// [`Router::forward`] of a call that had to go to that server: its
    /// failure is the call's (an `internalError` naming the server).
    async fn forward_to(&self, request: &ApiRequest, server: &Server) -> Result<Answer, ApiError> {
        self.forward(request, server, None)
            .await
            .map_err(|e| Self::unreachable(server, &e))
    }

    /// Every call to a server is timed for the metrics; a failed one counts
    /// as a failed poll towards the server's health.
    fn noted(
        &self,
        server: &Server,
        result: Result<Answer, BackendError>,
    ) -> Result<Answer, BackendError> {
        match &result {
            Ok(answer) => self.metrics.backend(server.name(), Some(answer.elapsed)),
            Err(e) if e.is_servers_fault() => {
                self.metrics.backend(server.name(), None);
                self.state.note(server, Err(e.to_string()));
            }
            Err(_) => {}
        }
        result
    }

    /// A backend failure on a call that had to go to that server.
    fn unreachable(server: &Server, error: &BackendError) -> ApiError {
        tracing::warn!(server = server.name(), "BigBlueButton server {error}");
        ApiError::Internal(format!(
            "The BigBlueButton server {} {error}.",
            server.name()
        ))
    }

    /// Where the meeting was last seen, as the servers stand now.
    async fn remembered(&self, meeting_id: &str) -> Remembered {
        let Some(owner) = self.state.owner(meeting_id).await else {
            return Remembered::Nowhere;
        };
        match self.state.cluster().get(&owner.server) {
            Some(server) if server.is_usable() => {
                Remembered::Usable(server.clone(), owner.confirmed)
            }
            _ => Remembered::Unavailable(owner.server),
        }
    }

    async fn create(&self, request: &ApiRequest) -> Result<Outcome, ApiError> {
        let meeting_id = request.meeting_id().ok_or(ApiError::MissingMeetingId)?;
        if is_breakout(request) {
            return self.create_breakout(request, meeting_id).await;
        }
        let mut placing = self.state.lock_create(meeting_id).await;
        if self.state.recreates()
            && let Some(upload) = &request.upload
        {
            // Copied as it streams to the server, to be kept if small.
            upload.copy_up_to(recreate::KEEP_BODY_UP_TO);
        }
        if let Remembered::Unavailable(server) = self.remembered(meeting_id).await {
            // Its server is down, disabled or removed: the meeting is gone
            // with it, and the class goes on elsewhere.
            tracing::info!(
                meeting = meeting_id,
                server = &*server,
                "meeting's server is unavailable; creating it anew"
            );
            self.state.forget(meeting_id, &server).await;
        }
        let located = match self.locate(meeting_id, true).await? {
            Located::At(owner) => Located::At(owner),
            // A new meeting. With other instances (Redis), one of them
            // places it: this one, or another whose create this one then
            // follows.
            Located::Nowhere if placing.share(meeting_id).await => {
                self.locate(meeting_id, true).await?
            }
            Located::Nowhere => Located::Nowhere,
        };
        let (answer, server) = match located {
            // BBB itself answers duplicateWarning or idNotUnique.
            Located::At(owner) => {
                let answer = self.forward_to(request, &owner).await?;
                (answer, owner)
            }
            Located::Nowhere => self.place(request).await?,
        };
        if xml::is_success(&answer.body) {
            let create_time = xml::create_time(&answer.body);
            self.state
                .remember_copy(meeting_id, &server, create_time)
                .await;
            self.keep(request, meeting_id, &answer.body).await;
        }
        Ok(Outcome::answer(answer, &server))
    }

    /// A breakout room goes to its parent's server: bbb-web looks the
    /// parent up among its own meetings and refuses it anywhere else. Its
    /// answer names the breakout by the meetingID bbb-web rewrote it to,
    /// which later calls use, so that one is remembered. Not kept for
    /// re-creation: a breakout cannot outlive its parent's server.
    async fn create_breakout(
        &self,
        request: &ApiRequest,
        meeting_id: &str,
    ) -> Result<Outcome, ApiError> {
        let parent = request
            .param("parentMeetingID")
            .filter(|id| !id.is_empty())
            .ok_or(ApiError::ParentMeetingIdMissing)?;
        let server = match self.locate(&parent, true).await? {
            Located::At(server) => server,
            Located::Nowhere => return Err(ApiError::ParentMeetingDoesNotExist),
        };
        let answer = self.forward_to(request, &server).await?;
        if xml::is_success(&answer.body) {
            let id = xml::field(&answer.body, "meetingID")
                .filter(|id| !id.is_empty())
                .unwrap_or(meeting_id);
            let create_time = xml::create_time(&answer.body);
            self.state.remember_copy(id, &server, create_time).await;
        }
        Ok(Outcome::answer(answer, &server))
    }

    /// Sends a create of a new meeting to the best server that takes new
    /// meetings, or the next one when that one cannot be reached.
    /// Only the servers its `meta_server-tag` allows are tried (see
    /// `placement`); the parameter itself goes to the server unchanged.
    async fn place(&self, request: &ApiRequest) -> Result<(Answer, Arc<Server>), ApiError> {
        let asked = ServerTag::parse(request.param(SERVER_TAG).as_deref());
        let candidates = self
            .state
            .placement_order(&asked)
            .await
            .map_err(|NoServerWithTag| ApiError::ServerTagUnavailable(asked.shown()))?;
        for (attempt, server) in candidates.iter().enumerate() {
            if attempt > 0 {
                self.state.reserve(server).await;
            }
            match self.forward(request, server, None).await {
                Ok(answer) => return Ok((answer, server.clone())),
                Err(e) if e.never_reached() => {
                    tracing::warn!(
                        server = server.name(),
                        "create not placed there: {e}; trying the next server"
                    );
                }
                Err(e) => {
                    tracing::warn!(server = server.name(), "create sent but {e}");
                    return Err(ApiError::Internal(format!(
                        "The create was sent to the BigBlueButton server {} but it {e}; it was not sent to another server, since the meeting may exist there.",
                        server.name()
                    )));
                }
            }
        }
        Err(ApiError::Internal(if candidates.is_empty() {
            "No BigBlueButton server is available for new meetings.".into()
        } else {
            "No BigBlueButton server is available: none could be reached.".into()
        }))
    }

    /// Keeps the call of a create that succeeded with `answer` (see
    /// `recreate`). A create that found the meeting there already
    /// (`duplicateWarning`, the same copy) leaves the call that made it;
    /// one that made a new copy replaces the kept call.
    async fn keep(&self, request: &ApiRequest, meeting_id: &str, answer: &[u8]) {
        // The meeting was there already: the call that made it stays kept
        // (and a create of a known meeting costs no lookup).
        if !self.state.recreates() || xml::field(answer, "messageKey") == Some("duplicateWarning") {
            return;
        }
        let call = KeptCreate::of(request, answer);
        let call = match self.state.kept_create(meeting_id).await {
            Some(earlier) => {
                let duplicate =
                    call.create_time.is_some() && call.create_time == earlier.create_time;
                if duplicate {
                    return;
                }
                call.replacing(&earlier)
            }
            None => call,
        };
        self.state.keep_create(meeting_id, call).await;
    }

    /// Makes a meeting whose server is down, disabled or removed again on a
    /// healthy server, from its kept create call: a new create in every
    /// respect (the create lock, placement, signed for that server).
    /// Concurrent joins, at any instance, make it once: the lock is taken,
    /// then the meeting looked at again. A meeting whose create tinyscale
    /// never saw (found by a poll or a search) stays `serverUnavailable`.
    async fn recreate(&self, meeting_id: &str) -> Result<Arc<Server>, ApiError> {
        let mut placing = self.state.lock_create(meeting_id).await;
        let gone = match self.remembered(meeting_id).await {
            // Made again meanwhile (by another join, here or elsewhere).
            Remembered::Usable(server, _) => return Ok(server),
            Remembered::Nowhere => {
                return match self.search(meeting_id).await {
                    Located::At(server) => Ok(server),
                    Located::Nowhere => Err(ApiError::InvalidMeetingIdentifier),
                };
            }
            Remembered::Unavailable(server) => server,
        };
        let Some(mut kept) = self.state.kept_create(meeting_id).await else {
            return Err(ApiError::ServerUnavailable);
        };
        // Another instance may be making it again right now: the one that
        // holds the shared lock does; the others follow its new copy.
        if placing.share(meeting_id).await
            && let Remembered::Usable(server, _) = self.remembered(meeting_id).await
        {
            return Ok(server);
        }
        let (answer, server) = self.place(&kept.request()).await?;
        if !xml::is_success(&answer.body) {
            let why = xml::result_word(&answer.body);
            tracing::warn!(
                meeting = meeting_id,
                server = server.name(),
                "making the meeting again failed: {why}"
            );
            return Err(ApiError::Internal(format!(
                "The meeting's server is unavailable, and making the meeting again on {} failed ({why}).",
                server.name()
            )));
        }
        let create_time = xml::create_time(&answer.body);
        if let Some(old) = kept.create_time {
            self.state.note_stale(meeting_id, &gone, old);
        }
        self.state.forget(meeting_id, &gone).await;
        self.state
            .remember_copy(meeting_id, &server, create_time)
            .await;
        let slides = if kept.body_left_out {
            "default (the create's upload was too large to keep)"
        } else {
            "as created"
        };
        kept.recreated(create_time);
        self.state.keep_create(meeting_id, kept).await;
        self.metrics.recreated();
        tracing::info!(
            meeting = meeting_id,
            from = &*gone,
            server = server.name(),
            slides,
            "meeting's server is unavailable; made the meeting again from its create call"
        );
        Ok(server)
    }

    async fn join(&self, request: &ApiRequest) -> Result<Outcome, ApiError> {
        let meeting_id = request.meeting_id().ok_or(ApiError::MissingMeetingId)?;
        let owner = match self.locate(meeting_id, true).await {
            Ok(Located::At(owner)) => owner,
            Ok(Located::Nowhere) => return Err(ApiError::InvalidMeetingIdentifier),
            Err(ApiError::ServerUnavailable) if self.state.recreates() => {
                self.recreate(meeting_id).await?
            }
            Err(e) => return Err(e),
        };
        let create_time = self.join_create_time(request, meeting_id).await;
        let replacement = create_time.as_deref().map(|t| ("createTime", t));
        let Outgoing { uri, .. } = request.for_server_replacing(&owner.spec, replacement);
        let location = HeaderValue::from_str(&uri)
            .map_err(|_| ApiError::Internal("The join URL could not be built.".into()))?;
        let mut response = Response::new(Body::whole(bytes::Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(LOCATION, location);
        Ok(Outcome {
            response,
            server: Some(owner.name().to_string()),
            result: "redirect".into(),
            list: None,
        })
    }

    /// The `createTime` a join must carry instead of its own: the current
    /// copy's, when its own is that of a copy the meeting was made again
    /// from (BBB refuses a mismatch with `mismatchCreateTimeParam`).
    async fn join_create_time(&self, request: &ApiRequest, meeting_id: &str) -> Option<String> {
        if !self.state.recreates() {
            return None;
        }
        let given = request.param("createTime")?;
        let given = given.trim();
        if given.is_empty() {
            return None;
        }
        let current = self.state.owner(meeting_id).await?.create_time;
        if current.is_some() && current == given.parse().ok() {
            return None;
        }
        let kept = self.state.kept_create(meeting_id).await?;
        kept.join_create_time(given).map(|t| t.to_string())
    }

    /// isMeetingRunning, getMeetingInfo, end, insertDocument, sendChatMessage.
    async fn meeting_call(&self, request: &ApiRequest) -> Result<Outcome, ApiError> {
        let call = request.call;
        let meeting_id = request.meeting_id().ok_or(ApiError::MissingMeetingId)?;
        if request.upload.is_some() {
            // An upload can go to one server only: make sure of the owner
            // before sending it, instead of asking again after.
            let Located::At(owner) = self.locate(meeting_id, true).await? else {
                return Ok(unknown_meeting(call));
            };
            let answer = self.forward_to(request, &owner).await?;
            return Ok(self
                .after_meeting_call(call, meeting_id, answer, &owner)
                .await);
        }
        let (owner, confirmed) = match self.remembered(meeting_id).await {
            Remembered::Usable(server, confirmed) => (server, Some(confirmed)),
            Remembered::Unavailable(_) => return Err(ApiError::ServerUnavailable),
            Remembered::Nowhere => match self.search(meeting_id).await {
                Located::At(server) => (server, None),
                Located::Nowhere => return Ok(unknown_meeting(call)),
            },
        };
        let answer = self.forward_to(request, &owner).await?;
        let gone = match not_found_kind(call, &answer.body) {
            NotFound::No => false,
            NotFound::Certainly => confirmed.is_some(),
            // "not running" also means "created, nobody joined yet": only
            // look again when the owner has not confirmed it lately.
            NotFound::Maybe => confirmed.is_some_and(|c| c.elapsed() > CONFIRM_WINDOW),
        };
        if gone {
            // The remembered owner may be stale: search once more.
            self.state.forget(meeting_id, &owner.id).await;
            if let Located::At(found) = self.search(meeting_id).await
                && !Arc::ptr_eq(&found, &owner)
            {
                let answer = self.forward_to(request, &found).await?;
                return Ok(self
                    .after_meeting_call(call, meeting_id, answer, &found)
                    .await);
            }
        }
        Ok(self
            .after_meeting_call(call, meeting_id, answer, &owner)
            .await)
    }

    async fn after_meeting_call(
        &self,
        call: Call,
        meeting_id: &str,
        answer: Answer,
        server: &Arc<Server>,
    ) -> Outcome {
        if call == Call::End && xml::is_success(&answer.body) {
            self.state.forget(meeting_id, &server.id).await;
            self.state.forget_kept(meeting_id).await;
        }
        Outcome::answer(answer, server)
    }

    /// Finds the meeting's server. With `confirm`, a remembered owner not
    /// confirmed within [`CONFIRM_WINDOW`] is asked again first. A meeting
    /// whose server is down, disabled or removed is `serverUnavailable`.
    async fn locate(&self, meeting_id: &str, confirm: bool) -> Result<Located, ApiError> {
        match self.remembered(meeting_id).await {
            Remembered::Nowhere => {}
            Remembered::Unavailable(_) => return Err(ApiError::ServerUnavailable),
            Remembered::Usable(server, confirmed) => {
                if !confirm || confirmed.elapsed() <= CONFIRM_WINDOW {
                    return Ok(Located::At(server));
                }
                match self.holds(&server, meeting_id).await {
                    Ok(true) => {
                        self.state.remember(meeting_id, &server).await;
                        return Ok(Located::At(server));
                    }
                    Ok(false) => self.state.forget(meeting_id, &server.id).await,
                    // It may well still hold the meeting: never move a
                    // meeting to another server because its own is
                    // unreachable.
                    Err(e) => return Err(Self::unreachable(&server, &e)),
                }
            }
        }
        Ok(self.search(meeting_id).await)
    }

    /// Does `server` hold the meeting? A running meeting is confirmed by the
    /// small `isMeetingRunning` answer; "not running" is ambiguous (created,
    /// nobody joined yet), so then `getMeetingInfo` decides.
    async fn holds(&self, server: &Server, meeting_id: &str) -> Result<bool, BackendError> {
        let query = meeting_query(meeting_id);
        let uri = api::signed_url(&server.spec, Call::IsMeetingRunning, &query);
        let answer = self.noted(server, self.backend.get(&uri).await)?;
        if xml::field(&answer.body, "running") == Some("true") {
            return Ok(true);
        }
        let uri = api::signed_url(&server.spec, Call::GetMeetingInfo, &query);
        let answer = self.noted(server, self.backend.get(&uri).await)?;
        Ok(xml::is_success(&answer.body))
    }

    /// Asks every usable server `getMeetingInfo` at once and takes the first
    /// that holds the meeting, without waiting for slower ones. A server
    /// that cannot be reached counts as not holding it; servers known to be
    /// down are not asked; a stale copy (the meeting was made again
    /// elsewhere) is passed by.
    async fn search(&self, meeting_id: &str) -> Located {
        let query = meeting_query(meeting_id);
        let asks = self.state.cluster().usable().into_iter().map(|server| {
            let uri = api::signed_url(&server.spec, Call::GetMeetingInfo, &query);
            async move {
                match self.noted(&server, self.backend.get(&uri).await) {
                    Ok(answer) if xml::is_success(&answer.body) => {
                        let create_time = xml::create_time(&answer.body);
                        (!self.state.is_stale(meeting_id, &server.id, create_time))
                            .then_some((server, create_time))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(server = server.name(), "meeting search: server {e}");
                        None
                    }
                }
            }
        });
        match fanout::first_some(asks).await {
            Some((server, create_time)) => {
                self.state
                    .remember_copy(meeting_id, &server, create_time)
                    .await;
                Located::At(server)
            }
            None => Located::Nowhere,
        }
    }

    /// Sends the client's call to every usable server at once and merges
    /// the answers' list as they come (see `lists`). Servers known to be
    /// down are not asked; those that fail are left out and logged.
    fn merged_list(&self, request: &ApiRequest, list: List) -> Outcome {
        let cluster = self.state.cluster();
        let asks = cluster
            .usable()
            .into_iter()
            .map(|server| {
                let Outgoing { uri, body } = request.for_server(&server.spec, None);
                Ask { server, uri, body }
            })
            .collect();
        let merged = MergedList::new(list, asks, self.sending(request), cluster.list.len());
        Outcome {
            // Its body is the merged list, put in when the answer is sent.
            response: errors::xml_response(bytes::Bytes::new()),
            server: None,
            result: "SUCCESS".into(),
            list: Some(merged),
        }
    }

    /// A getRecordings page: every server's matching recordings gathered
    /// (paged through), put in one order, and the page cut from them, as
    /// one server holding them all would answer. Built whole: at most
    /// [`pages::MAX_LIMIT`] recordings.
    async fn recordings_page(&self, request: &ApiRequest, page: Page) -> Outcome {
        let cluster = self.state.cluster();
        let sending = &self.sending(request);
        let servers = cluster.usable();
        let parts = fanout::join_all(servers.into_iter().map(|server| {
            let ask = {
                let server = server.clone();
                move |offset| {
                    let Outgoing { uri, body } =
                        request.for_server_paged(&server.spec, pages::MAX_LIMIT, offset);
                    Ask {
                        server: server.clone(),
                        uri,
                        body,
                    }
                }
            };
            pages::of_server(sending, server, ask)
        }))
        .await;
        let merged = parts.iter().filter(|p| p.is_some()).count();
        let all: Vec<pages::Held> = parts.into_iter().flatten().flatten().collect();
        let body = pages::answer(all, page);
        Outcome {
            result: xml::result_word(&body),
            response: errors::xml_response(body),
            server: Some(format!("{merged} of {}", cluster.list.len())),
            list: None,
        }
    }

    /// What each server's part of a merged list or page is sent with.
    fn sending(&self, request: &ApiRequest) -> Sending {
        Sending {
            backend: self.backend.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            method: request.method.clone(),
            content_type: request.content_type.clone(),
            call: request.call.name(),
        }
    }

    /// Which servers have which of `ids` (exact match), asked of all at once.
    async fn find_recordings(&self, ids: &[String]) -> Vec<(Arc<Server>, Vec<String>)> {
        let joined = ids.join(",");
        let query = format!(
            "recordID={}&state=any",
            form_urlencoded::byte_serialize(joined.as_bytes()).collect::<String>()
        );
        let asks = self.state.cluster().usable().into_iter().map(|server| {
            let uri = api::signed_url(&server.spec, Call::GetRecordings, &query);
            async move {
                match self.noted(&server, self.backend.get(&uri).await) {
                    Ok(answer) => {
                        let listed = xml::record_ids(&answer.body);
                        let held: Vec<String> = ids
                            .iter()
                            .filter(|id| listed.contains(id))
                            .cloned()
                            .collect();
                        (!held.is_empty()).then_some((server, held))
                    }
                    Err(e) => {
                        tracing::warn!(server = server.name(), "recording search: server {e}");
                        None
                    }
                }
            }
        });
        let found: Vec<(Arc<Server>, Vec<String>)> =
            fanout::join_all(asks).await.into_iter().flatten().collect();
        found
    }

    /// publishRecordings, deleteRecordings, updateRecordings: each recordID
    /// goes to the server that has it; one call may span servers.
    async fn recordings_change(&self, request: &ApiRequest) -> Result<Outcome, ApiError> {
        let ids = request.record_ids();
        if ids.is_empty() {
            return Err(ApiError::MissingRecordId);
        }
        let found = self.find_recordings(&ids).await;
        if let [(server, _)] = found.as_slice() {
            let answer = self.forward_to(request, server).await?;
            return Ok(Outcome::answer(answer, server));
        }
        if found.is_empty() {
            return Err(ApiError::RecordingsNotFound);
        }
        let sends = found.iter().map(|(server, held)| async move {
            (server, self.forward(request, server, Some(held)).await)
        });
        let mut first_success = None;
        let mut failure = None;
        for (server, result) in fanout::join_all(sends).await {
            match result {
                Ok(answer) if xml::is_success(&answer.body) => {
                    first_success.get_or_insert((answer, server));
                }
                Ok(answer) => {
                    failure.get_or_insert(Ok((answer, server)));
                }
                Err(e) => {
                    failure.get_or_insert(Err(Self::unreachable(server, &e)));
                }
            }
        }
        match (failure, first_success) {
            (Some(Ok((answer, server))), _) => Ok(Outcome::answer(answer, server)),
            (Some(Err(error)), _) => Err(error),
            (None, Some((answer, server))) => Ok(Outcome::answer(answer, server)),
            (None, None) => Err(ApiError::Internal("No server answered.".into())),
        }
    }

    /// getRecordingTextTracks, putRecordingTextTrack: the server that has
    /// the recording; answers are JSON.
    async fn text_track_call(&self, request: &ApiRequest) -> Result<Outcome, ApiError> {
        let id = request
            .record_ids()
            .into_iter()
            .next()
            .ok_or(ApiError::MissingRecordId)?;
        let found = self.find_recordings(std::slice::from_ref(&id)).await;
        let (server, _) = found.into_iter().next().ok_or(ApiError::NoRecording(id))?;
        let answer = self.forward_to(request, &server).await?;
        Ok(Outcome::answer(answer, &server))
    }
}

/// `meetingID=<id>` for the calls tinyscale makes itself.
fn meeting_query(meeting_id: &str) -> String {
    format!(
        "meetingID={}",
        form_urlencoded::byte_serialize(meeting_id.as_bytes()).collect::<String>()
    )
}

enum NotFound {
    No,
    Maybe,
    Certainly,
}

/// Does this answer say the server does not hold the meeting?
fn not_found_kind(call: Call, body: &[u8]) -> NotFound {
    if call == Call::IsMeetingRunning {
        return if xml::field(body, "running") == Some("false") {
            NotFound::Maybe
        } else {
            NotFound::No
        };
    }
    if xml::is_success(body) {
        return NotFound::No;
    }
    match xml::field(body, "messageKey") {
        Some("notFound") => NotFound::Certainly,
        // sendChatMessage says this of a meeting that is not running, too.
        Some("meetingNotFound") => NotFound::Maybe,
        _ => NotFound::No,
    }
}

/// The answer BBB gives for a meeting it does not have.
fn unknown_meeting(call: Call) -> Outcome {
    match call {
        Call::IsMeetingRunning => Outcome {
            response: errors::not_running(),
            server: None,
            result: "SUCCESS".into(),
            list: None,
        },
        Call::SendChatMessage => Outcome::local(ApiError::ChatMeetingNotFound, Some(call)),
        _ => Outcome::local(ApiError::MeetingNotFound, Some(call)),
    }
}

/// A create of a breakout room: `isBreakout` is `true` as Java's
/// `Boolean.parseBoolean` reads it (any case).
fn is_breakout(request: &ApiRequest) -> bool {
    request
        .param("isBreakout")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}
