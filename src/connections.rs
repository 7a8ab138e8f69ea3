//! Client connections to the API address, below the requests: how many are
//! served at once, how big a request head may be, how long a connection may
//! sit idle or take to send a head, accepting without ever dying of an
//! error such as EMFILE, and the open-files limit all of this counts
//! against.
//!
//! Knows nothing of a request but two moments, told by the server's service:
//! "a head has been read" and "its answer is done" (see [`Progress`]).

use crate::config::Settings;
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// hyper's own read-buffer limit (`8192 + 4096 * 100` in hyper 1.x). A head
/// limit above it needs a larger buffer, or the buffer limit would answer
/// 431 first.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

/// Pause after a failed accept. The connection that failed stays in the
/// backlog, so without a pause a full file-descriptor table would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A failing accept is logged on its first failure and every this many
/// after (about every 5 s at the back-off above), not 20 times a second.
const ACCEPT_FAILURES_LOGGED_EVERY: u64 = 100;

/// How often "all connections are taken" may be logged.
const FULL_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// What a client connection may do, from the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers together, in bytes.
    pub max_header_bytes: usize,
    /// Header fields in one request.
    pub max_headers: usize,
    /// Waiting for the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Sending one request head, from its first byte.
    pub header_timeout: Duration,
    /// Client connections served at once.
    pub max_connections: usize,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Limits {
        Limits {
            max_header_bytes: settings.max_header_bytes,
            max_headers: settings.max_headers,
            idle_timeout: settings.idle_timeout,
            header_timeout: settings.header_timeout,
            max_connections: settings.max_connections,
        }
    }

    /// hyper's HTTP/1 settings for client connections. A head over either
    /// limit is answered 431 and the connection closed.
    ///
    /// hyper's "header read timeout" starts as soon as a connection waits
    /// for a head, so it also ends idle keep-alive connections: it is given
    /// the idle timeout. The head timeout proper runs from a head's first
    /// byte, in [`HeadTimer`].
    pub fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.idle_timeout)
            .max_headers(self.max_headers)
            .max_header_size(self.max_header_bytes);
        if self.max_header_bytes > HYPER_MAX_BUF {
            builder.max_buf_size(self.max_header_bytes);
        }
        builder
    }
}

/// Counts the client connections open; past the limit, new ones are not
/// accepted (they wait in the listen backlog) until one closes.
#[derive(Clone, Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    max: usize,
}

/// A connection's place; freed when dropped (when the connection ends).
pub type Permit = OwnedSemaphorePermit;

impl Gate {
    pub fn new(max: usize) -> Gate {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Gate {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more connection, waiting for one to close if all are
    /// taken. `last_full` rate-limits the log line saying so.
    pub async fn enter(&self, last_full: &mut Option<Instant>) -> Permit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        if last_full.is_none_or(|at| at.elapsed() >= FULL_LOGGED_EVERY) {
            *last_full = Some(Instant::now());
            tracing::warn!(
                "{} client connections open (TINYSCALE_MAX_CONNECTIONS): new ones wait until one closes",
                self.max
            );
        }
        loop {
            // The semaphore is never closed, so this cannot fail; if it
            // ever did, waiting again is still right.
            if let Ok(permit) = self.permits.clone().acquire_owned().await {
                return permit;
            }
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }
}

/// The next connection from `listener`. A failed accept (EMFILE, ENFILE,
/// ENOBUFS, …) never ends accepting: it is logged and retried after a
/// pause. `name` says which address, in the log.
pub async fn accept(listener: &TcpListener, name: &str) -> TcpStream {
    let mut failures = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(e) => {
                if failures.is_multiple_of(ACCEPT_FAILURES_LOGGED_EVERY) {
                    tracing::warn!(
                        failures = failures + 1,
                        "accept failed on the {name} address: {e}; retrying"
                    );
                }
                failures += 1;
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The open-files limit (RLIMIT_NOFILE), soft and hard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard one, so that the number of
/// connections is bounded by TINYSCALE_MAX_CONNECTIONS, not by the soft
/// limit's usual 1024 (each client connection is a file descriptor, and so
/// is each connection to a BBB server). Returns the limit before and after.
///
/// Nothing is changed when soft already equals hard (as under the systemd
/// unit's `LimitNOFILE=`, whose `SystemCallFilter=~@resources` forbids the
/// `setrlimit` system call). On Linux it uses `prlimit`, which that filter
/// allows.
#[cfg(unix)]
pub fn raise_open_files_limit() -> io::Result<(FileLimit, FileLimit)> {
    let before = open_files_limit()?;
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let wanted = libc::rlimit {
        rlim_cur: before.hard as libc::rlim_t,
        rlim_max: before.hard as libc::rlim_t,
    };
    // SAFETY: `wanted` is a valid rlimit that outlives the call; a null old
    // limit is allowed.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let result = unsafe { libc::prlimit(0, libc::RLIMIT_NOFILE, &wanted, std::ptr::null_mut()) };
    // SAFETY: as above.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let result = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, open_files_limit()?))
}

/// The current open-files limit.
#[cfg(unix)]
pub fn open_files_limit() -> io::Result<FileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is u64 on Linux, but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    Ok(FileLimit {
        soft: limit.rlim_cur as u64,
        hard: limit.rlim_max as u64,
    })
}

/// Raises the open-files limit and logs it, warning when it is too low for
/// `max_connections`.
pub fn prepare_open_files(max_connections: usize) {
    #[cfg(unix)]
    match raise_open_files_limit() {
        Ok((before, after)) => {
            if before.soft != after.soft {
                tracing::info!(
                    "open-files limit raised from {} to {}",
                    before.soft,
                    after.soft
                );
            } else {
                tracing::debug!("open-files limit {}", after.soft);
            }
            // Each client connection is one descriptor, and may need one
            // more to a BBB server; a few dozen go to the rest.
            let needed = (max_connections as u64).saturating_add(64);
            if after.soft < needed {
                tracing::warn!(
                    "the open-files limit ({}) is below TINYSCALE_MAX_CONNECTIONS ({max_connections}) plus some: \
                     past it, connections wait until one closes (raise LimitNOFILE or ulimit -n)",
                    after.soft
                );
            }
        }
        Err(e) => tracing::warn!("cannot read or raise the open-files limit: {e}"),
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

/// Where one connection is between requests, shared by its [`HeadTimer`]
/// and its service: counts of heads read and of answers done. Equal counts
/// mean the next byte from the client starts a new head.
#[derive(Debug, Default)]
pub struct Progress {
    heads: AtomicU64,
    answered: AtomicU64,
}

impl Progress {
    /// Called by the service for each request, when hyper has read its
    /// head. The answer counts as done when the returned token is dropped:
    /// with the response body, once hyper has written it (see
    /// [`Answering::track`]), or with the service's future if it never
    /// answers.
    pub fn head_read(self: &Arc<Self>) -> Answering {
        self.heads.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    fn heads(&self) -> u64 {
        self.heads.load(Ordering::Relaxed)
    }

    fn between_requests(&self) -> bool {
        self.heads() == self.answered.load(Ordering::Relaxed)
    }
}

/// One request being answered; see [`Progress::head_read`].
#[derive(Debug)]
pub struct Answering(Arc<Progress>);

impl Answering {
    /// `body`, marking the answer done when hyper drops it.
    pub fn track<B>(self, body: B) -> Tracked<B> {
        Tracked {
            body,
            _answering: self,
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that marks its answer done when dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _answering: Answering,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client connection's socket that fails its reads once a request head
/// has taken longer than the head timeout (hyper then closes the
/// connection). The time counts from when a head's first bytes have been
/// read and the rest is not there yet: a head that arrives whole, as almost
/// all do, never arms the timer. Between requests the connection is idle,
/// which hyper's own timeout bounds (see [`Limits::http1`]).
#[derive(Debug)]
pub struct HeadTimer<T> {
    io: T,
    progress: Arc<Progress>,
    timeout: Duration,
    /// The count of heads read when this head's first bytes came.
    head: Option<u64>,
    /// Set while the head timer runs; kept and reset for later heads.
    deadline: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<T> HeadTimer<T> {
    pub fn new(io: T, progress: Arc<Progress>, timeout: Duration) -> HeadTimer<T> {
        HeadTimer {
            io,
            progress,
            timeout,
            head: None,
            deadline: None,
            armed: false,
        }
    }

    /// Starts the head timer; true if it is already due.
    fn arm(&mut self, cx: &mut Context<'_>) -> bool {
        let due = tokio::time::Instant::now() + self.timeout;
        let deadline = match &mut self.deadline {
            Some(deadline) => {
                deadline.as_mut().reset(due);
                deadline
            }
            None => self
                .deadline
                .insert(Box::pin(tokio::time::sleep_until(due))),
        };
        self.armed = true;
        // Polled once so that it wakes this connection when due.
        deadline.as_mut().poll(cx).is_ready()
    }

    fn timed_out() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the request head took longer than TINYSCALE_HEADER_TIMEOUT",
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadTimer<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let heads = this.progress.heads();
        if this.head.is_some_and(|at| at != heads) {
            // hyper has read that head since: its timer is done.
            this.head = None;
            this.armed = false;
        }
        if this.armed
            && let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let filled = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let due = match polled {
            Poll::Ready(Ok(()))
                if buf.filled().len() > filled
                    && this.head.is_none()
                    && this.progress.between_requests() =>
            {
                this.head = Some(heads);
                false
            }
            Poll::Pending if this.head.is_some() && !this.armed => this.arm(cx),
            _ => false,
        };
        if due {
            return Poll::Ready(Err(Self::timed_out()));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadTimer<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 65536,
            max_headers: 100,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            max_connections: 10,
        }
    }

    #[test]
    fn limits_come_from_the_settings() {
        let settings = Settings::from_vars(|name| match name {
            "TINYSCALE_SECRET" => Some("s".into()),
            "TINYSCALE_MAX_CONNECTIONS" => Some("10".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(Limits::from_settings(&settings), limits());
    }

    #[cfg(unix)]
    #[test]
    fn the_open_files_limit_ends_at_the_hard_limit() {
        let (before, after) = raise_open_files_limit().unwrap();
        assert!(before.soft <= after.soft);
        assert_eq!(after.soft, after.hard);
        assert_eq!(open_files_limit().unwrap(), after);
    }

    #[tokio::test]
    async fn the_gate_lets_in_as_many_as_allowed() {
        let gate = Gate::new(2);
        let mut last_full = None;
        let first = gate.enter(&mut last_full).await;
        let _second = gate.enter(&mut last_full).await;
        let mut third = Box::pin(gate.enter(&mut last_full));
        assert!(futures_poll_once(third.as_mut()).is_none());
        drop(first);
        let _third = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("a place frees up");
    }

    /// Polls a future once, with a waker that does nothing.
    fn futures_poll_once<F: std::future::Future>(f: Pin<&mut F>) -> Option<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match f.poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_times_out_but_an_idle_connection_does_not() {
        let (client, server) = tokio::io::duplex(1024);
        let progress = Arc::new(Progress::default());
        let mut timer = HeadTimer::new(server, progress.clone(), Duration::from_secs(5));
        let (mut client_read, mut client) = tokio::io::split(client);
        let mut buf = [0u8; 64];

        // Idle, before any byte: the head timer does not run.
        let idle = tokio::time::timeout(Duration::from_secs(60), timer.read(&mut buf)).await;
        assert!(idle.is_err(), "no head timeout while idle");

        // A whole head, then its answer: still no timer afterwards.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(timer.read(&mut buf).await.unwrap() > 0);
        let answering = progress.head_read();
        timer.write_all(b"answer").await.unwrap();
        drop(answering.track(()));
        let mut answer = [0u8; 6];
        client_read.read_exact(&mut answer).await.unwrap();
        let idle = tokio::time::timeout(Duration::from_secs(60), timer.read(&mut buf)).await;
        assert!(idle.is_err(), "no head timeout while idle between requests");

        // Part of a head, then nothing: refused after the head timeout.
        client.write_all(b"GET / HT").await.unwrap();
        assert!(timer.read(&mut buf).await.unwrap() > 0);
        let slow = tokio::time::timeout(Duration::from_secs(60), timer.read(&mut buf))
            .await
            .expect("the head timer ends the read");
        assert_eq!(slow.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_large_head_limit_grows_the_buffer() {
        // Only that building does not panic: hyper asserts its buffer is
        // at least its minimum.
        let _ = Limits {
            max_header_bytes: 1 << 20,
            ..limits()
        }
        .http1();
        let _ = limits().http1();
    }
}
