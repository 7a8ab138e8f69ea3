//! `--soak MINUTES`: tinyscale under a steady mixed load for minutes on
//! end, with one of its servers going down and up every minute and clients
//! that are slow or vanish, its memory and open files sampled every second.
//! What it answers for: memory that stays flat (no leak per meeting, per
//! connection or per failure) and no error but the expected ones.
//!
//! The simulated servers run in this process, on a runtime of their own
//! (one thread, as a process of their own would have), so that one of them
//! can be made to refuse connections or hang ([`tinyscale::sim::Mode`]).
//!
//! - `plan.rs`: which call comes next and what its right answer is;
//! - `rough.rs`: slow and vanishing clients;
//! - `tally.rs`: answers counted, failures judged;
//! - `report.rs`: the report and its verdict.

mod plan;
mod report;
mod rough;
mod tally;

use crate::load::{Answer, Conn};
use crate::procs::{self, Sim};
use plan::{Kind, Plan};
use rough::{RawRequest, Vanish};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tally::{Failure, Flap, Got, Tally};
use tinyscale::checksum::{Algorithm, signed_query};
use tinyscale::sim::{Mode, SimHandle};
use tokio::sync::Semaphore;

/// Simulated servers; the last one goes down and up.
const SERVERS: usize = 4;
/// Seeded meetings per server (each server's first has a recording).
const SEEDED: usize = 5;
/// Checked calls a second, and the connections they are spread over (the
/// most in flight at once: calls wait on a hanging server for up to
/// tinyscale's response timeout).
const RATE: f64 = 200.0;
const CONNECTIONS: usize = 64;
/// The most one call may take before it counts as unanswered: tinyscale's
/// own response timeout (10 s) plus a search behind it.
const CALL_LIMIT: Duration = Duration::from_secs(30);
const SLOW_CLIENTS: usize = 4;
/// Vanishing clients a second.
const VANISH_RATE: f64 = 5.0;
/// Every minute the flapping server goes down at this second of the
/// minute and comes back at that one.
const DOWN_AT: f64 = 20.0;
const UP_AT: f64 = 45.0;
/// tinyscale's settings that differ from the defaults: polls every 2 s with
/// a 1 s timeout, so that it sees a server go and come within seconds; and
/// no re-creation of the flapping server's meetings, whose calls the tally
/// expects to answer `serverUnavailable` while it is down.
const TINYSCALE_ENV: &[(&str, &str)] = &[
    ("TINYSCALE_POLL_INTERVAL", "2"),
    ("TINYSCALE_POLL_TIMEOUT", "1"),
    ("TINYSCALE_RECREATE", "off"),
];

/// Locks a mutex; a task that panicked while holding it leaves counts that
/// are still worth reporting.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Simulated servers on a runtime of their own.
struct SimCluster {
    runtime: Option<tokio::runtime::Runtime>,
    handles: Vec<SimHandle>,
    sims: Vec<Sim>,
}

impl SimCluster {
    async fn start(count: usize) -> SimCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("soak-sims")
            .enable_all()
            .build()
            .expect("a runtime for the simulated servers");
        // Started on their runtime: their tasks stay there.
        let handles = runtime
            .spawn(async move {
                let mut handles = Vec::new();
                for n in 0..count {
                    let sim = SimHandle::start(&format!("soak-secret-{n}"))
                        .await
                        .expect("a simulated server starts");
                    // Nobody reads them, and a long run must not keep them.
                    sim.set_recording(false);
                    handles.push(sim);
                }
                handles
            })
            .await
            .expect("simulated servers start");
        let sims = handles
            .iter()
            .map(|h| Sim {
                url: h.url(),
                addr: h.addr(),
                secret: h.secret(),
            })
            .collect();
        SimCluster {
            runtime: Some(runtime),
            handles,
            sims,
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What every task of the run shares.
struct Shared {
    started: Instant,
    deadline: Instant,
    tally: Mutex<Tally>,
    plan: Mutex<Plan>,
    handles: Vec<SimHandle>,
    tinyscale: SocketAddr,
}

impl Shared {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn record(&self, call: &str, sent: f64, owner: Option<usize>, id: Option<String>, got: Got) {
        lock(&self.tally).add(Failure {
            call: call.to_string(),
            sent,
            owner,
            meeting_id: id,
            got,
        });
    }

    /// The one server that holds `meeting_id`, if exactly one does.
    fn holder(&self, meeting_id: &str) -> Option<usize> {
        let holders: Vec<usize> = (0..self.handles.len())
            .filter(|&i| self.handles[i].has_meeting(meeting_id))
            .collect();
        match holders[..] {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Runs the soak for `minutes`; the report, and whether it passed.
pub async fn run(minutes: f64, dir: &std::path::Path) -> (String, bool) {
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let cluster = SimCluster::start(SERVERS).await;
    let flapping = SERVERS - 1;
    let seeded = crate::seed_meetings(&cluster.sims, "soak-seed", SEEDED).await;
    let recordings: Vec<String> = (0..SERVERS).map(|i| format!("soak-rec-{i}")).collect();
    for (i, sim) in cluster.handles.iter().enumerate() {
        sim.seed_recording(&recordings[i], &format!("soak-seed-{i}-0"), "Soak", true);
    }
    let (mut ts, ts_addr, metrics) =
        procs::tinyscale(dir, &cluster.sims, crate::SECRET, TINYSCALE_ENV);
    let known = crate::wait_for_known(metrics, seeded.len()).await;
    assert!(
        known >= seeded.len(),
        "tinyscale did not list the seeded meetings"
    );
    let pid = ts.pid();
    let fds_start = procs::open_fds_of(pid);
    let steady_recordings = recordings[..flapping].to_vec();
    let urls: Vec<String> = cluster.sims.iter().map(|s| s.url.clone()).collect();
    let flapping_url = urls[flapping].clone();
    let plan = Plan::new(
        ts_addr,
        crate::SECRET,
        urls,
        seeded.clone(),
        steady_recordings,
        flapping,
    );
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        deadline: started + duration,
        tally: Mutex::new(Tally::default()),
        plan: Mutex::new(plan),
        handles: cluster.handles.clone(),
        tinyscale: ts_addr,
    });
    eprintln!(
        "soak: {minutes} min, {RATE} calls/s through tinyscale (pid {pid}) in front of {SERVERS} simulated servers; {flapping_url} goes down every minute"
    );

    let steady_seeded: Vec<(String, usize)> = seeded
        .iter()
        .filter(|(_, o)| *o != flapping)
        .cloned()
        .collect();
    let sampler = tokio::spawn(sample(shared.clone(), pid, metrics, flapping_url.clone()));
    let flapper = tokio::spawn(flap(shared.clone(), cluster.handles[flapping].clone()));
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|k| tokio::spawn(slow_client(shared.clone(), k, steady_seeded.clone())))
        .collect();
    let vanishing = tokio::spawn(vanishing_clients(
        shared.clone(),
        steady_seeded[0].0.clone(),
    ));
    drive(shared.clone()).await;
    let vanished = vanishing.await.unwrap_or_default();
    for task in slow {
        let _ = task.await;
    }
    let mut flaps = flapper.await.unwrap_or_default();
    let samples = sampler.await.unwrap_or_default();
    let elapsed = shared.now();
    let (rss_end, hwm_end) = procs::memory_kib_of(pid);
    let fds_end = procs::open_fds_of(pid);
    let alive = !ts.exited();
    let up_samples: Vec<(f64, Option<bool>)> =
        samples.iter().map(|s| (s.t, s.flapping_up)).collect();
    tally::seen(&mut flaps, &up_samples);
    let tally = std::mem::take(&mut *lock(&shared.tally));
    let findings = report::Findings {
        minutes,
        elapsed,
        servers: SERVERS,
        rate: RATE,
        connections: CONNECTIONS,
        slow_clients: SLOW_CLIENTS,
        vanish_rate: VANISH_RATE,
        tinyscale_env: TINYSCALE_ENV,
        flapping,
        flapping_url,
        samples,
        rss_end,
        hwm_end,
        fds_start,
        fds_end,
        alive,
        flaps,
        tally,
        vanished,
    };
    drop(ts);
    drop(cluster);
    report::render(&findings)
}

/// The checked calls: [`RATE`] a second, each on one of [`CONNECTIONS`]
/// keep-alive connections; a tick that finds every connection busy makes
/// no call (counted). Returns when the run is over and every call has been
/// answered or has timed out.
async fn drive(shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS));
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(
        (0..CONNECTIONS).map(|_| Conn::default()).collect(),
    ));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ticks = (RATE * shared.deadline.duration_since(shared.started).as_secs_f64()) as usize + 1;
    for n in 0..ticks {
        ticker.tick().await;
        if Instant::now() >= shared.deadline {
            break;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            lock(&shared.tally).not_sent += 1;
            continue;
        };
        let planned = lock(&shared.plan).next(n);
        let mut conn = lock(&conns).pop().unwrap_or_default();
        let (shared, conns) = (shared.clone(), conns.clone());
        tokio::spawn(async move {
            let sent = shared.now();
            let answer = tokio::time::timeout(CALL_LIMIT, conn.exchange(&planned.call)).await;
            if answer.is_err() {
                // Cut off mid-call: its connection is in no state to reuse.
                conn = Conn::default();
            }
            let (got, created_on) = judge(&shared, &planned, answer);
            let right = got == Got::Right;
            let ended = right || matches!(&got, Got::Failed { key, .. } if key == "notFound");
            lock(&shared.plan).done(&planned, right, created_on, ended);
            shared.record(
                planned.kind.name(),
                sent,
                planned.owner,
                planned.meeting_id.clone(),
                got,
            );
            lock(&conns).push(conn);
            drop(permit);
        });
    }
    // Every call in flight ends within CALL_LIMIT.
    let _ = tokio::time::timeout(
        CALL_LIMIT + Duration::from_secs(5),
        permits.acquire_many(CONNECTIONS as u32),
    )
    .await;
}

/// What a call got; for a right create, the server the meeting is on.
fn judge(
    shared: &Shared,
    planned: &plan::Planned,
    answer: Result<Option<Answer>, tokio::time::error::Elapsed>,
) -> (Got, Option<usize>) {
    let answer = match answer {
        Err(_) => return (Got::NoAnswer(format!("none within {CALL_LIMIT:?}")), None),
        Ok(None) => return (Got::NoAnswer("connection failed".into()), None),
        Ok(Some(answer)) => answer,
    };
    if !planned.call.check.holds(&answer) {
        return (Got::of_wrong(&answer), None);
    }
    if planned.kind != Kind::Create {
        return (Got::Right, None);
    }
    let id = planned.meeting_id.as_deref().unwrap_or("");
    match shared.holder(id) {
        Some(owner) => (Got::Right, Some(owner)),
        None => (
            Got::Wrong("created, but not on exactly one server".into()),
            None,
        ),
    }
}

/// Takes the flapping server down at [`DOWN_AT`] and up at [`UP_AT`] of
/// every minute of the run, hanging and refusing connections by turns.
/// Hanging first: calls then pile up in tinyscale until its response
/// timeout (up to every connection of the load busy), its high-water mark
/// of memory; with that in the first minute, the memory after it is a fair
/// baseline for the end (a run that started with the mild case would
/// measure the first hang as growth).
async fn flap(shared: Arc<Shared>, server: SimHandle) -> Vec<Flap> {
    let mut flaps = Vec::new();
    let at = |s: f64| shared.started + Duration::from_secs_f64(s);
    for minute in 0.. {
        let down = minute as f64 * 60.0 + DOWN_AT;
        if at(down) >= shared.deadline {
            break;
        }
        let (mode, how) = if minute % 2 == 0 {
            (Mode::Hang, "hanging")
        } else {
            (Mode::Refuse, "refused")
        };
        tokio::time::sleep_until(at(down).into()).await;
        server.set_mode(mode);
        let down_at = shared.now();
        eprintln!("soak: {down_at:.0} s: the server goes down ({how})");
        let up = at(minute as f64 * 60.0 + UP_AT).min(shared.deadline);
        tokio::time::sleep_until(up.into()).await;
        server.set_mode(Mode::Normal);
        let up_at = shared.now();
        eprintln!("soak: {up_at:.0} s: the server is back");
        flaps.push(Flap {
            how,
            down_at,
            up_at: (up < shared.deadline).then_some(up_at),
            seen_down: None,
            seen_up: None,
        });
    }
    flaps
}

/// One sample a second.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t: f64,
    pub rss_kib: u64,
    pub fds: usize,
    /// tinyscale's `tinyscale_server_up` for the flapping server.
    pub flapping_up: Option<bool>,
}

/// tinyscale's memory, open files and view of the flapping server, every
/// second until the run is over.
async fn sample(shared: Arc<Shared>, pid: u32, metrics: SocketAddr, url: String) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let most = shared.deadline.duration_since(shared.started).as_secs() + 1;
    for n in 0..most {
        ticker.tick().await;
        if Instant::now() >= shared.deadline {
            break;
        }
        let t = shared.now();
        let (rss_kib, _) = procs::memory_kib_of(pid);
        let fds = procs::open_fds_of(pid);
        let flapping_up = server_up(metrics, &url).await;
        samples.push(Sample {
            t,
            rss_kib,
            fds,
            flapping_up,
        });
        if n > 0 && n.is_multiple_of(30) {
            eprintln!(
                "soak: {t:.0} s: RSS {:.1} MiB, {fds} fds",
                rss_kib as f64 / 1024.0
            );
        }
    }
    samples
}

/// `tinyscale_server_up` of the server `url`, from tinyscale's metrics.
async fn server_up(metrics: SocketAddr, url: &str) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(metrics).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        let prefix = format!("tinyscale_server_up{{server=\"{url}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim() == "1")
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()
        .flatten()
}

/// One slow client, one exchange after another until the run is over:
/// form POSTs of getMeetingInfo (sent slowly) and getMeetings (read slowly)
/// by turns, for meetings on servers that stay up.
async fn slow_client(shared: Arc<Shared>, k: usize, meetings: Vec<(String, usize)>) {
    let addr = shared.tinyscale;
    let lists = lock(&shared.plan).list(Kind::GetMeetings).call;
    let get_meetings = RawRequest::get(addr, &lists.target);
    // At most one exchange per send pause: bounded even if all are instant.
    let most = shared.deadline.duration_since(shared.started).as_millis() as usize / 40 + 1;
    for turn in 0..most {
        if Instant::now() >= shared.deadline {
            break;
        }
        let (name, request, check, owner, id) = if (turn + k).is_multiple_of(2) {
            let (id, owner) = &meetings[(turn + k) % meetings.len()];
            let body = signed_query(
                "getMeetingInfo",
                &format!("meetingID={id}"),
                crate::SECRET,
                Algorithm::Sha1,
            );
            (
                "getMeetingInfo (slow client, form POST)",
                RawRequest::form_post(addr, "/bigbluebutton/api/getMeetingInfo", &body),
                crate::load::Check::Body(vec![
                    "<returncode>SUCCESS</returncode>".into(),
                    format!("<meetingID>{id}</meetingID>"),
                ]),
                Some(*owner),
                Some(id.clone()),
            )
        } else {
            (
                "getMeetings (slow client, slow read)",
                get_meetings.clone(),
                lists.check.clone(),
                None,
                None,
            )
        };
        let sent = shared.now();
        let got = match rough::slow_exchange(addr, &request).await {
            Ok(answer) if check.holds(&answer) => Got::Right,
            Ok(answer) => Got::of_wrong(&answer),
            Err(e) => Got::NoAnswer(e),
        };
        shared.record(name, sent, owner, id, got);
    }
}

/// [`VANISH_RATE`] vanishing clients a second, each way by turns, until
/// the run is over; how many vanished each way (one that could not even
/// connect or send is recorded as an error instead).
async fn vanishing_clients(shared: Arc<Shared>, meeting: String) -> BTreeMap<Vanish, u64> {
    let addr = shared.tinyscale;
    let list = RawRequest::get(
        addr,
        &lock(&shared.plan).list(Kind::GetMeetings).call.target,
    );
    let body = signed_query(
        "getMeetingInfo",
        &format!("meetingID={meeting}"),
        crate::SECRET,
        Algorithm::Sha1,
    );
    let post = RawRequest::form_post(addr, "/bigbluebutton/api/getMeetingInfo", &body);
    let mut done = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / VANISH_RATE));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ticks =
        (VANISH_RATE * shared.deadline.duration_since(shared.started).as_secs_f64()) as usize + 1;
    for n in 0..ticks {
        ticker.tick().await;
        if Instant::now() >= shared.deadline {
            break;
        }
        let how = Vanish::ALL[n % Vanish::ALL.len()];
        let sent = shared.now();
        match rough::vanish(addr, how, &list, &post).await {
            Ok(()) => *done.entry(how).or_default() += 1,
            Err(e) => shared.record("vanishing client", sent, None, None, Got::NoAnswer(e)),
        }
    }
    done
}
