//! Server tags (Scalelite's `meta_server-tag`, sent by Greenlight 3): a
//! create's tags choose the pool of servers a new meeting may go to —
//! through the real binary, in front of simulated servers, with reloads,
//! re-creation and two instances sharing Redis.

mod support;

use support::redis::RedisServer;
use support::*;
use tinyscale::checksum::Algorithm;

/// servers.json's entry for sim `i`, with these tags and extra fields.
fn tagged(
    cluster_sims: &[tinyscale::sim::SimHandle],
    i: usize,
    tags: &[&str],
) -> serde_json::Value {
    let mut entry = entry(cluster_sims, i);
    entry["tags"] = serde_json::json!(tags);
    entry
}

/// The unsigned query of a create, with `meta_server-tag` when given.
fn create_query(meeting_id: &str, tag: Option<&str>) -> String {
    let mut query = format!("name=Class&meetingID={}", encode(meeting_id));
    if let Some(tag) = tag {
        query.push_str(&format!("&meta_server-tag={}", encode(tag)));
    }
    query
}

/// Creates a meeting with this tag parameter; the server that got it.
async fn create_tagged(cluster: &Cluster, meeting_id: &str, tag: Option<&str>) -> usize {
    let reply = cluster.call("create", &create_query(meeting_id, tag)).await;
    assert_eq!(
        reply.returncode(),
        Some("SUCCESS"),
        "{tag:?}: {}",
        reply.body
    );
    cluster.holder(meeting_id).expect("some server holds it")
}

/// Creates `n` meetings with this tag parameter; how many went to each
/// server.
async fn spread(cluster: &Cluster, prefix: &str, tag: Option<&str>, n: usize) -> Vec<usize> {
    let mut counts = vec![0; cluster.sims.len()];
    for i in 0..n {
        counts[create_tagged(cluster, &format!("{prefix}-{i}"), tag).await] += 1;
    }
    counts
}

/// Asserts a create is refused with serverTagUnavailable and reaches no
/// server.
async fn assert_tag_unavailable(cluster: &Cluster, meeting_id: &str, tag: &str, shown: &str) {
    let reply = cluster
        .call("create", &create_query(meeting_id, Some(tag)))
        .await;
    assert_eq!(reply.returncode(), Some("FAILED"), "{}", reply.body);
    assert_eq!(
        reply.message_key(),
        Some("serverTagUnavailable"),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.field("message"),
        Some(format!("There is no available server with the required tag={shown}.").as_str())
    );
    assert_eq!(cluster.holder(meeting_id), None);
}

/// Asserts a create gets the usual "no server available" answer.
async fn assert_no_server(cluster: &Cluster, meeting_id: &str, tag: Option<&str>) {
    let reply = cluster.call("create", &create_query(meeting_id, tag)).await;
    assert_eq!(reply.message_key(), Some("internalError"), "{}", reply.body);
    assert_eq!(
        reply.field("message"),
        Some("No BigBlueButton server is available for new meetings.")
    );
    assert_eq!(cluster.holder(meeting_id), None);
}

/// Reloads servers.json and waits until the `n`th reload took effect.
async fn reload(cluster: &Cluster, entries: Vec<serde_json::Value>, n: usize) {
    cluster.reload(entries);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["reloaded the servers file"], n)
            .await,
        "{}",
        cluster.lb.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_choose_the_pool_of_a_new_meeting() {
    let sims = Cluster::sims(4).await;
    let entries = vec![
        tagged(&sims, 0, &["large"]),
        tagged(&sims, 1, &["large", "eu"]),
        entry(&sims, 2),
        entry(&sims, 3),
    ];
    let cluster = Cluster::launch(sims, entries, &[]);

    // A client that knows nothing of tags: the untagged servers only, as
    // are an empty parameter and a lone `!`.
    assert_eq!(spread(&cluster, "plain", None, 4).await, [0, 0, 2, 2]);
    assert_eq!(spread(&cluster, "empty", Some(""), 2).await, [0, 0, 1, 1]);
    assert_eq!(spread(&cluster, "bang", Some(" ! "), 2).await, [0, 0, 1, 1]);

    // Each pool takes its own turns: creates for other pools in between
    // do not make one server of a pool get them all.
    let mut large = vec![0; 4];
    let mut plain = vec![0; 4];
    for i in 0..4 {
        large[create_tagged(&cluster, &format!("big-{i}"), Some("large")).await] += 1;
        plain[create_tagged(&cluster, &format!("small-{i}"), None).await] += 1;
    }
    assert_eq!(large, [2, 2, 0, 0]);
    assert_eq!(plain, [0, 0, 2, 2]);

    // Any one of the tags, `,` or `;`, spaces ignored; `none` is untagged.
    assert_eq!(
        spread(&cluster, "eu", Some(" x ; eu "), 2).await,
        [0, 2, 0, 0]
    );
    assert_eq!(
        spread(&cluster, "eu-none", Some("eu,none"), 3).await,
        [0, 1, 1, 1]
    );
    assert_eq!(
        spread(&cluster, "none", Some("none!"), 2).await,
        [0, 0, 1, 1]
    );
    assert_eq!(
        spread(&cluster, "req", Some("large!"), 2).await,
        [1, 1, 0, 0]
    );

    // Preferred but carried by no server: the untagged ones.
    assert_eq!(
        spread(&cluster, "asia", Some("asia"), 2).await,
        [0, 0, 1, 1]
    );
    // Required: refused, with Scalelite's key, sent to no server.
    assert_tag_unavailable(&cluster, "asia-req", "asia!", "asia").await;
    assert_tag_unavailable(&cluster, "two-req", "asia; moon !", "asia,moon").await;
    // Compared exactly.
    assert_tag_unavailable(&cluster, "case", "LARGE!", "LARGE").await;
    assert_tag_unavailable(&cluster, "prefix", "larg!", "larg").await;

    // The parameter reaches the server unchanged.
    cluster.clear_requests();
    let on = create_tagged(&cluster, "forwarded", Some(" eu ; x!")).await;
    assert_eq!(on, 1);
    let seen = cluster.sims[1].requests();
    let create = seen.iter().find(|r| r.call == "create").expect("a create");
    assert!(
        create
            .raw_query
            .contains(&format!("meta_server-tag={}", encode(" eu ; x!"))),
        "{}",
        create.raw_query
    );

    // A meeting that exists goes to its server whatever its tag asks for
    // (BBB answers duplicateWarning), `!` included.
    let reply = cluster
        .call("create", &create_query("plain-0", Some("large!")))
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(reply.message_key(), Some("duplicateWarning"));
    assert_eq!(cluster.holder("plain-0"), Some(2));
    let reply = cluster
        .call("create", &create_query("big-0", Some("asia!")))
        .await;
    assert_eq!(
        reply.message_key(),
        Some("duplicateWarning"),
        "{}",
        reply.body
    );
    assert!(matches!(cluster.holder("big-0"), Some(0 | 1)));
    cluster.assert_log_has_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_available_servers_count_and_reload_applies_tags() {
    let cluster = Cluster::start_with(
        3,
        &[
            ("TINYSCALE_POLL_INTERVAL", "0.1"),
            ("TINYSCALE_POLL_TIMEOUT", "0.5"),
        ],
    )
    .await;
    let sims = &cluster.sims;
    reload(
        &cluster,
        vec![tagged(sims, 0, &["large"]), entry(sims, 1), entry(sims, 2)],
        1,
    )
    .await;
    assert_eq!(spread(&cluster, "a", Some("large!"), 2).await, [2, 0, 0]);
    assert_eq!(spread(&cluster, "a-plain", None, 2).await, [0, 1, 1]);

    // Cordoned: not available for new meetings. Preferred falls back to
    // the untagged servers; required is refused.
    let mut cordoned = tagged(sims, 0, &["large"]);
    cordoned["state"] = "cordoned".into();
    reload(&cluster, vec![cordoned, entry(sims, 1), entry(sims, 2)], 2).await;
    assert_eq!(spread(&cluster, "b", Some("large"), 2).await, [0, 1, 1]);
    assert_tag_unavailable(&cluster, "b-req", "large!", "large").await;

    // Tags moved by a reload: they apply at once.
    reload(
        &cluster,
        vec![entry(sims, 0), tagged(sims, 1, &["large"]), entry(sims, 2)],
        3,
    )
    .await;
    assert_eq!(spread(&cluster, "c", Some("large!"), 2).await, [0, 2, 0]);
    assert_eq!(spread(&cluster, "c-plain", None, 2).await, [1, 0, 1]);

    // No untagged server left: a create without tags, or with tags no
    // server carries, gets the usual "no server available" answer.
    reload(
        &cluster,
        vec![
            tagged(sims, 0, &["eu"]),
            tagged(sims, 1, &["large"]),
            tagged(sims, 2, &["large"]),
        ],
        4,
    )
    .await;
    assert_no_server(&cluster, "d-plain", None).await;
    assert_no_server(&cluster, "d-asia", Some("asia")).await;
    assert_eq!(spread(&cluster, "d", Some("eu"), 1).await, [1, 0, 0]);

    // Down: not available either.
    sims[0].set_mode(Mode::Refuse);
    let url = sims[0].url();
    assert!(
        cluster
            .lb
            .wait_for_lines(&["server went down", &url], 1)
            .await,
        "{}",
        cluster.lb.logs()
    );
    assert_tag_unavailable(&cluster, "e-req", "eu!", "eu").await;
    assert_no_server(&cluster, "e", Some("eu")).await;
    assert_eq!(
        spread(&cluster, "e-large", Some("eu,large"), 2).await,
        [0, 1, 1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meeting_made_again_keeps_to_its_tags() {
    let sims = Cluster::sims(3).await;
    let entries = vec![
        tagged(&sims, 0, &["large"]),
        tagged(&sims, 1, &["large"]),
        entry(&sims, 2),
    ];
    let cluster = Cluster::launch(
        sims,
        entries,
        &[
            ("TINYSCALE_POLL_INTERVAL", "0.1"),
            ("TINYSCALE_POLL_TIMEOUT", "0.5"),
        ],
    );
    let first = create_tagged(&cluster, "lecture", Some("large!")).await;
    let other = 1 - first;
    let down = |i: usize| {
        cluster.sims[i].set_mode(Mode::Refuse);
        cluster.sims[i].url()
    };

    // Its server goes: the join makes it again from the kept create, whose
    // tag still applies: on the other large server, not the untagged one.
    let url = down(first);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["server went down", &url], 1)
            .await
    );
    cluster.assert_join_goes_to("lecture", other).await;
    assert!(cluster.sims[other].has_meeting("lecture"));

    // That one goes too: no large server is left, and the tag was required.
    let url = down(other);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["server went down", &url], 1)
            .await
    );
    let reply = cluster
        .call("join", "meetingID=lecture&fullName=A&role=VIEWER")
        .await;
    assert_eq!(
        reply.message_key(),
        Some("serverTagUnavailable"),
        "{}",
        reply.body
    );
    assert!(!cluster.sims[2].has_meeting("lecture"));
}

/// Waits (bounded) until the instance's `tinyscale_redis_up` is 1.
async fn wait_redis_up(lb: &Balancer) -> bool {
    let addr = lb.metrics_addr.expect("metrics are served");
    for _ in 0..100 {
        let text = get(&format!("http://{addr}/metrics")).await.body;
        if text.lines().any(|l| l.trim() == "tinyscale_redis_up 1") {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_apply_to_placement_shared_through_redis() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let sims = Cluster::sims(4).await;
    let entries = vec![
        tagged(&sims, 0, &["large"]),
        tagged(&sims, 1, &["large"]),
        entry(&sims, 2),
        entry(&sims, 3),
    ];
    let env = [("TINYSCALE_REDIS_URL", redis_url.as_str())];
    let cluster = Cluster::launch(sims, entries, &env);
    let file = cluster.servers_file.to_string_lossy().into_owned();
    let b = Balancer::start(&[
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.as_str()),
        ("TINYSCALE_REDIS_URL", redis_url.as_str()),
    ]);
    assert!(wait_redis_up(&cluster.lb).await && wait_redis_up(&b).await);
    // Creates alternate between two pools, and every two between the
    // instances. Each pool's round-robin turn is shared: its servers take
    // turns whichever instance is asked (with turns of their own, each
    // instance would send its first create of a pool to the same server;
    // with one turn for all pools, a pool would get every other turn).
    let mut large = Vec::new();
    let mut plain = Vec::new();
    for i in 0..8 {
        let lb = if i % 4 < 2 { &cluster.lb } else { &b };
        let tag = if i % 2 == 0 { Some("large!") } else { None };
        let id = format!("shared-{i}");
        let url = format!(
            "{}create?{}",
            lb.api(),
            signed("create", &create_query(&id, tag), SECRET, Algorithm::Sha1)
        );
        let reply = get(&url).await;
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        let on = cluster.holder(&id).expect("created");
        if tag.is_some() {
            large.push(on);
        } else {
            plain.push(on);
        }
    }
    assert_eq!(large, [0, 1, 0, 1]);
    assert_eq!(plain, [2, 3, 2, 3]);
    let id = "shared-refused";
    let url = format!(
        "{}create?{}",
        b.api(),
        signed(
            "create",
            &create_query(id, Some("eu!")),
            SECRET,
            Algorithm::Sha1
        )
    );
    assert_eq!(get(&url).await.message_key(), Some("serverTagUnavailable"));
    assert_eq!(cluster.holder(id), None);
}
