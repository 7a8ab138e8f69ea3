//! getRecordings pages: bbb-web's paging rules, and the page of the merged
//! recordings of every server.
//!
//! bbb-web (2.6+) pages only when `limit` is an integer; its list has no
//! defined order, so pages of several servers cannot be concatenated. The
//! merged page is cut from every server's matching recordings (each server
//! paged through, at most [`MAX_LIMIT`] a call) put in one fixed order:
//! startTime, then recordID. A page is at most [`MAX_LIMIT`] recordings and
//! is built whole; unpaged lists stream (see `lists`).
//!
//! Owns the paging rules (pure) and gathering a page. Does not own reading
//! the recordings out of an answer or writing the page (see `xml`).

use crate::errors;
use crate::lists::{Ask, Sending};
use crate::state::Server;
use crate::xml::{self, RecordingElement};
use std::sync::Arc;

/// The most recordings bbb-web gives in one call.
pub const MAX_LIMIT: usize = 100;

/// A page asked for: `limit` recordings from `offset` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// bbb-web's rules: paged only when `limit` is an integer (a Java
    /// `int`), clamped to 1..=100; `offset` missing, not an integer or
    /// negative is 0; an offset alone is ignored.
    pub fn asked(limit: Option<&str>, offset: Option<&str>) -> Option<Page> {
        let limit: i32 = limit?.parse().ok()?;
        let offset: i32 = offset.and_then(|o| o.parse().ok()).unwrap_or(0);
        Some(Page {
            offset: offset.max(0) as usize,
            limit: limit.clamp(1, MAX_LIMIT as i32) as usize,
        })
    }

    /// The part of `sorted` this page shows; empty past the end.
    pub fn cut<'a, T>(&self, sorted: &'a [T]) -> &'a [T] {
        let start = self.offset.min(sorted.len());
        let end = start.saturating_add(self.limit).min(sorted.len());
        &sorted[start..end]
    }
}

/// One recording of a server, owned: its bytes and what orders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub start_time: u64,
    pub record_id: String,
    pub bytes: Vec<u8>,
}

impl From<RecordingElement<'_>> for Held {
    fn from(e: RecordingElement<'_>) -> Held {
        Held {
            start_time: e.start_time,
            record_id: e.record_id,
            bytes: e.bytes.to_vec(),
        }
    }
}

/// The one fixed order (startTime, then recordID); a recording listed twice
/// (a server's order moved between its pages) counts once.
pub fn in_order(mut all: Vec<Held>) -> Vec<Held> {
    all.sort_by(|a, b| {
        (a.start_time, &a.record_id, &a.bytes).cmp(&(b.start_time, &b.record_id, &b.bytes))
    });
    all.dedup_by(|a, b| a.start_time == b.start_time && a.record_id == b.record_id);
    all
}

/// The merged answer: the page of all servers' recordings in order, with
/// the merged total. Nothing at all is BBB's noRecordings form.
pub fn answer(all: Vec<Held>, page: Page) -> Vec<u8> {
    let all = in_order(all);
    if all.is_empty() {
        return errors::no_recordings().into_bytes();
    }
    let shown: Vec<&[u8]> = page.cut(&all).iter().map(|h| h.bytes.as_slice()).collect();
    xml::recordings_page(&shown, all.len())
}

/// Every recording of one server matching the client's filters, asked
/// [`MAX_LIMIT`] at a time (a server may refuse an unpaged list). `None`
/// when the server failed; the reason is logged.
pub async fn of_server(
    sending: &Sending,
    server: Arc<Server>,
    ask: impl Fn(usize) -> Ask,
) -> Option<Vec<Held>> {
    let mut held = Vec::new();
    let mut offset = 0;
    loop {
        let Ask {
            server: _,
            uri,
            body,
        } = ask(offset);
        let answer = match sending.send(&server, &uri, body).await {
            Ok(answer) => answer,
            Err(e) => return left_out(&server, &format!("server {e}")),
        };
        if !xml::is_success(&answer.body) {
            return left_out(&server, &xml::result_word(&answer.body));
        }
        let Some(content) = xml::list_content(&answer.body, "recordings") else {
            return left_out(&server, "no <recordings> in its answer");
        };
        let elements = xml::recording_elements(content);
        let got = elements.len();
        held.extend(elements.into_iter().map(Held::from));
        offset += got;
        // A server that does not page (before 2.6) has given everything.
        let total = xml::field(&answer.body, "totalElements").and_then(|t| t.parse().ok());
        match total {
            Some(total) if got > 0 && offset < total => {}
            _ => return Some(held),
        }
    }
}

fn left_out(server: &Server, why: &str) -> Option<Vec<Held>> {
    tracing::warn!(
        server = server.name(),
        "left out of the merged getRecordings page: {why}"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(limit: Option<&str>, offset: Option<&str>) -> Option<(usize, usize)> {
        Page::asked(limit, offset).map(|p| (p.offset, p.limit))
    }

    #[test]
    fn bbb_web_rules() {
        assert_eq!(page(None, None), None);
        assert_eq!(page(None, Some("5")), None, "an offset alone is ignored");
        assert_eq!(page(Some("x"), Some("5")), None);
        assert_eq!(page(Some("1.5"), None), None);
        assert_eq!(page(Some("99999999999"), None), None, "not a Java int");
        assert_eq!(page(Some("10"), None), Some((0, 10)));
        assert_eq!(page(Some("10"), Some("-3")), Some((0, 10)));
        assert_eq!(page(Some("10"), Some("x")), Some((0, 10)));
        assert_eq!(page(Some("10"), Some("25")), Some((25, 10)));
        assert_eq!(page(Some("0"), None), Some((0, 1)));
        assert_eq!(page(Some("-4"), None), Some((0, 1)));
        assert_eq!(page(Some("500"), None), Some((0, 100)));
    }

    #[test]
    fn cut() {
        let all: Vec<u32> = (0..7).collect();
        let p = |offset, limit| Page { offset, limit };
        assert_eq!(p(0, 3).cut(&all), &[0, 1, 2]);
        assert_eq!(p(6, 3).cut(&all), &[6]);
        assert!(p(7, 3).cut(&all).is_empty());
        assert!(p(usize::MAX, 100).cut(&all).is_empty());
    }

    fn held(start_time: u64, record_id: &str) -> Held {
        Held {
            start_time,
            record_id: record_id.into(),
            bytes: format!("<recording><recordID>{record_id}</recordID></recording>").into(),
        }
    }

    #[test]
    fn order_is_start_time_then_record_id() {
        let sorted = in_order(vec![held(2, "a"), held(1, "z"), held(2, "0"), held(1, "z")]);
        let ids: Vec<_> = sorted
            .iter()
            .map(|h| (h.start_time, h.record_id.as_str()))
            .collect();
        assert_eq!(ids, vec![(1, "z"), (2, "0"), (2, "a")]);
    }

    #[test]
    fn answers() {
        let page = Page {
            offset: 1,
            limit: 1,
        };
        let body = String::from_utf8(answer(vec![held(2, "b"), held(1, "a")], page)).unwrap();
        assert_eq!(
            body,
            "<response><returncode>SUCCESS</returncode><recordings><recording><recordID>b</recordID></recording></recordings><pagination><totalElements>2</totalElements></pagination></response>"
        );
        let past = Page {
            offset: 2,
            limit: 1,
        };
        let body = String::from_utf8(answer(vec![held(2, "b"), held(1, "a")], past)).unwrap();
        assert!(body.contains("<recordings/><pagination><totalElements>2</totalElements>"));
        let none = String::from_utf8(answer(Vec::new(), page)).unwrap();
        assert_eq!(none, errors::no_recordings());
    }
}
