//! Starting and stopping the binary: configuration refused with a clear
//! message; on SIGTERM the listener closes at once, requests in flight
//! finish, and the exit is clean.

mod support;

use support::*;

#[test]
fn refuses_to_start_without_a_secret() {
    let file = scratch_dir().join("servers.json");
    std::fs::write(&file, r#"[{"host":"http://127.0.0.1:9","secret":"x"}]"#).unwrap();
    for secret in [None, Some("")] {
        let mut env = vec![("TINYSCALE_SERVERS", file.to_str().unwrap())];
        if let Some(s) = secret {
            env.push(("TINYSCALE_SECRET", s));
        }
        let Err((code, output)) = Balancer::try_start(&env) else {
            panic!("started without a secret")
        };
        // 78 (EX_CONFIG): the systemd unit does not restart on it.
        assert_eq!(code, Some(78), "{output}");
        assert_eq!(output.lines().count(), 1, "{output}");
        assert!(output.contains("TINYSCALE_SECRET"), "{output}");
    }
}

#[test]
fn refuses_a_bad_servers_file_naming_file_entry_and_problem() {
    let dir = scratch_dir();
    let cases = [
        ("not json", "is not valid JSON"),
        ("[]", "lists no servers"),
        (
            r#"[{"host":"https://a.example.org"}]"#,
            "server #1 (https://a.example.org): \"secret\" is missing",
        ),
        (r#"[{"host":"a.example.org","secret":"x"}]"#, "is not a URL"),
        (
            r#"[{"host":"https://a","secret":"x"},{"host":"https://a/","secret":"y"}]"#,
            "server #2 (https://a/) is the same server as #1",
        ),
        (
            r#"[{"host":"https://a","secret":"x","wheight":1}]"#,
            "unknown field `wheight`",
        ),
    ];
    for (n, (text, expected)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("servers-{n}.json"));
        std::fs::write(&file, text).unwrap();
        let Err((code, output)) = Balancer::try_start(&[
            ("TINYSCALE_SECRET", SECRET),
            ("TINYSCALE_SERVERS", file.to_str().unwrap()),
        ]) else {
            panic!("started with {text}")
        };
        assert_eq!(code, Some(78), "{output}");
        assert!(
            output.contains(file.to_str().unwrap()),
            "names the file: {output}"
        );
        assert!(output.contains(expected), "{text}: {output}");
    }
    let missing = dir.join("nope.json");
    let Err((code, output)) = Balancer::try_start(&[
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", missing.to_str().unwrap()),
    ]) else {
        panic!("started without a servers file")
    };
    assert_eq!(code, Some(78), "{output}");
    assert!(output.contains("cannot be read"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly() {
    let cluster = Cluster::start(1).await;
    assert_eq!(
        cluster.call("getMeetings", "").await.returncode(),
        Some("SUCCESS")
    );
    let Cluster { lb, .. } = cluster;
    assert_eq!(lb.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_slow_request_finish_and_refuses_new_connections() {
    let cluster = Cluster::start(1).await;
    cluster.create("slow").await;
    let sim = cluster.sims[0].clone();
    sim.set_mode(Mode::Hang);
    let url = cluster.url("getMeetingInfo", "meetingID=slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    sim.wait_until_holding(1).await;

    let Cluster { lb, .. } = cluster;
    let addr = lb.addr;
    lb.signal("TERM");
    assert!(lb.wait_for_log("stopped listening").await, "{}", lb.logs());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused"
    );

    sim.set_mode(Mode::Normal);
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.returncode(),
        Some("SUCCESS"),
        "the request in flight completed"
    );
    let code = tokio::task::spawn_blocking(move || lb.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
