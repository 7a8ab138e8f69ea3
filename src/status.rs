//! `tinyscale status` and `tinyscale check`: ask every configured server,
//! live, without a running daemon, and say what was found.
//!
//! Owns only the survey and its presentation; the asking is the poller's own
//! `poller::poll`, so the tools see exactly what the daemon would.

use crate::backend::Backend;
use crate::config::{self, ServerState, Settings};
use crate::health::HealthPolicy;
use crate::poller::{self, Poll};
use crate::state::{PlacementPolicy, State};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// What one server said, for the table and `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub host: String,
    pub state: &'static str,
    /// servers.json `tags`: what create's `meta_server-tag` can ask for.
    pub tags: Vec<String>,
    /// `None` for a disabled server, which is not asked.
    pub up: Option<bool>,
    pub meetings: u64,
    pub users: u64,
    pub largest_meeting: u64,
    pub videos: u64,
    /// Users ÷ weight, as least-loaded placement compares them.
    pub load: f64,
    pub latency_ms: Option<f64>,
    pub version: Option<String>,
    pub problem: Option<String>,
}

/// The settings the tools read. The secret is not needed to ask servers:
/// a missing one is reported by `check`, not a reason to stop.
fn settings() -> Result<Settings, String> {
    Settings::from_vars(|name| match (name, std::env::var(name).ok()) {
        ("TINYSCALE_SECRET", None) => Some("not needed by status or check".into()),
        (_, value) => value,
    })
    .map_err(|e| e.to_string())
}

/// Asks every server that is not disabled, all at once.
pub async fn survey(settings: &Settings, specs: Vec<config::ServerSpec>) -> Vec<Report> {
    let state = Arc::new(State::new(
        specs,
        HealthPolicy {
            down_after: 1,
            up_after: 1,
        },
        PlacementPolicy {
            strategy: settings.strategy,
            new_meeting_load: settings.new_meeting_load,
        },
    ));
    let backend = Backend::new(
        settings.connect_timeout,
        settings.response_timeout,
        settings.max_list_answer,
    );
    let cluster = state.cluster();
    let mut asks = tokio::task::JoinSet::new();
    for (index, server) in cluster.list.iter().enumerate() {
        if server.spec.state == ServerState::Disabled {
            continue;
        }
        let (state, backend, server) = (state.clone(), backend.clone(), server.clone());
        let timeout = settings.poll_timeout;
        asks.spawn(async move {
            (
                index,
                poller::poll(&state, &backend, &server, timeout).await,
            )
        });
    }
    let mut polls: Vec<Option<Poll>> = cluster.list.iter().map(|_| None).collect();
    while let Some(Ok((index, poll))) = asks.join_next().await {
        polls[index] = Some(poll);
    }
    cluster
        .list
        .iter()
        .zip(polls)
        .map(|(server, poll)| {
            let health = server.health();
            let up = poll.as_ref().map(|p| matches!(p, Poll::Ok { .. }));
            Report {
                host: server.name().to_string(),
                state: server.spec.state.name(),
                tags: server.spec.tags.clone(),
                up,
                meetings: health.load.meetings,
                users: health.load.participants,
                largest_meeting: health.load.largest_meeting,
                videos: health.load.videos,
                load: health.load.participants as f64 / server.spec.weight,
                latency_ms: health
                    .latency
                    .filter(|_| up == Some(true))
                    .map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
                version: health.version.clone(),
                problem: poll.as_ref().and_then(Poll::failure),
            }
        })
        .collect()
}

/// The reports as an aligned table.
pub fn table(reports: &[Report]) -> String {
    let header = [
        "HOST", "STATE", "TAGS", "UP", "MEETINGS", "USERS", "LARGEST", "VIDEOS", "LOAD", "LATENCY",
        "VERSION",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in reports {
        let dash = || "-".to_string();
        let up = r.up == Some(true);
        let figure = |n: u64| if up { n.to_string() } else { dash() };
        rows.push(vec![
            r.host.clone(),
            r.state.to_string(),
            if r.tags.is_empty() {
                dash()
            } else {
                r.tags.join(",")
            },
            match r.up {
                Some(true) => "up".into(),
                Some(false) => "DOWN".into(),
                None => "-".into(),
            },
            figure(r.meetings),
            figure(r.users),
            figure(r.largest_meeting),
            figure(r.videos),
            if up { format!("{:.1}", r.load) } else { dash() },
            r.latency_ms.map_or_else(dash, |ms| format!("{ms} ms")),
            r.version.clone().unwrap_or_else(dash),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for r in reports {
        if let Some(problem) = &r.problem {
            let _ = writeln!(out, "{}: {problem}", r.host);
        }
    }
    out
}

/// Redis, when configured: whether it answers, in one line naming it (never
/// its password). `None` without Redis.
pub async fn redis(settings: &Settings) -> Option<(bool, String)> {
    let url = settings.redis_url.as_deref()?;
    let redis =
        match crate::shared::Redis::new(url, &settings.redis_prefix, settings.response_timeout) {
            Ok(redis) => redis,
            Err(e) => return Some((false, format!("Redis: {e}"))),
        };
    Some(match redis.ping().await {
        Ok(()) => (
            true,
            format!(
                "Redis {}: answers; state is shared with the other instances",
                redis.shown()
            ),
        ),
        Err(why) => (
            false,
            format!("Redis {}: does not answer ({why})", redis.shown()),
        ),
    })
}

/// `tinyscale status`: 0 when every server asked answered, 1 otherwise.
pub async fn status(json: bool) -> Result<bool, String> {
    let settings = settings()?;
    let specs = config::load_servers(&settings.servers_path)
        .await
        .map_err(|e| e.to_string())?;
    let reports = survey(&settings, specs).await;
    let redis = redis(&settings).await;
    if json {
        let text = serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", table(&reports));
        if let Some((_, line)) = &redis {
            println!("{line}");
        }
    }
    Ok(reports.iter().all(|r| r.up != Some(false)) && redis.is_none_or(|(ok, _)| ok))
}

/// Without `TINYSCALE_PUBLIC_URL`, callbacks pass unchanged: the LMS checks
/// them with its secret, so those of a server whose secret differs fail.
fn callback_warnings(secret: &str, specs: &[config::ServerSpec]) -> Vec<String> {
    specs
        .iter()
        .filter(|spec| spec.secret != secret)
        .map(|spec| {
            format!(
                "{}: its secret differs from TINYSCALE_SECRET, so its recording-ready and analytics callbacks would fail the LMS's check; set TINYSCALE_PUBLIC_URL to relay them (see the README)",
                spec.base
            )
        })
        .collect()
}

/// `tinyscale check`: every problem in plain words; true when there is none.
pub async fn check() -> Result<bool, String> {
    let mut problems = 0;
    let mut say = |ok: bool, text: String| {
        if !ok {
            problems += 1;
        }
        println!("{} {text}", if ok { "ok     " } else { "PROBLEM" });
    };
    match Settings::from_vars(|name| std::env::var(name).ok()) {
        Ok(s) => say(
            true,
            format!(
                "environment: secret set, API on {}, metrics {}, {} placement",
                s.listen,
                s.metrics_listen
                    .map_or("off".to_string(), |a| format!("on {a}")),
                s.strategy.name()
            ),
        ),
        Err(e) => say(false, format!("environment: {e}")),
    }
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            // A bad variable other than the secret: nothing more to check.
            say(false, format!("environment: {e}"));
            return Ok(false);
        }
    };
    let specs = match config::load_servers(&settings.servers_path).await {
        Ok(specs) => specs,
        Err(e) => {
            say(false, format!("servers file: {e}"));
            println!("{problems} problem(s) found.");
            return Ok(false);
        }
    };
    let enabled = specs
        .iter()
        .filter(|s| s.state == ServerState::Enabled)
        .count();
    say(
        enabled > 0,
        format!(
            "servers file {}: {} server(s), {enabled} enabled{}",
            settings.servers_path.display(),
            specs.len(),
            if enabled == 0 {
                " — no server can take new meetings"
            } else {
                ""
            }
        ),
    );
    if let Some((ok, line)) = redis(&settings).await {
        say(ok, line);
    }
    match &settings.public_url {
        Some(url) => say(
            true,
            format!(
                "callbacks: recording-ready and analytics callbacks relayed through {url}{} and re-signed",
                crate::callbacks::RELAY_PATH
            ),
        ),
        // Not a problem (an LMS may not use these callbacks): the exit
        // status stays as it is.
        None => {
            for line in callback_warnings(&settings.secret, &specs) {
                println!("WARNING {line}");
            }
        }
    }
    for r in survey(&settings, specs).await {
        match (r.up, &r.problem) {
            (None, _) => say(true, format!("{}: disabled, not asked", r.host)),
            (Some(true), _) => say(
                true,
                format!(
                    "{}: answers, accepts our checksum, BigBlueButton {}, {} meeting(s), {} user(s)",
                    r.host,
                    r.version.as_deref().unwrap_or("(version unknown)"),
                    r.meetings,
                    r.users
                ),
            ),
            (Some(false), problem) => say(
                false,
                format!(
                    "{}: {}",
                    r.host,
                    problem.as_deref().unwrap_or("did not answer")
                ),
            ),
        }
    }
    if problems == 0 {
        println!("No problems found.");
    } else {
        println!("{problems} problem(s) found.");
    }
    Ok(problems == 0)
}
