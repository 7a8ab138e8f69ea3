//! The body of every answer tinyscale gives a client: bytes it holds
//! (its own answers, a server's small answer), or a stream (a server's large
//! answer passing through, a merged list built as the servers answer).
//!
//! Owns only the shape; what streams is built in `backend` (answers) and
//! `lists` (merges). A stream that fails mid-way ends the client's
//! connection, as a proxy must: the client sees a cut answer, never a wrong
//! one.

use crate::upload::BoxError;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type Stream = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>;

pub enum Body {
    /// Held whole (sent as one frame, with its Content-Length).
    Whole(Option<Bytes>),
    Stream(Stream),
}

impl Body {
    pub fn whole(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body::Whole((!bytes.is_empty()).then_some(bytes))
    }

    pub fn stream(
        body: impl http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
    ) -> Body {
        Body::Stream(Box::pin(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(stream) => stream.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Whole(bytes) => bytes.is_none(),
            Body::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Stream(stream) => stream.size_hint(),
        }
    }
}
