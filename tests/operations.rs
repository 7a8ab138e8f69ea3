//! What an administrator runs: /metrics and /healthz, `status`, `check`,
//! the command line, JSON logs, the systemd unit.

mod support;

use std::collections::HashMap;
use std::process::Command;
use support::*;

/// Checks the text is Prometheus/OpenMetrics exposition format and returns
/// its samples: `name{labels}` → value.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            assert!(valid_name(parts.next().unwrap_or("")), "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("label: {line}"));
                assert!(valid_name(k), "{line}");
                assert!(!v.trim_end_matches('"').contains('"'), "{line}");
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value: {line}")),
        };
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(lb: &Balancer, path: &str) -> Reply {
    get(&format!(
        "http://{}{path}",
        lb.metrics_addr.expect("metrics on")
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_with_traffic() {
    let cluster = Cluster::start(2).await;
    let first = cluster.sims[0].url();
    let reply = scrape(&cluster.lb, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let before = parse_exposition(&reply.body);
    assert_eq!(
        before.get(&format!("tinyscale_server_up{{server=\"{first}\"}}")),
        Some(&1.0)
    );
    assert_eq!(
        before.get(&format!(
            "tinyscale_server_state{{server=\"{first}\",state=\"enabled\"}}"
        )),
        Some(&1.0)
    );

    cluster.create("measured").await;
    cluster.create("measured-too").await;
    cluster.call("getMeetingInfo", "meetingID=measured").await;
    cluster.call("getMeetings", "checksum=bad").await;
    let after = parse_exposition(&scrape(&cluster.lb, "/metrics").await.body);
    assert_eq!(
        after["tinyscale_requests_total{call=\"create\",result=\"SUCCESS\"}"],
        2.0
    );
    assert_eq!(
        after["tinyscale_requests_total{call=\"getMeetingInfo\",result=\"SUCCESS\"}"],
        1.0
    );
    assert_eq!(
        after["tinyscale_requests_total{call=\"getMeetings\",result=\"checksumError\"}"],
        1.0
    );
    assert_eq!(
        after["tinyscale_request_duration_seconds_count{call=\"create\"}"],
        2.0
    );
    assert!(
        after[&format!("tinyscale_backend_request_duration_seconds_count{{server=\"{first}\"}}")]
            >= 1.0
    );
    assert_eq!(after["tinyscale_known_meetings"], 2.0);
    assert_eq!(after["tinyscale_build_info{version=\"0.1.0\"}"], 1.0);
    for name in [
        "meetings",
        "participants",
        "videos",
        "load",
        "poll_duration_seconds",
    ] {
        let key = format!("tinyscale_server_{name}{{server=\"{first}\"}}");
        assert!(after.contains_key(&key), "{key}");
    }
    // Nothing secret on the metrics page either.
    let text = scrape(&cluster.lb, "/metrics").await.body;
    assert!(!text.contains(SECRET) && !text.contains(&cluster.sims[0].secret()));
    assert_eq!(scrape(&cluster.lb, "/other").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_not_on_the_api_address() {
    let cluster = Cluster::start(1).await;
    let reply = get(&format!("http://{}/metrics", cluster.lb.addr)).await;
    assert_eq!(reply.status, 404);
    assert_ne!(
        cluster.lb.metrics_addr.unwrap().port(),
        cluster.lb.addr.port()
    );
    assert!(cluster.lb.metrics_addr.unwrap().ip().is_loopback());
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_flips_when_all_servers_go_down() {
    let cluster = Cluster::start_with(2, &[("TINYSCALE_POLL_INTERVAL", "0.05")]).await;
    let reply = scrape(&cluster.lb, "/healthz").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "ok: 2 of 2 BigBlueButton servers up\n")
    );
    for sim in &cluster.sims {
        sim.set_mode(Mode::Refuse);
    }
    assert!(cluster.lb.wait_for_lines(&["server went down"], 2).await);
    let reply = scrape(&cluster.lb, "/healthz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "no BigBlueButton server is up (0 of 2)\n");
    cluster.sims[0].set_mode(Mode::Normal);
    assert!(cluster.lb.wait_for_lines(&["server is up again"], 1).await);
    assert_eq!(scrape(&cluster.lb, "/healthz").await.status, 200);
    let parsed = parse_exposition(&scrape(&cluster.lb, "/metrics").await.body);
    let down = format!(
        "tinyscale_server_up{{server=\"{}\"}}",
        cluster.sims[1].url()
    );
    assert_eq!(parsed[&down], 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_are_counted() {
    let cluster = Cluster::start(1).await;
    write_file(&cluster.servers_file, "not json");
    cluster.lb.signal("HUP");
    assert!(cluster.lb.wait_for_log("reload refused").await);
    cluster.reload(vec![cluster.entry(0)]);
    assert!(cluster.lb.wait_for_log("reloaded the servers file").await);
    let parsed = parse_exposition(&scrape(&cluster.lb, "/metrics").await.body);
    assert_eq!(parsed["tinyscale_reloads_total{result=\"refused\"}"], 1.0);
    assert_eq!(parsed["tinyscale_reloads_total{result=\"ok\"}"], 1.0);
}

/// A good server, one whose secret in servers.json is wrong, and one that
/// is unreachable, plus a disabled one.
async fn mixed_servers() -> (Vec<SimHandle>, std::path::PathBuf) {
    let good = SimHandle::start("good-secret").await.unwrap();
    let wrong = SimHandle::start("real-secret").await.unwrap();
    let dead = SimHandle::start("dead-secret").await.unwrap();
    dead.set_mode(Mode::Refuse);
    let file = scratch_dir().join("servers.json");
    write_servers(
        &file,
        vec![
            serde_json::json!({"host": good.url(), "secret": "good-secret", "tags": ["large", "eu"]}),
            serde_json::json!({"host": wrong.url(), "secret": "not-the-real-one"}),
            serde_json::json!({"host": dead.url(), "secret": "dead-secret"}),
            serde_json::json!({"host": "http://127.0.0.1:9", "secret": "x", "state": "disabled"}),
        ],
    );
    (vec![good, wrong, dead], file)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_every_server_live() {
    let (sims, file) = mixed_servers().await;
    let query = "name=x&meetingID=one";
    assert_eq!(
        direct(&sims[0], "create", query).await.returncode(),
        Some("SUCCESS")
    );
    sims[0].add_attendee("one", "Ada", "VIEWER", true);
    let path = file.to_str().unwrap();
    let (code, out, _) = run_tinyscale(&["status"], &[("TINYSCALE_SERVERS", path)]).await;
    assert_eq!(code, Some(1), "a server is down: {out}");
    let header = out.lines().next().unwrap();
    for column in [
        "HOST", "STATE", "TAGS", "UP", "MEETINGS", "USERS", "LARGEST", "VIDEOS", "LOAD", "LATENCY",
        "VERSION",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = |url: &str| {
        out.lines()
            .find(|l| l.starts_with(url))
            .unwrap()
            .to_string()
    };
    let good = row(&sims[0].url());
    assert!(
        good.contains(" up ") && good.contains("3.0.0-sim") && good.contains(" large,eu "),
        "{good}"
    );
    assert!(row(&sims[1].url()).contains("DOWN"));
    assert!(row(&sims[2].url()).contains("DOWN"));
    assert!(row("http://127.0.0.1:9").contains("disabled"));
    assert!(out.contains("refuses our checksum"), "{out}");
    assert!(!out.contains("not-the-real-one") && !out.contains("good-secret"));

    let (_, out, _) = run_tinyscale(&["status", "--json"], &[("TINYSCALE_SERVERS", path)]).await;
    let reports: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(reports[0]["up"], true);
    assert_eq!(reports[0]["tags"], serde_json::json!(["large", "eu"]));
    assert_eq!(reports[1]["tags"], serde_json::json!([]));
    assert_eq!(reports[0]["meetings"], 1);
    assert_eq!(reports[0]["users"], 1);
    assert_eq!(reports[0]["videos"], 1);
    assert_eq!(reports[1]["up"], false);
    assert_eq!(reports[3]["up"], serde_json::Value::Null);
    assert_eq!(reports[3]["state"], "disabled");

    // All good: exit 0.
    let file = scratch_dir().join("good.json");
    write_servers(
        &file,
        vec![serde_json::json!({"host": sims[0].url(), "secret": "good-secret"})],
    );
    let (code, _, _) = run_tinyscale(
        &["status"],
        &[("TINYSCALE_SERVERS", file.to_str().unwrap())],
    )
    .await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_says_what_is_wrong_and_fails() {
    let (sims, file) = mixed_servers().await;
    let env = [
        ("TINYSCALE_SERVERS", file.to_str().unwrap()),
        ("TINYSCALE_SECRET", "s3cret-value"),
    ];
    let (code, out, _) = run_tinyscale(&["check"], &env).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "ok      {}: answers, accepts our checksum",
            sims[0].url()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "PROBLEM {}: it refuses our checksum",
            sims[1].url()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("PROBLEM {}: could not connect", sims[2].url())),
        "{out}"
    );
    assert!(out.contains("2 problem(s) found."), "{out}");
    assert!(!out.contains("s3cret-value"));

    // A good configuration passes.
    let good = scratch_dir().join("good.json");
    write_servers(
        &good,
        vec![serde_json::json!({"host": sims[0].url(), "secret": "good-secret"})],
    );
    let env = [
        ("TINYSCALE_SERVERS", good.to_str().unwrap()),
        ("TINYSCALE_SECRET", "s"),
    ];
    let (code, out, _) = run_tinyscale(&["check"], &env).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("No problems found."));

    // A missing secret and a bad servers file are problems too.
    let bad = scratch_dir().join("bad.json");
    write_file(&bad, "[]");
    let (code, out, _) =
        run_tinyscale(&["check"], &[("TINYSCALE_SERVERS", bad.to_str().unwrap())]).await;
    assert_eq!(code, Some(1));
    assert!(
        out.contains("PROBLEM environment: TINYSCALE_SECRET is not set"),
        "{out}"
    );
    assert!(out.contains("lists no servers"), "{out}");
}

#[test]
fn every_subcommand_has_help_and_version() {
    for sub in [
        &[][..],
        &["serve"],
        &["demo"],
        &["sim"],
        &["status"],
        &["check"],
    ] {
        let mut args = sub.to_vec();
        args.push("--version");
        let (code, out, _) = run_tinyscale_blocking(&args, &[]);
        assert_eq!(code, Some(0));
        assert_eq!(
            out,
            format!("tinyscale {}\n", env!("CARGO_PKG_VERSION")),
            "{sub:?}"
        );
        let mut args = sub.to_vec();
        args.push("--help");
        let secret = [("TINYSCALE_SECRET", "do-not-show-me")];
        let (code, out, _) = run_tinyscale_blocking(&args, &secret);
        assert_eq!(code, Some(0));
        assert!(out.contains("Usage: tinyscale"), "{out}");
        assert!(!out.contains("do-not-show-me"), "help shows no secret");
    }
    let (_, out, _) = run_tinyscale_blocking(&["--help"], &[]);
    assert!(out.contains("TINYSCALE_SECRET"));
}

#[test]
fn unknown_flags_and_commands_are_refused_clearly() {
    for args in [
        &["--bogus"][..],
        &["status", "--yaml"],
        &["frobnicate"],
        &["sim", "zero"],
    ] {
        let (code, out, err) = run_tinyscale_blocking(args, &[]);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(out.is_empty());
        assert!(err.starts_with("error:"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let cluster = Cluster::start_with(1, &[("TINYSCALE_LOG_FORMAT", "json")]).await;
    cluster.create("json-logged").await;
    assert!(cluster.lb.wait_for_log("json-logged").await);
    for line in cluster.lb.logs().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let logs = cluster.lb.logs();
    let request = logs.lines().find(|l| l.contains("json-logged")).unwrap();
    let v: serde_json::Value = serde_json::from_str(request).unwrap();
    assert_eq!(v["fields"]["call"], "create");
    assert_eq!(v["fields"]["result"], "SUCCESS");
    cluster.assert_log_has_no_secrets();
}

#[test]
fn startup_logs_version_address_and_servers_without_secrets() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(Cluster::start(2));
    let logs = cluster.lb.logs();
    assert!(
        logs.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{logs}"
    );
    assert!(logs.contains(&format!("listening on {}", cluster.lb.addr)));
    for sim in &cluster.sims {
        assert!(logs.lines().any(|l| l.contains("server ok")
            && l.contains(&sim.url())
            && l.contains("state=\"enabled\"")));
    }
    cluster.assert_log_has_no_secrets();
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        // .ci/run installs systemd; a developer machine may not have it.
        eprintln!("systemd-analyze is not installed: unit not verified");
        return;
    };
    assert!(found.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/tinyscale.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/tinyscale serve"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("ProtectSystem=strict"));
    // Verify it as installed, with the binary built here in place of
    // /usr/local/bin/tinyscale (verify checks that ExecStart exists).
    let dir = scratch_dir();
    let path = dir.join("tinyscale.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tinyscale", env!("CARGO_BIN_EXE_tinyscale")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("tinyscale.service:"),
        "warnings about the unit: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_into_a_closed_pipe_ends_quietly() {
    let (_sims, file) = mixed_servers().await;
    let file = file.to_string_lossy().into_owned();
    let ended = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tinyscale"))
            .arg("check")
            .env_clear()
            .env("TINYSCALE_SECRET", "s3cret-value")
            .env("TINYSCALE_SERVERS", &file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tinyscale runs");
        // `tinyscale check | head -c0`: the reader goes before the report.
        drop(child.stdout.take());
        child.wait_with_output().expect("it ends")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
