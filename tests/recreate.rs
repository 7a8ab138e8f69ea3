//! Meetings that outlive their server: a join for a meeting whose server is
//! down, disabled or removed makes the meeting again on a healthy server
//! from the create call tinyscale kept — through the real binary, in front
//! of simulated servers.

mod support;

use hyper::Method;
use support::*;
use tinyscale::checksum::{self, Algorithm};
use tinyscale::sim::SeenRequest;

/// Polls often, so that tinyscale sees a server go and come at once.
const POLLS: [(&str, &str); 2] = [
    ("TINYSCALE_POLL_INTERVAL", "0.1"),
    ("TINYSCALE_POLL_TIMEOUT", "0.5"),
];

/// The slides of a create, given by URL (a few hundred bytes: kept).
const SLIDES: &str = r#"<?xml version="1.0" encoding="UTF-8"?><modules><module name="presentation"><document url="https://example.org/physics.pdf" filename="physics.pdf"/></module></modules>"#;

/// The unsigned query of the creates below.
fn create_query(meeting_id: &str) -> String {
    format!(
        "name=Physics+101&meetingID={meeting_id}&attendeePW=ap&moderatorPW=mp&meta_course=P%2B1&record=true"
    )
}

/// How a create reached tinyscale.
#[derive(Clone, Copy, Debug)]
enum Create {
    /// A POST with a small `<modules>` document: kept with its body.
    Slides,
    /// A form POST signed in its body (empty URL query).
    Form,
    /// A POST with an embedded file over 64 KiB: kept without it.
    LargeUpload,
}

/// How the meeting's server is lost.
#[derive(Clone, Copy, Debug)]
enum Loss {
    Down,
    Disabled,
    Removed,
}

/// Sends the create; the index of the server that got it.
async fn create(cluster: &Cluster, meeting_id: &str, how: Create) -> usize {
    let query = create_query(meeting_id);
    let reply = match how {
        Create::Slides => {
            let url = cluster.url("create", &query);
            send(Method::POST, &url, Some("application/xml"), SLIDES).await
        }
        Create::Form => {
            let (signing, _) = checksum::form_body_signing_string(query.as_bytes());
            let sum = checksum::sign("create", &signing, SECRET, Algorithm::Sha256);
            send(
                Method::POST,
                &format!("{}create", cluster.lb.api()),
                Some("application/x-www-form-urlencoded"),
                format!("{query}&checksum={sum}"),
            )
            .await
        }
        Create::LargeUpload => {
            let url = cluster.url("create", &query);
            let body = format!("{SLIDES}<!-- {} -->", "x".repeat(100 * 1024));
            send(Method::POST, &url, Some("application/xml"), body).await
        }
    };
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    cluster.holder(meeting_id).expect("created")
}

/// A query or form body without its `checksum` pair.
fn without_checksum(raw: &str) -> String {
    raw.split('&')
        .filter(|pair| !pair.starts_with("checksum="))
        .collect::<Vec<_>>()
        .join("&")
}

/// The one create `sim` received.
fn the_create(sim: &SimHandle) -> SeenRequest {
    let creates: Vec<SeenRequest> = sim
        .requests()
        .into_iter()
        .filter(|r| r.call == "create")
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    creates.into_iter().next().unwrap()
}

/// Creates received by all the servers.
fn creates(cluster: &Cluster) -> usize {
    cluster
        .sims
        .iter()
        .map(|s| s.requests().iter().filter(|r| r.call == "create").count())
        .sum()
}

/// Makes the server lose the meeting as `how` says, and waits until
/// tinyscale knows.
async fn lose(cluster: &Cluster, holder: usize, how: Loss) {
    let url = cluster.sims[holder].url();
    let reloaded = cluster.lb.count_lines(&["reloaded the servers file"]);
    let others = (0..cluster.sims.len()).filter(|&i| i != holder);
    match how {
        Loss::Down => {
            cluster.sims[holder].set_mode(Mode::Refuse);
            let down = cluster
                .lb
                .wait_for_lines(&["server went down", &url], 1)
                .await;
            assert!(down, "{}", cluster.lb.logs());
            return;
        }
        Loss::Disabled => {
            let mut entries: Vec<_> = (0..cluster.sims.len()).map(|i| cluster.entry(i)).collect();
            entries[holder]["state"] = serde_json::json!("disabled");
            cluster.reload(entries);
        }
        Loss::Removed => cluster.reload(others.map(|i| cluster.entry(i)).collect()),
    }
    let done = cluster
        .lb
        .wait_for_lines(&["reloaded the servers file"], reloaded + 1)
        .await;
    assert!(done, "{}", cluster.lb.logs());
}

/// A join of the meeting, whose server is lost, answers serverUnavailable
/// and makes the meeting nowhere.
async fn assert_join_makes_nothing(cluster: &Cluster, meeting_id: &str) {
    cluster.clear_requests();
    let query = format!("meetingID={meeting_id}&fullName=Ada&role=MODERATOR");
    let reply = cluster.call("join", &query).await;
    assert_eq!(
        reply.message_key(),
        Some("serverUnavailable"),
        "{}",
        reply.body
    );
    assert_eq!(creates(cluster), 0);
}

/// Brings a server lost by [`Loss::Down`] back, and waits until tinyscale
/// knows.
async fn bring_back(cluster: &Cluster, holder: usize) {
    let url = cluster.sims[holder].url();
    cluster.sims[holder].set_mode(Mode::Normal);
    let up = cluster
        .lb
        .wait_for_lines(&["server is up again", &url], 1)
        .await;
    assert!(up, "{}", cluster.lb.logs());
}

/// `tinyscale_recreated_meetings_total` of a running tinyscale.
async fn recreated(lb: &Balancer) -> u64 {
    let text = get(&format!("http://{}/metrics", lb.metrics_addr.unwrap()))
        .await
        .body;
    text.lines()
        .find_map(|l| l.strip_prefix("tinyscale_recreated_meetings_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the counter is exported")
}

/// A join through tinyscale: the server its 302 leads to, and the URL.
async fn join(cluster: &Cluster, query: &str) -> (usize, String) {
    let reply = cluster.call("join", query).await;
    assert_eq!(reply.status, 302, "{}", reply.body);
    let location = reply.location().unwrap().to_string();
    let server = (0..cluster.sims.len())
        .find(|&i| {
            location.starts_with(&format!(
                "{}/bigbluebutton/api/join?",
                cluster.sims[i].url()
            ))
        })
        .unwrap_or_else(|| panic!("{location} leads to no server"));
    (server, location)
}

/// The meeting's `createTime` on `sim`, asked directly.
async fn create_time_on(sim: &SimHandle, meeting_id: &str) -> String {
    let info = direct(sim, "getMeetingInfo", &format!("meetingID={meeting_id}")).await;
    info.field("createTime").expect("createTime").to_string()
}

/// The whole story for one kind of create and one way of losing its
/// server: calls answer serverUnavailable and make nothing; the first join
/// makes the meeting again elsewhere with the very same call; later calls
/// go there.
async fn a_join_makes_the_meeting_again(how: Create, loss: Loss) {
    let cluster = Cluster::start_with(3, &POLLS).await;
    let id = format!("class-{loss:?}").to_lowercase();
    let holder = create(&cluster, &id, how).await;
    let original = the_create(&cluster.sims[holder]);
    lose(&cluster, holder, loss).await;
    cluster.clear_requests();

    // Meeting calls answer as they did, and make nothing.
    for call in ["getMeetingInfo", "isMeetingRunning", "end"] {
        let reply = cluster.call(call, &format!("meetingID={id}")).await;
        assert_eq!(reply.message_key(), Some("serverUnavailable"), "{call}");
    }
    assert_eq!(creates(&cluster), 0);

    let (moved_to, location) = join(
        &cluster,
        &format!("meetingID={id}&fullName=Ada&role=MODERATOR"),
    )
    .await;
    assert_ne!(moved_to, holder);
    assert!(cluster.sims[moved_to].has_meeting(&id));
    // The same call, signed for its new server.
    let again = the_create(&cluster.sims[moved_to]);
    assert!(again.checksum_ok);
    assert_eq!(
        without_checksum(&again.raw_query),
        without_checksum(&original.raw_query)
    );
    match how {
        Create::Slides | Create::Form => {
            assert_eq!(again.method, "POST");
            assert_eq!(again.content_type, original.content_type);
            let body = |r: &SeenRequest| without_checksum(&String::from_utf8_lossy(&r.body));
            assert_eq!(body(&again), body(&original));
            assert!(!again.body.is_empty());
        }
        Create::LargeUpload => {
            // Too large to keep: the meeting starts with the default slides.
            assert_eq!(original.body.len(), SLIDES.len() + 100 * 1024 + 9);
            assert_eq!(again.method, "GET");
            assert!(again.body.is_empty());
            assert_eq!(again.content_type, None);
        }
    }
    assert_eq!(creates(&cluster), 1);
    // The join leads into it.
    let page = get(&location).await;
    let entered = page.location().unwrap_or_default().to_string();
    assert!(entered.contains("/html5client/join?"), "{entered}");
    assert_eq!(recreated(&cluster.lb).await, 1);

    // From now on it is a meeting like any other, on its new server.
    let (again_to, _) = join(&cluster, &format!("meetingID={id}&fullName=Bo&role=VIEWER")).await;
    assert_eq!(again_to, moved_to);
    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={id}"))
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(creates(&cluster), 1, "made once");
    assert_eq!(recreated(&cluster.lb).await, 1);
    assert!(
        cluster
            .lb
            .logs()
            .contains("made the meeting again from its create call")
    );
    cluster.assert_log_has_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_makes_the_meeting_of_a_server_that_went_down_again() {
    a_join_makes_the_meeting_again(Create::Slides, Loss::Down).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_makes_the_meeting_of_a_disabled_server_again() {
    a_join_makes_the_meeting_again(Create::Form, Loss::Disabled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_makes_the_meeting_of_a_removed_server_again() {
    a_join_makes_the_meeting_again(Create::LargeUpload, Loss::Removed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_joins_make_the_meeting_once() {
    let cluster = std::sync::Arc::new(Cluster::start_with(3, &POLLS).await);
    let holder = create(&cluster, "crowded", Create::Slides).await;
    lose(&cluster, holder, Loss::Down).await;
    cluster.clear_requests();
    let joins: Vec<_> = (0..20)
        .map(|n| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                join(
                    &cluster,
                    &format!("meetingID=crowded&fullName=U{n}&role=VIEWER"),
                )
                .await
                .0
            })
        })
        .collect();
    let mut servers = Vec::new();
    for joined in joins {
        servers.push(joined.await.unwrap());
    }
    servers.sort();
    servers.dedup();
    assert_eq!(servers.len(), 1, "every join to one server: {servers:?}");
    assert_ne!(servers[0], holder);
    assert_eq!(creates(&cluster), 1);
    assert_eq!(recreated(&cluster.lb).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_with_the_old_create_time_gets_the_new_one() {
    let cluster = Cluster::start_with(2, &POLLS).await;
    let reply = cluster.call("create", &create_query("timed")).await;
    let old = reply.field("createTime").expect("createTime").to_string();
    let holder = cluster.holder("timed").unwrap();
    // Before: a join naming its copy goes through as it is.
    let (_, location) = join(
        &cluster,
        &format!("meetingID=timed&fullName=A&role=VIEWER&createTime={old}"),
    )
    .await;
    assert!(
        location.contains(&format!("&createTime={old}&")),
        "{location}"
    );
    lose(&cluster, holder, Loss::Down).await;

    let query = format!("meetingID=timed&fullName=Ada&role=MODERATOR&createTime={old}");
    let (moved_to, location) = join(&cluster, &query).await;
    let new = create_time_on(&cluster.sims[moved_to], "timed").await;
    assert_ne!(new, old);
    assert!(
        location.contains(&format!("&createTime={new}&")),
        "{location}"
    );
    // The server takes it (it refuses any other createTime).
    let page = get(&location).await;
    let entered = page.location().unwrap_or_default().to_string();
    assert!(entered.contains("/html5client/join?"), "{entered}");
    // Again, once made: the old one still gets the new one.
    let (_, location) = join(&cluster, &query).await;
    assert!(
        location.contains(&format!("&createTime={new}&")),
        "{location}"
    );
    // A createTime tinyscale never saw is left for the server to refuse.
    let (_, location) = join(
        &cluster,
        "meetingID=timed&fullName=E&role=VIEWER&createTime=42",
    )
    .await;
    assert!(location.contains("&createTime=42&"), "{location}");
    let refused = get(&location).await;
    let to = refused.location().unwrap_or_default().to_string();
    assert!(to.contains("mismatchCreateTimeParam"), "{to}");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_old_server_comes_back_calls_go_to_the_later_copy() {
    let cluster = Cluster::start_with(2, &POLLS).await;
    let holder = create(&cluster, "twice", Create::Slides).await;
    let old = create_time_on(&cluster.sims[holder], "twice").await;
    lose(&cluster, holder, Loss::Down).await;
    let (moved_to, _) = join(&cluster, "meetingID=twice&fullName=Ada&role=MODERATOR").await;
    let new = create_time_on(&cluster.sims[moved_to], "twice").await;

    // It comes back, still holding its copy.
    let url = cluster.sims[holder].url();
    bring_back(&cluster, holder).await;
    assert!(cluster.sims[holder].has_meeting("twice"));
    let stale = ["an older copy of the meeting", &url];
    assert!(
        cluster.lb.wait_for_lines(&stale, 1).await,
        "{}",
        cluster.lb.logs()
    );
    let polled = cluster.lb.count_lines(&["polled", &url]);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["polled", &url], polled + 5)
            .await
    );

    for call in ["getMeetingInfo", "isMeetingRunning"] {
        cluster.sims[holder].clear_requests();
        let reply = cluster.call(call, "meetingID=twice").await;
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        if call == "getMeetingInfo" {
            assert_eq!(reply.field("createTime"), Some(new.as_str()), "not {old}");
        }
        let asked = cluster.sims[holder]
            .requests()
            .iter()
            .any(|r| r.raw_query.contains("twice"));
        assert!(!asked, "{call} went to the older copy");
    }
    let (to, _) = join(&cluster, "meetingID=twice&fullName=Bo&role=VIEWER").await;
    assert_eq!(to, moved_to);
    assert_eq!(cluster.lb.count_lines(&stale), 1, "logged once");
    // The original's request was cleared: this is the one made again.
    assert_eq!(creates(&cluster), 1, "nothing made a third time");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_recreation_off_nothing_is_made_again() {
    let env = [POLLS[0], POLLS[1], ("TINYSCALE_RECREATE", "off")];
    let cluster = Cluster::start_with(2, &env).await;
    let holder = create(&cluster, "off", Create::Slides).await;
    let old = create_time_on(&cluster.sims[holder], "off").await;
    lose(&cluster, holder, Loss::Down).await;
    assert_join_makes_nothing(&cluster, "off").await;
    assert_eq!(recreated(&cluster.lb).await, 0);

    // The client's own create starts it anew elsewhere, as it always did;
    // when the old server comes back, the later copy is the meeting.
    let reply = cluster.call("create", &create_query("off")).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let new = reply.field("createTime").unwrap().to_string();
    let url = cluster.sims[holder].url();
    bring_back(&cluster, holder).await;
    let stale = ["an older copy of the meeting", &url];
    assert!(
        cluster.lb.wait_for_lines(&stale, 1).await,
        "{}",
        cluster.lb.logs()
    );
    let reply = cluster.call("getMeetingInfo", "meetingID=off").await;
    assert_eq!(reply.field("createTime"), Some(new.as_str()), "not {old}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meeting_found_only_by_a_poll_is_not_made_again() {
    let cluster = Cluster::start_with(2, &POLLS).await;
    cluster
        .create_behind_its_back(0, "name=Elsewhere&meetingID=unseen")
        .await;
    lose(&cluster, 0, Loss::Down).await;
    assert_join_makes_nothing(&cluster, "unseen").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_of_a_lost_meeting_replaces_its_kept_call() {
    let cluster = Cluster::start_with(3, &POLLS).await;
    let first = create(&cluster, "swap", Create::Slides).await;
    lose(&cluster, first, Loss::Down).await;
    // The client makes it anew itself, with other parameters.
    let second_query = "name=Second&meetingID=swap&moderatorPW=mp2";
    let reply = cluster.call("create", second_query).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let second = (0..3)
        .find(|&i| i != first && cluster.sims[i].has_meeting("swap"))
        .expect("on a server that is up");
    // Lost again: a join makes it from the second call.
    lose(&cluster, second, Loss::Down).await;
    cluster.clear_requests();
    let (third, _) = join(&cluster, "meetingID=swap&fullName=Ada&role=MODERATOR").await;
    assert!(third != first && third != second);
    let again = the_create(&cluster.sims[third]);
    assert_eq!(without_checksum(&again.raw_query), second_query);
    assert_eq!(again.method, "GET");
}
