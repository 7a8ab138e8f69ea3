//! The soak's report: memory over the run with its verdict against "within
//! 10%", open files, the flaps as tinyscale saw them, answers by call and
//! result, and the errors judged (see `tally::classify`).

use super::Sample;
use super::rough::Vanish;
use super::tally::{self, Class, Flap, Got, Tally};
use crate::table;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Memory at the end may be at most this much above memory after the
/// first minute.
const RSS_GROWTH_ALLOWED: f64 = 1.10;
/// Unexpected errors listed one by one.
const LISTED: usize = 10;

pub struct Findings {
    pub minutes: f64,
    /// Seconds the load ran.
    pub elapsed: f64,
    pub servers: usize,
    pub rate: f64,
    pub connections: usize,
    pub slow_clients: usize,
    pub vanish_rate: f64,
    pub tinyscale_env: &'static [(&'static str, &'static str)],
    pub flapping: usize,
    pub flapping_url: String,
    pub samples: Vec<Sample>,
    pub rss_end: u64,
    pub hwm_end: u64,
    pub fds_start: usize,
    pub fds_end: usize,
    /// tinyscale still running at the end.
    pub alive: bool,
    pub flaps: Vec<Flap>,
    pub tally: Tally,
    pub vanished: BTreeMap<Vanish, u64>,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Memory after the first minute (or at the end of a shorter run).
fn first_minute(f: &Findings) -> u64 {
    f.samples
        .iter()
        .find(|s| s.t >= 60.0)
        .map_or(f.rss_end, |s| s.rss_kib)
}

/// end / first minute, and whether that is within the allowance.
pub fn rss_verdict(first: u64, end: u64) -> (f64, bool) {
    if first == 0 || end == 0 {
        return (f64::NAN, false);
    }
    let ratio = end as f64 / first as f64;
    (ratio, ratio <= RSS_GROWTH_ALLOWED)
}

/// The report, and whether the run passed.
pub fn render(f: &Findings) -> (String, bool) {
    let mut out = String::new();
    let env: Vec<String> = f
        .tinyscale_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        out,
        "Soak: {:.1} min ({:.0} s of load) at {:.0} checked calls/s over {} connections, through tinyscale ({}, otherwise defaults) in front of {} simulated servers; server {} ({}) down from second {:.0} to {:.0} of every minute, hanging and refusing connections by turns (hanging first); {} slow clients, {:.0} vanishing clients/s.\n",
        f.minutes,
        f.elapsed,
        f.rate,
        f.connections,
        env.join(", "),
        f.servers,
        f.flapping + 1,
        f.flapping_url,
        super::DOWN_AT,
        super::UP_AT,
        f.slow_clients,
        f.vanish_rate,
    );

    // Memory.
    let first = first_minute(f);
    let max = f
        .samples
        .iter()
        .map(|s| s.rss_kib)
        .chain([f.rss_end])
        .max()
        .unwrap_or(0);
    let (ratio, rss_ok) = rss_verdict(first, f.rss_end);
    let _ = writeln!(out, "Memory of tinyscale (VmRSS, sampled every second):\n");
    out.push_str(&table(
        &[
            "after the first minute",
            "at the end",
            "max",
            "peak (VmHWM)",
            "end / first minute",
        ],
        &[vec![
            mib(first),
            mib(f.rss_end),
            mib(max),
            mib(f.hwm_end),
            format!(
                "{ratio:.3}: {}",
                if rss_ok {
                    "within 10%"
                } else {
                    "NOT within 10%"
                }
            ),
        ]],
    ));
    if f.elapsed < 60.0 {
        let _ = writeln!(
            out,
            "\n(The run was shorter than a minute: \"after the first minute\" is the end.)"
        );
    }
    let per_minute: Vec<String> = (1..)
        .map_while(|m| {
            let t = m as f64 * 60.0;
            f.samples
                .iter()
                .find(|s| s.t >= t)
                .map(|s| format!("{:.1}", s.rss_kib as f64 / 1024.0))
        })
        .collect();
    if !per_minute.is_empty() {
        let _ = writeln!(
            out,
            "\nVmRSS at each minute (MiB): {}.",
            per_minute.join(", ")
        );
    }
    let fds_max = f.samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "\nOpen file descriptors of tinyscale: {} at the start (before the load), {} at the end (load over, pooled connections to the servers still open), at most {fds_max} during the run.",
        f.fds_start, f.fds_end
    );

    // The flaps.
    let _ = writeln!(
        out,
        "\nServer {} going down and up (tinyscale's view from its tinyscale_server_up, sampled every second):\n",
        f.flapping + 1
    );
    let after = |seen: Option<f64>, from: Option<f64>| match (seen, from) {
        (Some(s), Some(t)) => format!("+{:.0} s", (s - t).max(0.0)),
        _ => "not seen".into(),
    };
    let flap_rows: Vec<Vec<String>> = f
        .flaps
        .iter()
        .enumerate()
        .map(|(i, flap)| {
            vec![
                format!("{}", i + 1),
                flap.how.to_string(),
                format!("{:.0} s", flap.down_at),
                after(flap.seen_down, Some(flap.down_at)),
                flap.up_at
                    .map_or("end of run".into(), |t| format!("{t:.0} s")),
                after(flap.seen_up, flap.up_at),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "#",
            "how",
            "down at",
            "tinyscale saw it down",
            "back at",
            "tinyscale saw it up",
        ],
        &flap_rows,
    ));

    // Answers.
    let results: BTreeSet<&String> = f.tally.counts.keys().map(|(_, r)| r).collect();
    let mut columns: Vec<&str> = vec!["right"];
    columns.extend(results.iter().map(|r| r.as_str()).filter(|r| *r != "right"));
    let calls: BTreeSet<&String> = f.tally.counts.keys().map(|(c, _)| c).collect();
    let count = |call: &str, result: &str| {
        f.tally
            .counts
            .get(&(call.to_string(), result.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let mut rows: Vec<Vec<String>> = calls
        .iter()
        .map(|call| {
            let mut row = vec![call.to_string()];
            row.extend(columns.iter().map(|r| count(call, r).to_string()));
            row
        })
        .collect();
    let mut total_row = vec!["all".to_string()];
    total_row.extend(
        columns
            .iter()
            .map(|r| calls.iter().map(|c| count(c, r)).sum::<u64>().to_string()),
    );
    rows.push(total_row);
    let mut header = vec!["call"];
    header.extend(&columns);
    let answered: u64 = f.tally.counts.values().sum();
    let _ = writeln!(
        out,
        "\nAnswers by call and result ({answered} in all, every one checked; {} calls not made because all {} connections were busy):\n",
        f.tally.not_sent, f.connections
    );
    out.push_str(&table(&header, &rows));
    let vanished: Vec<String> = f
        .vanished
        .iter()
        .map(|(how, n)| format!("{n} {}", how.name()))
        .collect();
    let _ = writeln!(
        out,
        "\nVanishing clients: {} ({}).",
        f.vanished.values().sum::<u64>(),
        if vanished.is_empty() {
            "none".into()
        } else {
            vanished.join(", ")
        }
    );

    // Errors judged.
    let mut by_class: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for failure in &f.tally.failures {
        let class = tally::classify(failure, &f.flaps, f.flapping, &f.flapping_url, f.elapsed);
        let name = match class {
            Class::Unavailable => "unavailable",
            Class::GoingDown => "going down",
            Class::Unexpected => {
                unexpected.push(failure);
                "unexpected"
            }
        };
        *by_class.entry(name).or_default() += 1;
    }
    let n = |k: &str| by_class.get(k).copied().unwrap_or(0);
    let unexpected_count = n("unexpected") + f.tally.unkept;
    let _ = writeln!(out, "\nErrors:\n");
    let _ = writeln!(
        out,
        "- expected, `serverUnavailable` for meetings on server {} while it was down (until tinyscale saw it back): {}",
        f.flapping + 1,
        n("unavailable")
    );
    let _ = writeln!(
        out,
        "- expected, `internalError` naming server {} for calls it got as it went down, before tinyscale saw it down: {}",
        f.flapping + 1,
        n("going down")
    );
    let _ = writeln!(
        out,
        "- anything else (must be 0): {unexpected_count}{}",
        if f.tally.unkept > 0 {
            format!(" ({} of them not kept for judging)", f.tally.unkept)
        } else {
            String::new()
        }
    );
    for failure in unexpected.iter().take(LISTED) {
        let about = match (&failure.meeting_id, failure.owner) {
            (Some(id), Some(o)) => format!(" {id} (server {})", o + 1),
            (Some(id), None) => format!(" {id}"),
            _ => String::new(),
        };
        let what = match &failure.got {
            Got::Failed { key, message } => format!("{key}: {message}"),
            Got::Wrong(d) => format!("wrong answer: {d}"),
            Got::NoAnswer(why) => format!("no answer: {why}"),
            Got::Right => "right".into(),
        };
        let _ = writeln!(
            out,
            "  - {:.1} s, {}{about}: {what}",
            failure.sent, failure.call
        );
    }

    let mut faults = Vec::new();
    if !f.alive {
        faults.push("tinyscale exited".to_string());
    }
    if f.samples.is_empty() {
        faults.push("no samples".into());
    }
    if !rss_ok {
        faults.push(format!("memory grew by a factor of {ratio:.3}"));
    }
    if unexpected_count > 0 {
        faults.push(format!("{unexpected_count} unexpected errors"));
    }
    let passed = faults.is_empty();
    let _ = writeln!(
        out,
        "\nVerdict: {}",
        if passed {
            "PASS (memory within 10%, no unexpected error)".to_string()
        } else {
            format!("FAIL ({})", faults.join("; "))
        }
    );
    (out, passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_judged_against_ten_percent_of_growth() {
        assert!(rss_verdict(10_000, 10_999).1);
        assert!(rss_verdict(10_000, 9_000).1, "shrinking is no leak");
        assert!(!rss_verdict(10_000, 11_100).1);
        // tinyscale gone: no figure, no pass.
        assert!(!rss_verdict(10_000, 0).1);
        assert!(!rss_verdict(0, 10_000).1);
    }
}
