//! Property tests of tinyscale's parsers, through the library's public API:
//! the checksum split and verification, parameter decoding, the XML list
//! merge, servers.json, and form-body signing.
//!
//! Two kinds of property: arbitrary input (any bytes, any string, any JSON)
//! never panics; and input generated the way BBB and its clients write it
//! gives exactly the expected result, checked against a model written here
//! (not against the library's own helpers). Each property runs [`CASES`]
//! cases, so the file stays quick in a debug build.

use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Value, json};
use tinyscale::api::{ApiRequest, Call};
use tinyscale::checksum::{self, Algorithm, ChecksumError};
use tinyscale::config::{ServerSpec, ServerState, parse_servers};
use tinyscale::errors::escape;
use tinyscale::xml;

/// Cases per property: enough to find the edge cases the generators aim at,
/// few enough for a debug build on a small machine.
const CASES: u32 = 256;

const SECRET: &str = "client-secret";
const BACKEND_SECRET: &str = "backend-secret";
const FORM: &str = "application/x-www-form-urlencoded";

const CALLS: [Call; 14] = [
    Call::Create,
    Call::Join,
    Call::IsMeetingRunning,
    Call::GetMeetingInfo,
    Call::End,
    Call::GetMeetings,
    Call::InsertDocument,
    Call::SendChatMessage,
    Call::GetRecordings,
    Call::PublishRecordings,
    Call::DeleteRecordings,
    Call::UpdateRecordings,
    Call::GetRecordingTextTracks,
    Call::PutRecordingTextTrack,
];

/// No regression files: a case a property finds becomes a unit test next
/// to the code it broke.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(CASES)
    }
}

fn backend(algorithm: Algorithm) -> ServerSpec {
    ServerSpec::new("http://127.0.0.1:1", BACKEND_SECRET, algorithm)
}

// ---------------------------------------------------------------------------
// Generators shared by several properties.

/// Any text up to `max` characters, leaning on the characters the parsers
/// care about (separators, escapes, multi-byte UTF-8).
fn text(max: usize) -> BoxedStrategy<String> {
    let special = select(vec![
        ' ', '&', '=', '+', '%', ',', '<', '>', '"', '\'', ']', '/', 'c', 'é', '€', '😀',
        '\u{FFFD}',
    ]);
    vec(prop_oneof![3 => any::<char>(), 2 => special], 0..=max)
        .prop_map(|chars| chars.into_iter().collect())
        .boxed()
}

/// Raw query strings (as a client could send them), built from the pieces
/// the checksum split and the decoder look at.
fn raw_query() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        1 => Just("checksum".to_string()),
        1 => Just("checksum=".to_string()),
        3 => Just("&".to_string()),
        2 => Just("=".to_string()),
        1 => Just("c".to_string()),
        1 => Just("ab".to_string()),
        1 => select(vec!["%", "+", "%20", "%2B", "%C3%BC", "%FF", "%zz", "meetingID", "recordID"])
            .prop_map(str::to_string),
        3 => "[a-z0-9]{1,3}",
        2 => text(4),
    ];
    vec(piece, 0..12).prop_map(|p| p.concat()).boxed()
}

fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// Any query: shaped, any string, or any bytes made text (`parse` takes
/// the query as hyper hands it over, a `&str`).
fn any_query() -> BoxedStrategy<String> {
    prop_oneof![
        3 => raw_query(),
        1 => any::<String>(),
        1 => any_bytes(64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
    .boxed()
}

fn call_name() -> BoxedStrategy<String> {
    prop_oneof![
        select(CALLS.to_vec()).prop_map(|c| c.name().to_string()),
        text(12),
    ]
    .boxed()
}

/// The raw values of the pairs named `checksum` (raw name, as bbb-web's
/// string replacement sees it).
fn checksum_values(query: &str) -> Vec<&str> {
    query
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name == "checksum").then_some(value)
        })
        .collect()
}

/// bbb-web's removal of the checksum, literally: three string replacements.
fn bbb_strip(query: &str, checksum: &str) -> String {
    let needle = format!("checksum={checksum}");
    query
        .replace(&format!("&{needle}"), "")
        .replace(&format!("{needle}&"), "")
        .replace(&needle, "")
}

/// How a client percent-encodes: the space as `+` or `%20`, hex digits in
/// either case, and (legal, if unusual) letters encoded too.
#[derive(Clone, Copy, Debug)]
struct Encoding {
    plus: bool,
    lower_hex: bool,
    encode_letters: bool,
}

/// As form_urlencoded (and so the library) writes: `+`, upper-case hex.
const PLAIN: Encoding = Encoding {
    plus: true,
    lower_hex: false,
    encode_letters: false,
};

fn encoding() -> impl Strategy<Value = Encoding> {
    (any::<bool>(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(
        |(plus, lower_hex, encode_letters)| Encoding {
            plus,
            lower_hex,
            encode_letters,
        },
    )
}

/// application/x-www-form-urlencoded, written here rather than with the
/// crate the library decodes with.
fn encode(text: &str, how: Encoding) -> String {
    let mut out = String::new();
    for &byte in text.as_bytes() {
        match byte {
            b' ' if how.plus => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' if !how.encode_letters => out.push(byte as char),
            b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(byte as char),
            _ if how.lower_hex => out.push_str(&format!("%{byte:02x}")),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn encode_pairs(params: &[(String, String)], how: Encoding) -> Vec<String> {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k, how), encode(v, how)))
        .collect()
}

fn first<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parameter names: BBB's, and arbitrary ones; never `checksum`, nor the
/// two routing reads (those are placed by the tests themselves).
fn param_name() -> BoxedStrategy<String> {
    prop_oneof![
        select(vec![
            "name",
            "attendeePW",
            "moderatorPW",
            "meta_x",
            "fullName",
            "publish",
            ""
        ])
        .prop_map(str::to_string),
        "[a-zA-Z_]{1,8}",
        text(6),
    ]
    .prop_filter("placed by the test", |n| {
        !matches!(n.as_str(), "checksum" | "meetingID" | "recordID")
    })
    .boxed()
}

fn record_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9-]{1,12}"
}

// ---------------------------------------------------------------------------
// 1. The checksum: split, sign, verify.

proptest! {
    #![proptest_config(config())]

    /// Any query: split finds the one raw `checksum` pair or says why not,
    /// and removes it exactly as bbb-web's three replacements do; what it
    /// returns then never verifies by chance.
    #[test]
    fn split_of_any_query_is_bbb_webs(query in any_query(), call in call_name()) {
        let given = checksum_values(&query);
        match checksum::split_checksum(&query) {
            Ok(split) => {
                prop_assert_eq!(&given, &vec![split.checksum]);
                prop_assert_eq!(&split.unsigned, &bbb_strip(&query, split.checksum));
                let (unsigned, sum) = (&split.unsigned, split.checksum);
                let verdict = checksum::verify(&call, unsigned, sum, SECRET, &Algorithm::ALL);
                prop_assert_eq!(verdict, Err(ChecksumError::Mismatch));
            }
            Err(ChecksumError::Missing) => prop_assert!(given.is_empty()),
            Err(ChecksumError::Duplicate) => prop_assert!(given.len() > 1),
            Err(other) => prop_assert!(false, "split answered {other:?}"),
        }
    }

    /// Whatever the call name, query and secret, a query signed with any of
    /// the four algorithms splits back to the same bytes and verifies (in
    /// either hex case), only for that algorithm, that call and that secret.
    #[test]
    fn signed_queries_verify_with_each_algorithm(
        call in call_name(),
        unsigned in raw_query(),
        secret in text(24),
        prefix in raw_query(),
    ) {
        prop_assume!(checksum_values(&unsigned).is_empty());
        for algorithm in Algorithm::ALL {
            let query = checksum::signed_query(&call, &unsigned, &secret, algorithm);
            let mut url = prefix.clone();
            checksum::push_signed_query(&mut url, &call, &unsigned, &secret, algorithm);
            prop_assert_eq!(&url, &format!("{prefix}{query}"));

            let split = checksum::split_checksum(&query);
            prop_assert!(split.is_ok(), "{query:?}: {split:?}");
            let split = split.unwrap();
            prop_assert_eq!(&split.unsigned, &unsigned);
            prop_assert_eq!(split.checksum.len(), algorithm.hex_len());
            let expected = checksum::sign(&call, &unsigned, &secret, algorithm);
            prop_assert_eq!(split.checksum, expected.as_str());
            let verify = |call: &str, sum: &str, secret: &str, allowed: &[Algorithm]| {
                checksum::verify(call, &split.unsigned, sum, secret, allowed)
            };
            let sum = split.checksum;
            prop_assert_eq!(verify(&call, sum, &secret, &Algorithm::ALL), Ok(()));
            prop_assert_eq!(verify(&call, sum, &secret, &[algorithm]), Ok(()));
            let upper = sum.to_ascii_uppercase();
            prop_assert_eq!(verify(&call, &upper, &secret, &Algorithm::ALL), Ok(()));
            let others: Vec<Algorithm> =
                Algorithm::ALL.into_iter().filter(|&a| a != algorithm).collect();
            prop_assert!(verify(&call, sum, &secret, &others).is_err());
            let other_call = format!("{call}x");
            prop_assert!(verify(&other_call, sum, &secret, &Algorithm::ALL).is_err());
            let other_secret = format!("{secret}x");
            prop_assert!(verify(&call, sum, &other_secret, &Algorithm::ALL).is_err());
        }
    }

    /// A query changed anywhere, or a checksum changed in one digit or in
    /// length, does not verify.
    #[test]
    fn a_changed_query_or_checksum_does_not_verify(
        call in call_name(),
        unsigned in raw_query(),
        insert_at in any::<Index>(),
        inserted in any::<char>(),
        digit_at in any::<Index>(),
        digit in 1u8..16,
    ) {
        let mut changed: Vec<char> = unsigned.chars().collect();
        changed.insert(insert_at.index(changed.len() + 1), inserted);
        let changed: String = changed.into_iter().collect();
        for algorithm in Algorithm::ALL {
            let sum = checksum::sign(&call, &unsigned, SECRET, algorithm);
            let verify = |query: &str, sum: &str| {
                checksum::verify(&call, query, sum, SECRET, &Algorithm::ALL)
            };
            prop_assert_eq!(verify(&unsigned, &sum), Ok(()));
            prop_assert_eq!(verify(&changed, &sum), Err(ChecksumError::Mismatch));

            // Another hex digit (not merely the other case of the same one).
            let mut bad = sum.clone().into_bytes();
            let i = digit_at.index(bad.len());
            let old = char::from(bad[i]).to_digit(16).unwrap() as u8;
            bad[i] = b"0123456789abcdef"[usize::from((old + digit) % 16)];
            let bad = String::from_utf8(bad).unwrap();
            prop_assert_eq!(verify(&unsigned, &bad), Err(ChecksumError::Mismatch));
            prop_assert_eq!(verify(&unsigned, &sum[1..]), Err(ChecksumError::Mismatch));
            prop_assert_eq!(verify(&unsigned, &format!("{sum}0")), Err(ChecksumError::Mismatch));
        }
    }
}

// ---------------------------------------------------------------------------
// 2. Parameter decoding of a request.

proptest! {
    #![proptest_config(config())]

    /// Any query, body and content type: parsed or refused, and whatever
    /// was parsed answers every question without panicking. A GET whose
    /// query was signed is always accepted.
    #[test]
    fn any_request_parses_or_is_refused(
        call in select(CALLS.to_vec()),
        post in any::<bool>(),
        query in option::of(any_query()),
        sign_it in any::<bool>(),
        content_type in option::of(select(vec![
            FORM,
            "application/x-www-form-urlencoded; charset=UTF-8",
            "APPLICATION/X-WWW-FORM-URLENCODED",
            "text/xml",
        ])),
        body in prop_oneof![any_bytes(64), raw_query().prop_map(String::into_bytes)],
        record_ids in vec(record_id(), 0..3),
    ) {
        let signed = sign_it && query.as_deref().is_some_and(|q| checksum_values(q).is_empty());
        let query = match query {
            Some(q) if signed => {
                Some(checksum::signed_query(call.name(), &q, SECRET, Algorithm::Sha1))
            }
            other => other,
        };
        let method = if post { Method::POST } else { Method::GET };
        let result = ApiRequest::parse(
            call,
            method.clone(),
            query.as_deref(),
            content_type.map(HeaderValue::from_static),
            Bytes::from(body),
            SECRET,
            &Algorithm::ALL,
        );
        if signed && method == Method::GET {
            prop_assert!(result.is_ok(), "{query:?}: {result:?}");
        }
        if let Ok(request) = result {
            for name in ["meetingID", "recordID", "name", "", "checksum", "%"] {
                let _ = request.param(name);
            }
            let _ = request.meeting_id();
            let _ = request.record_ids();
            let _ = request.for_server(&backend(Algorithm::Sha256), None);
            let _ = request.for_server(&backend(Algorithm::Sha512), Some(&record_ids));
        }
    }

    /// The parameters of a signed query decode to what the client encoded,
    /// whichever way it wrote spaces and escapes; the first of several
    /// values wins; the query reaches a backend byte for byte, re-signed.
    #[test]
    fn signed_parameters_decode_to_what_was_encoded(
        call in select(CALLS.to_vec()),
        others in vec((param_name(), text(16)), 0..6),
        meeting in option::of(text(16)),
        records in option::of((vec(record_id(), 0..4), select(vec![",", ", ", " , ", ",,"]))),
        meeting_at in any::<Index>(),
        records_at in any::<Index>(),
        how in encoding(),
        algorithm in select(Algorithm::ALL.to_vec()),
        backend_algorithm in select(Algorithm::ALL.to_vec()),
        kept in any::<Index>(),
    ) {
        let mut params = others;
        if let Some(meeting) = &meeting {
            let at = meeting_at.index(params.len() + 1);
            params.insert(at, ("meetingID".into(), meeting.clone()));
        }
        if let Some((ids, separator)) = &records {
            let value = ids.join(separator);
            params.insert(records_at.index(params.len() + 1), ("recordID".into(), value));
        }
        let pairs = encode_pairs(&params, how);
        let unsigned = pairs.join("&");
        let query = checksum::signed_query(call.name(), &unsigned, SECRET, algorithm);
        let request = ApiRequest::parse(
            call, Method::GET, Some(&query), None, Bytes::new(), SECRET, &Algorithm::ALL,
        );
        prop_assert!(request.is_ok(), "{query:?}: {request:?}");
        let request = request.unwrap();

        for (name, _) in &params {
            let value = request.param(name);
            prop_assert_eq!(value.as_deref(), first(&params, name), "{}", name);
        }
        prop_assert_eq!(request.meeting_id(), meeting.as_deref().filter(|m| !m.is_empty()));
        let expected_ids = records.as_ref().map(|(ids, _)| ids.clone()).unwrap_or_default();
        prop_assert_eq!(request.record_ids(), expected_ids.clone());

        let server = backend(backend_algorithm);
        let out = request.for_server(&server, None);
        let resigned =
            checksum::signed_query(call.name(), &unsigned, BACKEND_SECRET, backend_algorithm);
        prop_assert_eq!(out.uri, format!("{}{}?{resigned}", server.api_root(), call.name()));

        // Only the recordID pair's value changes when the ids are narrowed.
        if !expected_ids.is_empty() {
            let narrowed = &expected_ids[kept.index(expected_ids.len())..];
            let out = request.for_server(&server, Some(narrowed));
            let joined = narrowed.join(",");
            let encoded = encode(&joined, PLAIN);
            let expected: Vec<String> = params
                .iter()
                .zip(&pairs)
                .map(|((name, _), pair)| match pair.split_once('=') {
                    // The client's own spelling of the name stays.
                    Some((raw_name, _)) if name == "recordID" => format!("{raw_name}={encoded}"),
                    _ => pair.clone(),
                })
                .collect();
            let resigned = checksum::signed_query(
                call.name(), &expected.join("&"), BACKEND_SECRET, backend_algorithm,
            );
            prop_assert_eq!(out.uri, format!("{}{}?{resigned}", server.api_root(), call.name()));
        }
    }
}

// ---------------------------------------------------------------------------
// 3. BBB's XML answers and the list merge.

/// Characters valid in XML 1.0 text, the markup characters among them.
fn xml_text(max: usize) -> BoxedStrategy<String> {
    let piece = prop_oneof![
        4 => "\\PC",
        2 => select(vec!["<", ">", "&", "\"", "'", "]", " ", "\n", "\t"]).prop_map(str::to_string),
        1 => select(vec!["]]>", "</meetings>", "</recordings>", "<meeting>", "&amp;", "<![CDATA["])
            .prop_map(str::to_string),
    ];
    vec(piece, 0..=max).prop_map(|p| p.concat()).boxed()
}

/// Element content as BBB writes it: escaped text and CDATA sections, and
/// the text that content stands for.
fn xml_content() -> BoxedStrategy<(String, String)> {
    let segment = prop_oneof![
        xml_text(8).prop_map(|t| (escape(&t), t)),
        // A `]]>` inside CDATA is split over two sections, the usual way.
        xml_text(8).prop_map(|t| (
            format!("<![CDATA[{}]]>", t.replace("]]>", "]]]]><![CDATA[>")),
            t
        )),
    ];
    vec(segment, 0..3)
        .prop_map(|segments| {
            segments
                .into_iter()
                .fold((String::new(), String::new()), |(xml, text), (x, t)| {
                    (xml + &x, text + &t)
                })
        })
        .boxed()
}

fn ws() -> impl Strategy<Value = &'static str> {
    select(vec!["", "\n", "\n    ", " "])
}

fn metadata() -> impl Strategy<Value = String> {
    vec(("[a-z][a-z0-9-]{0,6}", xml_content()), 0..3).prop_map(|entries| {
        let inner: String = entries
            .iter()
            .map(|(key, (xml, _))| format!("<{key}>{xml}</{key}>"))
            .collect();
        if inner.is_empty() {
            "<metadata/>".to_string()
        } else {
            format!("<metadata>{inner}</metadata>")
        }
    })
}

/// One element of a list: its bytes, and the id and count the library reads
/// from it.
#[derive(Clone, Debug)]
struct Item {
    xml: String,
    id: String,
    count: u64,
}

fn meeting() -> impl Strategy<Value = Item> {
    (xml_content(), xml_content(), 0u64..1000, metadata(), ws()).prop_map(
        |((id_xml, id), (name_xml, _), count, metadata, ws)| Item {
            xml: format!(
                "<meeting>{ws}<meetingName>{name_xml}</meetingName>{ws}<meetingID>{id_xml}</meetingID>\
                 <participantCount>{count}</participantCount>{metadata}<attendees><attendee>\
                 <meetingID>not this</meetingID></attendee></attendees>{ws}</meeting>"
            ),
            id: id.trim().to_string(),
            count,
        },
    )
}

fn recording() -> impl Strategy<Value = Item> {
    (xml_content(), xml_content(), xml_text(12), metadata(), ws()).prop_map(
        |((id_xml, id), (meeting_xml, _), url, metadata, ws)| Item {
            xml: format!(
                "<recording>{ws}<recordID>{id_xml}</recordID><meetingID>{meeting_xml}</meetingID>\
                 <published>true</published>{metadata}<playback><format><type>presentation</type>\
                 <url>{}</url></format></playback>{ws}</recording>",
                escape(&url)
            ),
            id: id.trim().to_string(),
            count: 0,
        },
    )
}

/// Which list: `meetings` of `meeting`s or `recordings` of `recording`s.
#[derive(Clone, Copy, Debug)]
struct Kind {
    list: &'static str,
    item: &'static str,
    nothing_key: &'static str,
}

const MEETINGS: Kind = Kind {
    list: "meetings",
    item: "meeting",
    nothing_key: "noMeetings",
};
const RECORDINGS: Kind = Kind {
    list: "recordings",
    item: "recording",
    nothing_key: "noRecordings",
};

/// One server's answer, and what it lists if it succeeded: the list's
/// content between its tags, and its elements.
#[derive(Clone, Debug)]
struct Answer {
    body: String,
    content: Option<String>,
    items: Vec<Item>,
}

fn answer(kind: Kind) -> BoxedStrategy<Answer> {
    let item = match kind.item {
        "meeting" => meeting().boxed(),
        _ => recording().boxed(),
    };
    let list = kind.list;
    // A BOM too: BBB sends none, but a proxy or a compatible server may.
    let prolog = select(vec![
        "",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "\u{FEFF}",
    ]);
    let listed = (prolog, vec(item, 0..4), ws(), ws()).prop_map(
        move |(prolog, items, ws1, ws2)| {
            let mut content = String::new();
            for item in &items {
                content.push_str(ws1);
                content.push_str(&item.xml);
            }
            content.push_str(ws2);
            Answer {
                body: format!(
                    "{prolog}<response>{ws1}<returncode>SUCCESS</returncode>{ws1}<{list}>{content}</{list}>\
                     {ws2}<messageKey/><message/></response>"
                ),
                content: Some(content),
                items,
            }
        },
    );
    let nothing = Just(Answer {
        body: format!(
            "<response><returncode>SUCCESS</returncode><{list}/><messageKey>{}</messageKey>\
             <message>There are no {list}.</message></response>",
            kind.nothing_key
        ),
        content: Some(String::new()),
        items: Vec::new(),
    });
    let failed = xml_text(20).prop_map(|message| Answer {
        body: format!(
            "<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey>\
             <message>{}</message></response>",
            escape(&message)
        ),
        content: None,
        items: Vec::new(),
    });
    prop_oneof![3 => listed, 1 => nothing, 1 => failed].boxed()
}

/// Parses `merged` fully, with every check quick_xml has: one root, every
/// tag closed, only the predefined entities. Returns the bytes of each
/// `<item>` directly inside `<response><list>`, in order.
fn parse_merged(merged: &[u8], kind: Kind) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(merged).map_err(|e| e.to_string())?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().enable_all_checks(true);
    let mut open: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut item_start = 0;
    let mut items = Vec::new();
    let in_list = |open: &[String]| open == ["response", kind.list];
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| format!("{e} at {}", reader.error_position()))?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(e) => {
                roots += usize::from(open.is_empty());
                if in_list(&open) && e.name().as_ref() == kind.item {
                    item_start = before;
                }
                open.push(e.name().as_ref().to_string());
            }
            Event::End(e) => {
                open.pop();
                if in_list(&open) && e.name().as_ref() == kind.item {
                    items.push(text[item_start..after].to_string());
                }
            }
            Event::Empty(e) => {
                roots += usize::from(open.is_empty());
                if in_list(&open) && e.name().as_ref() == kind.item {
                    items.push(text[before..after].to_string());
                }
            }
            Event::GeneralRef(r) if !["amp", "lt", "gt", "quot", "apos"].contains(&r.as_ref()) => {
                return Err(format!("entity &{};", r.as_ref()));
            }
            Event::Text(t) if open.is_empty() && !t.trim().is_empty() => {
                return Err(format!("text outside the root: {:?}", t.as_ref()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !open.is_empty() {
        return Err(format!("not closed: {open:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(items)
}

/// Bytes shaped like BBB answers, cut and mixed at random.
fn xmlish_bytes() -> BoxedStrategy<Vec<u8>> {
    let piece = prop_oneof![
        select(vec![
            "<response>",
            "</response>",
            "<returncode>SUCCESS</returncode>",
            "<returncode>",
            "</returncode>",
            "<meetings>",
            "</meetings>",
            "<meetings/>",
            "<meeting>",
            "</meeting>",
            "<recordings>",
            "</recordings>",
            "<recordID>",
            "</recordID>",
            "<meetingID>",
            "</meetingID>",
            "<participantCount>",
            "</participantCount>",
            "<![CDATA[",
            "]]>",
            "&amp;",
            "&",
            "&#38;",
            "&bogus;",
            "<",
            ">",
            "</",
            "/>",
            "<?xml version=\"1.0\"?>",
            "<!--",
            "-->",
            "\u{FEFF}",
            " ",
            "\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "[a-z0-9]{1,4}".prop_map(String::into_bytes),
        any_bytes(3),
    ];
    vec(piece, 0..24).prop_map(|p| p.concat()).boxed()
}

/// A real answer damaged: cut short, a stretch taken out, or bytes put in
/// (anywhere, even inside a UTF-8 character).
fn damaged_answer() -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![answer(MEETINGS), answer(RECORDINGS)],
        0..3,
        any::<Index>(),
        any::<Index>(),
        xmlish_bytes(),
    )
        .prop_map(|(answer, how, at, to, piece)| {
            let mut body = answer.body.into_bytes();
            let at = at.index(body.len() + 1);
            match how {
                0 => body.truncate(at),
                1 => {
                    let to = at + to.index(body.len() - at + 1);
                    body.drain(at..to);
                }
                _ => {
                    body.splice(at..at, piece);
                }
            }
            body
        })
        .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, shaped or not: every reader answers, none panics; a merge
    /// that answers is a SUCCESS answer with that list.
    #[test]
    fn xml_readers_take_any_bytes(
        bodies in vec(prop_oneof![any_bytes(96), xmlish_bytes(), damaged_answer()], 0..4),
        name in select(vec!["returncode", "messageKey", "running", "meetingID", "", "<"]),
    ) {
        for body in &bodies {
            let _ = xml::field(body, name);
            let _ = xml::is_success(body);
            let _ = xml::meeting_summaries(body);
            let _ = xml::record_ids(body);
        }
        for kind in [MEETINGS, RECORDINGS] {
            if let Some(merged) = xml::merge_lists(bodies.iter().map(Vec::as_slice), kind.list) {
                let head = format!("<response><returncode>SUCCESS</returncode><{}>", kind.list);
                let tail = format!("</{}></response>", kind.list);
                prop_assert!(merged.starts_with(head.as_bytes()));
                prop_assert!(merged.ends_with(tail.as_bytes()));
            }
        }
    }

    /// The getMeetings answers of several servers (some listing meetings,
    /// some with none, some failed) merge into one well-formed answer that
    /// holds each listed meeting once, byte for byte, in server order; the
    /// poller reads every meeting's id and count from it.
    #[test]
    fn meetings_merge_into_one_well_formed_answer(answers in vec(answer(MEETINGS), 0..5)) {
        let items = check_merge(&answers, MEETINGS)?;
        if let Some(merged) = merged_of(&answers, MEETINGS) {
            let summaries = xml::meeting_summaries(&merged);
            let read: Vec<(String, u64)> =
                summaries.into_iter().map(|s| (s.meeting_id, s.participants)).collect();
            let expected: Vec<(String, u64)> =
                items.iter().map(|i| (i.id.clone(), i.count)).collect();
            prop_assert_eq!(read, expected);
        }
    }

    /// The same for getRecordings answers; the recordIDs are all found.
    #[test]
    fn recordings_merge_into_one_well_formed_answer(answers in vec(answer(RECORDINGS), 0..5)) {
        let items = check_merge(&answers, RECORDINGS)?;
        if let Some(merged) = merged_of(&answers, RECORDINGS) {
            let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
            prop_assert_eq!(xml::record_ids(&merged), ids);
        }
    }
}

fn merged_of(answers: &[Answer], kind: Kind) -> Option<Vec<u8>> {
    xml::merge_lists(answers.iter().map(|a| a.body.as_bytes()), kind.list)
}

/// The merge of `answers` is `None` exactly when nothing was listed, and
/// otherwise the lists' contents in server order, which parse as the same
/// elements. Returns the elements listed.
fn check_merge(answers: &[Answer], kind: Kind) -> Result<Vec<Item>, TestCaseError> {
    let items: Vec<Item> = answers.iter().flat_map(|a| a.items.clone()).collect();
    let merged = merged_of(answers, kind);
    let Some(merged) = merged else {
        prop_assert!(items.is_empty(), "nothing merged from {answers:#?}");
        return Ok(items);
    };
    prop_assert!(!items.is_empty());
    let contents: String = answers.iter().filter_map(|a| a.content.clone()).collect();
    let expected = format!(
        "<response><returncode>SUCCESS</returncode><{list}>{contents}</{list}></response>",
        list = kind.list
    );
    prop_assert_eq!(String::from_utf8_lossy(&merged), expected.as_str());
    let parsed = parse_merged(&merged, kind);
    prop_assert!(
        parsed.is_ok(),
        "{:?} in {}",
        parsed,
        String::from_utf8_lossy(&merged)
    );
    let xmls: Vec<String> = items.iter().map(|i| i.xml.clone()).collect();
    prop_assert_eq!(parsed.unwrap(), xmls);
    Ok(items)
}

// ---------------------------------------------------------------------------
// 4. servers.json.

/// Host values as administrators write them, right and wrong.
fn host() -> BoxedStrategy<String> {
    let parts = (
        select(vec!["https", "http", "HTTPS", "ftp", ""]),
        select(vec!["://", ":/", ""]),
        select(vec![
            "a.example.org",
            "BBB1.Example.org",
            "127.0.0.1",
            "[::1]",
            "",
            "a b",
            "u@h",
            "%41",
            "ä.example",
            "b.example.org",
        ]),
        select(vec!["", ":8080", ":0", ":99999", ":"]),
        select(vec![
            "",
            "/",
            "/bigbluebutton/api",
            "/bigbluebutton/api/",
            "/p/bigbluebutton/api/",
            "//bigbluebutton/api",
            "/other",
            "/?q",
            "#f",
            "/bigbluebutton/api//",
            " ",
        ]),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}"));
    prop_oneof![4 => parts, 1 => text(20)].boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(12).prop_map(Value::from),
        host().prop_map(Value::from),
    ]
    .boxed()
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        select(vec![
            "host", "secret", "checksum", "state", "weight", "wieght"
        ])
        .prop_map(str::to_string),
        text(6),
    ];
    json_leaf().prop_recursive(3, 32, 5, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::from),
            vec((key.clone(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A servers.json entry: each known field present or not, right or wrong.
fn server_entry() -> impl Strategy<Value = Value> {
    (
        option::of(prop_oneof![4 => host().prop_map(Value::from), 1 => json_leaf()]),
        option::of(prop_oneof![3 => text(12).prop_map(Value::from), 1 => json_leaf()]),
        option::of(
            select(vec!["sha1", "sha256", "SHA384", " sha512 ", "md5", ""]).prop_map(Value::from),
        ),
        option::of(
            select(vec!["enabled", "cordoned", "disabled", "Enabled", ""]).prop_map(Value::from),
        ),
        option::of(
            prop_oneof![
                select(vec![0.0, -1.0, 1.0, 2.5, 1e308, f64::MIN_POSITIVE]),
                any::<f64>()
            ]
            .prop_map(Value::from),
        ),
        option::of(json_leaf()),
    )
        .prop_map(|(host, secret, checksum, state, weight, unknown)| {
            let mut entry = serde_json::Map::new();
            for (key, value) in [
                ("host", host),
                ("secret", secret),
                ("checksum", checksum),
                ("state", state),
                ("weight", weight),
                ("comment", unknown),
            ] {
                if let Some(value) = value {
                    entry.insert(key.to_string(), value);
                }
            }
            Value::Object(entry)
        })
}

/// What any accepted servers file must give: as many servers as entries,
/// distinct, each root normalised (http(s), no trailing slash) with its API
/// root under it, a usable secret and weight; written back as a file of
/// their own (by API root), they read the same.
fn check_servers(servers: &[ServerSpec], entries: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(servers.len(), entries);
    for (i, server) in servers.iter().enumerate() {
        prop_assert!(server.base.starts_with("https://") || server.base.starts_with("http://"));
        prop_assert!(!server.base.ends_with('/'), "{}", server.base);
        prop_assert_eq!(
            server.api_root(),
            format!("{}/bigbluebutton/api/", server.base)
        );
        prop_assert!(!server.secret.trim().is_empty());
        prop_assert!(server.weight > 0.0 && server.weight.is_finite());
        prop_assert!(servers[..i].iter().all(|s| s.base != server.base));
    }
    let again: Vec<Value> = servers
        .iter()
        .map(|s| {
            json!({
                "host": s.api_root(),
                "secret": s.secret,
                "checksum": s.checksum.name(),
                "state": s.state.name(),
                "weight": s.weight,
            })
        })
        .collect();
    let reread = parse_servers(&Value::from(again).to_string(), "again.json");
    prop_assert!(reread.is_ok(), "{reread:?}");
    same_servers(&reread.unwrap(), servers)
}

/// Equal, but for weights: serde_json (without `float_roundtrip`) may read
/// a decimal one unit in the last place off the number that was written.
fn same_servers(read: &[ServerSpec], expected: &[ServerSpec]) -> Result<(), TestCaseError> {
    let exact = |servers: &[ServerSpec]| -> Vec<ServerSpec> {
        servers
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.weight = 1.0;
                s
            })
            .collect()
    };
    prop_assert_eq!(exact(read), exact(expected));
    for (r, e) in read.iter().zip(expected) {
        prop_assert!(
            (r.weight - e.weight).abs() <= e.weight * 1e-15,
            "{} {}",
            r.weight,
            e.weight
        );
    }
    Ok(())
}

/// Entry `i` written one of the ways the README allows, and the root it
/// means: scheme in any case, server root or API root, with or without
/// (several) trailing slashes, a port or none, a path prefix or none.
fn good_host(i: usize) -> impl Strategy<Value = (String, String)> {
    (
        select(vec!["https", "http", "HTTPS", "Http"]),
        select(vec![
            "bbb{}.example.org",
            "BBB{}.Example.ORG",
            "10.0.0.{}",
            "[::{}]",
        ]),
        select(vec!["", ":8080", ":443", ":65535", ":0"]),
        select(vec![
            ("", ""),
            ("/", ""),
            ("/bigbluebutton/api", ""),
            ("/bigbluebutton/api/", ""),
            ("/bigbluebutton/api//", ""),
            ("//bigbluebutton/api", ""),
            ("/p/bigbluebutton/api", "/p"),
            ("/p/q//bigbluebutton/api/", "/p/q"),
        ]),
        select(vec!["", " "]),
    )
        .prop_map(move |(scheme, name, port, (path, prefix), space)| {
            let name = name.replace("{}", &i.to_string());
            let root = format!(
                "{}://{}{port}{prefix}",
                scheme.to_ascii_lowercase(),
                name.to_ascii_lowercase()
            );
            (format!("{space}{scheme}://{name}{port}{path}{space}"), root)
        })
}

/// A whole servers.json written right: distinct servers, every field right.
fn good_entries() -> impl Strategy<Value = Vec<(Value, ServerSpec)>> {
    (1usize..5).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                (
                    good_host(i),
                    "\\PC{0,8}",
                    option::of(select(Algorithm::ALL.to_vec())),
                    option::of(select(vec!["enabled", "cordoned", "disabled"])),
                    option::of(0.001f64..1000.0),
                )
                    .prop_map(|((host, root), secret, checksum, state, weight)| {
                        let secret = format!("{secret}s");
                        let mut entry = json!({"host": host, "secret": secret});
                        let mut spec =
                            ServerSpec::new(root, secret, checksum.unwrap_or(Algorithm::Sha256));
                        if let Some(checksum) = checksum {
                            entry["checksum"] = json!(checksum.name().to_ascii_uppercase());
                        }
                        if let Some(state) = state {
                            entry["state"] = json!(state);
                            spec.state = match state {
                                "cordoned" => ServerState::Cordoned,
                                "disabled" => ServerState::Disabled,
                                _ => ServerState::Enabled,
                            };
                        }
                        if let Some(weight) = weight {
                            entry["weight"] = json!(weight);
                            spec.weight = weight;
                        }
                        (entry, spec)
                    })
            })
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(config())]

    /// A file written right is read as meant; the same file with one host
    /// given a bad port or path is refused, naming that server.
    #[test]
    fn servers_written_right_are_read_as_meant(
        entries in good_entries(),
        spoiled in any::<Index>(),
        spoil in option::of(select(vec![
            ":99999", ":", ":65536", ":8o", "/other", "/bigbluebutton",
        ])),
    ) {
        let (values, specs): (Vec<Value>, Vec<ServerSpec>) = entries.into_iter().unzip();
        let text = Value::from(values.clone()).to_string();
        let servers = parse_servers(&text, "servers.json");
        prop_assert!(servers.is_ok(), "{text}: {servers:?}");
        let servers = servers.unwrap();
        same_servers(&servers, &specs)?;
        check_servers(&servers, specs.len())?;

        if let Some(spoil) = spoil {
            let mut values = values;
            let n = spoiled.index(values.len());
            let host = values[n]["host"].as_str().unwrap().trim().to_string();
            values[n]["host"] = json!(format!("{host}{spoil}"));
            let error = parse_servers(&Value::from(values).to_string(), "servers.json");
            prop_assert!(error.is_err(), "{host}{spoil}: {error:?}");
            let error = error.unwrap_err().to_string();
            let named = format!("servers.json: server #{} (", n + 1);
            prop_assert!(error.starts_with(&named), "{error}");
        }
    }

    /// Any text: read or refused with a message naming the file.
    #[test]
    fn any_servers_text_is_read_or_refused(text in prop_oneof![
        any::<String>(),
        any_bytes(64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        json_value().prop_map(|v| v.to_string()),
    ]) {
        match parse_servers(&text, "servers.json") {
            Ok(servers) => {
                let entries = serde_json::from_str::<Value>(&text).unwrap();
                check_servers(&servers, entries.as_array().unwrap().len())?;
            }
            Err(e) => prop_assert!(e.to_string().starts_with("servers.json: "), "{e}"),
        }
    }

    /// Arrays of server entries, each field right or wrong: the same.
    #[test]
    fn server_entries_are_read_or_refused(entries in vec(server_entry(), 0..4)) {
        let text = Value::from(entries.clone()).to_string();
        match parse_servers(&text, "servers.json") {
            Ok(servers) => check_servers(&servers, entries.len())?,
            Err(e) => prop_assert!(e.to_string().starts_with("servers.json: "), "{e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Form bodies: a POST with an empty query signs its body (bbb-web 2.7+).

/// The body as a backend must receive it: the client's pairs but the
/// checksum, byte for byte and in order, then the backend's checksum.
fn resigned_body(body: &[u8], call: &str, algorithm: Algorithm) -> Vec<u8> {
    let kept: Vec<&[u8]> = body
        .split(|&b| b == b'&')
        .filter(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            form_urlencoded::parse(name).next().map(|(k, _)| k) != Some("checksum".into())
        })
        .collect();
    let mut out = kept.join(&b'&');
    let (signing, _) = checksum::form_body_signing_string(&out);
    if !out.is_empty() {
        out.push(b'&');
    }
    out.extend_from_slice(b"checksum=");
    out.extend_from_slice(checksum::sign(call, &signing, BACKEND_SECRET, algorithm).as_bytes());
    out
}

fn post(
    call: Call,
    query: Option<&str>,
    body: Vec<u8>,
    secret: &str,
) -> Result<ApiRequest, tinyscale::errors::ApiError> {
    ApiRequest::parse(
        call,
        Method::POST,
        query,
        Some(HeaderValue::from_static(FORM)),
        Bytes::from(body),
        secret,
        &Algorithm::ALL,
    )
}

proptest! {
    #![proptest_config(config())]

    /// Any body bytes: parsed or refused. When the client signed it, it is
    /// accepted, and a backend receives the same bytes but the checksum,
    /// signed so that the backend accepts them too.
    #[test]
    fn any_form_body_parses_or_is_refused(
        call in select(CALLS.to_vec()),
        body in prop_oneof![any_bytes(96), raw_query().prop_map(String::into_bytes)],
        query in select(vec![None, Some("")]),
        sign_it in any::<bool>(),
        algorithm in select(Algorithm::ALL.to_vec()),
        backend_algorithm in select(Algorithm::ALL.to_vec()),
    ) {
        let (signing, sums) = checksum::form_body_signing_string(&body);
        let signed = sign_it && sums.is_empty();
        let mut body = body;
        if signed {
            body.extend_from_slice(b"&checksum=");
            let sum = checksum::sign(call.name(), &signing, SECRET, algorithm);
            body.extend_from_slice(sum.as_bytes());
        }
        let result = post(call, query, body.clone(), SECRET);
        prop_assert_eq!(result.is_ok(), signed, "{:?}", result);
        if let Ok(request) = result {
            let _ = request.param("meetingID");
            let _ = request.record_ids();
            let server = backend(backend_algorithm);
            let out = request.for_server(&server, None);
            prop_assert_eq!(&out.uri, &format!("{}{}", server.api_root(), call.name()));
            let expected = resigned_body(&body, call.name(), backend_algorithm);
            prop_assert_eq!(&out.body[..], &expected[..]);
            let accepted = post(call, None, out.body.to_vec(), BACKEND_SECRET);
            prop_assert!(accepted.is_ok(), "{:?}", accepted);
        }
    }

    /// A body signed by the client (parameters in any order, spaces and
    /// escapes written either way, the checksum anywhere) is accepted and
    /// decodes to what was encoded; re-signed for a backend it keeps every
    /// other byte; signed with another secret it is refused.
    #[test]
    fn a_signed_form_body_verifies_and_is_resigned_in_place(
        call in select(CALLS.to_vec()),
        others in vec((param_name(), text(16)), 0..6),
        meeting in option::of(text(16)),
        meeting_at in any::<Index>(),
        checksum_at in any::<Index>(),
        how in encoding(),
        algorithm in select(Algorithm::ALL.to_vec()),
        backend_algorithm in select(Algorithm::ALL.to_vec()),
    ) {
        let mut params = others;
        if let Some(meeting) = &meeting {
            let at = meeting_at.index(params.len() + 1);
            params.insert(at, ("meetingID".into(), meeting.clone()));
        }
        let mut pairs = encode_pairs(&params, how);
        let unsigned = pairs.join("&");
        let (signing, sums) = checksum::form_body_signing_string(unsigned.as_bytes());
        prop_assert!(sums.is_empty());
        // BBB's signing string does not depend on how the client encoded.
        let plain = encode_pairs(&params, PLAIN).join("&");
        let (plain_signing, _) = checksum::form_body_signing_string(plain.as_bytes());
        prop_assert_eq!(&signing, &plain_signing);

        let sum = checksum::sign(call.name(), &signing, SECRET, algorithm);
        let checksum_pair = format!("{}={sum}", encode("checksum", how));
        pairs.insert(checksum_at.index(pairs.len() + 1), checksum_pair);
        let body = pairs.join("&");

        let request = post(call, None, body.clone().into_bytes(), SECRET);
        prop_assert!(request.is_ok(), "{body:?}: {request:?}");
        let request = request.unwrap();
        for (name, _) in &params {
            let value = request.param(name);
            prop_assert_eq!(value.as_deref(), first(&params, name), "{}", name);
        }
        prop_assert_eq!(request.meeting_id(), meeting.as_deref().filter(|m| !m.is_empty()));

        let server = backend(backend_algorithm);
        let out = request.for_server(&server, None);
        let resigned = checksum::sign(call.name(), &signing, BACKEND_SECRET, backend_algorithm);
        let expected = if unsigned.is_empty() {
            format!("checksum={resigned}")
        } else {
            format!("{unsigned}&checksum={resigned}")
        };
        prop_assert_eq!(String::from_utf8_lossy(&out.body), expected.as_str());
        let accepted = post(call, None, out.body.to_vec(), BACKEND_SECRET);
        prop_assert!(accepted.is_ok(), "{:?}", accepted);

        let refused = post(call, None, body.into_bytes(), BACKEND_SECRET);
        prop_assert!(refused.is_err());
    }
}
