//! Lists gathered from every server, and recording calls routed to the
//! servers that have the recordings.

mod support;

use hyper::Method;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn get_meetings_merges_every_server() {
    let cluster = Cluster::start(3).await;
    let reply = cluster.call("getMeetings", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert_eq!(reply.message_key(), Some("noMeetings"));
    assert!(reply.body.contains("<meetings/>"));

    let mut ids = Vec::new();
    for n in 0..5 {
        let id = format!("list-{n} & <x>");
        cluster.create(&id).await;
        ids.push(id);
    }
    let reply = cluster.call("getMeetings", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert_eq!(reply.content_type(), Some("text/xml;charset=utf-8"));
    assert_eq!(reply.body.matches("<meeting>").count(), 5, "{}", reply.body);
    for id in &ids {
        let escaped = id
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            reply
                .body
                .contains(&format!("<meetingID>{escaped}</meetingID>")),
            "{id}"
        );
    }
    // Still well-formed XML with one <response>.
    assert!(reply.body.starts_with("<response>") && reply.body.trim_end().ends_with("</response>"));
}

#[tokio::test(flavor = "multi_thread")]
async fn large_answers_pass_whole() {
    // An answer far larger than the balancer's read buffer per connection
    // (16 KiB) streams through it: every meeting, every attendee, each
    // element exactly as the server sent it.
    let cluster = Cluster::start(2).await;
    for n in 0..40 {
        let id = format!("big-{n}");
        let holder = cluster.create(&id).await;
        for a in 0..10 {
            cluster.sims[holder].add_attendee(
                &id,
                &format!("Attendee {a} of a large class"),
                "VIEWER",
                true,
            );
        }
    }
    let mut direct_meetings = Vec::new();
    for sim in &cluster.sims {
        let answer = direct(sim, "getMeetings", "").await;
        direct_meetings.extend(
            answer
                .body
                .split("<meeting>")
                .skip(1)
                .map(|m| m.split("</meeting>").next().unwrap().to_string()),
        );
    }
    let reply = cluster.call("getMeetings", "").await;
    assert!(
        reply.body.len() > 64 * 1024,
        "only {} bytes",
        reply.body.len()
    );
    assert_eq!(reply.body.matches("<meeting>").count(), 40);
    assert_eq!(reply.body.matches("<attendee>").count(), 400);
    for meeting in &direct_meetings {
        assert!(reply.body.contains(meeting.as_str()));
    }
}

fn seed(cluster: &Cluster) {
    cluster.sims[0].seed_recording("rec-a", "course-1", "Lecture A", true);
    cluster.sims[1].seed_recording("rec-b", "course-1", "Lecture B", false);
    cluster.sims[2].seed_recording("rec-c", "course-2", "Lecture C", true);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_recordings_merges_and_passes_filters_on() {
    let cluster = Cluster::start(3).await;
    let reply = cluster.call("getRecordings", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert_eq!(reply.message_key(), Some("noRecordings"));
    seed(&cluster);
    let reply = cluster.call("getRecordings", "").await;
    assert_eq!(
        reply.body.matches("<recording>").count(),
        3,
        "{}",
        reply.body
    );
    let reply = cluster.call("getRecordings", "meetingID=course-1").await;
    assert_eq!(
        reply.body.matches("<recording>").count(),
        2,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("rec-a") && reply.body.contains("rec-b"));
    let reply = cluster.call("getRecordings", "recordID=rec-c").await;
    assert_eq!(reply.body.matches("<recording>").count(), 1);
    let reply = cluster.call("getRecordings", "meetingID=nobody").await;
    assert_eq!(reply.message_key(), Some("noRecordings"));
    for sim in &cluster.sims {
        let seen = sim
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.call == "getRecordings")
            .unwrap();
        assert!(
            seen.raw_query.starts_with("meetingID=nobody&checksum="),
            "{}",
            seen.raw_query
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_spans_servers_and_reports_success_when_all_succeed() {
    let cluster = Cluster::start(3).await;
    seed(&cluster);
    let reply = cluster
        .call("publishRecordings", "recordID=rec-a,rec-b&publish=false")
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    // BBB says "published: true" for "done", whatever the new state.
    assert_eq!(reply.field("published"), Some("true"));
    assert_eq!(cluster.sims[0].recording_published("rec-a"), Some(false));
    assert_eq!(cluster.sims[1].recording_published("rec-b"), Some(false));
    assert_eq!(cluster.sims[2].recording_published("rec-c"), Some(true));
    // Each server was sent only its own recordIDs.
    let seen = cluster.sims[1]
        .requests()
        .into_iter()
        .find(|r| r.call == "publishRecordings")
        .unwrap();
    assert!(
        seen.raw_query
            .starts_with("recordID=rec-b&publish=false&checksum="),
        "{}",
        seen.raw_query
    );
    assert!(
        cluster.sims[2]
            .requests()
            .iter()
            .all(|r| r.call != "publishRecordings")
    );

    // One server only: the query goes on as the client wrote it.
    let reply = cluster
        .call(
            "publishRecordings",
            "recordID=rec-c,unknown-id&publish=false",
        )
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let seen = cluster.sims[2]
        .requests()
        .into_iter()
        .find(|r| r.call == "publishRecordings")
        .unwrap();
    assert!(
        seen.raw_query
            .starts_with("recordID=rec-c,unknown-id&publish=false&checksum=")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn update_and_delete_recordings() {
    let cluster = Cluster::start(3).await;
    seed(&cluster);
    let reply = cluster
        .call(
            "updateRecordings",
            "recordID=rec-a,rec-c&meta_topic=Algebra",
        )
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(reply.field("updated"), Some("true"));
    let reply = cluster.call("getRecordings", "recordID=rec-c").await;
    assert!(reply.body.contains("Algebra"), "{}", reply.body);

    let reply = cluster
        .call("deleteRecordings", "recordID=rec-b,rec-c")
        .await;
    assert_eq!(reply.field("deleted"), Some("true"), "{}", reply.body);
    assert!(!cluster.sims[1].has_recording("rec-b"));
    assert!(!cluster.sims[2].has_recording("rec-c"));
    assert!(cluster.sims[0].has_recording("rec-a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_or_missing_record_ids() {
    let cluster = Cluster::start(2).await;
    for call in ["publishRecordings", "deleteRecordings", "updateRecordings"] {
        let reply = cluster.call(call, "recordID=nope&publish=true").await;
        assert_eq!(reply.returncode(), Some("FAILED"));
        assert_eq!(reply.message_key(), Some("notFound"), "{call}");
        let reply = cluster.call(call, "publish=true").await;
        assert_eq!(reply.message_key(), Some("missingParamRecordID"), "{call}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_tracks_go_to_the_recordings_server_as_json() {
    let cluster = Cluster::start(3).await;
    seed(&cluster);
    let reply = cluster
        .call("getRecordingTextTracks", "recordID=rec-b")
        .await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(json["response"]["returncode"], "SUCCESS", "{}", reply.body);

    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"en.vtt\"\r\nContent-Type: text/vtt\r\n\r\nWEBVTT\n\n00:00.000 --> 00:01.000\nHallo\n\r\n--{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let url = cluster.url(
        "putRecordingTextTrack",
        "recordID=rec-b&kind=subtitles&lang=de-DE&label=Deutsch",
    );
    let reply = send(Method::POST, &url, Some(&content_type), body.clone()).await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(json["response"]["returncode"], "SUCCESS", "{}", reply.body);
    let seen = cluster.sims[1]
        .requests()
        .into_iter()
        .find(|r| r.call == "putRecordingTextTrack")
        .unwrap();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.content_type.as_deref(), Some(content_type.as_str()));

    let reply = cluster
        .call("getRecordingTextTracks", "recordID=nope")
        .await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(json["response"]["returncode"], "FAILED");
    assert_eq!(json["response"]["messageKey"], "noRecordings");
    let reply = cluster.call("getRecordingTextTracks", "").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(json["response"]["messageKey"], "missingParamRecordID");
}

/// The recordIDs of a getRecordings answer, in its order, and its
/// `<pagination>` total.
fn page_of(body: &str) -> (Vec<String>, Option<String>) {
    let ids = body
        .split("<recordID>")
        .skip(1)
        .map(|s| s.split("</recordID>").next().unwrap().to_string())
        .collect();
    let total = body
        .split("<totalElements>")
        .nth(1)
        .map(|s| s.split("</totalElements>").next().unwrap().to_string());
    (ids, total)
}

#[tokio::test(flavor = "multi_thread")]
async fn recording_pages_equal_those_of_one_server_holding_them_all() {
    let cluster = Cluster::start(3).await;
    let one = Cluster::sims(1).await.remove(0);
    // 250 recordings, more than 100 on the first server (so it is paged
    // through), seeded out of order, with many equal startTimes.
    for i in 0..250u64 {
        let id = format!("r{}", i * 13 % 251);
        let meeting = format!("m{}", i % 5);
        let start = 1_700_000_000_000 + (i * 7 % 40) * 1000;
        let server = [0, 0, 1, 2][(i % 4) as usize];
        cluster.sims[server].seed_recording_at(&id, &meeting, start);
        one.seed_recording_at(&id, &meeting, start);
    }
    for query in [
        "limit=10",
        "limit=10&offset=10",
        "limit=100",
        "limit=100&offset=100",
        "limit=100&offset=200",
        "limit=7&offset=245",
        "limit=1000&offset=150",
        "limit=0&offset=3",
        "limit=5&offset=-2",
        "meetingID=m1,m3&limit=20&offset=20",
        "state=published&limit=30&offset=90",
    ] {
        let merged = cluster.call("getRecordings", query).await;
        let alone = direct(&one, "getRecordings", query).await;
        assert_eq!(merged.returncode(), Some("SUCCESS"), "{query}");
        assert_eq!(alone.returncode(), Some("SUCCESS"), "{query}");
        let (ids, total) = page_of(&merged.body);
        assert!(!ids.is_empty(), "{query}");
        assert_eq!((ids, total), page_of(&alone.body), "{query}");
    }
    // Unpaged (no integer limit): every recording, in no defined order,
    // no <pagination>.
    for query in ["offset=240", "limit=x&offset=5"] {
        let all = cluster.call("getRecordings", query).await;
        assert_eq!(all.body.matches("<recording>").count(), 250, "{query}");
        assert!(!all.body.contains("<pagination>"), "{query}");
    }

    // Past the end: bbb-web fails; tinyscale answers an empty page.
    let alone = direct(&one, "getRecordings", "limit=10&offset=250").await;
    assert_eq!(alone.status, 500);
    let merged = cluster.call("getRecordings", "limit=10&offset=250").await;
    assert_eq!(merged.status, 200);
    assert_eq!(merged.returncode(), Some("SUCCESS"));
    assert_eq!(page_of(&merged.body), (Vec::new(), Some("250".to_string())));
    assert!(merged.body.contains("<recordings/>"), "{}", merged.body);

    // Nothing matches: BBB's noRecordings, as one server says it.
    let merged = cluster
        .call("getRecordings", "meetingID=none&limit=10")
        .await;
    let alone = direct(&one, "getRecordings", "meetingID=none&limit=10").await;
    assert_eq!(merged.message_key(), Some("noRecordings"));
    assert_eq!(alone.message_key(), Some("noRecordings"));
}
