//! The body of every answer tinyscale gives a client: bytes it holds
//! (its own answers, a server's small answer), or a stream (a server's large
//! answer passing through, a merged list built as the servers answer).
//!
//! Owns only the shape, which a request to a server shares (see
//! `upload::OutBody`); what streams is built in `backend` (answers) and
//! `lists` (merges). A stream that fails mid-way ends the client's
//! connection, as a proxy must: the client sees a cut answer, never a wrong
//! one.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why a body stopped: whatever failed, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a client's body could not be read whole.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRead {
    /// Announced, or found, larger than the limit.
    TooLarge,
    /// The client's connection failed while sending it.
    Broken,
}

/// A client's body read whole within `limit` bytes. One announced larger
/// (Content-Length) is refused before a byte of it is read.
pub async fn read_whole<B>(body: B, limit: usize) -> Result<Bytes, NotRead>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(NotRead::TooLarge);
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(NotRead::TooLarge),
        Err(_) => Err(NotRead::Broken),
    }
}

/// A body that streams, of any kind (a server's answer, a merged list). A
/// struct rather than the bare box: bounding [`HeldOr`]'s `S` by the boxed
/// trait object itself trips a rustc lifetime bug ("one type is more
/// general than the other") where connections are spawned.
pub struct Stream(Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>);

/// Bytes held whole, or a body `S` that streams.
pub enum HeldOr<S> {
    /// Held whole (sent as one frame, with its Content-Length).
    Whole(Option<Bytes>),
    Stream(S),
}

/// The body of an answer to a client.
pub type Body = HeldOr<Stream>;

impl<S> HeldOr<S> {
    pub fn whole(bytes: impl Into<Bytes>) -> HeldOr<S> {
        let bytes = bytes.into();
        HeldOr::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body {
    pub fn stream(
        body: impl http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
    ) -> Body {
        HeldOr::Stream(Stream(Box::pin(body)))
    }
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().0.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

impl<S> http_body::Body for HeldOr<S>
where
    S: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            HeldOr::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            HeldOr::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            HeldOr::Whole(bytes) => bytes.is_none(),
            HeldOr::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            HeldOr::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            HeldOr::Stream(stream) => stream.size_hint(),
        }
    }
}
