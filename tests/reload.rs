//! SIGHUP re-reads servers.json: a valid file takes effect without losing
//! meetings; an invalid one is refused and the running configuration stays.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn reload_adds_and_removes_servers() {
    // servers.json lists servers 0 and 1; server 2 is added later.
    let sims = Cluster::sims(3).await;
    let entries = vec![entry(&sims, 0), entry(&sims, 1)];
    let cluster = Cluster::launch(sims, entries, &[("TINYSCALE_POLL_INTERVAL", "0.05")]);
    assert_eq!(cluster.create("stays").await, 0);
    assert_eq!(cluster.create("removed-with-its-server").await, 1);

    cluster.reload(vec![cluster.entry(0), cluster.entry(2)]);
    assert!(
        cluster.lb.wait_for_log("reloaded the servers file").await,
        "{}",
        cluster.lb.logs()
    );
    let logs = cluster.lb.logs();
    assert!(
        logs.contains(&format!("added=\"{}\"", cluster.sims[2].url())),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("removed=\"{}\"", cluster.sims[1].url())),
        "{logs}"
    );

    // Meetings on the server that stays are not forgotten.
    cluster.sims[0].clear_requests();
    let reply = cluster.call("getMeetingInfo", "meetingID=stays").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    // The removed server's meetings are unavailable.
    let reply = cluster
        .call("getMeetingInfo", "meetingID=removed-with-its-server")
        .await;
    assert_eq!(reply.message_key(), Some("serverUnavailable"));
    // New meetings go to the servers listed now, the added one included.
    let mut per_server = [0; 3];
    for n in 0..6 {
        per_server[cluster.create(&format!("after-{n}")).await] += 1;
    }
    assert_eq!(per_server, [3, 0, 3]);
    // The added server is polled.
    let third = cluster.sims[2].url();
    assert!(cluster.lb.wait_for_lines(&["polled", &third], 2).await);
    // And a create of the removed server's meeting starts it anew.
    let reply = cluster
        .call("create", "name=x&meetingID=removed-with-its-server")
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let id = "removed-with-its-server";
    assert!(cluster.sims[0].has_meeting(id) || cluster.sims[2].has_meeting(id));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_reload_is_refused_and_the_running_configuration_stays() {
    let cluster = Cluster::start(2).await;
    cluster.create("before").await;
    for (n, bad) in ["not json", "[]", r#"[{"host":"https://x"}]"#]
        .iter()
        .enumerate()
    {
        write_file(&cluster.servers_file, bad);
        cluster.lb.signal("HUP");
        assert!(
            cluster.lb.wait_for_lines(&["reload refused"], n + 1).await,
            "{}",
            cluster.lb.logs()
        );
    }
    assert!(
        cluster
            .lb
            .logs()
            .contains(&cluster.servers_file.display().to_string())
    );
    let reply = cluster.call("getMeetingInfo", "meetingID=before").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    let mut per_server = [0; 2];
    for n in 0..4 {
        per_server[cluster.create(&format!("still-{n}")).await] += 1;
    }
    assert_eq!(per_server, [2, 2]);
}
