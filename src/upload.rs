//! A client's request body on its way to a server, and the body type of
//! every request tinyscale sends to a server.
//!
//! An upload (slides in `create`, `insertDocument`, a text track) is not
//! read into memory: it waits in an [`Upload`] slot until a server has been
//! connected, then streams from the client to that server frame by frame,
//! counted against the limit as it goes. Until a connection is made nothing
//! has been read, so a create whose server refuses the connection can still
//! go to the next one.
//!
//! A create's upload can also be copied as it passes, up to a size (see
//! `recreate`: a meeting's create call is kept with its slides when they
//! are small), without reading anything before the server has it.
//!
//! Owns the limit check while streaming, the copy, and telling a client's
//! failure (body too large, client gone) apart from a server's. Does not own the
//! `Content-Length` check before reading (see `server`) or where the body
//! goes (see `routing`).

use crate::body::{BoxError, HeldOr};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What became of an upload, seen from the request that owns it.
#[derive(Debug)]
pub struct UploadState {
    failure: AtomicU8,
    /// When the client last sent a piece of it (or it ended): a slow
    /// client's upload keeps its request alive while it moves, and the
    /// server's response timeout counts from its end.
    last_activity: Mutex<tokio::time::Instant>,
    /// A copy of the upload made as it passes, when one is wanted.
    copy: Mutex<Copying>,
}

impl Default for UploadState {
    fn default() -> UploadState {
        UploadState {
            failure: AtomicU8::new(FINE),
            last_activity: Mutex::new(tokio::time::Instant::now()),
            copy: Mutex::new(Copying::Off),
        }
    }
}

/// A copy of an upload, made frame by frame as it goes to the server, up to
/// a size: past it the copy is dropped (the upload itself goes on).
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Copying {
    /// No copy wanted.
    #[default]
    Off,
    /// Copying, up to `cap` bytes.
    Taking { cap: usize, bytes: Vec<u8> },
    /// The upload passed the cap: no copy.
    TooLarge,
    /// The whole upload.
    Whole(Bytes),
}

impl Copying {
    /// A frame went by.
    pub fn push(&mut self, data: &[u8]) {
        if let Copying::Taking { cap, bytes } = self {
            if bytes.len() + data.len() > *cap {
                *self = Copying::TooLarge;
            } else {
                bytes.extend_from_slice(data);
            }
        }
    }

    /// The upload ended: what was copied is all of it.
    pub fn finish(&mut self) {
        if let Copying::Taking { bytes, .. } = self {
            *self = Copying::Whole(Bytes::from(std::mem::take(bytes)));
        }
    }
}

/// Why an upload stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadFailure {
    /// More bytes than the limit: the server-side request is abandoned.
    TooLarge,
    /// The client's connection failed or closed mid-body.
    ClientGone,
}

const FINE: u8 = 0;
const TOO_LARGE: u8 = 1;
const CLIENT_GONE: u8 = 2;

impl UploadState {
    pub fn failure(&self) -> Option<UploadFailure> {
        match self.failure.load(Ordering::Relaxed) {
            TOO_LARGE => Some(UploadFailure::TooLarge),
            CLIENT_GONE => Some(UploadFailure::ClientGone),
            _ => None,
        }
    }

    fn fail(&self, why: u8) {
        let _ = self
            .failure
            .compare_exchange(FINE, why, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// When the client last sent a piece (or the end) of the upload.
    pub fn last_activity(&self) -> tokio::time::Instant {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn moved(&self) {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }

    fn copying(&self) -> std::sync::MutexGuard<'_, Copying> {
        self.copy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The client's body, streaming, with its limit.
pub struct ClientBody {
    incoming: Incoming,
    limit: u64,
    seen: u64,
    state: Arc<UploadState>,
}

impl ClientBody {
    pub fn new(incoming: Incoming, limit: u64) -> ClientBody {
        ClientBody {
            incoming,
            limit,
            seen: 0,
            state: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the {0} bytes allowed")]
struct TooLarge(u64);

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.state.moved();
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.limit {
                        self.state.fail(TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(self.limit)))));
                    }
                    let mut copy = self.state.copying();
                    copy.push(data);
                    // The sender may not ask again once the body says it
                    // has ended.
                    if self.incoming.is_end_stream() {
                        copy.finish();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.state.fail(CLIENT_GONE);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.state.moved();
                self.state.copying().finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// Where an upload waits until a server is connected; taken at most once
/// for good (a request that never left gives it back).
pub struct Upload {
    slot: Mutex<Option<ClientBody>>,
    state: Arc<UploadState>,
}

impl Upload {
    pub fn new(body: ClientBody) -> Upload {
        Upload {
            state: body.state.clone(),
            slot: Mutex::new(Some(body)),
        }
    }

    /// What became of it; shared with whoever needs to know after the
    /// request has been routed.
    pub fn state(&self) -> Arc<UploadState> {
        self.state.clone()
    }

    pub(crate) fn take(&self) -> Option<ClientBody> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A request that never left hands its body back, for the next server.
    pub(crate) fn give_back(&self, body: ClientBody) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
    }

    /// Copies the upload as it goes to the server, up to `cap` bytes (see
    /// [`Upload::copied`]). Nothing is read for it.
    pub fn copy_up_to(&self, cap: usize) {
        let mut copy = self.state.copying();
        if *copy == Copying::Off {
            *copy = Copying::Taking {
                cap,
                bytes: Vec::new(),
            };
        }
    }

    /// The whole upload, when it was copied to its end within the cap.
    pub fn copied(&self) -> Option<Bytes> {
        match &*self.state.copying() {
            Copying::Whole(bytes) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// True once a server has taken it.
    pub fn is_taken(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("taken", &self.is_taken())
            .field("failure", &self.state.failure())
            .finish()
    }
}

/// The body of a request to a server: bytes tinyscale holds (none, a form,
/// a small body), or a client's upload streaming through.
pub type OutBody = HeldOr<ClientBody>;

impl OutBody {
    /// The upload's state, when this is one.
    pub(crate) fn upload_state(&self) -> Option<Arc<UploadState>> {
        match self {
            HeldOr::Stream(c) => Some(c.state.clone()),
            HeldOr::Whole(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_whole_or_nothing() {
        let mut copy = Copying::Taking {
            cap: 8,
            bytes: Vec::new(),
        };
        copy.push(b"abcd");
        copy.push(b"efgh");
        copy.finish();
        assert_eq!(copy, Copying::Whole(Bytes::from_static(b"abcdefgh")));
        // Finished once: a later end changes nothing.
        copy.finish();
        copy.push(b"more");
        assert_eq!(copy, Copying::Whole(Bytes::from_static(b"abcdefgh")));

        let mut copy = Copying::Taking {
            cap: 8,
            bytes: Vec::new(),
        };
        copy.push(b"abcd");
        copy.push(b"efghi");
        assert_eq!(copy, Copying::TooLarge);
        copy.push(b"j");
        copy.finish();
        assert_eq!(copy, Copying::TooLarge, "past the cap, never whole");

        let mut off = Copying::Off;
        off.push(b"abc");
        off.finish();
        assert_eq!(off, Copying::Off);
    }
}
