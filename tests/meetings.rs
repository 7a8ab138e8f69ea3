//! Meeting calls through the real binary: placement, owner routing, join
//! redirects, BBB's own answers, and the client's bytes kept.

mod support;

use hyper::Method;
use support::*;
use tinyscale::checksum::Algorithm;

#[tokio::test(flavor = "multi_thread")]
async fn api_root_answers_without_checksum() {
    let cluster = Cluster::start(1).await;
    for path in ["/bigbluebutton/api", "/bigbluebutton/api/", "/"] {
        let reply = get(&format!("http://{}{path}", cluster.lb.addr)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.returncode(), Some("SUCCESS"));
        assert_eq!(reply.field("version"), Some("2.0"));
    }
    let reply = get(&format!("http://{}/favicon.ico", cluster.lb.addr)).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknsigned_urls_are_unsupported() {
    let cluster = Cluster::start(1).await;
    for call in ["foo", "hooks/list", "getJoinUrl"] {
        let reply = cluster.call(call, "meetingID=x").await;
        assert_eq!(reply.returncode(), Some("FAILED"));
        assert_eq!(reply.message_key(), Some("unsupportedRequest"), "{call}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creates_spread_round_robin() {
    let cluster = Cluster::start(3).await;
    let mut per_server = [0; 3];
    for n in 0..9 {
        per_server[cluster.create(&format!("rr-{n}")).await] += 1;
    }
    assert_eq!(per_server, [3, 3, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_create_reaches_the_same_server() {
    let cluster = Cluster::start(3).await;
    let query = "name=Class&meetingID=again&attendeePW=ap&moderatorPW=mp";
    let first = cluster.call("create", query).await;
    assert_eq!(first.returncode(), Some("SUCCESS"));
    let holder = cluster.holder("again").unwrap();
    for _ in 0..4 {
        let reply = cluster.call("create", query).await;
        assert_eq!(reply.returncode(), Some("SUCCESS"));
        assert_eq!(reply.message_key(), Some("duplicateWarning"));
        assert_eq!(
            reply.field("internalMeetingID"),
            first.field("internalMeetingID")
        );
    }
    let reply = cluster
        .call(
            "create",
            "name=Class&meetingID=again&attendeePW=other&moderatorPW=mp",
        )
        .await;
    assert_eq!(reply.returncode(), Some("FAILED"));
    assert_eq!(reply.message_key(), Some("idNotUnique"));
    assert_eq!(cluster.holder("again"), Some(holder));
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_creates_of_one_new_id_land_on_one_server() {
    let cluster = std::sync::Arc::new(Cluster::start(3).await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let url = cluster.url("create", "name=Rush&meetingID=rush-hour");
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    let mut duplicates = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        if reply.message_key() == Some("duplicateWarning") {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, 49);
    let holders = cluster
        .sims
        .iter()
        .filter(|s| s.has_meeting("rush-hour"))
        .count();
    assert_eq!(holders, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn join_redirects_to_the_owner_signed_with_its_secret() {
    let cluster = Cluster::start(3).await;
    for n in 0..3 {
        let id = format!("join-{n}");
        let holder = cluster.create(&id).await;
        // At once, before anybody joined: the meeting is not "running" yet.
        let reply = cluster
            .call(
                "join",
                &format!("meetingID={id}&fullName=Ada+L%C3%B6velace&role=VIEWER"),
            )
            .await;
        assert_eq!(reply.status, 302, "{}", reply.body);
        let location = reply.location().unwrap().to_string();
        let sim = &cluster.sims[holder];
        assert!(location.starts_with(&format!("{}/bigbluebutton/api/join?meetingID={id}&fullName=Ada+L%C3%B6velace&role=VIEWER&checksum=", sim.url())), "{location}");
        // The browser follows it: the owner accepts the checksum and sends
        // it on to its HTML5 client.
        let reply = get(&location).await;
        assert_eq!(reply.status, 302, "{}", reply.body);
        assert!(
            reply
                .location()
                .unwrap()
                .contains("/html5client/join?sessionToken=")
        );
        assert_eq!(sim.meeting_running(&id), Some(true));
        let reply = cluster
            .call("isMeetingRunning", &format!("meetingID={id}"))
            .await;
        assert_eq!(reply.field("running"), Some("true"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn meeting_calls_go_to_the_owner() {
    let cluster = Cluster::start(3).await;
    let holder = cluster.create("owned").await;
    let reply = cluster.call("isMeetingRunning", "meetingID=owned").await;
    assert_eq!(
        (reply.returncode(), reply.field("running")),
        (Some("SUCCESS"), Some("false"))
    );
    cluster.sims[holder].add_attendee("owned", "Grace", "MODERATOR", true);
    let reply = cluster.call("getMeetingInfo", "meetingID=owned").await;
    assert_eq!(reply.field("participantCount"), Some("1"));
    assert_eq!(reply.field("running"), Some("true"));
    let reply = cluster
        .call("sendChatMessage", "meetingID=owned&message=hello")
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let slides = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><modules><module name=\"presentation\"><document url=\"https://example.org/a.pdf\"/></module></modules>";
    let reply = send(
        Method::POST,
        &cluster.url("insertDocument", "meetingID=owned"),
        Some("application/xml"),
        slides,
    )
    .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let seen = cluster.sims[holder]
        .requests()
        .into_iter()
        .find(|r| r.call == "insertDocument")
        .unwrap();
    assert_eq!(seen.body, slides.as_bytes());
    assert_eq!(seen.content_type.as_deref(), Some("application/xml"));
    let reply = cluster.call("end", "meetingID=owned").await;
    assert_eq!(reply.message_key(), Some("sentEndMeetingRequest"));
    assert!(!cluster.sims[holder].has_meeting("owned"));
    let reply = cluster.call("getMeetingInfo", "meetingID=owned").await;
    assert_eq!(reply.message_key(), Some("notFound"));
    // Every call reached the owner only (apart from searches, polls and the
    // version check, which asks the API root: call "").
    for (i, sim) in cluster.sims.iter().enumerate() {
        if i != holder {
            assert!(
                sim.requests()
                    .iter()
                    .all(|r| ["getMeetingInfo", "getMeetings", ""].contains(&r.call.as_str()))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_meetings_are_answered_as_bbb_answers_them() {
    let cluster = Cluster::start(3).await;
    let reply = cluster.call("isMeetingRunning", "meetingID=foobar").await;
    assert_eq!(
        (reply.returncode(), reply.field("running")),
        (Some("SUCCESS"), Some("false"))
    );
    for call in ["getMeetingInfo", "end"] {
        let reply = cluster.call(call, "meetingID=foobar").await;
        assert_eq!(reply.returncode(), Some("FAILED"));
        assert_eq!(reply.message_key(), Some("notFound"), "{call}");
    }
    let reply = cluster
        .call("join", "meetingID=foobar&fullName=X&role=VIEWER")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.message_key(), Some("invalidMeetingIdentifier"));
    let reply = cluster
        .call("sendChatMessage", "meetingID=foobar&message=hi")
        .await;
    assert_eq!(reply.returncode(), Some("FAILED"));
    for call in [
        "create",
        "join",
        "getMeetingInfo",
        "isMeetingRunning",
        "end",
    ] {
        let reply = cluster.call(call, "name=x").await;
        assert_eq!(reply.message_key(), Some("missingParamMeetingID"), "{call}");
        let reply = cluster.call(call, "meetingID=&name=x").await;
        assert_eq!(reply.message_key(), Some("missingParamMeetingID"), "{call}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn awkward_meeting_ids_and_names_survive_byte_for_byte() {
    let cluster = Cluster::start(3).await;
    let id = "Kurs 1+1 & 50% Übung — 東京";
    let query = format!(
        "name=Mathe%20%26+Physik+100%25+%C3%A4&meetingID={}&meta_bbb-origin=Moodle&attendeePW=a&moderatorPW=m",
        encode(id)
    );
    let reply = cluster.call("create", &query).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let holder = cluster.holder(id).expect("created under its decoded ID");
    let seen = cluster.sims[holder]
        .requests()
        .into_iter()
        .find(|r| r.call == "create")
        .unwrap();
    let (forwarded, _) = seen.raw_query.rsplit_once("&checksum=").unwrap();
    assert_eq!(
        forwarded, query,
        "the server received the client's query byte for byte"
    );
    assert!(seen.checksum_ok);

    let same_with_spaces_as_percent = query.replace('+', "%20");
    let reply = cluster.call("create", &same_with_spaces_as_percent).await;
    assert_eq!(
        reply.message_key(),
        Some("duplicateWarning"),
        "{}",
        reply.body
    );
    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={}", encode(id)))
        .await;
    assert_eq!(
        reply.field("meetingName"),
        Some("Mathe &amp; Physik 100% ä")
    );
    let reply = cluster
        .call(
            "join",
            &format!("meetingID={}&fullName=Z&role=MODERATOR", encode(id)),
        )
        .await;
    assert_eq!(reply.status, 302);
    assert!(
        reply
            .location()
            .unwrap()
            .starts_with(&cluster.sims[holder].url())
    );
    assert_eq!(cluster.holder(id), Some(holder));
}

#[tokio::test(flavor = "multi_thread")]
async fn post_create_with_slides_arrives_intact() {
    let cluster = Cluster::start(2).await;
    let slides = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<modules>\n  <module name=\"presentation\">\n    <document url=\"https://example.org/default.pdf\" filename=\"a&amp;b.pdf\"/>\n    <document name=\"inline.pdf\">JVBERi0xLjQK</document>\n  </module>\n</modules>\n";
    let url = cluster.url("create", "name=Slides&meetingID=with-slides");
    let reply = send(
        Method::POST,
        &url,
        Some("application/xml; charset=utf-8"),
        slides,
    )
    .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let holder = cluster.holder("with-slides").unwrap();
    let seen = cluster.sims[holder]
        .requests()
        .into_iter()
        .find(|r| r.call == "create")
        .unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, slides.as_bytes());
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/xml; charset=utf-8")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_refused() {
    let cluster = Cluster::start_with(1, &[("TINYSCALE_MAX_BODY", "1K")]).await;
    let url = cluster.url("create", "name=Big&meetingID=big");
    let reply = send(
        Method::POST,
        &url,
        Some("application/xml"),
        vec![b'x'; 4096],
    )
    .await;
    assert_eq!(reply.returncode(), Some("FAILED"));
    assert_eq!(reply.message_key(), Some("internalError"));
    assert!(
        reply
            .field("message")
            .unwrap()
            .contains("TINYSCALE_MAX_BODY")
    );
    assert!(!cluster.sims[0].has_meeting("big"));
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_are_signed_with_their_own_algorithm() {
    // Cluster::start signs towards the servers with sha256, sha1, sha512.
    let cluster = Cluster::start(3).await;
    for n in 0..3 {
        cluster.create(&format!("alg-{n}")).await;
    }
    for (sim, len) in cluster.sims.iter().zip([64, 40, 128]) {
        let create = sim
            .requests()
            .into_iter()
            .find(|r| r.call == "create")
            .unwrap();
        let sum = create.raw_query.rsplit_once("checksum=").unwrap().1;
        assert_eq!(sum.len(), len);
    }
    let _ = Algorithm::Sha1;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_secret_is_logged() {
    let cluster = Cluster::start(2).await;
    let id = cluster.create("logged").await;
    let _ = id;
    cluster
        .call("join", "meetingID=logged&fullName=A&role=MODERATOR")
        .await;
    cluster.call("getMeetingInfo", "meetingID=logged").await;
    cluster.call("getMeetings", "").await;
    get(&format!(
        "{}getMeetings?checksum=0123456789012345678901234567890123456789",
        cluster.lb.api()
    ))
    .await;
    assert!(cluster.lb.wait_for_log("result=\"checksumError\"").await);
    let logs = cluster.lb.logs();
    assert!(
        logs.contains("call=\"create\" meeting=\"logged\""),
        "{logs}"
    );
    assert!(logs.contains("result=\"redirect\""), "{logs}");
    assert!(logs.contains("result=\"checksumError\""), "{logs}");
    assert!(!logs.contains("0123456789012345678901234567890123456789"));
    cluster.assert_log_has_no_secrets();
}
