//! The processes a benchmark run starts: simulated BBB servers (`tinyscale
//! sim N`), tinyscale itself (alone, and with Redis), and nginx as the
//! plain-proxy baseline. Each is
//! killed when its handle is dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A simulated server as servers.json lists it.
#[derive(Clone, Debug)]
pub struct Sim {
    pub url: String,
    pub addr: SocketAddr,
    pub secret: String,
}

pub struct Process {
    child: Child,
    /// Ask it to stop (SIGTERM) before killing it: nginx's master, killed
    /// outright, would leave its workers running.
    terminate_first: bool,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set and its peak, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib_of(self.pid())
    }

    /// Whether it has exited (or was killed).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

/// Resident set (VmRSS) and its peak (VmHWM) of process `pid`, in KiB, from
/// /proc; zeros once it is gone.
pub fn memory_kib_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How many file descriptors process `pid` has open (sockets, files,
/// pipes), from /proc; 0 once it is gone.
pub fn open_fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.terminate_first {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `tinyscale` binary next to this one (both built by cargo).
pub fn tinyscale_binary() -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.with_file_name("tinyscale")
}

/// Starts `count` simulated servers in one process.
pub fn sims(count: usize) -> (Process, Vec<Sim>) {
    let mut child = Command::new(tinyscale_binary())
        .args(["sim", &count.to_string()])
        .env("TINYSCALE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyscale sim starts (cargo build --release first)");
    // The servers.json comes first on stdout, as one JSON array.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut text = String::new();
    let mut byte = [0u8; 1];
    let mut depth = 0i32;
    while stdout.read(&mut byte).unwrap_or(0) == 1 {
        let c = byte[0] as char;
        text.push(c);
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            _ => {}
        }
        if depth == 0 && text.trim_start().starts_with('[') && c == ']' {
            break;
        }
    }
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&text).expect("servers.json from tinyscale sim");
    let sims = entries
        .iter()
        .map(|e| {
            let url = e["host"].as_str().unwrap().to_string();
            Sim {
                addr: url.trim_start_matches("http://").parse().unwrap(),
                url,
                secret: e["secret"].as_str().unwrap().to_string(),
            }
        })
        .collect();
    (
        Process {
            child,
            terminate_first: false,
        },
        sims,
    )
}

/// tinyscale in front of `sims`, as deployed (info logs, one line per
/// request, to a discarded stderr); returns it with its API and metrics
/// addresses.
pub fn tinyscale(
    dir: &Path,
    sims: &[Sim],
    secret: &str,
    env: &[(&str, &str)],
) -> (Process, SocketAddr, SocketAddr) {
    tinyscale_under(&[], dir, sims, secret, env)
}

/// [`tinyscale`], started through `wrapper` (e.g. valgrind and its
/// options) when that is not empty.
pub fn tinyscale_under(
    wrapper: &[String],
    dir: &Path,
    sims: &[Sim],
    secret: &str,
    env: &[(&str, &str)],
) -> (Process, SocketAddr, SocketAddr) {
    let servers: Vec<serde_json::Value> = sims
        .iter()
        .map(|s| serde_json::json!({"host": s.url, "secret": s.secret}))
        .collect();
    let file = dir.join(format!("servers-{}.json", sims.len()));
    std::fs::write(&file, serde_json::to_string(&servers).unwrap()).unwrap();
    let mut child = wrapped(wrapper, tinyscale_binary())
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH"))
        .env("TINYSCALE_SECRET", secret)
        .env("TINYSCALE_SERVERS", &file)
        .env("PORT", "0")
        .env("TINYSCALE_BIND", "127.0.0.1")
        .env("TINYSCALE_METRICS_BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        .envs(std::env::vars().filter(|(k, _)| k == "TINYSCALE_THREADS" || k == "TINYSCALE_LOG"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tinyscale starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let mut api = None;
        for line in lines.by_ref() {
            let after = |marker: &str| -> Option<SocketAddr> {
                let rest = line.split(marker).nth(1)?;
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || ".:".contains(*c))
                    .collect();
                addr.parse().ok()
            };
            if let Some(a) = after("listening on ") {
                api = Some(a);
            }
            if let (Some(a), Some(m)) = (api, after("health check on http://")) {
                let _ = tx.send((a, m));
                break;
            }
        }
        // Keep draining, as journald would.
        for line in lines {
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("{line}");
            }
        }
    });
    let (api, metrics) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("tinyscale is listening");
    (
        Process {
            child,
            terminate_first: false,
        },
        api,
        metrics,
    )
}

/// Where nginx is, if it is installed.
pub fn nginx_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// nginx as a plain reverse proxy: keep-alive upstreams, one per server,
/// chosen by a `map` on the meetingID; no checksum work at all.
pub fn nginx(
    binary: &Path,
    dir: &Path,
    sims: &[Sim],
    owners: &[(String, usize)],
) -> (Process, SocketAddr) {
    nginx_under(&[], binary, dir, sims, owners)
}

/// [`nginx`], started through `wrapper` when that is not empty; then as one
/// process (no master, one worker), so the wrapper sees all of its work.
pub fn nginx_under(
    wrapper: &[String],
    binary: &Path,
    dir: &Path,
    sims: &[Sim],
    owners: &[(String, usize)],
) -> (Process, SocketAddr) {
    let port = free_port();
    let mut conf = String::new();
    if !wrapper.is_empty() {
        conf.push_str("master_process off;\n");
    }
    conf.push_str(&format!(
        "daemon off;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n",
        dir = dir.display()
    ));
    for (i, sim) in sims.iter().enumerate() {
        conf.push_str(&format!(
            "  upstream bbb{i} {{ server {}; keepalive 64; }}\n",
            sim.addr
        ));
    }
    conf.push_str("  map $arg_meetingID $bbb {\n    default bbb0;\n");
    for (id, owner) in owners {
        conf.push_str(&format!("    \"{id}\" bbb{owner};\n"));
    }
    conf.push_str("  }\n");
    conf.push_str(&format!(
        "  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://$bbb;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    ));
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let process = wrapped(wrapper, binary.to_path_buf())
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|child| Process {
            child,
            terminate_first: true,
        })
        .expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..2400 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return (process, addr);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nginx did not start; see {}/nginx-error.log", dir.display());
}

/// A redis-server on a free loopback port, without persistence, if one is
/// installed; with the port.
pub fn redis_server(dir: &Path) -> Option<(Process, u16)> {
    let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let port = free_port();
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let process = Process {
        child,
        terminate_first: false,
    };
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((process, port));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program`, or `wrapper[0] wrapper[1..] program` when a wrapper is given.
fn wrapped(wrapper: &[String], program: PathBuf) -> Command {
    match wrapper.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
    }
}
