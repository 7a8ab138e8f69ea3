//! Several instances as one: two tinyscale processes in front of the same
//! simulated servers, sharing a real `redis-server` (started by each test
//! on a free port, without persistence).

mod support;

use std::time::Duration;
use support::redis::RedisServer;
use support::*;
use tinyscale::checksum::Algorithm;

/// Two instances, `a` (the cluster's own) and `b`, on one servers file.
struct Pair {
    cluster: Cluster,
    b: Balancer,
}

impl Pair {
    async fn start(n: usize, redis: &RedisServer, env: &[(&str, &str)]) -> Pair {
        let url = redis.url();
        let mut all = vec![("TINYSCALE_REDIS_URL", url.as_str())];
        all.extend_from_slice(env);
        let cluster = Cluster::start_with(n, &all).await;
        let file = cluster.servers_file.to_string_lossy().into_owned();
        let mut b_env = vec![
            ("TINYSCALE_SECRET", SECRET),
            ("TINYSCALE_SERVERS", file.as_str()),
        ];
        b_env.extend_from_slice(&all);
        let b = Balancer::start(&b_env);
        Pair { cluster, b }
    }

    fn instance(&self, which: usize) -> &Balancer {
        if which == 0 {
            &self.cluster.lb
        } else {
            &self.b
        }
    }

    fn url(&self, which: usize, call: &str, query: &str) -> String {
        format!(
            "{}{call}?{}",
            self.instance(which).api(),
            signed(call, query, SECRET, Algorithm::Sha1)
        )
    }

    async fn create(&self, which: usize, meeting_id: &str) -> Reply {
        get(&self.url(
            which,
            "create",
            &format!("name=Class&meetingID={meeting_id}"),
        ))
        .await
    }

    fn holders(&self, meeting_id: &str) -> Vec<usize> {
        (0..self.cluster.sims.len())
            .filter(|&i| self.cluster.sims[i].has_meeting(meeting_id))
            .collect()
    }
}

/// `tinyscale_redis_up` of an instance, if exported.
async fn redis_up(lb: &Balancer) -> Option<i64> {
    let addr = lb.metrics_addr?;
    let text = get(&format!("http://{addr}/metrics")).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix("tinyscale_redis_up "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (bounded) until `tinyscale_redis_up` is `value`.
async fn wait_redis_up(lb: &Balancer, value: i64) -> bool {
    for _ in 0..100 {
        if redis_up(lb).await == Some(value) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_meeting_on_two_instances_land_once() {
    let redis = RedisServer::start();
    let pair = Pair::start(3, &redis, &[]).await;
    for round in 0..3 {
        // One instance's turn ahead of the other's: alone, each would place
        // the meeting on another server.
        let warm = pair.create(0, &format!("warm-{round}")).await;
        assert_eq!(warm.returncode(), Some("SUCCESS"));
        let id = format!("together-{round}");
        let calls: Vec<_> = (0..30)
            .map(|i| {
                let url = pair.url(i % 2, "create", &format!("name=Class&meetingID={id}"));
                tokio::spawn(async move { get(&url).await })
            })
            .collect();
        for call in calls {
            let reply = call.await.unwrap();
            assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        }
        assert_eq!(
            pair.holders(&id).len(),
            1,
            "{id} on {:?}",
            pair.holders(&id)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_is_one_turn_across_instances() {
    let redis = RedisServer::start();
    let pair = Pair::start(3, &redis, &[]).await;
    let pattern = [0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1];
    let mut holders = Vec::new();
    for (n, which) in pattern.into_iter().enumerate() {
        let id = format!("rr-{n}");
        assert_eq!(pair.create(which, &id).await.returncode(), Some("SUCCESS"));
        holders.push(pair.holders(&id)[0]);
    }
    for three in holders.windows(3) {
        let mut seen = three.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3, "three in a row on {holders:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_loaded_reservations_are_shared() {
    let redis = RedisServer::start();
    // No poll clears the reservations during the test.
    let env = [
        ("TINYSCALE_STRATEGY", "least-loaded"),
        ("TINYSCALE_POLL_INTERVAL", "3600"),
    ];
    let pair = Pair::start(3, &redis, &env).await;
    let pattern = [1, 0, 0, 1, 1, 0, 1, 0, 0];
    let mut holders = Vec::new();
    for (n, which) in pattern.into_iter().enumerate() {
        let id = format!("ll-{n}");
        assert_eq!(pair.create(which, &id).await.returncode(), Some("SUCCESS"));
        holders.push(pair.holders(&id)[0]);
    }
    for three in holders.chunks(3) {
        let mut seen = three.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            3,
            "each three spread over the servers: {holders:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meeting_created_through_one_instance_is_found_by_the_other_without_a_search() {
    let redis = RedisServer::start();
    let pair = Pair::start(3, &redis, &[("TINYSCALE_POLL_INTERVAL", "3600")]).await;
    assert_eq!(pair.create(0, "known").await.returncode(), Some("SUCCESS"));
    let holder = pair.holders("known")[0];
    for sim in &pair.cluster.sims {
        sim.clear_requests();
    }
    let reply = get(&pair.url(1, "join", "meetingID=known&fullName=Ada&role=MODERATOR")).await;
    assert_eq!(reply.status, 302);
    let location = reply.location().unwrap();
    assert!(
        location.starts_with(&pair.cluster.sims[holder].url()),
        "{location}"
    );
    for (i, sim) in pair.cluster.sims.iter().enumerate() {
        if i != holder {
            assert!(
                sim.requests().is_empty(),
                "server {i} was asked: {:?}",
                sim.requests().iter().map(|r| &r.call).collect::<Vec<_>>()
            );
        }
    }
    let reply = get(&pair.url(1, "getMeetingInfo", "meetingID=known")).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_going_away_and_coming_back() {
    let mut redis = RedisServer::start();
    let pair = Pair::start(3, &redis, &[]).await;
    let (a, b) = (pair.instance(0), pair.instance(1));
    assert!(wait_redis_up(a, 1).await);
    redis.stop();
    // Both keep serving, correctly: the other instance finds the meeting by
    // searching.
    assert_eq!(pair.create(0, "during").await.returncode(), Some("SUCCESS"));
    let holder = pair.holders("during")[0];
    let reply = get(&pair.url(1, "join", "meetingID=during&fullName=Ada&role=MODERATOR")).await;
    assert!(
        reply
            .location()
            .unwrap()
            .starts_with(&pair.cluster.sims[holder].url())
    );
    assert!(wait_redis_up(a, 0).await && wait_redis_up(b, 0).await);
    assert!(a.wait_for_log("Redis is unreachable").await);
    for _ in 0..5 {
        assert_eq!(
            pair.create(1, "during-2").await.returncode(),
            Some("SUCCESS")
        );
    }
    assert_eq!(a.count_lines(&["Redis is unreachable"]), 1, "logged once");
    assert_eq!(b.count_lines(&["Redis is unreachable"]), 1, "logged once");
    // Back: shared again, without a restart.
    redis.restart();
    assert!(wait_redis_up(a, 1).await && wait_redis_up(b, 1).await);
    assert!(b.wait_for_log("Redis is reachable again").await);
    assert_eq!(pair.create(0, "after").await.returncode(), Some("SUCCESS"));
    let holder = pair.holders("after")[0];
    for sim in &pair.cluster.sims {
        sim.clear_requests();
    }
    let reply = get(&pair.url(1, "join", "meetingID=after&fullName=Ada&role=MODERATOR")).await;
    assert!(
        reply
            .location()
            .unwrap()
            .starts_with(&pair.cluster.sims[holder].url())
    );
    let asked = pair
        .cluster
        .sims
        .iter()
        .enumerate()
        .filter(|(i, sim)| *i != holder && !sim.requests().is_empty())
        .count();
    assert_eq!(asked, 0, "no search once Redis is back");
    // Never the password, never a line per call.
    assert_eq!(a.count_lines(&["Redis is reachable again"]), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_not_there_at_start() {
    let mut redis = RedisServer::not_yet();
    let pair = Pair::start(2, &redis, &[]).await;
    assert_eq!(pair.create(0, "early").await.returncode(), Some("SUCCESS"));
    let holder = pair.holders("early")[0];
    let reply = get(&pair.url(1, "join", "meetingID=early&fullName=Ada&role=MODERATOR")).await;
    assert!(
        reply
            .location()
            .unwrap()
            .starts_with(&pair.cluster.sims[holder].url())
    );
    assert_eq!(redis_up(pair.instance(0)).await, Some(0));
    redis.restart();
    assert!(wait_redis_up(pair.instance(0), 1).await);
    assert!(wait_redis_up(pair.instance(1), 1).await);
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let url = pair.url(i % 2, "create", "name=Class&meetingID=late");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().returncode(), Some("SUCCESS"));
    }
    assert_eq!(pair.holders("late").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_lock_whose_holder_died_expires() {
    let redis = RedisServer::start();
    // The lock lives the response timeout plus 5 s; no polls meanwhile.
    let env = [
        ("TINYSCALE_RESPONSE_TIMEOUT", "2"),
        ("TINYSCALE_POLL_INTERVAL", "3600"),
    ];
    let pair = Pair::start(2, &redis, &env).await;
    let sims = &pair.cluster.sims;
    for sim in sims {
        sim.set_mode(Mode::Hang);
    }
    let url = pair.url(0, "create", "name=Class&meetingID=orphan");
    let holder_call = tokio::spawn(async move { get(&url).await });
    let reached = tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            _ = sims[0].wait_until_holding(1) => {}
            _ = sims[1].wait_until_holding(1) => {}
        }
    });
    assert!(reached.await.is_ok(), "the create reached a server");
    // The holder dies mid-create, holding the lock; its create is dropped.
    pair.cluster.lb.signal("KILL");
    holder_call.abort();
    for sim in sims {
        sim.set_mode(Mode::Refuse);
        sim.set_mode(Mode::Normal);
    }
    let reply = pair.create(1, "orphan").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(pair.holders("orphan").len(), 1);
}

/// Runs `tinyscale ARGS` with only these environment variables.
/// A subcommand's exit code and all it printed.
async fn tool(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (code, stdout, stderr) = run_tinyscale(args, env).await;
    (code, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_password_is_never_shown_and_check_names_redis() {
    const PASSWORD: &str = "redis-pw-5f1e2d3c";
    let mut redis = RedisServer::start_with_password(PASSWORD);
    let pair = Pair::start(2, &redis, &[]).await;
    assert!(
        wait_redis_up(pair.instance(0), 1).await,
        "{}",
        pair.instance(0).logs()
    );
    assert_eq!(pair.create(0, "pw").await.returncode(), Some("SUCCESS"));
    let file = pair.cluster.servers_file.to_string_lossy().into_owned();
    let url = redis.url();
    let env = [
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.as_str()),
        ("TINYSCALE_REDIS_URL", url.as_str()),
    ];
    let (code, check) = tool(&["check"], &env).await;
    assert_eq!(code, Some(0), "{check}");
    assert!(check.contains("Redis redis://127.0.0.1:"), "{check}");
    let (_, status) = tool(&["status"], &env).await;
    assert!(status.contains("Redis redis://127.0.0.1:"), "{status}");
    redis.stop();
    let (code, check) = tool(&["check"], &env).await;
    assert_eq!(code, Some(1), "{check}");
    assert!(check.contains("PROBLEM Redis"), "{check}");
    assert!(wait_redis_up(pair.instance(0), 0).await);
    let (_, bad) = tool(
        &["check"],
        &[("TINYSCALE_REDIS_URL", "http://:redis-pw-5f1e2d3c@host/")],
    )
    .await;
    let metrics = get(&format!(
        "http://{}/metrics",
        pair.instance(0).metrics_addr.unwrap()
    ))
    .await
    .body;
    for text in [
        check,
        status,
        bad,
        metrics,
        pair.instance(0).logs(),
        pair.instance(1).logs(),
    ] {
        assert!(!text.contains(PASSWORD), "the password shown: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meeting_whose_server_went_down_is_made_again_once_through_either_instance() {
    let redis = RedisServer::start();
    let env = [
        ("TINYSCALE_POLL_INTERVAL", "0.1"),
        ("TINYSCALE_POLL_TIMEOUT", "0.5"),
    ];
    let pair = Pair::start(3, &redis, &env).await;
    let sims = &pair.cluster.sims;
    // Created through instance a; both learn its server from their polls.
    assert_eq!(pair.create(0, "moving").await.returncode(), Some("SUCCESS"));
    let holder = pair.holders("moving")[0];
    let url = sims[holder].url();
    sims[holder].set_mode(Mode::Refuse);
    for which in 0..2 {
        let lb = pair.instance(which);
        assert!(lb.wait_for_lines(&["server went down", &url], 1).await);
    }
    for sim in sims {
        sim.clear_requests();
    }
    // Joins through both at once: one of them makes it again, once.
    let joins: Vec<_> = (0..20)
        .map(|n| {
            let url = pair.url(
                n % 2,
                "join",
                &format!("meetingID=moving&fullName=U{n}&role=VIEWER"),
            );
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut servers = Vec::new();
    for join in joins {
        let reply = join.await.unwrap();
        assert_eq!(reply.status, 302, "{}", reply.body);
        let location = reply.location().unwrap().to_string();
        let to = (0..sims.len())
            .find(|&i| location.starts_with(&format!("{}/", sims[i].url())))
            .unwrap_or_else(|| panic!("{location}"));
        servers.push(to);
    }
    servers.sort();
    servers.dedup();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let moved_to = servers[0];
    assert_ne!(moved_to, holder);
    let creates: usize = sims
        .iter()
        .map(|s| s.requests().iter().filter(|r| r.call == "create").count())
        .sum();
    assert_eq!(creates, 1, "made again once");
    // Every instance sends its calls to the new copy.
    for which in 0..2 {
        let reply = get(&pair.url(which, "getMeetingInfo", "meetingID=moving")).await;
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        let reply = get(&pair.url(which, "join", "meetingID=moving&fullName=Z&role=VIEWER")).await;
        assert!(
            reply
                .location()
                .unwrap()
                .starts_with(&format!("{}/", sims[moved_to].url()))
        );
    }
    let asked = sims[moved_to]
        .requests()
        .iter()
        .filter(|r| r.call == "getMeetingInfo" && r.raw_query.contains("moving"))
        .count();
    assert!(asked >= 2, "both instances asked the new copy");
}
