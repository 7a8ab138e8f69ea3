//! Checksums as BBB checks them, end to end through the real binary.

mod support;

use hyper::Method;
use support::*;
use tinyscale::checksum::{self, Algorithm};

#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_and_both_space_encodings_are_accepted() {
    let cluster = Cluster::start(2).await;
    for (i, algorithm) in Algorithm::ALL.into_iter().enumerate() {
        for space in ["+", "%20"] {
            let id = format!("algo-{i}{space}x");
            let query = format!("name=My{space}Class&meetingID={}", id.replace('+', "%2B"));
            let reply = get(&cluster.url_with("create", &query, algorithm)).await;
            assert_eq!(
                reply.returncode(),
                Some("SUCCESS"),
                "{algorithm} {space}: {}",
                reply.body
            );
            let upper = cluster.url_with(
                "getMeetingInfo",
                &format!("meetingID={}", id.replace('+', "%2B")),
                algorithm,
            );
            let (base, sum) = upper.split_once("checksum=").unwrap();
            let reply = get(&format!("{base}checksum={}", sum.to_uppercase())).await;
            assert_eq!(
                reply.returncode(),
                Some("SUCCESS"),
                "upper-case hex: {}",
                reply.body
            );
            assert_eq!(reply.field("meetingName"), Some("My Class"));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn documentation_test_vector() {
    let secret = "639259d4-9dd8-4b25-bf01-95f9567eaf4b";
    let sim = SimHandle::start("backend-secret").await.unwrap();
    let dir = scratch_dir();
    let file = dir.join("servers.json");
    std::fs::write(
        &file,
        format!(r#"[{{"host":"{}","secret":"backend-secret"}}]"#, sim.url()),
    )
    .unwrap();
    let lb = Balancer::start(&[
        ("TINYSCALE_SECRET", secret),
        ("TINYSCALE_SERVERS", file.to_str().unwrap()),
    ]);
    let url = format!(
        "{}create?name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444&checksum=1fcbb0c4fc1f039f73aa6d697d2db9ba7f803f17",
        lb.api()
    );
    let reply = get(&url).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert!(sim.has_meeting("abc123"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_missing_and_duplicate_checksums_are_refused() {
    let cluster = Cluster::start(2).await;
    let api = cluster.lb.api();
    let good = signed("getMeetings", "", SECRET, Algorithm::Sha1);
    let wrong_secret = signed("getMeetings", "", "not-the-secret", Algorithm::Sha1);
    let other_call = signed("getRecordings", "", SECRET, Algorithm::Sha1);
    let cases = [
        format!("getMeetings?{wrong_secret}"),
        format!("getMeetings?{other_call}"),
        "getMeetings".to_string(),
        "getMeetings?checksum=".to_string(),
        "getMeetings?checksum=abc".to_string(),
        format!("getMeetings?{good}&{good}"),
        format!(
            "create?name=x&meetingID=y&{}",
            signed("create", "name=x&meetingID=z", SECRET, Algorithm::Sha1)
                .split('&')
                .nth(2)
                .unwrap()
        ),
    ];
    for case in cases {
        let reply = get(&format!("{api}{case}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.returncode(), Some("FAILED"), "{case}");
        assert_eq!(reply.message_key(), Some("checksumError"), "{case}");
        assert_eq!(reply.field("message"), Some("Checksums do not match"));
    }
    for sim in &cluster.sims {
        assert!(
            sim.requests().iter().all(|r| r.call != "create"),
            "a refused call was forwarded"
        );
    }
    let reply = get(&format!("{api}getMeetings?{good}")).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
}

#[tokio::test(flavor = "multi_thread")]
async fn php_library_get_meetings_form_is_signed_over_the_empty_string() {
    let cluster = Cluster::start(2).await;
    let sum = checksum::sign("getMeetings", "", SECRET, Algorithm::Sha256);
    let reply = get(&format!("{}getMeetings?&checksum={sum}", cluster.lb.api())).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert_eq!(reply.message_key(), Some("noMeetings"));
}

#[tokio::test(flavor = "multi_thread")]
async fn algorithms_can_be_restricted() {
    let cluster =
        Cluster::start_with(1, &[("TINYSCALE_CHECKSUM_ALGORITHMS", "sha256,sha512")]).await;
    let reply = get(&cluster.url_with("getMeetings", "", Algorithm::Sha1)).await;
    assert_eq!(reply.message_key(), Some("checksumError"));
    let reply = get(&cluster.url_with("getMeetings", "", Algorithm::Sha512)).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"));
}

#[tokio::test(flavor = "multi_thread")]
async fn form_post_with_empty_query_is_checked_over_its_sorted_body() {
    let cluster = Cluster::start(2).await;
    let params = "name=Form+Class&meetingID=form%20post&attendeePW=a&moderatorPW=m";
    let (string, _) = checksum::form_body_signing_string(params.as_bytes());
    let sum = checksum::sign("create", &string, SECRET, Algorithm::Sha256);
    let body = format!("{params}&checksum={sum}");
    let url = format!("{}create", cluster.lb.api());
    let form = Some("application/x-www-form-urlencoded");
    let reply = send(Method::POST, &url, form, body.clone()).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let holder = cluster.holder("form post").expect("created");
    let seen = cluster.sims[holder]
        .requests()
        .into_iter()
        .find(|r| r.call == "create")
        .unwrap();
    assert!(seen.checksum_ok);
    assert!(
        seen.body.starts_with(params.as_bytes()),
        "body kept: {:?}",
        seen.body
    );

    let tampered = body.replace("Form+Class", "Other");
    let reply = send(Method::POST, &url, form, tampered).await;
    assert_eq!(reply.message_key(), Some("checksumError"));
}
