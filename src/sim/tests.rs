//! The simulator over real HTTP: checksums, meeting and recording calls,
//! and the Refuse / Hang modes.

use super::{Mode, SimHandle};
use crate::checksum::{Algorithm, sign, signed_query};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "sim-test-secret";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: String,
}

async fn send(
    client: &HttpClient,
    method: &str,
    url: String,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = client.request(request).await.expect("answer");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = response.status();
    let content_type = header("content-type").unwrap_or_default();
    let location = header("location");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        content_type,
        location,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8"),
    }
}

/// A signed GET of `call` with `query` (raw, as a client would send it).
async fn api(sim: &SimHandle, client: &HttpClient, call: &str, query: &str) -> Answer {
    let q = signed_query(call, query, &sim.secret(), Algorithm::Sha256);
    let answer = send(
        client,
        "GET",
        format!("{}/bigbluebutton/api/{call}?{q}", sim.url()),
        None,
        b"",
    )
    .await;
    if answer.content_type.starts_with("text/xml") {
        assert_well_formed(&answer.body);
    }
    answer
}

fn assert_well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => return,
            Ok(_) => {}
            Err(e) => panic!("not well-formed ({e}): {xml}"),
        }
    }
}

/// The text of the first `<name>` element, unescaped (enough for tests).
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

fn count(xml: &str, needle: &str) -> usize {
    xml.matches(needle).count()
}

#[tokio::test]
async fn api_index_needs_no_checksum() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    for path in ["/bigbluebutton/api", "/bigbluebutton/api/"] {
        let a = send(&c, "GET", format!("{}{path}", sim.url()), None, b"").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type, "text/xml;charset=utf-8");
        assert_eq!(tag(&a.body, "returncode").as_deref(), Some("SUCCESS"));
        assert_eq!(tag(&a.body, "version").as_deref(), Some("2.0"));
    }
    let a = send(
        &c,
        "GET",
        format!("{}/bigbluebutton/api/nonsense?checksum=1", sim.url()),
        None,
        b"",
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.content_type.starts_with("text/plain"));
    sim.stop().await;
}

#[tokio::test]
async fn checksum_ok_bad_missing_duplicate() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let base = format!("{}/bigbluebutton/api/getMeetings", sim.url());
    // Every algorithm, and the PHP library's `?&checksum=`.
    for algorithm in Algorithm::ALL {
        let sum = sign("getMeetings", "", SECRET, algorithm);
        let a = send(&c, "GET", format!("{base}?&checksum={sum}"), None, b"").await;
        assert_eq!(
            tag(&a.body, "returncode").as_deref(),
            Some("SUCCESS"),
            "{algorithm}"
        );
        assert_eq!(tag(&a.body, "messageKey").as_deref(), Some("noMeetings"));
    }
    let good = sign("getMeetings", "", SECRET, Algorithm::Sha1);
    let bad = sign("getMeetings", "", "other", Algorithm::Sha1);
    for query in [
        format!("checksum={bad}"),
        String::new(),
        format!("checksum={good}&checksum={good}"),
        format!("checksum={}", &good[..39]),
    ] {
        let a = send(&c, "GET", format!("{base}?{query}"), None, b"").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.body,
            "<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey>\
             <message>Checksums do not match</message></response>",
            "{query}"
        );
    }
    let seen = sim.requests();
    assert_eq!(seen.len(), 8);
    assert!(
        seen[..4]
            .iter()
            .all(|r| r.checksum_ok && r.call == "getMeetings")
    );
    assert!(seen[4..].iter().all(|r| !r.checksum_ok));
    assert_eq!(
        seen[0].raw_query,
        format!(
            "&checksum={}",
            sign("getMeetings", "", SECRET, Algorithm::Sha1)
        )
    );
    sim.stop().await;
}

#[tokio::test]
async fn form_post_create_is_checked_over_the_body() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let sum = sign(
        "create",
        "meetingID=form-1&name=Form+Meeting",
        SECRET,
        Algorithm::Sha1,
    );
    let body = format!("name=Form%20Meeting&meetingID=form-1&checksum={sum}");
    let a = send(
        &c,
        "POST",
        format!("{}/bigbluebutton/api/create", sim.url()),
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        tag(&a.body, "returncode").as_deref(),
        Some("SUCCESS"),
        "{}",
        a.body
    );
    assert!(sim.has_meeting("form-1"));
    let seen = sim.requests();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].raw_query, "");
    assert_eq!(seen[0].body, Bytes::from(body));
    sim.stop().await;
}

#[tokio::test]
async fn create_duplicate_and_not_unique() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let q =
        "name=Room+%26+Co&meetingID=room%201&attendeePW=ap&moderatorPW=mp&meta_bn-origin=Moodle";
    let a = api(&sim, &c, "create", q).await;
    assert_eq!(tag(&a.body, "returncode").as_deref(), Some("SUCCESS"));
    assert_eq!(tag(&a.body, "meetingID").as_deref(), Some("room 1"));
    assert_eq!(tag(&a.body, "messageKey").as_deref(), Some(""));
    assert!(a.body.contains("<message></message>"));
    let internal = tag(&a.body, "internalMeetingID").expect("internal ID");
    assert_eq!(internal.split('-').next().map(str::len), Some(40));

    let again = api(&sim, &c, "create", q).await;
    assert_eq!(tag(&again.body, "returncode").as_deref(), Some("SUCCESS"));
    assert_eq!(
        tag(&again.body, "messageKey").as_deref(),
        Some("duplicateWarning")
    );
    assert_eq!(tag(&again.body, "internalMeetingID"), Some(internal));

    // No passwords at all is a duplicate too.
    let bare = api(&sim, &c, "create", "name=Room&meetingID=room+1").await;
    assert_eq!(
        tag(&bare.body, "messageKey").as_deref(),
        Some("duplicateWarning")
    );

    for other in ["attendeePW=ap&moderatorPW=other", "attendeePW=ap"] {
        let a = api(
            &sim,
            &c,
            "create",
            &format!("name=Room&meetingID=room+1&{other}"),
        )
        .await;
        assert_eq!(tag(&a.body, "returncode").as_deref(), Some("FAILED"));
        assert_eq!(tag(&a.body, "messageKey").as_deref(), Some("idNotUnique"));
        assert_eq!(
            tag(&a.body, "message").as_deref(),
            Some(
                "A meeting already exists with that meeting ID.  Please use a different meeting ID."
            )
        );
    }

    let a = api(&sim, &c, "create", "name=No+ID").await;
    assert_eq!(
        tag(&a.body, "messageKey").as_deref(),
        Some("missingParamMeetingID")
    );
    let a = api(&sim, &c, "create", "meetingID=x").await;
    assert_eq!(
        tag(&a.body, "messageKey").as_deref(),
        Some("missingParamName")
    );

    assert_eq!(sim.meeting_ids(), vec!["room 1".to_string()]);
    let info = api(&sim, &c, "getMeetingInfo", "meetingID=room+1").await;
    assert_eq!(tag(&info.body, "meetingName").as_deref(), Some("Room & Co"));
    assert_eq!(tag(&info.body, "bn-origin").as_deref(), Some("Moodle"));
    sim.stop().await;
}

#[tokio::test]
async fn values_are_escaped_and_decoded() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    // `+` and `%20` are both spaces; `%2B` is a plus; non-ASCII stays.
    let q = "name=%3Cb%3E%22Gr%C3%BC%C3%9Fe%22+%26+%27x%27&meetingID=a%2Bb%20c%25";
    let a = api(&sim, &c, "create", q).await;
    assert_eq!(tag(&a.body, "meetingID").as_deref(), Some("a+b c%"));
    assert!(sim.has_meeting("a+b c%"));
    let list = api(&sim, &c, "getMeetings", "").await;
    assert!(
        list.body
            .contains("&lt;b&gt;&quot;Grüße&quot; &amp; &apos;x&apos;")
    );
    assert_eq!(
        tag(&list.body, "meetingName").as_deref(),
        Some("<b>\"Grüße\" & 'x'")
    );
    sim.stop().await;
}

#[tokio::test]
async fn running_only_after_join_and_join_redirects() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    api(
        &sim,
        &c,
        "create",
        "name=R&meetingID=r1&attendeePW=ap&moderatorPW=mp&record=true",
    )
    .await;
    let running = api(&sim, &c, "isMeetingRunning", "meetingID=r1").await;
    assert_eq!(tag(&running.body, "running").as_deref(), Some("false"));
    let unknown = api(&sim, &c, "isMeetingRunning", "meetingID=foobar").await;
    assert_eq!(tag(&unknown.body, "returncode").as_deref(), Some("SUCCESS"));
    assert_eq!(tag(&unknown.body, "running").as_deref(), Some("false"));
    let info = api(&sim, &c, "getMeetingInfo", "meetingID=r1").await;
    assert_eq!(tag(&info.body, "hasUserJoined").as_deref(), Some("false"));
    assert_eq!(tag(&info.body, "recording").as_deref(), Some("true"));

    let join = api(&sim, &c, "join", "meetingID=r1&fullName=Ada+L&password=mp").await;
    assert_eq!(join.status, StatusCode::FOUND);
    let location = join.location.expect("location");
    let prefix = format!("{}/html5client/join?sessionToken=", sim.url());
    assert!(location.starts_with(&prefix), "{location}");
    let page = send(&c, "GET", location, None, b"").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("joined") && page.body.contains("Ada L"));

    let running = api(&sim, &c, "isMeetingRunning", "meetingID=r1").await;
    assert_eq!(tag(&running.body, "running").as_deref(), Some("true"));

    let viewer = api(
        &sim,
        &c,
        "join",
        "meetingID=r1&fullName=Bob&role=viewer&redirect=false",
    )
    .await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert_eq!(
        tag(&viewer.body, "messageKey").as_deref(),
        Some("successfullyJoined")
    );
    assert!(tag(&viewer.body, "url").is_some_and(|u| u.starts_with(&prefix)));
    assert!(sim.add_attendee("r1", "Cam", "MODERATOR", true));
    assert!(!sim.add_attendee("nope", "Cam", "MODERATOR", true));

    let info = api(&sim, &c, "getMeetingInfo", "meetingID=r1").await;
    assert_eq!(tag(&info.body, "participantCount").as_deref(), Some("3"));
    assert_eq!(tag(&info.body, "moderatorCount").as_deref(), Some("2"));
    assert_eq!(tag(&info.body, "videoCount").as_deref(), Some("1"));
    assert_eq!(count(&info.body, "<attendee>"), 3);
    assert_ne!(tag(&info.body, "startTime").as_deref(), Some("0"));

    let wrong = api(&sim, &c, "join", "meetingID=r1&fullName=Eve&password=guess").await;
    assert_eq!(wrong.status, StatusCode::FOUND);
    assert!(
        wrong
            .location
            .is_some_and(|l| l.contains("invalidPassword"))
    );

    let ended = api(&sim, &c, "end", "meetingID=r1").await;
    assert_eq!(
        tag(&ended.body, "messageKey").as_deref(),
        Some("sentEndMeetingRequest")
    );
    assert!(!sim.has_meeting("r1"));
    let again = api(&sim, &c, "end", "meetingID=r1").await;
    assert_eq!(tag(&again.body, "messageKey").as_deref(), Some("notFound"));
    let info = api(&sim, &c, "getMeetingInfo", "meetingID=r1").await;
    assert_eq!(
        tag(&info.body, "message").as_deref(),
        Some("A meeting with that ID does not exist")
    );
    sim.stop().await;
}

#[tokio::test]
async fn join_of_unknown_meeting_redirects_with_errors() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let a = api(
        &sim,
        &c,
        "join",
        "meetingID=ghost&fullName=X&role=MODERATOR",
    )
    .await;
    assert_eq!(a.status, StatusCode::FOUND);
    let location = a.location.expect("location");
    let (target, errors) = location.split_once("?errors=").expect("errors");
    assert_eq!(target, format!("{}/logout", sim.url()));
    let decoded: String = form_urlencoded::parse(format!("e={errors}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .collect();
    let json: serde_json::Value = serde_json::from_str(&decoded).expect("json");
    assert_eq!(json[0]["key"], "invalidMeetingIdentifier");
    sim.stop().await;
}

#[tokio::test]
async fn a_join_with_another_create_time_is_refused() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let created = api(&sim, &c, "create", "name=T&meetingID=t1").await;
    let create_time = tag(&created.body, "createTime").expect("createTime");
    let join = |create_time: String| {
        let query = format!("meetingID=t1&fullName=Ada&role=MODERATOR&createTime={create_time}");
        let (sim, c) = (&sim, &c);
        async move {
            api(sim, c, "join", &query)
                .await
                .location
                .expect("location")
        }
    };
    let ok = join(create_time.clone()).await;
    assert!(ok.contains("/html5client/join?sessionToken="), "{ok}");
    for other in [format!("{create_time}1"), "yesterday".into()] {
        let refused = join(other).await;
        assert!(refused.starts_with(&format!("{}/logout?errors=", sim.url())));
        assert!(refused.contains("mismatchCreateTimeParam"), "{refused}");
    }
    sim.stop().await;
}

#[tokio::test]
async fn chat_and_documents_need_the_meeting() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let a = api(&sim, &c, "sendChatMessage", "meetingID=c1&message=hi").await;
    assert_eq!(
        tag(&a.body, "messageKey").as_deref(),
        Some("meetingNotFound")
    );
    api(&sim, &c, "create", "name=Chat&meetingID=c1").await;
    let a = api(&sim, &c, "sendChatMessage", "meetingID=c1&message=hi").await;
    assert_eq!(
        tag(&a.body, "messageKey").as_deref(),
        Some("meetingNotFound")
    );
    sim.add_attendee("c1", "U", "VIEWER", false);
    let a = api(&sim, &c, "sendChatMessage", "meetingID=c1&message=hi").await;
    assert_eq!(tag(&a.body, "returncode").as_deref(), Some("SUCCESS"));

    let xml = b"<modules><module name=\"presentation\"><document url=\"https://x/y.pdf\"/></module></modules>";
    for (id, code) in [("c1", "SUCCESS"), ("c2", "FAILED")] {
        let q = signed_query(
            "insertDocument",
            &format!("meetingID={id}"),
            SECRET,
            Algorithm::Sha1,
        );
        let a = send(
            &c,
            "POST",
            format!("{}/bigbluebutton/api/insertDocument?{q}", sim.url()),
            Some("application/xml"),
            xml,
        )
        .await;
        assert_eq!(tag(&a.body, "returncode").as_deref(), Some(code));
    }
    let last = sim.requests().pop().expect("logged");
    assert_eq!(last.content_type.as_deref(), Some("application/xml"));
    assert_eq!(&last.body[..], &xml[..]);
    sim.stop().await;
}

#[tokio::test]
async fn recordings_filters_and_changes() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let none = api(&sim, &c, "getRecordings", "").await;
    assert_eq!(
        tag(&none.body, "messageKey").as_deref(),
        Some("noRecordings")
    );
    assert!(none.body.contains("<recordings/>"));

    sim.seed_recording("rec-a1", "m1", "First ]]> & <one>", true);
    sim.seed_recording("rec-a2", "m1", "Second", false);
    sim.seed_recording("rec-b1", "m2", "Third", true);
    let ids = |xml: &str| -> Vec<String> {
        xml.split("<recordID>")
            .skip(1)
            .filter_map(|s| s.split("</recordID>").next())
            .map(str::to_string)
            .collect()
    };
    let all = api(&sim, &c, "getRecordings", "").await;
    assert_eq!(ids(&all.body), vec!["rec-a1", "rec-a2", "rec-b1"]);
    let by_meeting = api(&sim, &c, "getRecordings", "meetingID=m2,m3").await;
    assert_eq!(ids(&by_meeting.body), vec!["rec-b1"]);
    let by_prefix = api(&sim, &c, "getRecordings", "recordID=rec-a").await;
    assert_eq!(ids(&by_prefix.body), vec!["rec-a1", "rec-a2"]);
    let by_state = api(&sim, &c, "getRecordings", "state=unpublished").await;
    assert_eq!(ids(&by_state.body), vec!["rec-a2"]);
    let exact_meeting = api(&sim, &c, "getRecordings", "meetingID=m").await;
    assert!(ids(&exact_meeting.body).is_empty());

    let a = api(
        &sim,
        &c,
        "publishRecordings",
        "recordID=rec-a2,ghost&publish=true",
    )
    .await;
    assert_eq!(tag(&a.body, "published").as_deref(), Some("true"));
    assert_eq!(sim.recording_published("rec-a2"), Some(true));
    let a = api(&sim, &c, "publishRecordings", "recordID=rec-a2").await;
    assert_eq!(
        tag(&a.body, "messageKey").as_deref(),
        Some("missingParamPublish")
    );
    let a = api(
        &sim,
        &c,
        "publishRecordings",
        "recordID=ghost&publish=false",
    )
    .await;
    assert_eq!(tag(&a.body, "messageKey").as_deref(), Some("notFound"));
    assert_eq!(
        tag(&a.body, "message").as_deref(),
        Some("We could not find recordings")
    );
    let a = api(&sim, &c, "deleteRecordings", "").await;
    assert_eq!(
        tag(&a.body, "messageKey").as_deref(),
        Some("missingParamRecordID")
    );

    let a = api(
        &sim,
        &c,
        "updateRecordings",
        "recordID=rec-b1&meta_Course=Maths",
    )
    .await;
    assert_eq!(tag(&a.body, "updated").as_deref(), Some("true"));
    let by_meta = api(&sim, &c, "getRecordings", "meta_course=Maths").await;
    assert_eq!(ids(&by_meta.body), vec!["rec-b1"]);

    let a = api(&sim, &c, "deleteRecordings", "recordID=rec-b1").await;
    assert_eq!(tag(&a.body, "deleted").as_deref(), Some("true"));
    assert!(!sim.has_recording("rec-b1"));
    sim.stop().await;
}

#[tokio::test]
async fn text_tracks_are_json() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    sim.seed_recording("rec-t", "m1", "T", true);
    let a = api(&sim, &c, "getRecordingTextTracks", "recordID=ghost").await;
    assert_eq!(a.content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(json["response"]["messageKey"], "noRecordings");
    assert_eq!(json["response"]["message"], "No recording found for ghost");

    let q = signed_query(
        "putRecordingTextTrack",
        "recordID=rec-t&kind=subtitles&lang=de-DE&label=Deutsch",
        SECRET,
        Algorithm::Sha1,
    );
    let body = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.vtt\"\r\n\r\nWEBVTT\r\n--XX--\r\n";
    let a = send(
        &c,
        "POST",
        format!("{}/bigbluebutton/api/putRecordingTextTrack?{q}", sim.url()),
        Some("multipart/form-data; boundary=XX"),
        body,
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(json["response"]["returncode"], "SUCCESS");
    assert_eq!(json["response"]["recordId"], "rec-t");

    let a = api(&sim, &c, "getRecordingTextTracks", "recordID=rec-t").await;
    let json: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(json["response"]["returncode"], "SUCCESS");
    assert_eq!(json["response"]["tracks"][0]["lang"], "de-DE");
    assert_eq!(json["response"]["tracks"][0]["label"], "Deutsch");
    sim.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_creates() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (sim, c) = (sim.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            let a = api(&sim, &c, "create", &format!("name=M{i}&meetingID=m-{i}")).await;
            tag(&a.body, "returncode")
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").as_deref(), Some("SUCCESS"));
    }
    assert_eq!(sim.meeting_ids().len(), 50);
    let list = api(&sim, &c, "getMeetings", "").await;
    assert_eq!(count(&list.body, "<meeting>"), 50);
    sim.stop().await;
}

/// One raw HTTP/1.1 keep-alive request on `stream`; the answer's head.
async fn raw_get(stream: &mut TcpStream, path: &str) -> std::io::Result<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: sim\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn refuse_really_refuses_and_normal_rebinds_the_same_port() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let addr = sim.addr();
    let mut open = TcpStream::connect(addr).await.expect("connect");
    let head = raw_get(&mut open, "/bigbluebutton/api")
        .await
        .expect("answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    sim.set_mode(Mode::Refuse);
    let refused = TcpStream::connect(addr).await.expect_err("must be refused");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    // The keep-alive connection is closed, not answered.
    let reused = tokio::time::timeout(
        Duration::from_secs(5),
        raw_get(&mut open, "/bigbluebutton/api"),
    )
    .await
    .expect("closed promptly");
    assert!(reused.is_err(), "{reused:?}");

    sim.clear_requests();
    sim.set_mode(Mode::Normal);
    assert_eq!(sim.addr(), addr);
    let mut again = TcpStream::connect(addr).await.expect("rebound");
    let head = raw_get(&mut again, "/bigbluebutton/api")
        .await
        .expect("answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(sim.requests().len(), 1);

    // Refuse and back again, twice more: the port stays ours.
    for _ in 0..2 {
        sim.set_mode(Mode::Refuse);
        assert!(TcpStream::connect(addr).await.is_err());
        sim.set_mode(Mode::Normal);
        let c = client();
        let a = send(
            &c,
            "GET",
            format!("{}/bigbluebutton/api", sim.url()),
            None,
            b"",
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    sim.stop().await;
}

#[tokio::test]
async fn hang_accepts_but_does_not_answer_until_normal() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    sim.set_mode(Mode::Hang);
    let mut stream = TcpStream::connect(sim.addr())
        .await
        .expect("hang still accepts");
    let waiting = tokio::time::timeout(
        Duration::from_millis(300),
        raw_get(&mut stream, "/bigbluebutton/api"),
    )
    .await;
    assert!(waiting.is_err(), "answered while hanging: {waiting:?}");
    assert!(sim.requests().is_empty());

    // The request already sent is answered once the mode changes back.
    let pending = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    sim.set_mode(Mode::Normal);
    let head = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("answered after Normal")
        .expect("task");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(sim.requests().len(), 1);

    // Hang, then Refuse: the hanging request is dropped, never answered.
    sim.set_mode(Mode::Hang);
    let mut stream = TcpStream::connect(sim.addr()).await.expect("connect");
    let hanging = tokio::spawn(async move { raw_get(&mut stream, "/bigbluebutton/api").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.set_mode(Mode::Refuse);
    let result = tokio::time::timeout(Duration::from_secs(5), hanging)
        .await
        .expect("closed promptly")
        .expect("task");
    assert!(result.is_err(), "{result:?}");
    sim.stop().await;
}

#[tokio::test]
async fn stop_closes_everything_for_good() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let addr = sim.addr();
    let mut open = TcpStream::connect(addr).await.expect("connect");
    raw_get(&mut open, "/bigbluebutton/api")
        .await
        .expect("answer");
    tokio::time::timeout(Duration::from_secs(5), sim.stop())
        .await
        .expect("stop ends");
    assert!(TcpStream::connect(addr).await.is_err());
    assert!(raw_get(&mut open, "/bigbluebutton/api").await.is_err());
    sim.set_mode(Mode::Normal);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no rebind after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_mode_works_from_a_thread_outside_the_runtime() {
    let sim = SimHandle::start(SECRET).await.expect("start");
    let addr = sim.addr();
    let remote = sim.clone();
    std::thread::spawn(move || remote.set_mode(Mode::Refuse))
        .join()
        .expect("thread");
    assert_eq!(sim.mode(), Mode::Refuse);
    assert!(TcpStream::connect(addr).await.is_err());
    let remote = sim.clone();
    std::thread::spawn(move || remote.set_mode(Mode::Normal))
        .join()
        .expect("thread");
    let c = client();
    let a = api(&sim, &c, "getMeetings", "").await;
    assert_eq!(tag(&a.body, "messageKey").as_deref(), Some("noMeetings"));
    sim.stop().await;
}

#[tokio::test]
async fn debug_output_hides_the_secret() {
    let sim = SimHandle::start("sim-debug-secret-2718").await.unwrap();
    let core = format!("{:?}", sim.inner.core);
    assert!(!core.contains("sim-debug-secret-2718"), "{core}");
    assert!(
        core.contains("secret: ***") && core.contains(&sim.url()),
        "{core}"
    );
    let handle = format!("{sim:?}");
    assert!(!handle.contains("sim-debug-secret-2718"), "{handle}");
    sim.stop().await;
}
