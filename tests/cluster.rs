//! Cluster awareness: health with hysteresis, server states, placement by
//! load, live reload and graceful stop — through the real binary.

mod support;

use std::sync::Arc;
use support::*;

/// The servers.json entry for sim `i` with extra fields.
fn with(cluster: &Cluster, i: usize, extra: serde_json::Value) -> serde_json::Value {
    let mut entry = cluster.entry(i);
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    entry
}

/// Creates `n` meetings at once; how many landed on each server.
async fn burst(cluster: &Arc<Cluster>, prefix: &str, n: usize) -> Vec<usize> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = cluster.url("create", &format!("name=Burst&meetingID={prefix}-{i}"));
        tasks.push(tokio::spawn(async move { get(&url).await }));
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    }
    let mut counts = vec![0; cluster.sims.len()];
    for i in 0..n {
        counts[cluster.holder(&format!("{prefix}-{i}")).expect("created")] += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_going_down_and_coming_back() {
    let cluster = Cluster::start_with(
        3,
        &[
            ("TINYSCALE_POLL_INTERVAL", "0.1"),
            ("TINYSCALE_POLL_TIMEOUT", "0.3"),
            // Were a call to wait for the hanging server, the test client's
            // patience would run out first.
            ("TINYSCALE_RESPONSE_TIMEOUT", "60"),
            // Its meeting's join answers serverUnavailable instead of
            // making the meeting again (see tests/recreate.rs).
            ("TINYSCALE_RECREATE", "off"),
        ],
    )
    .await;
    let mut on = vec![String::new(); 3];
    for n in 0..3 {
        let id = format!("m-{n}");
        let holder = cluster.create(&id).await;
        on[holder] = id;
    }
    let hung = cluster.sims[1].url();
    cluster.sims[1].set_mode(Mode::Hang);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["server went down", &hung], 1)
            .await,
        "{}",
        cluster.lb.logs()
    );

    // Its meeting answers serverUnavailable at once; the others work.
    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={}", on[1]))
        .await;
    assert_eq!(
        reply.message_key(),
        Some("serverUnavailable"),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.field("message"),
        Some("The server for this meeting is disabled/offline.")
    );
    let reply = cluster
        .call(
            "join",
            &format!("meetingID={}&fullName=A&role=VIEWER", on[1]),
        )
        .await;
    assert_eq!(reply.message_key(), Some("serverUnavailable"));
    for id in [&on[0], &on[2]] {
        let reply = cluster
            .call("getMeetingInfo", &format!("meetingID={id}"))
            .await;
        assert_eq!(reply.returncode(), Some("SUCCESS"));
    }
    // Lists leave it out without waiting for it.
    let reply = cluster.call("getMeetings", "").await;
    assert_eq!(reply.body.matches("<meeting>").count(), 2);
    // New meetings avoid it.
    for n in 0..6 {
        assert_ne!(cluster.create(&format!("avoid-{n}")).await, 1);
    }
    // It comes back after good polls, with its meeting.
    cluster.sims[1].set_mode(Mode::Normal);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["server is up again", &hung], 1)
            .await
    );
    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={}", on[1]))
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(
        cluster.lb.count_lines(&["server went down", &hung]),
        1,
        "each change logged once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failure_does_not_mark_a_server_down() {
    // No polls during the test: only the calls count.
    let cluster = Cluster::start_with(2, &[("TINYSCALE_POLL_INTERVAL", "600")]).await;
    let holder = cluster.create("flaky").await;
    cluster.sims[holder].set_mode(Mode::Refuse);
    let query = "meetingID=flaky";
    // First failure: still up, so the call is tried and fails as it is.
    let reply = cluster.call("getMeetingInfo", query).await;
    assert_eq!(reply.message_key(), Some("internalError"));
    assert_eq!(cluster.lb.count_lines(&["server went down"]), 0);
    // Second failure in a row: down.
    let reply = cluster.call("getMeetingInfo", query).await;
    assert_eq!(reply.message_key(), Some("internalError"));
    assert!(cluster.lb.wait_for_lines(&["server went down"], 1).await);
    // From now on it is not even tried.
    let reply = cluster.call("getMeetingInfo", query).await;
    assert_eq!(reply.message_key(), Some("serverUnavailable"));
    cluster.sims[holder].set_mode(Mode::Normal);
}

#[tokio::test(flavor = "multi_thread")]
async fn cordoned_servers_drain_and_disabled_servers_answer_unavailable() {
    // No re-creation: the disabled server's meeting stays unavailable, for
    // joins too (see tests/recreate.rs).
    let env = [
        ("TINYSCALE_POLL_INTERVAL", "0.1"),
        ("TINYSCALE_RECREATE", "off"),
    ];
    let cluster = Cluster::start_with(3, &env).await;
    // A meeting already on the server about to drain, and one (placed
    // round-robin: 0, 1, 2) on the server about to be disabled.
    let query = "name=Before&meetingID=draining";
    assert_eq!(
        direct(&cluster.sims[1], "create", query).await.returncode(),
        Some("SUCCESS")
    );
    for id in ["a", "b", "on-disabled"] {
        cluster.create(id).await;
    }
    assert_eq!(cluster.holder("on-disabled"), Some(2));
    cluster.reload(vec![
        cluster.entry(0),
        with(&cluster, 1, serde_json::json!({"state": "cordoned"})),
        with(&cluster, 2, serde_json::json!({"state": "disabled"})),
    ]);
    assert!(
        cluster.lb.wait_for_log("reloaded the servers file").await,
        "{}",
        cluster.lb.logs()
    );

    for n in 0..6 {
        assert_eq!(
            cluster.create(&format!("drain-{n}")).await,
            0,
            "only the enabled server takes new meetings"
        );
    }
    // The cordoned server's meetings keep working, creates for them included.
    let reply = cluster.call("getMeetingInfo", "meetingID=draining").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let reply = cluster.call("create", query).await;
    assert_eq!(reply.message_key(), Some("duplicateWarning"));
    assert_eq!(cluster.holder("draining"), Some(1));
    // The disabled server's meeting is unavailable...
    for call in ["getMeetingInfo", "isMeetingRunning", "end"] {
        let reply = cluster.call(call, "meetingID=on-disabled").await;
        assert_eq!(reply.message_key(), Some("serverUnavailable"), "{call}");
    }
    let reply = cluster
        .call("join", "meetingID=on-disabled&fullName=A&role=VIEWER")
        .await;
    assert_eq!(reply.message_key(), Some("serverUnavailable"));
    // ...and the disabled server hears nothing more from tinyscale.
    let polled = cluster.lb.count_lines(&["polled"]);
    assert!(cluster.lb.wait_for_lines(&["polled"], polled + 4).await);
    cluster.sims[2].clear_requests();
    let polled = cluster.lb.count_lines(&["polled"]);
    assert!(cluster.lb.wait_for_lines(&["polled"], polled + 4).await);
    cluster.call("getMeetings", "").await;
    cluster.call("getMeetingInfo", "meetingID=unknown").await;
    assert!(
        cluster.sims[2].requests().is_empty(),
        "{:?}",
        cluster.sims[2].requests()
    );
    // A create of its meeting starts the class again on a server that works.
    let reply = cluster
        .call("create", "name=Again&meetingID=on-disabled")
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert!(cluster.sims[0].has_meeting("on-disabled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_server_is_sent_no_request_at_all() {
    let sims = [
        SimHandle::start("s0").await.unwrap(),
        SimHandle::start("s1").await.unwrap(),
    ];
    let file = scratch_dir().join("servers.json");
    write_servers(
        &file,
        vec![
            serde_json::json!({"host": sims[0].url(), "secret": "s0"}),
            serde_json::json!({"host": sims[1].url(), "secret": "s1", "state": "disabled"}),
        ],
    );
    let lb = Balancer::start(&[
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.to_str().unwrap()),
        ("TINYSCALE_POLL_INTERVAL", "0.05"),
    ]);
    let call = |call: &str, query: &str| {
        format!(
            "{}{call}?{}",
            lb.api(),
            signed(call, query, SECRET, tinyscale::checksum::Algorithm::Sha1)
        )
    };
    for n in 0..4 {
        let reply = get(&call("create", &format!("name=x&meetingID=d-{n}"))).await;
        assert_eq!(reply.returncode(), Some("SUCCESS"));
        get(&call("getMeetingInfo", &format!("meetingID=d-{n}"))).await;
    }
    get(&call("getMeetings", "")).await;
    get(&call("getRecordings", "")).await;
    get(&call("getMeetingInfo", "meetingID=nowhere")).await;
    let polled = lb.count_lines(&["polled"]);
    assert!(
        lb.wait_for_lines(&["polled"], polled + 4).await,
        "several poll rounds"
    );
    assert!(sims[1].requests().is_empty(), "{:?}", sims[1].requests());
    assert_eq!(sims[0].meeting_ids().len(), 4);
    assert!(lb.logs().contains("server disabled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn least_loaded_spreads_a_burst_evenly() {
    let cluster = Arc::new(
        Cluster::start_with(
            3,
            &[
                ("TINYSCALE_STRATEGY", "least-loaded"),
                ("TINYSCALE_POLL_INTERVAL", "600"),
            ],
        )
        .await,
    );
    let counts = burst(&cluster, "even", 60).await;
    for count in &counts {
        assert!((17..=23).contains(count), "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_loaded_respects_weights_and_load() {
    // A busy server (40 users in one meeting, seen by the start-up probe)
    // and two idle ones of weights 1 and 2. No polls during the burst.
    let sims = Cluster::sims(3).await;
    let query = "name=Big&meetingID=big";
    assert_eq!(
        direct(&sims[0], "create", query).await.returncode(),
        Some("SUCCESS")
    );
    for n in 0..40 {
        sims[0].add_attendee("big", &format!("user {n}"), "VIEWER", false);
    }
    let mut entries: Vec<_> = (0..3).map(|i| entry(&sims, i)).collect();
    entries[2]["weight"] = serde_json::json!(2);
    let env = [
        ("TINYSCALE_STRATEGY", "least-loaded"),
        ("TINYSCALE_POLL_INTERVAL", "600"),
    ];
    let cluster = Arc::new(Cluster::launch(sims, entries, &env));
    // Each new meeting reserves 15 users. Filling to one level L:
    // (L-40) + L + 2L = 60·15 → L = 235: about 13, 16 and 31 meetings.
    let counts = burst(&cluster, "weighted", 60).await;
    assert!((10..=16).contains(&counts[0]), "{counts:?}");
    assert!((13..=19).contains(&counts[1]), "{counts:?}");
    assert!((28..=34).contains(&counts[2]), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_racing_a_poll_keeps_its_meeting() {
    let cluster = Cluster::start_with(2, &[("TINYSCALE_POLL_INTERVAL", "0.05")]).await;
    let first = cluster.sims[0].url();
    // Server 0's getMeetings answers show the state from before a 1 s wait.
    cluster.sims[0].set_answer_delay("getMeetings", std::time::Duration::from_secs(1));
    let asked = |sim: &SimHandle| {
        sim.requests()
            .iter()
            .filter(|r| r.call == "getMeetings")
            .count()
    };
    let before = asked(&cluster.sims[0]);
    while asked(&cluster.sims[0]) == before {
        tokio::task::yield_now().await;
    }
    // A poll of server 0 is under way: create on it now (round-robin
    // starts at server 0).
    let polled = cluster.lb.count_lines(&["polled", &first]);
    assert_eq!(cluster.create("raced").await, 0);
    // That poll's answer (without the meeting) arrives and is taken in.
    assert!(
        cluster
            .lb
            .wait_for_lines(&["polled", &first], polled + 1)
            .await
    );
    // The meeting is still known to be on server 0: no search is needed
    // (server 1 is not asked about it).
    cluster.sims[1].clear_requests();
    let reply = cluster.call("getMeetingInfo", "meetingID=raced").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let searched = cluster.sims[1]
        .requests()
        .iter()
        .any(|r| r.call == "getMeetingInfo" && r.raw_query.contains("raced"));
    assert!(!searched, "the poll's older answer dropped the meeting");
    cluster.sims[0].set_answer_delay("getMeetings", std::time::Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_teach_where_meetings_are() {
    let cluster = Cluster::start_with(3, &[("TINYSCALE_POLL_INTERVAL", "0.05")]).await;
    // Created behind tinyscale's back, then seen by a poll.
    cluster
        .create_behind_its_back(2, "name=Elsewhere&meetingID=seen-by-poll")
        .await;
    cluster.clear_requests();
    let reply = cluster
        .call("getMeetingInfo", "meetingID=seen-by-poll")
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    for sim in &cluster.sims[..2] {
        assert!(
            sim.requests()
                .iter()
                .all(|r| !r.raw_query.contains("seen-by-poll")),
            "no search was needed"
        );
    }
}
