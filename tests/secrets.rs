//! No secret and no checksum ever reaches tinyscale's output: every
//! subcommand is run with known, distinctive secrets (the LMS's in
//! TINYSCALE_SECRET, the servers' in servers.json), and all it prints on
//! stdout and stderr is searched for them and for the checksums of the
//! calls made.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tinyscale::checksum::Algorithm;

/// The LMS's secret, in TINYSCALE_SECRET for every subcommand.
const LMS_SECRET: &str = "lms-SECRET-7f3a9c2e41d5";

fn server_secret(name: &str) -> String {
    format!("server-SECRET-{name}-b8d1e6")
}

/// What must not be printed: secrets, and checksums seen so far.
#[derive(Default)]
struct Forbidden {
    texts: Vec<String>,
}

impl Forbidden {
    fn new(secrets: &[String]) -> Forbidden {
        let mut texts = vec![LMS_SECRET.to_string()];
        texts.extend(secrets.iter().cloned());
        Forbidden { texts }
    }

    /// The checksum of a raw query, if it has one.
    fn add_checksum_of(&mut self, query: &str) {
        if let Some((_, sum)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "checksum")
            && sum.len() >= 16
        {
            self.texts.push(sum.into_owned());
        }
    }

    /// The checksums of every call the simulated servers were sent.
    fn add_checksums_sent_to(&mut self, sims: &[SimHandle]) {
        for sim in sims {
            for request in sim.requests() {
                self.add_checksum_of(&request.raw_query);
            }
        }
    }

    fn assert_absent(&self, what: &str, output: &str) {
        assert!(!output.trim().is_empty(), "{what} printed nothing");
        for text in &self.texts {
            assert!(
                !output.contains(text.as_str()),
                "{what} printed {text:?}:\n{output}"
            );
        }
    }
}

/// The simulated servers and a servers file for them, with distinctive
/// secrets; one entry has a wrong secret (so tinyscale says it is refused,
/// a place where a careless message would show it), one is disabled.
async fn servers() -> (Vec<SimHandle>, std::path::PathBuf, Vec<String>) {
    let mut sims = Vec::new();
    let mut secrets = Vec::new();
    for name in ["one", "two"] {
        let secret = server_secret(name);
        sims.push(SimHandle::start(&secret).await.unwrap());
        secrets.push(secret);
    }
    let wrong_sim = SimHandle::start(&server_secret("real")).await.unwrap();
    let wrong = server_secret("wrong");
    let disabled = server_secret("disabled");
    let file = scratch_dir().join("servers.json");
    write_servers(
        &file,
        vec![
            serde_json::json!({"host": sims[0].url(), "secret": secrets[0], "checksum": "sha1"}),
            serde_json::json!({"host": sims[1].url(), "secret": secrets[1], "checksum": "sha512"}),
            serde_json::json!({"host": wrong_sim.url(), "secret": wrong}),
            serde_json::json!({"host": "http://127.0.0.1:9", "secret": disabled, "state": "disabled"}),
        ],
    );
    secrets.extend([server_secret("real"), wrong, disabled]);
    sims.push(wrong_sim);
    (sims, file, secrets)
}

/// `tinyscale ARGS` to the end, with only these variables; exit code and
/// stdout and stderr together. Run off the async workers (the simulated
/// servers need them).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tinyscale"));
    command.args(args).env_clear().envs(env.iter().copied());
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("tinyscale runs");
        (
            output.status.code(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

/// A long-running subcommand (`demo`, `sim`), its output collected.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tinyscale"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tinyscale starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [stdout, stderr] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Running {
            child,
            lines,
            readers,
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for a line containing `text`; the output so far.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.output().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {text:?} in:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.output()
    }

    /// Stops it (SIGTERM) and returns everything it printed.
    fn finish(mut self) -> String {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        self.output()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_prints_no_secret_or_checksum() {
    let (mut sims, file, mut secrets) = servers().await;
    let path = file.to_str().unwrap().to_string();
    let lb = Balancer::start(&[
        ("TINYSCALE_SECRET", LMS_SECRET),
        ("TINYSCALE_SERVERS", &path),
        ("TINYSCALE_LOG", "debug"),
    ]);
    let mut forbidden = Forbidden::new(&secrets);
    let api = lb.api();
    let call = |forbidden: &mut Forbidden, call: &str, query: &str, algorithm: Algorithm| {
        let signed = signed(call, query, LMS_SECRET, algorithm);
        forbidden.add_checksum_of(&signed);
        format!("{api}{call}?{signed}")
    };
    let f = &mut forbidden;
    let urls = [
        call(
            f,
            "create",
            "name=Secret+Class&meetingID=hush",
            Algorithm::Sha1,
        ),
        call(
            f,
            "create",
            "name=Other&meetingID=hush-2",
            Algorithm::Sha256,
        ),
        call(
            f,
            "join",
            "meetingID=hush&fullName=Ada&role=MODERATOR",
            Algorithm::Sha512,
        ),
        call(f, "getMeetingInfo", "meetingID=hush", Algorithm::Sha384),
        call(f, "isMeetingRunning", "meetingID=hush", Algorithm::Sha1),
        call(f, "getMeetings", "", Algorithm::Sha256),
        call(f, "getRecordings", "meetingID=hush", Algorithm::Sha1),
        call(f, "end", "meetingID=hush-2", Algorithm::Sha1),
    ];
    let mut joined = None;
    for url in &urls {
        let reply = get(url).await;
        assert!(reply.status < 500, "{url}: {}", reply.body);
        if let Some(location) = reply.location() {
            joined = Some(location.to_string());
        }
    }
    // The server's join URL (signed with its secret) goes to the browser,
    // never to the log.
    let joined = joined.expect("join redirects");
    forbidden.add_checksum_of(joined.split_once('?').unwrap().1);
    // Wrong checksums and a call signed with a server's secret.
    let wrong = format!(
        "{}getMeetings?checksum=0123456789abcdef0123456789abcdef01234567",
        lb.api()
    );
    forbidden.add_checksum_of(wrong.split_once('?').unwrap().1);
    assert_eq!(get(&wrong).await.message_key(), Some("checksumError"));
    let by_server = signed("getMeetings", "", &secrets[0], Algorithm::Sha1);
    forbidden.add_checksum_of(&by_server);
    let reply = get(&format!("{}getMeetings?{by_server}", lb.api())).await;
    assert_eq!(reply.message_key(), Some("checksumError"));

    // A reload that adds a server, and one that is refused.
    let added_secret = server_secret("added");
    let added = SimHandle::start(&added_secret).await.unwrap();
    let mut entries: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    entries.push(serde_json::json!({"host": added.url(), "secret": added_secret}));
    write_servers(&file, entries);
    lb.signal("HUP");
    assert!(lb.wait_for_log("reloaded the servers file").await);
    let refused_secret = server_secret("refused");
    write_file(
        &file,
        &format!(
            r#"[{{"host": "not a url", "secret": "{refused_secret}"}}, {{"host": "https://b", "secret": 918273645}}]"#
        ),
    );
    lb.signal("HUP");
    assert!(lb.wait_for_log("reload refused").await);
    secrets.extend([added_secret, refused_secret, "918273645".to_string()]);
    sims.push(added);
    // One more call, now that the added server is known.
    let after = call(&mut forbidden, "getMeetings", "", Algorithm::Sha1);
    assert_eq!(get(&after).await.returncode(), Some("SUCCESS"));

    forbidden.texts.extend(secrets.iter().cloned());
    forbidden.add_checksums_sent_to(&sims);
    // Metrics too.
    let metrics = get(&format!("http://{}/metrics", lb.metrics_addr.unwrap())).await;
    forbidden.assert_absent("/metrics", &metrics.body);
    let output = lb.finish();
    assert!(output.contains("request"), "{output}");
    forbidden.assert_absent("serve", &output);
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_uses_and_prints_only_its_own_secret() {
    let demo = Running::start(
        &["demo"],
        &[
            ("TINYSCALE_SECRET", LMS_SECRET),
            ("PORT", "0"),
            ("TINYSCALE_METRICS_BIND", "off"),
        ],
    );
    let printed = demo.wait_for("Press Ctrl-C to stop.").await;
    assert!(printed.contains("(secret \"demo-secret\")"), "{printed}");
    // Its URLs are signed with demo-secret, and the balancer takes them.
    let url = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("getMeetings:"))
        .expect("a getMeetings URL")
        .trim()
        .to_string();
    assert_eq!(get(&url).await.returncode(), Some("SUCCESS"));
    let mut forbidden = Forbidden::new(&[]);
    // Its simulated servers' secrets are not printed either.
    forbidden.texts.push("sim-secret-".into());
    let output = demo.finish();
    forbidden.assert_absent("demo", &output);
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_does_not_print_the_lms_secret() {
    let sim = Running::start(&["sim", "2"], &[("TINYSCALE_SECRET", LMS_SECRET)]);
    sim.wait_for("simulated BBB server(s) running").await;
    Forbidden::new(&[]).assert_absent("sim", &sim.finish());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_check_print_no_secret_or_checksum() {
    let (sims, file, secrets) = servers().await;
    let path = file.to_str().unwrap();
    let env = [
        ("TINYSCALE_SECRET", LMS_SECRET),
        ("TINYSCALE_SERVERS", path),
    ];
    let mut outputs = Vec::new();
    for args in [&["status"][..], &["status", "--json"], &["check"]] {
        let (code, output) = run(args, &env).await;
        assert_eq!(code, Some(1), "{args:?} (one server refuses): {output}");
        assert!(output.contains(&sims[0].url()), "{output}");
        outputs.push((args, output));
    }
    let mut forbidden = Forbidden::new(&secrets);
    forbidden.add_checksums_sent_to(&sims);
    assert!(forbidden.texts.len() > secrets.len() + 1, "calls were made");
    for (args, output) in outputs {
        forbidden.assert_absent(&format!("{args:?}"), &output);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_starts_print_no_secret() {
    let (_sims, file, secrets) = servers().await;
    let path = file.to_str().unwrap();
    let forbidden = Forbidden::new(&secrets);
    for (name, value) in [
        ("PORT", "not-a-port"),
        ("TINYSCALE_MAX_HEADERS", "1"),
        ("TINYSCALE_IDLE_TIMEOUT", "never"),
        ("TINYSCALE_MAX_CONNECTIONS", "0"),
    ] {
        let env = [
            ("TINYSCALE_SECRET", LMS_SECRET),
            ("TINYSCALE_SERVERS", path),
            (name, value),
        ];
        for args in [&["serve"][..], &["check"]] {
            let (code, output) = run(args, &env).await;
            assert_ne!(code, Some(0), "{args:?} {name}: {output}");
            assert!(output.contains(name), "{output}");
            forbidden.assert_absent(&format!("{args:?} with a bad {name}"), &output);
        }
    }
    // A servers file refused for an entry with a secret in it.
    let bad = scratch_dir().join("bad.json");
    let bad_secret = server_secret("bad");
    write_file(
        &bad,
        &format!(
            r#"[{{"host": "https://a.example.org", "secret": "{bad_secret}", "checksum": "md5"}}]"#
        ),
    );
    let numeric = scratch_dir().join("numeric.json");
    write_file(
        &numeric,
        r#"[{"host": "https://a.example.org", "secret": 918273645}]"#,
    );
    let mut forbidden = forbidden;
    forbidden.texts.extend([bad_secret, "918273645".into()]);
    for file in [&bad, &numeric] {
        let env = [
            ("TINYSCALE_SECRET", LMS_SECRET),
            ("TINYSCALE_SERVERS", file.to_str().unwrap()),
        ];
        let (code, output) = run(&["serve"], &env).await;
        assert_eq!(code, Some(78), "a configuration error: {output}");
        forbidden.assert_absent("serve with a bad servers file", &output);
    }
}
