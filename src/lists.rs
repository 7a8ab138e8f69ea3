//! Merged lists: `getMeetings`, `getRecordings` and `getSessions` asked of every server,
//! the answers merged into one list that streams to the client as the
//! servers answer.
//!
//! What is held stays bounded however many lists are asked for at once:
//! each server's answer is read whole (its elements are copied only once
//! the answer is known good), up to `TINYSCALE_MAX_LIST_ANSWER`, and each
//! server gets at most [`LIST_CALLS_PER_SERVER`] of these calls at a time;
//! the merged list itself is never built, only written on. The servers'
//! calls run inside the client's answer: a client that reads slowly slows
//! them down instead of piling answers up, and one that leaves ends them.
//!
//! Owns the order of the answer (head, elements as they come, tail) and
//! leaving out a server that fails. Does not own which servers are asked
//! (see `routing`) or reading a list's elements (see `xml`).
//!
//! [`LIST_CALLS_PER_SERVER`]: crate::state::LIST_CALLS_PER_SERVER

use crate::backend::{Backend, BackendError};
use crate::body::BoxError;
use crate::errors;
use crate::metrics::Metrics;
use crate::state::{Server, State};
use crate::xml;
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::Method;
use hyper::header::HeaderValue;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Which list: the element BBB wraps the list in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    Meetings,
    Recordings,
    /// getSessions (BBB 3.0): `<meeting>` elements inside `<sessions>`.
    Sessions,
}

impl List {
    fn tag(self) -> &'static str {
        match self {
            List::Meetings => "meetings",
            List::Recordings => "recordings",
            List::Sessions => "sessions",
        }
    }

    /// BBB's own answer when no server listed anything.
    fn nothing(self) -> String {
        match self {
            List::Meetings => errors::no_meetings(),
            List::Recordings => errors::no_recordings(),
            List::Sessions => errors::no_sessions(),
        }
    }

    fn empty_key(self) -> &'static str {
        match self {
            List::Meetings => "noMeetings",
            List::Recordings => "noRecordings",
            List::Sessions => "noSessions",
        }
    }
}

/// One server's part of the list, signed for it.
pub struct Ask {
    pub server: Arc<Server>,
    pub uri: String,
    pub body: Bytes,
}

/// What the servers gave, for the request's log line once the list is done.
pub type OnEnd = Box<dyn FnOnce(String, &'static str) + Send>;

type Part = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;

/// The merged answer, as a body that asks the servers while it is read.
pub struct MergedList {
    parts: Vec<Part>,
    ready: VecDeque<Bytes>,
    list: List,
    started: bool,
    ended: bool,
    merged: usize,
    /// Servers configured, for the log line ("3 of 4").
    configured: usize,
    on_end: Option<OnEnd>,
}

/// What each server's call needs, shared by all of them.
pub struct Sending {
    pub backend: Backend,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub method: Method,
    pub content_type: Option<HeaderValue>,
    /// The call's name, for log lines.
    pub call: &'static str,
}

impl MergedList {
    pub fn new(list: List, asks: Vec<Ask>, sending: Sending, configured: usize) -> MergedList {
        let sending = Arc::new(sending);
        let parts = asks
            .into_iter()
            .map(|ask| Box::pin(one_part(sending.clone(), ask, list)) as Part)
            .collect();
        MergedList {
            parts,
            ready: VecDeque::new(),
            list,
            started: false,
            ended: false,
            merged: 0,
            configured,
            on_end: None,
        }
    }

    /// Called once, when the list has been written to its end (or the
    /// client left first), with the servers merged and the result word.
    pub fn on_end(&mut self, f: OnEnd) {
        self.on_end = Some(f);
    }

    fn end(&mut self, result: &'static str) {
        if let Some(f) = self.on_end.take() {
            f(format!("{} of {}", self.merged, self.configured), result);
        }
    }
}

impl Drop for MergedList {
    fn drop(&mut self) {
        // The client left before the end: the calls still under way stop.
        self.end("client left");
    }
}

impl Body for MergedList {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let mut i = 0;
        while i < this.parts.len() {
            match this.parts[i].as_mut().poll(cx) {
                Poll::Ready(content) => {
                    drop(this.parts.swap_remove(i));
                    if let Some(content) = content {
                        this.merged += 1;
                        // Whitespace alone lists nothing.
                        if content.contains(&b'<') {
                            if !this.started {
                                this.started = true;
                                this.ready.push_back(Bytes::from(format!(
                                    "<response><returncode>SUCCESS</returncode><{}>",
                                    this.list.tag()
                                )));
                            }
                            this.ready.push_back(content);
                        }
                    }
                }
                Poll::Pending => i += 1,
            }
        }
        if let Some(next) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(next))));
        }
        if !this.parts.is_empty() {
            return Poll::Pending;
        }
        this.ended = true;
        let (last, result) = if this.started {
            (format!("</{}></response>", this.list.tag()), "SUCCESS")
        } else {
            (this.list.nothing(), this.list.empty_key())
        };
        this.end(result);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(last)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// One server's call: its answer read whole (up to the cap) in its turn,
/// then only its list's elements kept. `None` when it failed or listed
/// nothing; the reason is logged.
async fn one_part(sending: Arc<Sending>, ask: Ask, list: List) -> Option<Bytes> {
    let Ask { server, uri, body } = ask;
    let answer = match sending.send(&server, &uri, body).await {
        Ok(answer) => answer,
        Err(e) => {
            left_out(&server, sending.call, &format!("server {e}"));
            return None;
        }
    };
    if !xml::is_success(&answer.body) {
        left_out(&server, sending.call, &xml::result_word(&answer.body));
        return None;
    }
    let content = xml::list_content(&answer.body, list.tag())?;
    Some(answer.body.slice_ref(content))
}

impl Sending {
    /// One list call to `server`, in its turn (see
    /// [`crate::state::LIST_CALLS_PER_SERVER`]), its answer read whole
    /// within the response timeout (the wait for the turn included), and
    /// timed for the metrics.
    pub async fn send(
        &self,
        server: &Server,
        uri: &str,
        body: Bytes,
    ) -> Result<crate::backend::Answer, BackendError> {
        let timeout = self.backend.response_timeout();
        let call = async {
            let _turn = server.list_call_turn().await;
            self.backend
                .send_whole(self.method.clone(), uri, self.content_type.as_ref(), body)
                .await
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(timeout)),
        };
        match &result {
            Ok(answer) => self.metrics.backend(server.name(), Some(answer.elapsed)),
            // A timeout here may be the client's doing (a slow reader stops
            // these calls from being read); the poller judges the server.
            Err(e) if e.is_servers_fault() && !matches!(e, BackendError::Timeout(_)) => {
                self.metrics.backend(server.name(), None);
                self.state.note(server, Err(e.to_string()));
            }
            Err(_) => {}
        }
        result
    }
}

fn left_out(server: &Server, call: &str, why: &str) {
    tracing::warn!(
        server = server.name(),
        "left out of the merged {call}: {why}"
    );
}
