//! A simulated BigBlueButton server, in memory, for tests and demos.
//!
//! It speaks the BBB API over real HTTP on `127.0.0.1` the way bbb-web
//! 2.7/3.0 does (checksums, answer shapes, error keys), keeps meetings and
//! recordings in memory, logs every request it answers, and can misbehave on
//! demand: refuse connections for real, or hang without answering.
//!
//! - `mod.rs`: [`SimHandle`], the listener, connections and [`Mode`]s.
//! - `api.rs`: one request → one answer (routing, checksum, each call).
//! - `state.rs`: meetings, attendees, recordings and the rules that change them.
//! - `answer.rs`: the XML and JSON bodies, every echoed value escaped.

mod answer;
mod api;
mod callbacks;
mod huge;
mod state;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
pub use huge::HugeAnswer;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The largest request body the simulator reads (slides, subtitle files).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How the simulated server treats connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answers every request.
    #[default]
    Normal,
    /// No listening socket: `connect()` fails with "connection refused".
    /// Open connections are closed.
    Refuse,
    /// Accepts connections and reads requests but answers none until the
    /// mode changes; then they are answered (Normal) or dropped (Refuse).
    Hang,
}

/// One request the simulator answered, as it arrived.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    /// The API call name (`create`, `hooks/list`…), `""` for
    /// `/bigbluebutton/api` itself, or the full path of any other request.
    pub call: String,
    /// Exactly as received, checksum included.
    pub raw_query: String,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// True if an API call passed the checksum check; false when the check
    /// failed or the request needs none.
    pub checksum_ok: bool,
}

/// What every task watches: the mode, and whether the server is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Control {
    mode: Mode,
    stopped: bool,
    /// Bumped by [`SimHandle::close_idle_connections`].
    idle_closes: u64,
}

impl Control {
    /// Open connections must go.
    fn closes_connections(self) -> bool {
        self.stopped || self.mode == Mode::Refuse
    }
}

struct Inner {
    /// Fixed at start; Refuse → Normal binds the same address again.
    addr: SocketAddr,
    core: api::Core,
    requests: Mutex<Vec<SeenRequest>>,
    control: watch::Sender<Control>,
    /// `None` while refusing or stopped. Held in a std mutex (never across
    /// an await) so `set_mode` can close or reopen the socket at once,
    /// before it returns: a test that refuses and then connects must see
    /// the refusal, not a race with the accept task.
    listener: Mutex<Option<TcpListener>>,
    /// Open connections, so `stop` can wait for the last one to close.
    connections: watch::Sender<usize>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    /// Requests read and held by Mode::Hang, so a test can wait until one
    /// is really in flight.
    held: watch::Sender<usize>,
    /// Whether requests are kept for [`SimHandle::requests`] (tests read
    /// them; a long benchmark or a demo should not keep them all).
    recording: std::sync::atomic::AtomicBool,
    /// Per call name: how long to sit on an answer after making it. The
    /// answer shows the state from before the wait (as a slow server's
    /// would), which lets tests race a slow getMeetings against a create.
    delays: Mutex<std::collections::HashMap<String, Duration>>,
    /// Per call name: answer with a [`HugeAnswer`] of this many bytes
    /// instead (after the usual checks and effects).
    huge: Mutex<std::collections::HashMap<String, u64>>,
    /// The runtime the sim was started on: binding a tokio socket needs it,
    /// and `set_mode` may be called from outside it.
    runtime: tokio::runtime::Handle,
}

/// Controls one running simulated server. Cheap to clone; all clones
/// control the same server, which runs until [`SimHandle::stop`] or until
/// its runtime shuts down.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start(secret: &str) -> io::Result<SimHandle> {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            core: api::Core {
                secret: secret.to_string(),
                url: format!("http://{addr}"),
                state: Mutex::new(state::State::default()),
            },
            requests: Mutex::new(Vec::new()),
            control: watch::Sender::new(Control {
                mode: Mode::Normal,
                stopped: false,
                idle_closes: 0,
            }),
            listener: Mutex::new(Some(listener)),
            connections: watch::Sender::new(0),
            accept_task: Mutex::new(None),
            held: watch::Sender::new(0),
            recording: std::sync::atomic::AtomicBool::new(true),
            delays: Mutex::new(std::collections::HashMap::new()),
            huge: Mutex::new(std::collections::HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        let task = tokio::spawn(accept_loop(inner.clone()));
        *lock(&inner.accept_task) = Some(task);
        Ok(SimHandle { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`, the server root without a path.
    pub fn url(&self) -> String {
        self.inner.core.url.clone()
    }

    pub fn secret(&self) -> String {
        self.inner.core.secret.clone()
    }

    pub fn mode(&self) -> Mode {
        self.inner.control.borrow().mode
    }

    /// Takes effect before it returns for the listening socket (closed for
    /// Refuse, bound again otherwise); open connections follow at once.
    /// If the port cannot be bound again, the accept task keeps trying.
    pub fn set_mode(&self, mode: Mode) {
        let inner = &self.inner;
        let mut listener = lock(&inner.listener);
        if inner.control.borrow().stopped {
            return;
        }
        inner.control.send_modify(|c| c.mode = mode);
        if mode == Mode::Refuse {
            // Dropping the tokio listener closes the socket now.
            listener.take();
        } else if listener.is_none() {
            let _runtime = inner.runtime.enter();
            match bind(inner.addr) {
                Ok(l) => *listener = Some(l),
                Err(e) => {
                    tracing::warn!(addr = %inner.addr, error = %e, "sim: cannot bind again, will retry")
                }
            }
        }
    }

    /// Closes every open connection that is between requests (one in the
    /// middle of a request closes after its answer), as a web server does
    /// when its keep-alive timeout runs out. The listener stays open.
    pub fn close_idle_connections(&self) {
        self.inner.control.send_modify(|c| c.idle_closes += 1);
    }

    pub fn has_meeting(&self, meeting_id: &str) -> bool {
        lock(&self.inner.core.state).meeting(meeting_id).is_some()
    }

    /// In creation order.
    pub fn meeting_ids(&self) -> Vec<String> {
        lock(&self.inner.core.state)
            .meetings
            .iter()
            .map(|m| m.meeting_id.clone())
            .collect()
    }

    /// Whether a meeting is running (someone joined); `None` if no such
    /// meeting.
    pub fn meeting_running(&self, meeting_id: &str) -> Option<bool> {
        lock(&self.inner.core.state)
            .meeting(meeting_id)
            .map(|m| m.running)
    }

    /// Number of attendees of a meeting; `None` if no such meeting.
    pub fn participant_count(&self, meeting_id: &str) -> Option<usize> {
        lock(&self.inner.core.state)
            .meeting(meeting_id)
            .map(|m| m.attendees.len())
    }

    /// Adds a user as if they had joined (`role` is `MODERATOR` or, for
    /// anything else, `VIEWER`); the meeting becomes running. False if no
    /// such meeting.
    pub fn add_attendee(&self, meeting_id: &str, full_name: &str, role: &str, video: bool) -> bool {
        let role = state::Role::parse(role).unwrap_or(state::Role::Viewer);
        match lock(&self.inner.core.state).meeting_mut(meeting_id) {
            Some(m) => {
                m.add_attendee(full_name, role, None, video);
                true
            }
            None => false,
        }
    }

    /// Sends the recording-ready callback for `record_id` of a meeting it
    /// holds, signed with its secret, as bbb-web's script does after
    /// publishing: to the URL in the meeting's metadata. Gives the HTTP
    /// status of the answer; `Err` if the meeting or its URL is missing or
    /// the request failed.
    pub async fn send_recording_ready(
        &self,
        meeting_id: &str,
        record_id: &str,
    ) -> Result<u16, String> {
        let callback = {
            let state = lock(&self.inner.core.state);
            let meeting = state.meeting(meeting_id).ok_or("no such meeting")?;
            callbacks::recording_ready(meeting, record_id, &self.secret())?
        };
        callbacks::send(callback.ok_or("the meeting names no recording-ready URL")?).await
    }

    /// Sends the analytics callback of a meeting it holds, signed with its
    /// secret, as bbb-web's script does when the meeting's events are
    /// processed. As [`SimHandle::send_recording_ready`].
    pub async fn send_analytics(&self, meeting_id: &str) -> Result<u16, String> {
        let callback = {
            let state = lock(&self.inner.core.state);
            let meeting = state.meeting(meeting_id).ok_or("no such meeting")?;
            callbacks::analytics(meeting, &self.secret())?
        };
        callbacks::send(callback.ok_or("the meeting names no analytics URL")?).await
    }

    /// Adds (or replaces) a recording, `published` or `unpublished`.
    pub fn seed_recording(&self, record_id: &str, meeting_id: &str, name: &str, published: bool) {
        lock(&self.inner.core.state).seed_recording(record_id, meeting_id, name, published);
    }

    /// Adds (or replaces) a published recording that started at
    /// `start_time` (unix ms), for tests of the order of pages.
    pub fn seed_recording_at(&self, record_id: &str, meeting_id: &str, start_time: u64) {
        let mut state = lock(&self.inner.core.state);
        state.seed_recording(record_id, meeting_id, record_id, true);
        state.set_recording_start(record_id, start_time);
    }

    pub fn has_recording(&self, record_id: &str) -> bool {
        lock(&self.inner.core.state).recording(record_id).is_some()
    }

    pub fn recording_published(&self, record_id: &str) -> Option<bool> {
        lock(&self.inner.core.state)
            .recording(record_id)
            .map(|r| r.published)
    }

    /// Turns keeping requests for [`SimHandle::requests`] on (the default)
    /// or off.
    pub fn set_recording(&self, on: bool) {
        self.inner
            .recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Delays the answers to `call` (e.g. `getMeetings`) by `delay`, after
    /// they are made; `Duration::ZERO` removes the delay.
    pub fn set_answer_delay(&self, call: &str, delay: Duration) {
        let mut delays = lock(&self.inner.delays);
        if delay.is_zero() {
            delays.remove(call);
        } else {
            delays.insert(call.to_string(), delay);
        }
    }

    /// Answers `call` with a well-formed SUCCESS answer of at least `size`
    /// bytes ([`HugeAnswer`]), written as it is sent; `0` turns it off.
    pub fn set_huge_answer(&self, call: &str, size: u64) {
        let mut huge = lock(&self.inner.huge);
        if size == 0 {
            huge.remove(call);
        } else {
            huge.insert(call.to_string(), size);
        }
    }

    /// Waits until at least `n` requests are held by [`Mode::Hang`].
    pub async fn wait_until_holding(&self, n: usize) {
        let mut held = self.inner.held.subscribe();
        let _ = held.wait_for(|held| *held >= n).await;
    }

    /// Every request answered so far, or answered and held back by
    /// [`SimHandle::set_answer_delay`] (refused or still hanging ones are
    /// not), in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.inner.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// Closes the listener and every connection for good, and waits until
    /// the accept task and all connection tasks have ended.
    pub async fn stop(&self) {
        {
            let mut listener = lock(&self.inner.listener);
            listener.take();
            self.inner.control.send_modify(|c| c.stopped = true);
        }
        let task = lock(&self.inner.accept_task).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "sim: accept task failed");
        }
        let mut open = self.inner.connections.subscribe();
        // The sender lives in `inner`, which we hold: this cannot fail.
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

/// Locks a std mutex; a panic elsewhere while it was held leaves plain data
/// that is still usable, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A listening socket with `SO_REUSEADDR`, so the port can be bound again
/// right after it was closed (its old connections may be in TIME_WAIT).
/// Must run inside a tokio runtime.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl Inner {
    /// Accepts on the current listener; pending while there is none (the
    /// control change that brings one back wakes the accept loop).
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        match lock(&self.listener).as_ref() {
            Some(listener) => listener.poll_accept(cx).map_ok(|(stream, _)| stream),
            None => Poll::Pending,
        }
    }

    /// Binds again if the mode wants a listener and there is none (after a
    /// failed rebind in `set_mode`). Checks the mode under the listener
    /// lock, so it cannot undo a concurrent Refuse or stop.
    fn ensure_listening(&self) -> io::Result<()> {
        let mut listener = lock(&self.listener);
        let control = *self.control.borrow();
        if control.stopped || control.mode == Mode::Refuse || listener.is_some() {
            return Ok(());
        }
        *listener = Some(bind(self.addr)?);
        Ok(())
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    let mut control = inner.control.subscribe();
    loop {
        let now = *control.borrow_and_update();
        if now.stopped {
            return;
        }
        if let Err(e) = inner.ensure_listening() {
            tracing::warn!(addr = %inner.addr, error = %e, "sim: cannot bind, retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                changed = control.changed() => if changed.is_err() { return },
            }
            continue;
        }
        tokio::select! {
            changed = control.changed() => if changed.is_err() { return },
            accepted = poll_fn(|cx| inner.poll_accept(cx)) => match accepted {
                Ok(stream) => {
                    inner.connections.send_modify(|n| *n += 1);
                    tokio::spawn(serve_connection(inner.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Counts a connection task out when it ends, however it ends.
struct ConnectionCount(Arc<Inner>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.connections.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn serve_connection(inner: Arc<Inner>, stream: TcpStream) {
    let _count = ConnectionCount(inner.clone());
    let mut control = inner.control.subscribe();
    let mut idle_closes = {
        let now = control.borrow_and_update();
        if now.closes_connections() {
            return;
        }
        now.idle_closes
    };
    let service_inner = inner.clone();
    let service = service_fn(move |req| handle(service_inner.clone(), req));
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "sim: connection ended");
                }
                return;
            }
            changed = control.changed() => {
                let now = *control.borrow_and_update();
                // Dropping the connection closes the socket.
                if changed.is_err() || now.closes_connections() {
                    return;
                }
                if now.idle_closes != idle_closes {
                    idle_closes = now.idle_closes;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The service's error: hyper closes the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("the simulator dropped the request")]
struct Dropped;

type SimBody = http_body_util::Either<Full<Bytes>, huge::HugeBody>;

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<SimBody>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| Dropped)?
        .to_bytes();
    let mut control = inner.control.subscribe();
    let hanging = control.borrow().mode == Mode::Hang;
    if hanging {
        inner.held.send_modify(|n| *n += 1);
    }
    let released = control
        .wait_for(|c| c.stopped || c.mode != Mode::Hang)
        .await
        .map(|c| *c);
    if hanging {
        inner.held.send_modify(|n| *n = n.saturating_sub(1));
    }
    let now = released.map_err(|_| Dropped)?;
    if now.closes_connections() {
        return Err(Dropped);
    }
    let raw_query = parts.uri.query().unwrap_or("");
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let outcome = inner.core.respond(&api::Incoming {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        raw_query,
        content_type,
        body: &body,
    });
    let delay = lock(&inner.delays).get(&outcome.call).copied();
    let huge = lock(&inner.huge).get(&outcome.call).copied();
    let outcome_call = outcome.call.clone();
    if inner.recording.load(std::sync::atomic::Ordering::Relaxed) {
        lock(&inner.requests).push(SeenRequest {
            method: parts.method.to_string(),
            call: outcome.call,
            raw_query: raw_query.to_string(),
            content_type: content_type.map(str::to_string),
            body: body.clone(),
            checksum_ok: outcome.checksum_ok,
        });
    }
    let reply = outcome.reply;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder()
        .status(reply.status)
        .header(CONTENT_TYPE, reply.content_type)
        .header("Cache-Control", "no-cache");
    if let Some(location) = &reply.location {
        response = response.header(LOCATION, location);
    }
    let body = match huge {
        Some(size) => {
            http_body_util::Either::Right(huge::HugeBody(HugeAnswer::new(&outcome_call, size)))
        }
        None => http_body_util::Either::Left(Full::new(Bytes::from(reply.body))),
    };
    response.body(body).map_err(|e| {
        tracing::error!(error = %e, "sim: cannot build the answer");
        Dropped
    })
}
