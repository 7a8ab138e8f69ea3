//! Huge answers for tests of tinyscale's memory bounds: a well-formed BBB
//! answer of any size, written in pieces as it is sent and never held
//! whole (a 300 MiB answer costs the simulator 64 KiB at a time). The same
//! pieces can be made again by a test to check what reached the client.

use bytes::Bytes;
use http_body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

const PIECE: usize = 64 * 1024;

/// The pieces of a SUCCESS answer to `call` of at least `size` bytes:
/// getMeetings lists meetings (`<meeting>` elements), getRecordings lists
/// recordings, any other call has one meeting whose `<metadata>` is padded.
#[derive(Clone, Debug)]
pub struct HugeAnswer {
    head: Option<String>,
    element: String,
    tail: Option<String>,
    /// Bytes of elements still to write.
    remaining: u64,
    next: u64,
}

impl HugeAnswer {
    pub fn new(call: &str, size: u64) -> HugeAnswer {
        let (list, element) = match call {
            "getMeetings" => ("meetings", "meeting"),
            "getRecordings" => ("recordings", "recording"),
            _ => ("metadata", "pad"),
        };
        let head = match list {
            "metadata" => "<response><returncode>SUCCESS</returncode><meetingName>huge</meetingName><meetingID>huge</meetingID><metadata>".to_string(),
            _ => format!("<response><returncode>SUCCESS</returncode><{list}>"),
        };
        let tail = format!("</{list}></response>");
        let id = if element == "recording" {
            "recordID"
        } else {
            "meetingID"
        };
        HugeAnswer {
            remaining: size.saturating_sub((head.len() + tail.len()) as u64),
            head: Some(head),
            element: format!(
                "<{element}><{id}>huge-{{n}}</{id}><name>{}</name></{element}>",
                "x".repeat(200)
            ),
            tail: Some(tail),
            next: 0,
        }
    }
}

impl Iterator for HugeAnswer {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(Bytes::from(head));
        }
        if self.remaining > 0 {
            let mut piece = String::with_capacity(PIECE + self.element.len() + 16);
            while piece.len() < PIECE && self.remaining > 0 {
                let element = self.element.replace("{n}", &self.next.to_string());
                self.next += 1;
                self.remaining = self.remaining.saturating_sub(element.len() as u64);
                piece.push_str(&element);
            }
            return Some(Bytes::from(piece));
        }
        self.tail.take().map(Bytes::from)
    }
}

/// A [`HugeAnswer`] as a response body.
pub struct HugeBody(pub HugeAnswer);

impl Body for HugeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_list_is_a_well_formed_answer_of_at_least_its_size() {
        let all: Vec<u8> = HugeAnswer::new("getMeetings", 200_000).flatten().collect();
        assert!(all.len() >= 200_000 && all.len() < 200_000 + 1_000);
        let text = String::from_utf8(all).unwrap();
        assert!(text.starts_with("<response><returncode>SUCCESS</returncode><meetings><meeting><meetingID>huge-0</meetingID>"));
        assert!(text.ends_with("</meeting></meetings></response>"));
        let ids = crate::xml::meeting_summaries(text.as_bytes());
        assert_eq!(
            ids.last().unwrap().meeting_id,
            format!("huge-{}", ids.len() - 1)
        );
    }
}
