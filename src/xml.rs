//! Reading BBB's XML answers: the few fields routing looks at, and merging
//! the `<meetings>` / `<recordings>` lists of several servers into one.
//!
//! Pure. The elements of each server's list are copied byte for byte (CDATA,
//! entities, unknown elements and all), never parsed and re-serialised, so a
//! merged answer carries everything each server said.

use quick_xml::Reader;
use quick_xml::events::Event;

/// The text of the first `<name>…</name>` in a small BBB answer, as sent
/// (entities not decoded). Good for `returncode`, `messageKey`, `running`.
/// Runs on every answer, so it looks for `<` and compares in place instead
/// of building the tags.
pub fn field<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let name = name.as_bytes();
    let tag_at = |from: usize, closing: bool| {
        memchr::memchr_iter(b'<', &body[from..])
            .map(|i| from + i)
            .find(|&at| {
                let rest = &body[at + 1..];
                let rest = if closing {
                    match rest.strip_prefix(b"/") {
                        Some(rest) => rest,
                        None => return false,
                    }
                } else {
                    rest
                };
                rest.starts_with(name) && rest.get(name.len()) == Some(&b'>')
            })
    };
    let start = tag_at(0, false)? + name.len() + 2;
    let end = tag_at(start, true)?;
    std::str::from_utf8(&body[start..end]).ok().map(str::trim)
}

/// The result word of an answer for the log: returncode, or the messageKey
/// when it failed; for the JSON answers of the text-track calls likewise.
pub fn result_word(body: &[u8]) -> std::borrow::Cow<'static, str> {
    match field(body, "returncode") {
        Some("SUCCESS") => "SUCCESS".into(),
        Some(code) => field(body, "messageKey").unwrap_or(code).to_string().into(),
        None => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => {
                let r = &v["response"];
                match r["returncode"].as_str() {
                    Some("SUCCESS") => "SUCCESS".into(),
                    _ => r["messageKey"]
                        .as_str()
                        .unwrap_or("FAILED")
                        .to_string()
                        .into(),
                }
            }
            Err(_) => "-".into(),
        },
    }
}

/// `returncode` is SUCCESS.
pub fn is_success(body: &[u8]) -> bool {
    field(body, "returncode") == Some("SUCCESS")
}

/// The `createTime` (unix ms) of a create or getMeetingInfo answer.
pub fn create_time(body: &[u8]) -> Option<u64> {
    field(body, "createTime")?.parse().ok()
}

/// The bytes between `<list>` and `</list>`, a direct child of `<response>`.
/// `Some(empty)` for `<list/>`; `None` when the answer has no such list.
pub fn list_content<'a>(body: &'a [u8], list: &str) -> Option<&'a [u8]> {
    // quick_xml skips a byte order mark and counts positions after it.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = Reader::from_str(std::str::from_utf8(body).ok()?);
    let mut depth = 0usize;
    loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event().ok()? {
            Event::Start(e) => {
                depth += 1;
                if depth == 2 && e.name().as_ref() == list {
                    let start = reader.buffer_position() as usize;
                    // The list runs to its closing tag, the last one in the
                    // answer (BBB's elements never nest a list of the same
                    // name); found from the end without parsing every
                    // meeting on the way.
                    let close = format!("</{list}>");
                    let rest = &body[start..];
                    let end = rest
                        .windows(close.len())
                        .rposition(|w| w == close.as_bytes())?;
                    return Some(&rest[..end]);
                }
            }
            Event::Empty(e) if depth == 1 && e.name().as_ref() == list => {
                return Some(&body[before..before]);
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Merges the `<list>` (e.g. `meetings`) of several SUCCESS answers into one
/// BBB answer. Answers that failed or have no list are left out. Returns
/// `None` when no server listed a single element, so the caller can answer
/// BBB's own "nothing found" form.
pub fn merge_lists<'a>(bodies: impl IntoIterator<Item = &'a [u8]>, list: &str) -> Option<Vec<u8>> {
    let contents: Vec<&[u8]> = bodies
        .into_iter()
        .filter(|body| is_success(body))
        .filter_map(|body| list_content(body, list))
        .collect();
    if !contents.iter().any(|c| c.contains(&b'<')) {
        return None;
    }
    let head = format!("<response><returncode>SUCCESS</returncode><{list}>");
    let tail = format!("</{list}></response>");
    let size = head.len() + tail.len() + contents.iter().map(|c| c.len()).sum::<usize>();
    let mut merged = Vec::with_capacity(size);
    merged.extend_from_slice(head.as_bytes());
    for content in contents {
        merged.extend_from_slice(content);
    }
    merged.extend_from_slice(tail.as_bytes());
    Some(merged)
}

/// One meeting of a getMeetings answer, as the poller needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeetingSummary {
    pub meeting_id: String,
    pub participants: u64,
    pub listeners: u64,
    pub voice_participants: u64,
    pub videos: u64,
    /// When this copy of the meeting was created (unix ms): of two servers
    /// holding one meetingID, the later copy is the meeting.
    pub create_time: Option<u64>,
}

/// The meetings of a getMeetings answer: the direct children of each
/// `<meeting>` that the poller reads, entities decoded.
pub fn meeting_summaries(body: &[u8]) -> Vec<MeetingSummary> {
    let Ok(body) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let mut reader = Reader::from_str(body);
    let mut meetings = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<MeetingSummary> = None;
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.name().as_ref().to_string();
                if path.len() == 2 && name == "meeting" && path[1] == "meetings" {
                    current = Some(MeetingSummary::default());
                }
                path.push(name);
                text.clear();
            }
            Ok(Event::Text(t)) => text.push_str(t.as_ref()),
            Ok(Event::GeneralRef(r)) => text.push_str(entity(r.as_ref())),
            Ok(Event::CData(c)) => text.push_str(c.as_ref()),
            Ok(Event::End(_)) => {
                let name = path.pop().unwrap_or_default();
                if path.len() == 3
                    && let Some(meeting) = current.as_mut()
                {
                    let number = || text.trim().parse::<u64>().unwrap_or(0);
                    match name.as_str() {
                        "meetingID" => meeting.meeting_id = text.trim().to_string(),
                        "participantCount" => meeting.participants = number(),
                        "listenerCount" => meeting.listeners = number(),
                        "voiceParticipantCount" => meeting.voice_participants = number(),
                        "videoCount" => meeting.videos = number(),
                        "createTime" => meeting.create_time = text.trim().parse().ok(),
                        _ => {}
                    }
                }
                if path.len() == 2
                    && name == "meeting"
                    && let Some(meeting) = current.take()
                {
                    meetings.push(meeting);
                }
                text.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    meetings
}

/// The five predefined XML entities; anything else (BBB sends none) is
/// dropped.
fn entity(name: &str) -> &'static str {
    match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => "",
    }
}

/// The `<recordID>`s listed in a getRecordings answer, entities decoded.
pub fn record_ids(body: &[u8]) -> Vec<String> {
    let Ok(body) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    let mut reader = Reader::from_str(body);
    let mut ids = Vec::new();
    let mut in_record_id = false;
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().as_ref() == "recordID" => {
                in_record_id = true;
                text.clear();
            }
            Ok(Event::Text(t)) if in_record_id => {
                text.push_str(t.as_ref());
            }
            Ok(Event::GeneralRef(r)) if in_record_id => {
                text.push_str(entity(r.as_ref()));
            }
            Ok(Event::CData(c)) if in_record_id => {
                text.push_str(c.as_ref());
            }
            Ok(Event::End(e)) if e.name().as_ref() == "recordID" => {
                in_record_id = false;
                ids.push(text.trim().to_string());
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    ids
}

/// One `<recording>` of a getRecordings list: its bytes as sent, and the
/// fields a merged page is ordered by.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordingElement<'a> {
    /// `<startTime>` (unix ms); 0 when missing or not a number.
    pub start_time: u64,
    /// `<recordID>`, entities decoded.
    pub record_id: String,
    pub bytes: &'a [u8],
}

/// The `<recording>` elements of a `<recordings>` list's content (as
/// [`list_content`] gives it); elements that do not parse end the list.
pub fn recording_elements(content: &[u8]) -> Vec<RecordingElement<'_>> {
    let mut found = Vec::new();
    let Ok(text) = std::str::from_utf8(content) else {
        return found;
    };
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut field: Option<&'static str> = None;
    let (mut start_time, mut record_id) = (String::new(), String::new());
    loop {
        let before = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(event) => event,
        };
        let value = match field {
            Some("startTime") => Some(&mut start_time),
            Some(_) => Some(&mut record_id),
            None => None,
        };
        let text = match &event {
            Event::Text(t) => Some(AsRef::<str>::as_ref(t).to_string()),
            Event::GeneralRef(r) => Some(entity(r.as_ref()).to_string()),
            Event::CData(c) => Some(AsRef::<str>::as_ref(c).to_string()),
            _ => None,
        };
        if let (Some(value), Some(text)) = (value, text) {
            value.push_str(&text);
            continue;
        }
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth == 1 && e.name().as_ref() == "recording" {
                    start = before;
                    start_time.clear();
                    record_id.clear();
                } else if depth == 2 {
                    field = match e.name().as_ref() {
                        "startTime" => Some("startTime"),
                        "recordID" => Some("recordID"),
                        _ => None,
                    };
                }
            }
            Event::End(e) => {
                field = None;
                if depth == 1 && e.name().as_ref() == "recording" {
                    found.push(RecordingElement {
                        start_time: start_time.trim().parse().unwrap_or(0),
                        record_id: record_id.trim().to_string(),
                        bytes: &content[start..reader.buffer_position() as usize],
                    });
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    found
}

/// A paged getRecordings answer: the page's `<recording>` elements as
/// given, and bbb-web's `<pagination>` with the total of all pages.
pub fn recordings_page(shown: &[&[u8]], total: usize) -> Vec<u8> {
    let mut page = b"<response><returncode>SUCCESS</returncode>".to_vec();
    if shown.is_empty() {
        page.extend_from_slice(b"<recordings/>");
    } else {
        page.extend_from_slice(b"<recordings>");
        for element in shown {
            page.extend_from_slice(element);
        }
        page.extend_from_slice(b"</recordings>");
    }
    page.extend_from_slice(
        format!("<pagination><totalElements>{total}</totalElements></pagination></response>")
            .as_bytes(),
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "<response>\n  <returncode>SUCCESS</returncode>\n  <meetings>\n    <meeting><meetingID>a&amp;b</meetingID><metadata><x><![CDATA[<y>]]></x></metadata></meeting>\n  </meetings>\n</response>";
    const B: &str = "<?xml version=\"1.0\"?><response><returncode>SUCCESS</returncode><meetings><meeting><meetingID>c</meetingID></meeting></meetings></response>";
    const EMPTY: &str = "<response><returncode>SUCCESS</returncode><meetings/><messageKey>noMeetings</messageKey><message>no meetings were found on this server</message></response>";
    const FAILED: &str = "<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey><message>x</message></response>";

    #[test]
    fn fields() {
        assert_eq!(
            field(FAILED.as_bytes(), "messageKey"),
            Some("checksumError")
        );
        assert!(is_success(A.as_bytes()));
        assert!(!is_success(FAILED.as_bytes()));
        assert_eq!(field(A.as_bytes(), "running"), None);
        // The first whole tag of that name, not a longer name or a closing
        // tag; text up to its own closing tag, trimmed.
        let body = b"<r><runningX>no</runningX></running><running> true </running></r>";
        assert_eq!(field(body, "running"), Some("true"));
        assert_eq!(field(b"<a><running>x</runningX>", "running"), None);
        assert_eq!(field(b"<running>", "running"), None);
        assert_eq!(field(b"<running></running>", "running"), Some(""));
        assert_eq!(field(b"", "running"), None);
        assert_eq!(field(b"<", "running"), None);
        assert_eq!(
            create_time(b"<response><createTime>1453283819419</createTime></response>"),
            Some(1_453_283_819_419)
        );
        assert_eq!(create_time(b"<createTime>soon</createTime>"), None);
    }

    #[test]
    fn merges_elements_byte_for_byte() {
        let merged = merge_lists(
            [
                A.as_bytes(),
                EMPTY.as_bytes(),
                FAILED.as_bytes(),
                B.as_bytes(),
            ],
            "meetings",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            "<response><returncode>SUCCESS</returncode><meetings>\n    <meeting><meetingID>a&amp;b</meetingID><metadata><x><![CDATA[<y>]]></x></metadata></meeting>\n  <meeting><meetingID>c</meetingID></meeting></meetings></response>"
        );
    }

    #[test]
    fn nothing_to_merge() {
        assert_eq!(
            merge_lists([EMPTY.as_bytes(), FAILED.as_bytes()], "meetings"),
            None
        );
        assert_eq!(merge_lists([], "recordings"), None);
    }

    #[test]
    fn an_answer_may_start_with_a_byte_order_mark() {
        let bom = |body: &str| format!("\u{FEFF}{body}");
        let merged = merge_lists(
            [bom(B).as_bytes(), bom(EMPTY).as_bytes(), bom(B).as_bytes()],
            "meetings",
        )
        .unwrap();
        let meeting = "<meeting><meetingID>c</meetingID></meeting>";
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            format!(
                "<response><returncode>SUCCESS</returncode><meetings>{meeting}{meeting}</meetings></response>"
            )
        );
    }

    #[test]
    fn nested_list_of_the_same_name_is_not_taken() {
        let body = "<response><returncode>SUCCESS</returncode><x><meetings><meeting/></meetings></x></response>";
        assert_eq!(merge_lists([body.as_bytes()], "meetings"), None);
    }

    #[test]
    fn summarises_meetings() {
        let body = "<response><returncode>SUCCESS</returncode><meetings>\n<meeting><meetingName>n</meetingName><meetingID>a &amp; b</meetingID><createTime>1700000000123</createTime><participantCount>5</participantCount><listenerCount>2</listenerCount><voiceParticipantCount>1</voiceParticipantCount><videoCount>3</videoCount><attendees><attendee><meetingID>not this</meetingID></attendee></attendees><breakoutRooms><breakout>x</breakout></breakoutRooms></meeting><meeting><meetingID>c</meetingID><participantCount>0</participantCount></meeting></meetings></response>";
        let meetings = meeting_summaries(body.as_bytes());
        assert_eq!(
            meetings,
            vec![
                MeetingSummary {
                    meeting_id: "a & b".into(),
                    participants: 5,
                    listeners: 2,
                    voice_participants: 1,
                    videos: 3,
                    create_time: Some(1_700_000_000_123),
                },
                MeetingSummary {
                    meeting_id: "c".into(),
                    ..Default::default()
                }
            ]
        );
        assert!(meeting_summaries(EMPTY.as_bytes()).is_empty());
    }

    #[test]
    fn finds_record_ids() {
        let body = "<response><returncode>SUCCESS</returncode><recordings><recording><recordID>r-1</recordID><meetingID>m</meetingID></recording><recording><recordID>r&amp;2</recordID></recording></recordings></response>";
        assert_eq!(record_ids(body.as_bytes()), vec!["r-1", "r&2"]);
    }

    #[test]
    fn recording_elements_keep_bytes_and_read_keys() {
        let content = "\n <recording><recordID>r&amp;1</recordID><meetingID>m</meetingID><startTime>20</startTime><metadata><recordID>not this</recordID><startTime>1</startTime></metadata></recording>\n <recording><startTime> x </startTime><recordID><![CDATA[r2]]></recordID></recording>";
        let found = recording_elements(content.as_bytes());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].start_time, 20);
        assert_eq!(found[0].record_id, "r&1");
        assert!(found[0].bytes.starts_with(b"<recording><recordID>r&amp;1"));
        assert!(found[0].bytes.ends_with(b"</metadata></recording>"));
        assert_eq!(found[1].start_time, 0);
        assert_eq!(found[1].record_id, "r2");
        assert!(recording_elements(b"").is_empty());
    }

    #[test]
    fn a_page_answer() {
        let page = recordings_page(&[b"<recording>a</recording>"], 7);
        assert_eq!(
            String::from_utf8(page).unwrap(),
            "<response><returncode>SUCCESS</returncode><recordings><recording>a</recording></recordings><pagination><totalElements>7</totalElements></pagination></response>"
        );
        let empty = String::from_utf8(recordings_page(&[], 7)).unwrap();
        assert!(empty.contains("<recordings/><pagination>"));
    }
}
