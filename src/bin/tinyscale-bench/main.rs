//! `tinyscale-bench`: how much tinyscale adds to every call, measured against
//! two baselines in the same run — the simulated servers called directly,
//! and nginx as a plain reverse proxy — on this machine, with every answer
//! checked. See the README's performance section.
//!
//!     cargo build --release && target/release/tinyscale-bench [--quick] [--out FILE]
//!
//! `--soak MINUTES` runs the soak instead (see `soak`).

mod count;
mod load;
mod procs;
mod soak;

use load::{Call, Check, Outcome, Source, split_url};
use procs::Sim;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tinyscale::checksum::{Algorithm, signed_query};

const SECRET: &str = "bench-secret";
const CONCURRENCY: usize = 32;
const LATENCY_COLUMNS: &[&str] = &[
    "call",
    "direct",
    "nginx",
    "tinyscale",
    "tinyscale − direct",
    "errors",
];

struct Opts {
    quick: bool,
    out: Option<std::path::PathBuf>,
    /// Only the throughput scenarios whose name contains this, or only the
    /// light-load latencies with `latency` (for profiling); the rest of the
    /// report is skipped.
    only: Option<String>,
    seconds: Option<f64>,
    /// Only this target (direct, nginx, tinyscale), for profiling.
    via: Option<String>,
    /// Count instructions per call under callgrind instead (see `count`).
    instructions: bool,
    /// Run the soak for this many minutes instead (see `soak`).
    soak: Option<f64>,
}

fn opts() -> Opts {
    let mut opts = Opts {
        quick: false,
        out: None,
        only: None,
        seconds: None,
        via: None,
        instructions: false,
        soak: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--instructions" => opts.instructions = true,
            "--out" => opts.out = args.next().map(Into::into),
            "--only" => opts.only = args.next(),
            "--via" => opts.via = args.next(),
            "--seconds" => opts.seconds = args.next().and_then(|s| s.parse().ok()),
            "--soak" => match args.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(m) if m > 0.0 && m <= 24.0 * 60.0 => opts.soak = Some(m),
                _ => {
                    eprintln!("tinyscale-bench: --soak takes a number of minutes, e.g. --soak 10");
                    std::process::exit(2);
                }
            },
            "--help" | "-h" => {
                println!(
                    "tinyscale-bench [--quick] [--out FILE] [--only SCENARIO|latency] [--via TARGET] [--seconds S] [--instructions] [--soak MINUTES]: see the README's performance section"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("tinyscale-bench: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    opts
}

/// The three ways a call can be sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Direct,
    Nginx,
    Tinyscale,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Nginx => "nginx",
            Via::Tinyscale => "tinyscale",
        }
    }
}

/// Addresses of everything under test.
#[derive(Clone)]
struct Setup {
    sims: Vec<Sim>,
    tinyscale: std::net::SocketAddr,
    nginx: Option<std::net::SocketAddr>,
    /// (meetingID, index of its server)
    meetings: Vec<(String, usize)>,
    /// Meetings the join scenarios use, so the users they add do not grow
    /// the answers of the other scenarios.
    join_meetings: Vec<(String, usize)>,
    only: Option<String>,
    via: Option<String>,
}

impl Setup {
    /// `call` with `query` for `meeting`'s server, sent `via`.
    fn url(&self, via: Via, call: &str, query: &str, owner: usize) -> String {
        let sim = &self.sims[owner];
        match via {
            Via::Direct => format!(
                "{}/bigbluebutton/api/{call}?{}",
                sim.url,
                signed_query(call, query, &sim.secret, Algorithm::Sha1)
            ),
            Via::Nginx => format!(
                "http://{}/bigbluebutton/api/{call}?{}",
                self.nginx.expect("nginx"),
                signed_query(call, query, &sim.secret, Algorithm::Sha1)
            ),
            Via::Tinyscale => format!(
                "http://{}/bigbluebutton/api/{call}?{}",
                self.tinyscale,
                signed_query(call, query, SECRET, Algorithm::Sha1)
            ),
        }
    }

    /// A source cycling over every meeting: `query(id)` and `check(via, id, owner)`.
    fn per_meeting(
        &self,
        via: Via,
        call: &str,
        query: impl Fn(&str) -> String,
        check: impl Fn(Via, &str, &Sim) -> Check,
    ) -> Source {
        let meetings = if call == "join" {
            &self.join_meetings
        } else {
            &self.meetings
        };
        let calls: Vec<(std::net::SocketAddr, String, Check)> = meetings
            .iter()
            .map(|(id, owner)| {
                let (addr, target) = split_url(&self.url(via, call, &query(id), *owner));
                (addr, target, check(via, id, &self.sims[*owner]))
            })
            .collect();
        let calls = Arc::new(calls);
        Arc::new(move |n| {
            let (addr, target, check) = &calls[n % calls.len()];
            Call {
                addr: *addr,
                target: target.clone(),
                check: check.clone(),
            }
        })
    }
}

/// Joins of every join meeting: tinyscale must redirect to the owner's own
/// signed join URL, a server to its HTML5 client.
fn join_source(setup: &Setup, via: Via) -> Source {
    setup.per_meeting(
        via,
        "join",
        |id| format!("meetingID={id}&fullName=Bench+User&role=VIEWER"),
        |via, id, sim| match via {
            Via::Tinyscale => Check::Redirect(format!(
                "{}/bigbluebutton/api/join?meetingID={id}&",
                sim.url
            )),
            _ => Check::Redirect(format!("{}/html5client/join?sessionToken=", sim.url)),
        },
    )
}

/// getMeetingInfo of every meeting: the answer must be that meeting's.
fn info_source(setup: &Setup, via: Via) -> Source {
    setup.per_meeting(
        via,
        "getMeetingInfo",
        |id| format!("meetingID={id}"),
        |_, id, _| success_with(&[&format!("<meetingID>{id}</meetingID>")]),
    )
}

/// create of a meeting that exists already: BBB answers duplicateWarning.
fn existing_create_source(setup: &Setup, via: Via) -> Source {
    setup.per_meeting(
        via,
        "create",
        |id| format!("name=Bench+class&meetingID={id}"),
        |_, _, _| success_with(&["duplicateWarning"]),
    )
}

fn success_with(parts: &[&str]) -> Check {
    let mut all = vec!["<returncode>SUCCESS</returncode>".to_string()];
    all.extend(parts.iter().map(|p| p.to_string()));
    Check::Body(all)
}

/// tinyscale learns where the meetings are (as after its first poll).
async fn learn_meetings(setup: &Setup) {
    let learn = setup.per_meeting(
        Via::Tinyscale,
        "getMeetingInfo",
        |id| format!("meetingID={id}"),
        |_, _, _| success_with(&[]),
    );
    let learned = load::throughput(learn, 4, Duration::from_millis(500)).await;
    assert_eq!(learned.errors, 0, "tinyscale could not find the meetings");
    let learn = setup.per_meeting(
        Via::Tinyscale,
        "join",
        |id| format!("meetingID={id}&fullName=x&role=VIEWER"),
        |_, _, sim| Check::Redirect(sim.url.clone()),
    );
    let learned = load::throughput(learn, 4, Duration::from_millis(500)).await;
    assert_eq!(
        learned.errors, 0,
        "tinyscale could not find the join meetings"
    );
}

/// One row of the throughput table.
struct Row {
    scenario: String,
    results: Vec<(Via, Outcome)>,
}

async fn throughput(
    setup: &Setup,
    scenario: &str,
    rounds: usize,
    seconds: f64,
    source: impl Fn(Via) -> Source,
) -> Row {
    if let Some(only) = &setup.only
        && !scenario.contains(only.as_str())
    {
        return Row {
            scenario: scenario.into(),
            results: Vec::new(),
        };
    }
    let vias: Vec<Via> = [Via::Direct, Via::Nginx, Via::Tinyscale]
        .into_iter()
        .filter(|v| *v != Via::Nginx || setup.nginx.is_some())
        .filter(|v| setup.via.as_ref().is_none_or(|only| only == v.name()))
        .collect();
    eprintln!("measuring {scenario}");
    let mut totals: Vec<(Via, Outcome)> = vias.iter().map(|v| (*v, Outcome::default())).collect();
    for _ in 0..rounds {
        for (via, total) in totals.iter_mut() {
            let outcome =
                load::throughput(source(*via), CONCURRENCY, Duration::from_secs_f64(seconds)).await;
            total.ok += outcome.ok;
            total.errors += outcome.errors;
            total.elapsed += outcome.elapsed;
            total.latencies.extend(outcome.latencies);
        }
    }
    let row = Row {
        scenario: scenario.into(),
        results: totals,
    };
    let line: Vec<String> = row
        .results
        .iter()
        .map(|(via, o)| format!("{} {:.0}/s ({} errors)", via.name(), o.rate(), o.errors))
        .collect();
    eprintln!("{scenario}: {}", line.join(", "));
    row
}

fn rate_of(row: &Row, via: Via) -> Option<f64> {
    row.results
        .iter()
        .find(|(v, _)| *v == via)
        .map(|(_, o)| o.rate())
}

fn errors_of(row: &Row) -> usize {
    row.results.iter().map(|(_, o)| o.errors).sum()
}

/// Creates `per_server` meetings on each server directly; their IDs and owners.
async fn seed_meetings(sims: &[Sim], prefix: &str, per_server: usize) -> Vec<(String, usize)> {
    let mut meetings = Vec::new();
    for n in 0..per_server {
        for (owner, _) in sims.iter().enumerate() {
            meetings.push((format!("{prefix}-{owner}-{n}"), owner));
        }
    }
    let calls: Vec<Call> = meetings
        .iter()
        .map(|(id, owner)| {
            let sim = &sims[*owner];
            let query = format!("name=Bench+class&meetingID={id}&attendeePW=ap&moderatorPW=mp");
            let url = format!(
                "{}/bigbluebutton/api/create?{}",
                sim.url,
                signed_query("create", &query, &sim.secret, Algorithm::Sha1)
            );
            let (addr, target) = split_url(&url);
            Call {
                addr,
                target,
                check: success_with(&[]),
            }
        })
        .collect();
    let calls = Arc::new(calls);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (calls, next) = (calls.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = load::Conn::default();
            let mut errors = 0;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(call) = calls.get(n) else {
                    return errors;
                };
                if !conn.send(call).await {
                    errors += 1;
                }
            }
        }));
    }
    for w in workers {
        assert_eq!(w.await.unwrap(), 0, "seeding meetings failed");
    }
    meetings
}

/// Latency of a call at a light fixed load: direct, through nginx and
/// through tinyscale, side by side (see `load::paced_together`).
async fn light_latency(
    setup: &Setup,
    name: &str,
    seconds: f64,
    source: impl Fn(Via) -> Source,
) -> Vec<String> {
    let mut steps = vec![load::Step::Call(source(Via::Direct))];
    if setup.nginx.is_some() {
        steps.push(load::Step::Call(source(Via::Nginx)));
    }
    steps.push(load::Step::Call(source(Via::Tinyscale)));
    let mut outcomes = load::paced_together(&steps, 200.0, Duration::from_secs_f64(seconds)).await;
    let mut ts = outcomes.pop().expect("tinyscale's");
    let mut nginx = (outcomes.len() == 2).then(|| outcomes.pop().expect("nginx's"));
    let mut direct = outcomes.pop().expect("direct's");
    let errors = direct.errors + ts.errors + nginx.as_ref().map_or(0, |o| o.errors);
    latency_row(name, &mut direct, nginx.as_mut(), &mut ts, errors)
}

fn quantiles(o: &mut Outcome) -> [f64; 3] {
    [
        o.quantile_ms(0.5),
        o.quantile_ms(0.99),
        o.quantile_ms(0.999),
    ]
}

fn latency_row(
    name: &str,
    direct: &mut Outcome,
    nginx: Option<&mut Outcome>,
    ts: &mut Outcome,
    errors: usize,
) -> Vec<String> {
    let (d, t) = (quantiles(direct), quantiles(ts));
    let n = nginx.map(quantiles);
    eprintln!("{name} latency: direct {d:?} ms, nginx {n:?} ms, tinyscale {t:?} ms");
    let three = |q: [f64; 3]| format!("{:.3} / {:.3} / {:.3}", q[0], q[1], q[2]);
    vec![
        name.to_string(),
        three(d),
        n.map_or("—".into(), three),
        three(t),
        format!(
            "{:+.3} / {:+.3} / {:+.3}",
            t[0] - d[0],
            t[1] - d[1],
            t[2] - d[2]
        ),
        format!("{errors}"),
    ]
}

/// getMeetings through tinyscale against the same fan-out done by the
/// bench itself (every server asked at once; the slowest answer decides).
async fn merged_list(setup: &Setup, rounds: usize) -> Vec<String> {
    let n = setup.sims.len();
    // How many meetings each server holds now, asked once.
    let mut counts = Vec::new();
    for i in 0..n {
        let (addr, target) = split_url(&setup.url(Via::Direct, "getMeetings", "", i));
        counts.push(load::count(addr, &target, "<meeting>").await);
    }
    let total: usize = counts.iter().sum();
    let fan_calls: Vec<Call> = (0..n)
        .map(|i| {
            let (addr, target) = split_url(&setup.url(Via::Direct, "getMeetings", "", i));
            Call {
                addr,
                target,
                check: Check::Count("<meeting>".into(), counts[i]),
            }
        })
        .collect();
    let mut fan = load::FanOut::new(n);
    let (addr, target) = split_url(&setup.url(Via::Tinyscale, "getMeetings", "", 0));
    let ts_call = Call {
        addr,
        target,
        check: Check::Count("<meeting>".into(), total),
    };
    let mut ts_conn = load::FanOut::new(1);
    let mut fan_ms = Vec::new();
    let mut ts_ms = Vec::new();
    let mut errors = 0;
    for _ in 0..rounds {
        match fan.round(&fan_calls).await {
            Some(d) => fan_ms.push(d.as_secs_f64() * 1000.0),
            None => errors += 1,
        }
        match ts_conn.round(std::slice::from_ref(&ts_call)).await {
            Some(d) => ts_ms.push(d.as_secs_f64() * 1000.0),
            None => errors += 1,
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (f, t) = (median(&mut fan_ms), median(&mut ts_ms));
    eprintln!("getMeetings over {n}: fan-out {f:.2} ms, tinyscale {t:.2} ms");
    vec![
        format!("getMeetings over {n} servers ({total} meetings)"),
        format!("{f:.2}"),
        format!("{t:.2}"),
        format!("+{:.2}", t - f),
        format!("{errors}"),
    ]
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = opts();
    let (rounds, mut seconds, lat_seconds) = if opts.quick {
        (1, 1.0, 1.0)
    } else {
        (2, 3.0, 8.0)
    };
    if let Some(s) = opts.seconds {
        seconds = s;
    }
    let dir = std::env::temp_dir().join(format!("tinyscale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(minutes) = opts.soak {
        let (report, passed) = soak::run(minutes, &dir).await;
        println!("{report}");
        if let Some(out) = opts.out {
            std::fs::write(&out, &report).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(if passed { 0 } else { 1 });
    }
    if opts.instructions {
        let report = instructions(&dir).await;
        println!("{report}");
        if let Some(out) = opts.out {
            std::fs::write(&out, &report).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    // 10 simulated servers, 100 meetings on them, tinyscale and nginx in front.
    let (_sims10, sims) = procs::sims(10);
    let meetings = seed_meetings(&sims, "bench", 10).await;
    let join_meetings = seed_meetings(&sims, "joined", 10).await;
    let (ts, ts_addr, _) = procs::tinyscale(&dir, &sims, SECRET, &[]);
    let idle = ts.memory_kib();
    let nginx_binary = procs::nginx_binary();
    let owners: Vec<(String, usize)> = meetings.iter().chain(&join_meetings).cloned().collect();
    let nginx = nginx_binary
        .as_ref()
        .map(|b| procs::nginx(b, &dir, &sims, &owners));
    if nginx.is_none() {
        eprintln!("nginx is not installed: its column stays empty (bench/run.sh installs it)");
    }
    let setup = Setup {
        sims: sims.clone(),
        tinyscale: ts_addr,
        nginx: nginx.as_ref().map(|(_, a)| *a),
        meetings,
        join_meetings,
        only: opts.only.clone(),
        via: opts.via.clone(),
    };
    learn_meetings(&setup).await;
    // The same, with Redis configured (several instances' shared state),
    // when redis-server is installed.
    let redis = procs::redis_server(&dir);
    let with_redis = redis.as_ref().map(|(_, port)| {
        let url = format!("redis://127.0.0.1:{port}/");
        procs::tinyscale(
            &dir,
            &sims,
            SECRET,
            &[("TINYSCALE_REDIS_URL", url.as_str())],
        )
    });
    let setup_redis = with_redis.as_ref().map(|(_, addr, _)| Setup {
        tinyscale: *addr,
        ..setup.clone()
    });
    match &setup_redis {
        Some(s) => learn_meetings(s).await,
        None => eprintln!(
            "redis-server is not installed: no rows with Redis (bench/run.sh installs it)"
        ),
    }

    let mut rows = Vec::new();
    rows.push(
        throughput(
            &setup,
            "join (302 to the right server)",
            rounds,
            seconds,
            |via| join_source(&setup, via),
        )
        .await,
    );
    rows.push(
        throughput(&setup, "getMeetingInfo (proxied)", rounds, seconds, |via| {
            info_source(&setup, via)
        })
        .await,
    );
    rows.push(
        throughput(
            &setup,
            "create of an existing meeting",
            rounds,
            seconds,
            |via| existing_create_source(&setup, via),
        )
        .await,
    );

    if let Some(setup_redis) = &setup_redis {
        rows.push(
            throughput(
                setup_redis,
                "join, tinyscale with Redis",
                rounds,
                seconds,
                |via| join_source(setup_redis, via),
            )
            .await,
        );
        rows.push(
            throughput(
                setup_redis,
                "getMeetingInfo, tinyscale with Redis",
                rounds,
                seconds,
                |via| info_source(setup_redis, via),
            )
            .await,
        );
        rows.push(
            throughput(
                setup_redis,
                "create of an existing meeting, tinyscale with Redis (shared create lock)",
                rounds,
                seconds,
                |via| existing_create_source(setup_redis, via),
            )
            .await,
        );
    }
    drop(with_redis);
    drop(redis);

    if opts.only.as_ref().is_some_and(|o| o != "latency") {
        return;
    }
    // Creates of new meetings: latency at a light load.
    let new_source = |via: Via| -> Source {
        let sims = setup.sims.clone();
        let ts = setup.tinyscale;
        let tag = via.name();
        Arc::new(move |n: usize| {
            let owner = n % sims.len();
            let query = format!("name=New&meetingID=new-{tag}-{n}");
            let url = match via {
                Via::Tinyscale => format!(
                    "http://{ts}/bigbluebutton/api/create?{}",
                    signed_query("create", &query, SECRET, Algorithm::Sha1)
                ),
                _ => format!(
                    "{}/bigbluebutton/api/create?{}",
                    sims[owner].url,
                    signed_query("create", &query, &sims[owner].secret, Algorithm::Sha1)
                ),
            };
            let (addr, target) = split_url(&url);
            Call {
                addr,
                target,
                check: success_with(&["<messageKey></messageKey>"]),
            }
        })
    };
    // The least any correct balancer must do for a new meeting: ask every
    // server at once whether it holds the ID (done here by the bench), then
    // create it on one. The search alone is measured beside the creates.
    let search_sims = setup.sims.clone();
    let search: Arc<dyn Fn(usize) -> Vec<Call> + Send + Sync> = Arc::new(move |n| {
        search_sims
            .iter()
            .map(|sim| {
                let query = format!("meetingID=nobody-{n}");
                let (addr, target) = split_url(&format!(
                    "{}/bigbluebutton/api/getMeetingInfo?{}",
                    sim.url,
                    signed_query("getMeetingInfo", &query, &sim.secret, Algorithm::Sha1)
                ));
                Call {
                    addr,
                    target,
                    check: Check::Body(vec!["<messageKey>notFound</messageKey>".into()]),
                }
            })
            .collect()
    });
    let mut outcomes = load::paced_together(
        &[
            load::Step::Call(new_source(Via::Direct)),
            load::Step::Call(new_source(Via::Tinyscale)),
            load::Step::FanOut(search),
        ],
        50.0,
        Duration::from_secs_f64(lat_seconds),
    )
    .await;
    let mut search = outcomes.pop().expect("search");
    let mut ts_new = outcomes.pop().expect("tinyscale's");
    let mut direct_new = outcomes.pop().expect("direct's");
    let new_errors = direct_new.errors + ts_new.errors;
    let create_new = latency_row(
        "create of a new meeting (10 servers searched)",
        &mut direct_new,
        None,
        &mut ts_new,
        new_errors,
    );
    let s = quantiles(&mut search);
    let search_row = vec![
        "(the search alone: 10 servers asked at once by the bench)".to_string(),
        format!("{:.3} / {:.3} / {:.3}", s[0], s[1], s[2]),
        "—".into(),
        "—".into(),
        "—".into(),
        format!("{}", search.errors),
    ];

    let mut latency_rows = vec![create_new, search_row];
    latency_rows
        .push(light_latency(&setup, "join", lat_seconds, |via| join_source(&setup, via)).await);
    latency_rows.push(
        light_latency(&setup, "getMeetingInfo", lat_seconds, |via| {
            info_source(&setup, via)
        })
        .await,
    );
    if opts.only.is_some() {
        println!("{}", table(LATENCY_COLUMNS, &latency_rows));
        return;
    }
    let list_rounds = if opts.quick { 20 } else { 100 };
    let mut list_rows = vec![merged_list(&setup, list_rounds).await];
    let busy = ts.memory_kib();
    drop(nginx);
    drop(ts);

    // 100 servers: getMeetings merged, then memory with 10,000 known meetings.
    let (_sims100, sims100) = procs::sims(100);
    let few = seed_meetings(&sims100, "few", 2).await;
    let (ts100, ts100_addr, ts100_metrics) =
        procs::tinyscale(&dir, &sims100, SECRET, &[("TINYSCALE_POLL_INTERVAL", "2")]);
    let setup100 = Setup {
        sims: sims100.clone(),
        tinyscale: ts100_addr,
        nginx: None,
        meetings: few,
        join_meetings: Vec::new(),
        only: None,
        via: None,
    };
    list_rows.push(merged_list(&setup100, list_rounds).await);
    let many = seed_meetings(&sims100, "many", 98).await;
    let mut all = setup100.meetings.clone();
    all.extend(many);
    let known = wait_for_known(ts100_metrics, all.len()).await;
    let setup100 = Setup {
        meetings: all,
        ..setup100
    };
    let under_load = load::throughput(
        info_source(&setup100, Via::Tinyscale),
        CONCURRENCY,
        Duration::from_secs_f64(seconds * 2.0),
    )
    .await;
    let loaded = ts100.memory_kib();
    eprintln!(
        "100 servers, {known} known meetings: {:.0} getMeetingInfo/s, {} errors, RSS {} KiB (peak {} KiB)",
        under_load.rate(),
        under_load.errors,
        loaded.0,
        loaded.1
    );

    // The report.
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Machine: {} cores, {}; {} rounds of {seconds} s per target, {CONCURRENCY} connections.\n",
        num_cores(),
        cpu_model(),
        rounds
    );
    let _ = writeln!(report, "Throughput (answers/s, every answer checked):\n");
    let t_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let d = rate_of(row, Via::Direct).unwrap_or(f64::NAN);
            let n = rate_of(row, Via::Nginx);
            let t = rate_of(row, Via::Tinyscale).unwrap_or(f64::NAN);
            vec![
                row.scenario.clone(),
                format!("{d:.0}"),
                n.map_or("—".into(), |n| format!("{n:.0}")),
                format!("{t:.0}"),
                format!("{:.0}%", 100.0 * t / d),
                n.map_or("—".into(), |n| format!("{:.0}%", 100.0 * t / n)),
                format!("{}", errors_of(row)),
            ]
        })
        .collect();
    report.push_str(&table(
        &[
            "scenario",
            "direct",
            "nginx",
            "tinyscale",
            "tinyscale/direct",
            "tinyscale/nginx",
            "errors",
        ],
        &t_rows,
    ));
    let _ = writeln!(
        report,
        "\nLatency at a light load (ms, p50 / p99 / p99.9; creates at 50/s, others at 200/s; the targets of a row take turns, call by call):\n"
    );
    report.push_str(&table(LATENCY_COLUMNS, &latency_rows));
    let _ = writeln!(
        report,
        "\nMerged lists (ms, median; baseline: the bench asks every server at once and waits for the slowest):\n"
    );
    report.push_str(&table(
        &[
            "call",
            "slowest server (fan-out)",
            "tinyscale",
            "added",
            "errors",
        ],
        &list_rows,
    ));
    let _ = writeln!(report, "\nMemory of tinyscale (resident set):\n");
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    report.push_str(&table(
        &["situation", "RSS", "peak"],
        &[
            vec!["idle, 10 servers".into(), mib(idle.0), mib(idle.1)],
            vec![
                "after the 10-server scenarios".into(),
                mib(busy.0),
                mib(busy.1),
            ],
            vec![
                format!(
                    "100 servers, {known} known meetings, under load ({:.0} req/s, {} errors)",
                    under_load.rate(),
                    under_load.errors
                ),
                mib(loaded.0),
                mib(loaded.1),
            ],
        ],
    ));
    println!("{report}");
    if let Some(out) = opts.out {
        std::fs::write(&out, &report).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--instructions`: user-space instructions per call of tinyscale and of
/// nginx, each under callgrind, on the same calls (see `count`).
async fn instructions(dir: &std::path::Path) -> String {
    assert!(
        count::available(),
        "valgrind is not installed (sudo apt-get install valgrind)"
    );
    let (_sims, sims) = procs::sims(10);
    // One meeting a server for each scenario: every meeting comes round
    // again within a few calls, even at valgrind's pace, as under load.
    let meetings = seed_meetings(&sims, "bench", 1).await;
    let join_meetings = seed_meetings(&sims, "joined", 1).await;
    let owners: Vec<(String, usize)> = meetings.iter().chain(&join_meetings).cloned().collect();
    let (ts, ts_addr, _) = procs::tinyscale_under(
        &count::wrapper(dir, "tinyscale"),
        dir,
        &sims,
        SECRET,
        &[("TINYSCALE_POLL_INTERVAL", "3600")],
    );
    let mut ts_count = count::Counted::new(ts.pid(), dir, "tinyscale");
    let nginx = procs::nginx_binary().map(|binary| {
        procs::nginx_under(&count::wrapper(dir, "nginx"), &binary, dir, &sims, &owners)
    });
    let mut nginx_count = nginx
        .as_ref()
        .map(|(p, _)| count::Counted::new(p.pid(), dir, "nginx"));
    let setup = Setup {
        sims: sims.clone(),
        tinyscale: ts_addr,
        nginx: nginx.as_ref().map(|(_, a)| *a),
        meetings,
        join_meetings,
        only: None,
        via: None,
    };
    let proxied: [(&str, &dyn Fn(Via) -> Source); 3] = [
        ("join (302 to the right server)", &|via| {
            join_source(&setup, via)
        }),
        ("getMeetingInfo (proxied)", &|via| info_source(&setup, via)),
        ("create of an existing meeting", &|via| {
            existing_create_source(&setup, via)
        }),
    ];
    let mut rows = Vec::new();
    for (name, source) in proxied {
        eprintln!("counting {name}");
        let t = ts_count.per_call(&source(Via::Tinyscale), 0).await;
        let n = match nginx_count.as_mut() {
            Some(c) => Some(c.per_call(&source(Via::Nginx), 0).await),
            None => None,
        };
        rows.push(vec![
            name.to_string(),
            format!("{t}"),
            n.map_or("—".into(), |n| format!("{n}")),
            n.map_or("—".into(), |n| format!("{:.2}", t as f64 / n as f64)),
        ]);
    }
    // Calls only a balancer makes sense of: nginx cannot do them.
    let all = setup.meetings.len() + setup.join_meetings.len();
    let list: Source = {
        let (addr, target) = split_url(&setup.url(Via::Tinyscale, "getMeetings", "", 0));
        Arc::new(move |_| Call {
            addr,
            target: target.clone(),
            check: Check::Count("<meeting>".into(), all),
        })
    };
    let new_meeting: Source = {
        let ts = setup.tinyscale;
        Arc::new(move |n| {
            let query = format!("name=New&meetingID=counted-new-{n}");
            let (addr, target) = split_url(&format!(
                "http://{ts}/bigbluebutton/api/create?{}",
                signed_query("create", &query, SECRET, Algorithm::Sha1)
            ));
            Call {
                addr,
                target,
                check: success_with(&["<messageKey></messageKey>"]),
            }
        })
    };
    for (name, source) in [
        (
            format!("getMeetings over 10 servers ({all} meetings)"),
            list,
        ),
        (
            "create of a new meeting (10 servers searched)".to_string(),
            new_meeting,
        ),
    ] {
        eprintln!("counting {name}");
        let t = ts_count.per_call(&source, 0).await;
        rows.push(vec![name, format!("{t}"), "—".into(), "—".into()]);
    }
    format!(
        "User-space instructions per call (callgrind, {} calls each after {} to warm up; lower is better):\n\n{}",
        count::CALLS,
        count::WARM_UP,
        table(&["call", "tinyscale", "nginx", "tinyscale/nginx"], &rows)
    )
}

/// Waits (bounded) until tinyscale's metrics say it knows `n` meetings.
async fn wait_for_known(metrics: std::net::SocketAddr, n: usize) -> usize {
    let mut known = 0;
    for _ in 0..120 {
        known = scrape_known(metrics).await;
        if known >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    known
}

async fn scrape_known(metrics: std::net::SocketAddr) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(metrics).await else {
        return 0;
    };
    let _ = s
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    text.lines()
        .find_map(|l| l.strip_prefix("tinyscale_known_meetings "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
