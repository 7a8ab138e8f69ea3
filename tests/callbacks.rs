//! Callbacks the servers sign (recording ready, analytics), relayed through
//! tinyscale and re-signed with its secret for the LMS; forged ones
//! refused; without TINYSCALE_PUBLIC_URL, passed unchanged with a warning
//! from `tinyscale check`.

mod support;

use hyper::Method;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use support::lms::{Delivered, Lms};
use support::*;

/// The claims of `token` if it verifies with `secret` (no claim demanded),
/// and its algorithm.
fn verified(token: &str, secret: &str) -> (Algorithm, serde_json::Value) {
    let alg = jsonwebtoken::decode_header(token).expect("a JWT").alg;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    let key = DecodingKey::from_secret(secret.as_bytes()).unwrap();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("the token does not verify with {secret:?}: {e}"));
    (alg, data.claims)
}

fn jwt(alg: Algorithm, claims: serde_json::Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
}

/// A meta value as the server keeps it (from its own getMeetingInfo).
async fn server_meta(sim: &SimHandle, meeting_id: &str, name: &str) -> String {
    let info = direct(sim, "getMeetingInfo", &format!("meetingID={meeting_id}")).await;
    info.field(name)
        .unwrap_or_else(|| panic!("no <{name}> in {}", info.body))
        .replace("&amp;", "&")
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// A create with the callbacks Moodle sets, through tinyscale; the index of
/// the server that got it.
async fn create_with_callbacks(cluster: &Cluster, meeting_id: &str, lms: &Lms) -> usize {
    let query = format!(
        "meetingID={meeting_id}&name=Callbacks&record=true&meta_bn-recording-ready-url={}&meta_analytics-callback-url={}&meta_endCallbackUrl={}&meetingEndedURL={}",
        encode(&format!(
            "{}/mod/bigbluebuttonbn/bbb_broker.php?action=recording_ready&bigbluebuttonbn=7",
            lms.url()
        )),
        encode(&format!(
            "{}/mod/bigbluebuttonbn/bbb_broker.php?action=meeting_events&bigbluebuttonbn=7",
            lms.url()
        )),
        encode(&format!("{}/end?id=7", lms.url())),
        encode(&format!("{}/ended", lms.url())),
    );
    let reply = cluster.call("create", &query).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    cluster.holder(meeting_id).expect("a server holds it")
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_reach_the_lms_signed_with_tinyscales_secret() {
    let lms = Lms::start(&[]).await;
    let sims = Cluster::sims(2).await;
    let entries = (0..2).map(|i| entry(&sims, i)).collect();
    let cluster = Cluster::launch_public(sims, entries, "", &[]);
    let mut delivered = 0;
    for meeting in ["cb-a", "cb-b"] {
        let at = create_with_callbacks(&cluster, meeting, &lms).await;
        let sim = &cluster.sims[at];

        // The server keeps tinyscale's relay for the two signed callbacks,
        // and the others as the LMS gave them.
        let ready = server_meta(sim, meeting, "bn-recording-ready-url").await;
        assert!(
            ready.starts_with(&format!(
                "{}tinyscale/callback/recording-ready?",
                cluster.lb.api().trim_end_matches("bigbluebutton/api/")
            )),
            "{ready}"
        );
        assert!(
            ready.contains(&encode(&sim.url())),
            "the relay names the server: {ready}"
        );
        let analytics = server_meta(sim, meeting, "analytics-callback-url").await;
        assert!(
            analytics.contains("/tinyscale/callback/analytics?"),
            "{analytics}"
        );
        assert_eq!(
            server_meta(sim, meeting, "endcallbackurl").await,
            format!("{}/end?id=7", lms.url())
        );
        // What getMeetingInfo through tinyscale shows is the server's.
        let info = cluster
            .call("getMeetingInfo", &format!("meetingID={meeting}"))
            .await;
        assert_eq!(
            info.field("bn-recording-ready-url")
                .map(|v| v.replace("&amp;", "&")),
            Some(ready)
        );

        // Recording ready: 202 to the server, then the LMS gets the same
        // form with a token it can check with the secret it knows.
        assert_eq!(
            sim.send_recording_ready(meeting, &format!("rec-{meeting}"))
                .await,
            Ok(202)
        );
        delivered += 1;
        let got = lms.wait_for(delivered).await.pop().unwrap();
        assert_eq!(got.method, "POST");
        assert_eq!(
            got.target,
            "/mod/bigbluebuttonbn/bbb_broker.php?action=recording_ready&bigbluebuttonbn=7"
        );
        assert_eq!(
            got.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let token = form_value(&got.body, "signed_parameters").expect("signed_parameters");
        let (alg, claims) = verified(&token, SECRET);
        assert_eq!(alg, Algorithm::HS256);
        assert_eq!(
            claims,
            json!({"meeting_id": meeting, "record_id": format!("rec-{meeting}")})
        );

        // Analytics: the same JSON, a Bearer token signed with our secret.
        assert_eq!(sim.send_analytics(meeting).await, Ok(202));
        delivered += 1;
        let got = lms.wait_for(delivered).await.pop().unwrap();
        assert_eq!(
            got.target,
            "/mod/bigbluebuttonbn/bbb_broker.php?action=meeting_events&bigbluebuttonbn=7"
        );
        assert_eq!(got.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(body["meeting_id"], json!(meeting));
        assert_eq!(body["version"], json!("1.0"));
        let bearer = got
            .header("authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap();
        let (alg, analytics_claims) = verified(bearer, SECRET);
        assert_eq!(alg, Algorithm::HS512);
        assert!(analytics_claims["exp"].as_u64().unwrap() > jsonwebtoken::get_current_timestamp());
    }
    // Counted once the LMS's answer is read, just after the LMS saw it.
    assert!(
        cluster
            .lb
            .wait_for_lines(&["callback delivered to the LMS"], 4)
            .await
    );
    let metrics = cluster.lb.metrics().await;
    assert!(
        metrics
            .contains("tinyscale_callbacks_total{kind=\"recording-ready\",result=\"accepted\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tinyscale_callback_deliveries_total{kind=\"analytics\",result=\"delivered\"} 2"
        ),
        "{metrics}"
    );
    cluster.assert_log_has_no_secrets();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_create_signed_in_its_body_gets_the_relay_too() {
    let lms = Lms::start(&[]).await;
    let sims = Cluster::sims(1).await;
    let entries = vec![entry(&sims, 0)];
    let cluster = Cluster::launch_public(sims, entries, "/lb", &[]);
    let params = format!(
        "meetingID=form-cb&name=Form&meta_bbb-recording-ready-url={}",
        encode(&format!("{}/recording_ready", lms.url()))
    );
    // Signed in the body, over its sorted parameters (bbb-web 2.7+).
    use tinyscale::checksum;
    let (string, _) = checksum::form_body_signing_string(params.as_bytes());
    let sum = checksum::sign("create", &string, SECRET, checksum::Algorithm::Sha256);
    let body = format!("{params}&checksum={sum}");
    let reply = send(
        Method::POST,
        &format!("{}create", cluster.lb.api()),
        Some("application/x-www-form-urlencoded"),
        body,
    )
    .await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    let relay = server_meta(&cluster.sims[0], "form-cb", "bbb-recording-ready-url").await;
    // The public URL's path prefix is kept; tinyscale answers there too.
    assert!(
        relay.contains("/lb/tinyscale/callback/recording-ready?"),
        "{relay}"
    );
    assert_eq!(
        cluster.sims[0].send_recording_ready("form-cb", "r1").await,
        Ok(202)
    );
    let got = lms.wait_for(1).await;
    assert_eq!(got[0].target, "/recording_ready");
    let token = form_value(&got[0].body, "signed_parameters").unwrap();
    assert_eq!(
        verified(&token, SECRET).1,
        json!({"meeting_id": "form-cb", "record_id": "r1"})
    );
}

/// POSTs a recording-ready form to `url`; the HTTP status.
async fn post_ready(url: &str, token: &str) -> u16 {
    send(
        Method::POST,
        url,
        Some("application/x-www-form-urlencoded"),
        format!("signed_parameters={token}"),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_that_do_not_verify_are_refused_and_not_forwarded() {
    let lms = Lms::start(&[]).await;
    let sims = Cluster::sims(2).await;
    let entries = (0..2).map(|i| entry(&sims, i)).collect();
    let cluster = Cluster::launch_public(sims, entries, "", &[]);
    let at = create_with_callbacks(&cluster, "forged", &lms).await;
    let (sim, other) = (&cluster.sims[at], &cluster.sims[1 - at]);
    let relay = server_meta(sim, "forged", "bn-recording-ready-url").await;
    let claims_of = json!({"meeting_id": "forged", "record_id": "r"});
    let good = jwt(Algorithm::HS256, claims_of.clone(), &sim.secret());

    // A JWT signed with the other server's secret, or with tinyscale's.
    let wrong = jwt(Algorithm::HS256, claims_of.clone(), &other.secret());
    assert_eq!(post_ready(&relay, &wrong).await, 401);
    assert_eq!(
        post_ready(&relay, &jwt(Algorithm::HS256, claims_of.clone(), SECRET)).await,
        401
    );
    assert_eq!(post_ready(&relay, "garbage").await, 401);
    // A relay URL tinyscale did not issue: another target, or no signature.
    let elsewhere = relay.replace("bigbluebuttonbn%3D7", "bigbluebuttonbn%3D8");
    assert_ne!(elsewhere, relay);
    assert_eq!(post_ready(&elsewhere, &good).await, 401);
    let unsigned = relay.split("&sig=").next().unwrap().to_string();
    assert_eq!(post_ready(&unsigned, &good).await, 401);
    // The right relay for analytics is not one for recording ready.
    let analytics = server_meta(sim, "forged", "analytics-callback-url").await;
    let crossed = analytics.replace("/callback/analytics?", "/callback/recording-ready?");
    assert_eq!(post_ready(&crossed, &good).await, 401);
    // An analytics callback without its Bearer token.
    let bare = send(Method::POST, &analytics, Some("application/json"), "{}").await;
    assert_eq!(bare.status, 401);

    // The genuine one passes, and only it reaches the LMS.
    assert_eq!(post_ready(&relay, &good).await, 202);
    let got = lms.wait_for(1).await;
    assert_eq!(got.len(), 1);

    // A server no longer in servers.json: refused, and logged.
    let keep = if at == 0 { 1 } else { 0 };
    cluster.reload(vec![cluster.entry(keep)]);
    assert!(cluster.lb.wait_for_log("reloaded the servers file").await);
    assert_eq!(post_ready(&relay, &good).await, 401);
    assert!(
        cluster
            .lb
            .wait_for_log("which is not in the servers file")
            .await
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(lms.requests().len(), 1, "nothing refused was forwarded");
    let metrics = cluster.lb.metrics().await;
    assert!(
        metrics
            .contains("tinyscale_callbacks_total{kind=\"recording-ready\",result=\"refused\"} 7"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_lms_that_fails_is_tried_again() {
    // Two failures, then it takes it: delivered at the third try. (The
    // public URL given as the API URL works too.)
    let lms = Lms::start(&[503, 500]).await;
    let sims = Cluster::sims(1).await;
    let entries = vec![entry(&sims, 0)];
    let cluster = Cluster::launch_public(sims, entries, "/bigbluebutton/api", &[]);
    create_with_callbacks(&cluster, "retry", &lms).await;
    assert_eq!(
        cluster.sims[0].send_recording_ready("retry", "r").await,
        Ok(202)
    );
    let got = lms.wait_for(3).await;
    assert!(
        got.windows(2).all(|w| w[0].body == w[1].body),
        "the same delivery each time"
    );
    assert!(
        cluster
            .lb
            .wait_for_log("callback delivered to the LMS")
            .await
    );
    let logs = cluster.lb.logs();
    assert_eq!(
        logs.matches("the LMS answered HTTP 503; trying again in 1s")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("the LMS answered HTTP 500; trying again in 2s")
            .count(),
        1,
        "{logs}"
    );
    let metrics = cluster.lb.metrics().await;
    assert!(
        metrics.contains(
            "tinyscale_callback_deliveries_total{kind=\"recording-ready\",result=\"failed\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tinyscale_callback_deliveries_total{kind=\"recording-ready\",result=\"delivered\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_public_url_callbacks_pass_unchanged_and_check_warns() {
    let lms = Lms::start(&[]).await;
    let cluster = Cluster::start(2).await;
    let at = create_with_callbacks(&cluster, "plain", &lms).await;
    let sim = &cluster.sims[at];
    let ready = server_meta(sim, "plain", "bn-recording-ready-url").await;
    assert_eq!(
        ready,
        format!(
            "{}/mod/bigbluebuttonbn/bbb_broker.php?action=recording_ready&bigbluebuttonbn=7",
            lms.url()
        )
    );
    // So the LMS gets the server's own token, which its secret rejects.
    assert_eq!(sim.send_recording_ready("plain", "r").await, Ok(200));
    let got: Vec<Delivered> = lms.wait_for(1).await;
    let token = form_value(&got[0].body, "signed_parameters").unwrap();
    verified(&token, &sim.secret());

    let file = cluster.servers_file.to_string_lossy().into_owned();
    let env = [
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.as_str()),
    ];
    let (code, out, _) = run_tinyscale(&["check"], &env).await;
    assert_eq!(code, Some(0), "a warning does not fail the check: {out}");
    for sim in &cluster.sims {
        assert!(
            out.contains(&format!(
                "WARNING {}: its secret differs from TINYSCALE_SECRET",
                sim.url()
            )),
            "{out}"
        );
    }
    assert!(!out.contains(&cluster.sims[0].secret()), "{out}");
    // With it set, check says where callbacks go, and warns no more.
    let env = [
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.as_str()),
        ("TINYSCALE_PUBLIC_URL", "https://lb.example.org"),
    ];
    let (code, out, _) = run_tinyscale(&["check"], &env).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    assert!(
        out.contains("https://lb.example.org/tinyscale/callback/"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meeting_made_again_elsewhere_calls_back_through_its_new_server() {
    let lms = Lms::start(&[]).await;
    let sims = Cluster::sims(2).await;
    let entries = (0..2).map(|i| entry(&sims, i)).collect();
    let cluster = Cluster::launch_public(sims, entries, "", &[("TINYSCALE_POLL_INTERVAL", "0.1")]);
    let first = create_with_callbacks(&cluster, "moved", &lms).await;
    let (old, new) = (&cluster.sims[first], &cluster.sims[1 - first]);
    old.set_mode(Mode::Refuse);
    assert!(
        cluster
            .lb
            .wait_for_lines(&["server went down", &old.url()], 1)
            .await
    );
    // The join makes the meeting again from its kept create: the relay in
    // the new copy names the new server, whose secret its JWT is checked with.
    let join = cluster
        .call("join", "meetingID=moved&fullName=Ada&role=VIEWER")
        .await;
    assert_eq!(join.status, 302, "{}", join.body);
    assert!(new.has_meeting("moved"));
    let relay = server_meta(new, "moved", "bn-recording-ready-url").await;
    assert!(relay.contains(&encode(&new.url())), "{relay}");
    assert_eq!(new.send_recording_ready("moved", "r2").await, Ok(202));
    let got = lms.wait_for(1).await;
    let token = form_value(&got[0].body, "signed_parameters").unwrap();
    assert_eq!(
        verified(&token, SECRET).1,
        json!({"meeting_id": "moved", "record_id": "r2"})
    );
}
