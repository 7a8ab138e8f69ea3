//! API details: breakout rooms on their parent's server, getSessions
//! merged from every server, and the API root under `/bigbluebutton/`.

mod support;

use sha1::{Digest, Sha1};
use support::*;

/// A breakout's create, as BBB's own (akka-apps) would send it: the
/// meetingID is `<hash>-<time>` and bbb-web rewrites the external one.
fn breakout_query(parent: &str, given: &str, sequence: u32) -> String {
    format!(
        "name=Room+{sequence}&meetingID={}&isBreakout=true&parentMeetingID={}&sequence={sequence}",
        encode(given),
        encode(parent)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn breakout_rooms_land_on_their_parents_server() {
    let cluster = Cluster::start(3).await;
    let parent = "class-with-breakouts";
    let home = cluster.create(parent).await;
    let info = cluster
        .call("getMeetingInfo", &format!("meetingID={parent}"))
        .await;
    let parent_internal = info
        .field("internalMeetingID")
        .expect("internal ID")
        .to_string();

    // Round-robin would spread these three over the three servers.
    for sequence in 1..=3 {
        let time = 1_700_000_000_000u64 + u64::from(sequence);
        let given = format!("{}-{time}", "ab".repeat(20));
        let reply = cluster
            .call("create", &breakout_query(parent, &given, sequence))
            .await;
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        // Answered with the breakout's meetingID as bbb-web rewrites it.
        let hash = Sha1::digest(format!("{parent_internal}-{time}-{sequence}").as_bytes());
        let expected = format!("{}-{time}", hex::encode(hash));
        assert_eq!(
            reply.field("meetingID"),
            Some(expected.as_str()),
            "{}",
            reply.body
        );
        assert_eq!(reply.field("internalMeetingID"), Some(given.as_str()));
        assert_eq!(
            cluster.holder(&expected),
            Some(home),
            "breakout {sequence} not on the parent's server"
        );
        // Later calls name it by that ID and find it there.
        cluster.assert_join_goes_to(&expected, home).await;
    }

    // The parent named by its internal ID (as bbb-web also finds it).
    let given = format!("{}-1700000000009", "ab".repeat(20));
    let reply = cluster
        .call("create", &breakout_query(&parent_internal, &given, 9))
        .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let breakout = reply.field("meetingID").expect("meetingID").to_string();
    assert_eq!(cluster.holder(&breakout), Some(home));

    // A create of a meeting that is not a breakout is still placed anew.
    let other = cluster.create("not-a-breakout").await;
    assert_ne!(other, home, "round-robin moved on");
    cluster.assert_log_has_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn breakout_rooms_need_a_parent_some_server_holds() {
    let cluster = Cluster::start(2).await;
    let given = format!("{}-1700000000000", "cd".repeat(20));

    // A parent no server holds: bbb-web's own refusal; no server is asked
    // to create it.
    let reply = cluster
        .call("create", &breakout_query("no-such-class", &given, 1))
        .await;
    assert_eq!(reply.returncode(), Some("FAILED"), "{}", reply.body);
    assert_eq!(reply.message_key(), Some("parentMeetingDoesNotExist"));
    assert_eq!(
        reply.field("message"),
        Some("No parent meeting exists for the breakout room")
    );
    for sim in &cluster.sims {
        assert!(sim.requests().iter().all(|r| r.call != "create"));
        assert!(sim.meeting_ids().is_empty());
    }

    // No parentMeetingID at all.
    let query = format!(
        "name=Room&meetingID={}&isBreakout=true&sequence=1",
        encode(&given)
    );
    let reply = cluster.call("create", &query).await;
    assert_eq!(reply.returncode(), Some("FAILED"), "{}", reply.body);
    assert_eq!(reply.message_key(), Some("parentMeetingIDMissing"));
    assert_eq!(
        reply.field("message"),
        Some("No parent meeting ID was provided for the breakout room")
    );
    for sim in &cluster.sims {
        assert!(sim.requests().iter().all(|r| r.call != "create"));
    }
}

/// The simulator refuses breakouts as bbb-web does: asked directly.
#[tokio::test(flavor = "multi_thread")]
async fn simulator_refuses_breakouts_as_bbb_web_does() {
    let sims = Cluster::sims(1).await;
    let given = format!("{}-1700000000000", "ef".repeat(20));
    let reply = direct(&sims[0], "create", &breakout_query("elsewhere", &given, 1)).await;
    assert_eq!(
        reply.message_key(),
        Some("parentMeetingDoesNotExist"),
        "{}",
        reply.body
    );
    let query = format!(
        "name=Room&meetingID={}&isBreakout=true&sequence=1",
        encode(&given)
    );
    let reply = direct(&sims[0], "create", &query).await;
    assert_eq!(
        reply.message_key(),
        Some("parentMeetingIDMissing"),
        "{}",
        reply.body
    );
    assert!(sims[0].meeting_ids().is_empty());
    // isBreakout=false is an ordinary create.
    let reply = direct(
        &sims[0],
        "create",
        "name=A&meetingID=plain&isBreakout=false",
    )
    .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert!(sims[0].has_meeting("plain"));
}

#[tokio::test(flavor = "multi_thread")]
async fn get_sessions_merges_every_server() {
    let cluster = Cluster::start(3).await;
    // None at all: bbb-web's own empty answer, its spelling included.
    let reply = cluster.call("getSessions", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(reply.message_key(), Some("noSessions"));
    assert_eq!(
        reply.field("message"),
        Some("no sessions were found on this serverr")
    );
    assert!(reply.body.contains("<sessions/>"), "{}", reply.body);

    // Meetings on every server, each with users in it.
    let mut holders = Vec::new();
    for n in 0..3 {
        let id = format!("sessions-{n}");
        let holder = cluster.create(&id).await;
        for user in ["Alice", "Bob"] {
            assert!(cluster.sims[holder].add_attendee(
                &id,
                &format!("{user} {n}"),
                "VIEWER",
                false
            ));
        }
        holders.push(holder);
    }
    holders.sort();
    holders.dedup();
    assert_eq!(
        holders.len(),
        3,
        "round-robin puts one meeting on each server"
    );

    let reply = cluster.call("getSessions", "").await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(reply.message_key(), None, "{}", reply.body);
    assert_eq!(reply.body.matches("<meeting>").count(), 6, "{}", reply.body);
    for n in 0..3 {
        for user in ["Alice", "Bob"] {
            let name = format!("<userName>{user} {n}</userName>");
            assert!(reply.body.contains(&name), "{name} missing: {}", reply.body);
        }
    }
    assert!(reply.body.starts_with("<response>") && reply.body.trim_end().ends_with("</response>"));
    assert_eq!(
        reply.body.matches("<sessions>").count(),
        1,
        "{}",
        reply.body
    );
    cluster.assert_log_has_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn bigbluebutton_slash_is_the_api_root() {
    let cluster = Cluster::start(1).await;
    let base = cluster.lb.api();
    let base = base.trim_end_matches("api/");
    assert!(base.ends_with("/bigbluebutton/"), "{base}");
    let reply = get(base).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.returncode(), Some("SUCCESS"));
    assert!(reply.field("version").is_some(), "{}", reply.body);
    // Only the root: a path beside the API is still not found.
    let reply = get(&format!("{base}apix")).await;
    assert_eq!(reply.status, 404);
}
