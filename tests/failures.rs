//! Servers that are down or hang, and a balancer that must keep serving the
//! calls that do not need them.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_server_is_down_lands_on_another() {
    // Not yet known to be down (it would take 100 failures): the create is
    // sent there, refused, and goes on to the next server.
    let cluster = Cluster::start_with(3, &[("TINYSCALE_DOWN_AFTER", "100")]).await;
    cluster.sims[1].set_mode(Mode::Refuse);
    for n in 0..6 {
        let holder = cluster.create(&format!("fallback-{n}")).await;
        assert_ne!(holder, 1);
    }
    assert!(
        cluster.lb.wait_for_log("trying the next server").await,
        "{}",
        cluster.lb.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_reachable_is_an_internal_error() {
    let cluster = Cluster::start(2).await;
    for sim in &cluster.sims {
        sim.set_mode(Mode::Refuse);
    }
    let reply = cluster.call("create", "name=x&meetingID=nowhere").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.returncode(), Some("FAILED"));
    assert_eq!(reply.message_key(), Some("internalError"));
    let reply = cluster.call("getMeetings", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert_eq!(reply.message_key(), Some("noMeetings"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_server_breaks_only_its_own_meetings() {
    let cluster = Cluster::start_with(3, &[("TINYSCALE_POLL_INTERVAL", "0.1")]).await;
    let mut on = [None, None, None];
    for n in 0..3 {
        let id = format!("m-{n}");
        let holder = cluster.create(&id).await;
        on[holder] = Some(id);
    }
    let [Some(a), Some(b), Some(_)] = on.clone() else {
        panic!("round robin: {on:?}")
    };
    cluster.sims[1].set_mode(Mode::Refuse);

    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={a}"))
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={b}"))
        .await;
    assert_eq!(reply.message_key(), Some("internalError"));
    let message = reply.field("message").unwrap();
    assert!(
        message.contains(&cluster.sims[1].url()),
        "names the server: {message}"
    );
    assert!(message.contains("could not connect"), "{message}");
    assert!(!message.contains("secret"));

    let reply = cluster.call("getMeetings", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert_eq!(reply.body.matches("<meeting>").count(), 2, "{}", reply.body);

    // It comes back (after two good polls): its meeting answers again,
    // from the same server.
    assert!(cluster.lb.wait_for_log("server went down").await);
    cluster.sims[1].set_mode(Mode::Normal);
    assert!(
        cluster.lb.wait_for_log("server is up again").await,
        "{}",
        cluster.lb.logs()
    );
    let reply = cluster
        .call("getMeetingInfo", &format!("meetingID={b}"))
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(cluster.holder(&b), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_server_does_not_slow_calls_for_meetings_elsewhere() {
    // A long response timeout: if a call waited for the hanging server, the
    // client's own patience (support::PATIENCE) would run out first.
    let cluster = Cluster::start_with(3, &[("TINYSCALE_RESPONSE_TIMEOUT", "60")]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = format!("h-{n}");
        ids.push((cluster.create(&id).await, id));
    }
    cluster.sims[2].set_mode(Mode::Hang);
    for (holder, id) in &ids {
        if *holder == 2 {
            continue;
        }
        for call in ["getMeetingInfo", "isMeetingRunning"] {
            let reply = cluster.call(call, &format!("meetingID={id}")).await;
            assert_eq!(reply.returncode(), Some("SUCCESS"), "{call} {id}");
        }
        cluster.assert_join_goes_to(id, *holder).await;
    }
    cluster.sims[2].set_mode(Mode::Normal);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_sent_but_unanswered_is_not_tried_elsewhere() {
    let cluster = Cluster::start_with(2, &[("TINYSCALE_RESPONSE_TIMEOUT", "0.5")]).await;
    // Round-robin starts at server 0.
    cluster.sims[0].set_mode(Mode::Hang);
    let reply = cluster.call("create", "name=x&meetingID=maybe-made").await;
    assert_eq!(reply.message_key(), Some("internalError"));
    assert!(
        reply
            .field("message")
            .unwrap()
            .contains("not sent to another server")
    );
    assert!(!cluster.sims[1].has_meeting("maybe-made"));
    cluster.sims[0].set_mode(Mode::Normal);
}

/// Ends `id` on its server behind tinyscale's back and creates it again on
/// the other one (as a second tinyscale would). Returns the new server.
async fn move_behind_its_back(cluster: &Cluster, id: &str) -> usize {
    let first = cluster.holder(id).expect("created");
    let other = 1 - first;
    let query = format!("meetingID={id}");
    assert_eq!(
        direct(&cluster.sims[first], "end", &query)
            .await
            .returncode(),
        Some("SUCCESS")
    );
    let query = format!("name=x&meetingID={id}");
    assert_eq!(
        direct(&cluster.sims[other], "create", &query)
            .await
            .returncode(),
        Some("SUCCESS")
    );
    other
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_owner_answering_not_found_leads_to_one_new_search() {
    let cluster = Cluster::start(2).await;
    cluster.create("moving").await;
    let other = move_behind_its_back(&cluster, "moving").await;
    let reply = cluster.call("getMeetingInfo", "meetingID=moving").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    cluster.assert_join_goes_to("moving", other).await;
    assert_eq!(cluster.holder("moving"), Some(other));
}

#[tokio::test(flavor = "multi_thread")]
async fn join_confirms_a_remembered_owner_before_sending_users_there() {
    let cluster = Cluster::start(2).await;
    cluster.create("rejoin").await;
    let other = move_behind_its_back(&cluster, "rejoin").await;
    // Once the owner's last confirmation is older than the window, join asks
    // it again, finds the meeting gone, and searches.
    tokio::time::sleep(tinyscale::routing::CONFIRM_WINDOW).await;
    cluster.assert_join_goes_to("rejoin", other).await;
    // And create goes to the new server too, which answers duplicateWarning.
    tokio::time::sleep(tinyscale::routing::CONFIRM_WINDOW).await;
    let reply = cluster.call("create", "name=x&meetingID=rejoin").await;
    assert_eq!(
        reply.message_key(),
        Some("duplicateWarning"),
        "{}",
        reply.body
    );
    assert_eq!(cluster.holder("rejoin"), Some(other));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_server_does_not_stop_the_start() {
    let good = SimHandle::start("good-secret").await.unwrap();
    let wrong = SimHandle::start("its-real-secret").await.unwrap();
    let dead = SimHandle::start("dead-secret").await.unwrap();
    dead.set_mode(Mode::Refuse);
    let file = scratch_dir().join("servers.json");
    std::fs::write(
        &file,
        serde_json::json!([
            {"host": good.url(), "secret": "good-secret"},
            {"host": wrong.url(), "secret": "not-its-secret"},
            {"host": dead.url(), "secret": "dead-secret"},
        ])
        .to_string(),
    )
    .unwrap();
    let lb = Balancer::start(&[
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.to_str().unwrap()),
    ]);
    assert!(lb.wait_for_log("server unreachable").await, "{}", lb.logs());
    assert!(
        lb.wait_for_log("refuses our checksum").await,
        "{}",
        lb.logs()
    );
    assert!(lb.wait_for_log("server ok").await, "{}", lb.logs());
    let logs = lb.logs();
    assert!(!logs.contains("not-its-secret") && !logs.contains("good-secret"));
    let url = format!(
        "{}getMeetings?{}",
        lb.api(),
        signed(
            "getMeetings",
            "",
            SECRET,
            tinyscale::checksum::Algorithm::Sha1
        )
    );
    assert_eq!(get(&url).await.returncode(), Some("SUCCESS"));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_a_server_closed_while_idle_cost_no_failed_call() {
    // BBB's nginx closes keep-alive connections after 75 s idle. A request
    // that finds its pooled connection closed, or closing, goes out on a new
    // one: the client sees nothing of it, and nothing is logged as failed.
    let cluster = Cluster::start(2).await;
    let holder = cluster.create("kept-alive").await;
    for round in 0..30 {
        cluster.sims[holder].close_idle_connections();
        if round % 3 == 1 {
            // Give the balancer time to see the close, too.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let reply = cluster.call("getMeetingInfo", "meetingID=kept-alive").await;
        assert_eq!(
            reply.returncode(),
            Some("SUCCESS"),
            "round {round}: {}",
            reply.body
        );
    }
    let logs = cluster.lb.logs();
    assert!(!logs.contains("WARN"), "{logs}");
}
