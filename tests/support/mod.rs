//! Shared by the integration tests: simulated BBB servers, the real
//! `tinyscale` binary started in front of them on 127.0.0.1, and a client
//! that signs URLs the way an LMS does.

#![allow(dead_code, unused_imports)]

pub mod lms;
pub mod redis;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinyscale::checksum::{self, Algorithm};
pub use tinyscale::sim::{Mode, SimHandle};

/// The secret the tests' "LMS" shares with tinyscale.
pub const SECRET: &str = "lms-secret-0123456789";

/// How long a test waits for any one answer. Generous: it only turns a hang
/// into a failure instead of a stuck test run.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// An answer as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }
    /// The text of the first `<name>` element.
    pub fn field(&self, name: &str) -> Option<&str> {
        let open = format!("<{name}>");
        let start = self.body.find(&open)? + open.len();
        let end = self.body[start..].find(&format!("</{name}>"))? + start;
        Some(&self.body[start..end])
    }
    pub fn returncode(&self) -> Option<&str> {
        self.field("returncode")
    }
    pub fn message_key(&self) -> Option<&str> {
        self.field("messageKey")
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends one request; panics if no answer comes within [`PATIENCE`].
pub async fn send(
    method: Method,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let request = request.body(Full::new(body.into())).expect("valid request");
    let exchange = async {
        let response = client().request(request).await.expect("tinyscale answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {PATIENCE:?}"))
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, None, Bytes::new()).await
}

/// `query` plus its checksum for `call` and `secret`.
pub fn signed(call: &str, query: &str, secret: &str, algorithm: Algorithm) -> String {
    checksum::signed_query(call, query, secret, algorithm)
}

/// Decodes a form-encoded value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Calls a simulated server directly, signed with its own secret (what
/// another balancer or an admin's script would do behind tinyscale's back).
pub async fn direct(sim: &SimHandle, call: &str, query: &str) -> Reply {
    let query = signed(call, query, &sim.secret(), Algorithm::Sha1);
    get(&format!("{}/bigbluebutton/api/{call}?{query}", sim.url())).await
}

/// Runs `tinyscale` with `args` and only `env`: its exit code, standard
/// output and standard error.
pub fn run_tinyscale_blocking(
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tinyscale"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("tinyscale runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`run_tinyscale_blocking`] off the async workers (the simulated servers
/// need them).
pub async fn run_tinyscale(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_tinyscale_blocking(&args, &env)
    })
    .await
    .unwrap()
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch folder for one test.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tinyscale-test-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The real binary, running; killed when dropped.
pub struct Balancer {
    child: Child,
    pub addr: SocketAddr,
    /// Where `/metrics` and `/healthz` are served, unless turned off.
    pub metrics_addr: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    /// Everything printed on stdout (nothing, normally).
    stdout: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr; they end with the process.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Balancer {
    /// Starts `tinyscale` with these environment variables (plus PORT=0 and
    /// a loopback bind) and waits for its "listening" line.
    pub fn start(env: &[(&str, &str)]) -> Balancer {
        Self::try_start(env)
            .unwrap_or_else(|(code, logs)| panic!("tinyscale exited ({code:?}): {logs}"))
    }

    /// Like `start`, but returns the exit code and output if it stops.
    pub fn try_start(env: &[(&str, &str)]) -> Result<Balancer, (Option<i32>, String)> {
        Self::try_start_command(Command::new(env!("CARGO_BIN_EXE_tinyscale")), env)
    }

    /// Like `start`, with the soft open-files limit (`ulimit -Sn`) lowered
    /// to `soft` for tinyscale (the hard limit stays).
    pub fn start_with_open_files(env: &[(&str, &str)], soft: u64) -> Balancer {
        Self::start_under_ulimit(env, &format!("-Sn {soft}"))
    }

    /// Like `start`, with `ulimit ARGS` applied to tinyscale (`-n 80`: at
    /// most 80 open files, soft and hard).
    pub fn start_under_ulimit(env: &[(&str, &str)], args: &str) -> Balancer {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit {args} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_tinyscale"));
        Self::try_start_command(command, env)
            .unwrap_or_else(|(code, logs)| panic!("tinyscale exited ({code:?}): {logs}"))
    }

    fn try_start_command(
        mut command: Command,
        env: &[(&str, &str)],
    ) -> Result<Balancer, (Option<i32>, String)> {
        command
            .env_clear()
            .env("PORT", "0")
            .env("TINYSCALE_BIND", "127.0.0.1")
            .env("TINYSCALE_LOG", "info,tinyscale=debug")
            .env("TINYSCALE_METRICS_BIND", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start tinyscale");
        let stderr = child.stderr.take().expect("stderr");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        {
            let out = child.stdout.take().expect("stdout");
            let stdout = stdout.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    stdout.lock().unwrap().push(line);
                }
            }));
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            readers.push(std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1)
                        && let Some(t) = tx.take()
                    {
                        // Works for text and JSON log lines alike.
                        let addr: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c))
                            .collect();
                        let _ = t.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            }));
        }
        match rx.recv_timeout(PATIENCE) {
            Ok(addr) => {
                // The metrics line follows the listening line at once.
                let metrics_addr = (0..200).find_map(|_| {
                    let found = logs.lock().unwrap().iter().find_map(|line| {
                        if line.contains("metrics turned off") {
                            return Some(None);
                        }
                        let rest = line.split("health check on http://").nth(1)?;
                        Some(rest.split('/').next()?.parse::<SocketAddr>().ok())
                    });
                    if found.is_none() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    found
                });
                Ok(Balancer {
                    child,
                    addr: addr.parse().expect("listening address"),
                    metrics_addr: metrics_addr.flatten(),
                    logs,
                    stdout,
                    readers,
                })
            }
            Err(_) => {
                let code = child.wait().ok().and_then(|s| s.code());
                std::thread::sleep(Duration::from_millis(100));
                let text = logs.lock().unwrap().join("\n");
                Err((code, text))
            }
        }
    }

    pub fn api(&self) -> String {
        format!("http://{}/bigbluebutton/api/", self.addr)
    }

    /// The process id, to read its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// How many file descriptors the process has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// Waits (bounded) until the log has a line containing `text`.
    /// The text of its `/metrics`.
    pub async fn metrics(&self) -> String {
        let addr = self.metrics_addr.expect("metrics are served");
        get(&format!("http://{addr}/metrics")).await.body
    }

    pub async fn wait_for_log(&self, text: &str) -> bool {
        for _ in 0..200 {
            if self.logs().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Sends a signal (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(self) -> Option<i32> {
        self.signal("TERM");
        self.wait()
    }

    /// Sends SIGTERM, waits for the exit, and returns everything the
    /// process printed: stdout, then stderr.
    pub fn finish(mut self) -> String {
        self.signal("TERM");
        let _ = self.child.wait();
        for reader in std::mem::take(&mut self.readers) {
            let _ = reader.join();
        }
        format!("{}\n{}", self.stdout(), self.logs())
    }

    /// How many log lines contain every one of `parts`.
    pub fn count_lines(&self, parts: &[&str]) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .count()
    }

    /// Waits (bounded) until at least `n` log lines contain all of `parts`.
    pub async fn wait_for_lines(&self, parts: &[&str], n: usize) -> bool {
        for _ in 0..400 {
            if self.count_lines(parts) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// servers.json's entry for `sims[i]`: the host given as the server root or
/// as the API root in turn, and sha256, sha1, sha512, sha384 in turn.
pub fn entry(sims: &[SimHandle], i: usize) -> serde_json::Value {
    let sim = &sims[i];
    let algorithms = ["sha256", "sha1", "sha512", "sha384"];
    serde_json::json!({
        "host": if i.is_multiple_of(2) { sim.url() } else { format!("{}/bigbluebutton/api/", sim.url()) },
        "secret": sim.secret(),
        "checksum": algorithms[i % 4],
    })
}

/// Writes a servers file, atomically (a reload never reads half a file).
pub fn write_servers(path: &std::path::Path, entries: Vec<serde_json::Value>) {
    let text = serde_json::to_string_pretty(&serde_json::Value::Array(entries)).unwrap();
    write_file(path, &text);
}

pub fn write_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Simulated servers (each with its own secret) behind a running tinyscale.
pub struct Cluster {
    pub sims: Vec<SimHandle>,
    pub lb: Balancer,
    pub servers_file: PathBuf,
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    /// `n` simulated servers, signed towards with sha256, sha1, sha512, … in
    /// turn, and tinyscale with these extra environment variables.
    pub async fn start_with(n: usize, env: &[(&str, &str)]) -> Cluster {
        let sims = Self::sims(n).await;
        let entries = (0..n).map(|i| entry(&sims, i)).collect();
        Self::launch(sims, entries, env)
    }

    /// `n` simulated servers, not yet behind a balancer (to prepare them).
    pub async fn sims(n: usize) -> Vec<SimHandle> {
        let mut sims = Vec::new();
        for i in 0..n {
            let secret = format!("sim-secret-{i}-abcdef");
            sims.push(SimHandle::start(&secret).await.expect("sim starts"));
        }
        sims
    }

    /// tinyscale in front of `sims`, with these servers.json entries (see
    /// [`entry`]) and extra environment variables.
    pub fn launch(
        sims: Vec<SimHandle>,
        entries: Vec<serde_json::Value>,
        env: &[(&str, &str)],
    ) -> Cluster {
        let servers_file = scratch_dir().join("servers.json");
        write_servers(&servers_file, entries);
        let file = servers_file.to_string_lossy().into_owned();
        let mut all = vec![
            ("TINYSCALE_SECRET", SECRET),
            ("TINYSCALE_SERVERS", file.as_str()),
        ];
        all.extend_from_slice(env);
        let lb = Balancer::start(&all);
        Cluster {
            sims,
            lb,
            servers_file,
        }
    }

    /// As [`Cluster::launch`], with tinyscale's own address as
    /// `TINYSCALE_PUBLIC_URL` (plus `prefix`), so the servers' callbacks
    /// reach it. The port is chosen before tinyscale starts: should another
    /// program take it meanwhile, another is tried.
    pub fn launch_public(
        sims: Vec<SimHandle>,
        entries: Vec<serde_json::Value>,
        prefix: &str,
        env: &[(&str, &str)],
    ) -> Cluster {
        let servers_file = scratch_dir().join("servers.json");
        write_servers(&servers_file, entries);
        let file = servers_file.to_string_lossy().into_owned();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
                .to_string();
            let public = format!("http://127.0.0.1:{port}{prefix}");
            let mut all = vec![
                ("TINYSCALE_SECRET", SECRET),
                ("TINYSCALE_SERVERS", file.as_str()),
                ("PORT", port.as_str()),
                ("TINYSCALE_PUBLIC_URL", public.as_str()),
            ];
            all.extend_from_slice(env);
            match Balancer::try_start(&all) {
                Ok(lb) => {
                    return Cluster {
                        sims,
                        lb,
                        servers_file,
                    };
                }
                Err((_, logs)) if logs.contains("cannot listen") => continue,
                Err((code, logs)) => panic!("tinyscale exited ({code:?}): {logs}"),
            }
        }
        panic!("no free port for tinyscale after 5 tries");
    }

    /// servers.json's entry for simulated server `i`.
    pub fn entry(&self, i: usize) -> serde_json::Value {
        entry(&self.sims, i)
    }

    /// Rewrites servers.json and tells tinyscale to reload it.
    pub fn reload(&self, entries: Vec<serde_json::Value>) {
        write_servers(&self.servers_file, entries);
        self.lb.signal("HUP");
    }

    /// The balancer's URL for `call` with `query`, signed with SHA-1.
    pub fn url(&self, call: &str, query: &str) -> String {
        self.url_with(call, query, Algorithm::Sha1)
    }

    pub fn url_with(&self, call: &str, query: &str, algorithm: Algorithm) -> String {
        format!(
            "{}{call}?{}",
            self.lb.api(),
            signed(call, query, SECRET, algorithm)
        )
    }

    pub async fn call(&self, call: &str, query: &str) -> Reply {
        get(&self.url(call, query)).await
    }

    /// Creates a meeting through the balancer and returns the index of the
    /// simulated server that got it.
    pub async fn create(&self, meeting_id: &str) -> usize {
        let reply = self
            .call(
                "create",
                &format!("name=Class&meetingID={}", encode(meeting_id)),
            )
            .await;
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        self.holder(meeting_id)
            .expect("some server holds the new meeting")
    }

    /// Joins through tinyscale and asserts the browser is sent to
    /// `sims[expected]`'s own join URL.
    pub async fn assert_join_goes_to(&self, meeting_id: &str, expected: usize) {
        let query = format!("meetingID={}&fullName=A&role=VIEWER", encode(meeting_id));
        let reply = self.call("join", &query).await;
        assert_eq!(reply.status, 302, "{}", reply.body);
        let location = reply.location().unwrap_or_default();
        let target = format!("{}/bigbluebutton/api/join?", self.sims[expected].url());
        assert!(
            location.starts_with(&target),
            "{location} is not on server {expected}"
        );
    }

    /// Creates a meeting on simulated server `i` directly, behind
    /// tinyscale's back, and waits for two more polls of that server (the
    /// second began after the create, so tinyscale has seen the meeting).
    pub async fn create_behind_its_back(&self, i: usize, query: &str) {
        let reply = direct(&self.sims[i], "create", query).await;
        assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
        let url = self.sims[i].url();
        let polled = self.lb.count_lines(&["polled", &url]);
        assert!(self.lb.wait_for_lines(&["polled", &url], polled + 2).await);
    }

    /// Forgets the requests every simulated server has seen so far.
    pub fn clear_requests(&self) {
        for sim in &self.sims {
            sim.clear_requests();
        }
    }

    /// Which simulated server holds the meeting (asserting at most one does).
    pub fn holder(&self, meeting_id: &str) -> Option<usize> {
        let holders: Vec<usize> = (0..self.sims.len())
            .filter(|&i| self.sims[i].has_meeting(meeting_id))
            .collect();
        assert!(
            holders.len() <= 1,
            "{meeting_id} is on several servers: {holders:?}"
        );
        holders.first().copied()
    }

    /// Asserts that nothing secret reached the log.
    pub fn assert_log_has_no_secrets(&self) {
        let logs = self.lb.logs();
        assert!(!logs.is_empty());
        assert!(!logs.contains(SECRET), "client secret in log");
        for sim in &self.sims {
            assert!(!logs.contains(&sim.secret()), "server secret in log");
        }
        assert!(
            !logs.to_lowercase().contains("checksum="),
            "checksum in log:\n{logs}"
        );
        assert!(!logs.contains("/bigbluebutton/api/"), "URL in log:\n{logs}");
    }
}
