//! `--instructions`: CPU instructions per call, counted by valgrind's
//! callgrind, for tinyscale and for nginx on the same calls.
//!
//! Wall-clock numbers on a shared 2-core machine swing by a factor of two
//! between identical runs; instruction counts do not (the same binary and
//! the same calls give the same count whatever else the machine does). They
//! count user-space work only: the kernel's share (loopback TCP, wake-ups)
//! is left out, so they show what tinyscale's own code costs, and whether a
//! change made it cheaper, not the whole latency.
//!
//! Each target runs under callgrind with a dump after a warm-up and after
//! each scenario, so a scenario's count is exactly its calls (plus whatever
//! the process did in the background meanwhile: tinyscale's poller is set to
//! an hour so it does not run).

use crate::load::{Call, Conn, Source};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Calls per scenario; enough that setup noise is far below 1%.
pub const CALLS: usize = 1000;
pub const WARM_UP: usize = 100;

/// Whether valgrind is installed.
pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The wrapper that starts a program under callgrind, its dumps in `dir`.
pub fn wrapper(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}/{name}.%p", dir.display()),
    ]
}

/// A process under callgrind, and how far its dumps have got.
pub struct Counted {
    pid: u32,
    dir: PathBuf,
    name: String,
    dumps: usize,
}

impl Counted {
    pub fn new(pid: u32, dir: &Path, name: &str) -> Counted {
        Counted {
            pid,
            dir: dir.to_path_buf(),
            name: name.into(),
            dumps: 0,
        }
    }

    /// Instructions since the last dump (or the start).
    fn dump(&mut self) -> u64 {
        let status = Command::new("callgrind_control")
            .arg("--dump")
            .arg(self.pid.to_string())
            .output()
            .expect("callgrind_control runs");
        assert!(status.status.success(), "callgrind_control --dump failed");
        self.dumps += 1;
        let file = self
            .dir
            .join(format!("{}.{}.{}", self.name, self.pid, self.dumps));
        // callgrind_control returns when the request is taken, the file
        // follows shortly.
        for _ in 0..200 {
            if let Some(total) = std::fs::read_to_string(&file).ok().and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("summary: "))
                    .and_then(|v| v.trim().parse().ok())
            }) {
                return total;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no callgrind dump at {}", file.display());
    }

    /// Instructions per call of `source`'s calls, sent one after another on
    /// one keep-alive connection. Panics if any answer is wrong: a count of
    /// wrong answers means nothing.
    pub async fn per_call(&mut self, source: &Source, offset: usize) -> u64 {
        let mut conn = Conn::default();
        send_all(&mut conn, source, offset, WARM_UP).await;
        self.dump();
        send_all(&mut conn, source, offset + WARM_UP, CALLS).await;
        self.dump() / CALLS as u64
    }
}

async fn send_all(conn: &mut Conn, source: &Source, from: usize, n: usize) {
    for i in from..from + n {
        let call: Call = source(i);
        if !conn.send(&call).await {
            panic!(
                "wrong answer to {} while counting instructions: {}",
                call.target.split('?').next().unwrap_or(""),
                crate::load::describe(&call).await
            );
        }
    }
}
