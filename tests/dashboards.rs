//! The Grafana dashboard and the Prometheus alert rules in deploy/ ask only
//! for metrics that a running tinyscale exports, with labels it gives them:
//! checked against the real binary's /metrics when fresh, and after calls,
//! a reload and a server that refuses connections.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use support::*;

/// Labels every scraped series gets from Prometheus itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// What a scrape offers PromQL: each series name with the label names its
/// samples carry. Names come from the TYPE lines, so a family with no sample
/// yet counts, under the names its samples will have.
fn exported(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("TYPE name kind");
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.entry(format!("{family}{suffix}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let series = line.rsplit_once(' ').expect("a sample has a value").0;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels = labels.trim_end_matches('}');
            let entry = names.entry(name.to_string()).or_default();
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                entry.insert(pair.split_once('=').expect("label=value").0.to_string());
            }
        }
    }
    // Prometheus' own series for each target it scrapes.
    names.entry("up".into()).or_default();
    for labels in names.values_mut() {
        labels.extend(TARGET_LABELS.map(String::from));
    }
    names
}

/// A series selector in a PromQL expression: the metric name and the label
/// names of its matchers.
#[derive(Debug, PartialEq)]
struct Selector {
    name: String,
    labels: Vec<String>,
}

/// What an expression uses: its selectors, and the labels it groups or
/// matches on (`by`, `without`, `on`, `ignoring`, `group_left/right`).
#[derive(Debug, Default, PartialEq)]
struct Uses {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// Words of PromQL that are not metric names: operators, and aggregations
/// (which may stand before `by (…)` rather than before their `(`).
const KEYWORDS: [&str; 23] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
];

/// Words whose parenthesised list holds label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// A small PromQL scanner: enough to find metric names and label names in
/// the expressions of deploy/ (not a full parser; promtool checks the
/// syntax in CI).
fn uses(expr: &str) -> Uses {
    let chars: Vec<char> = expr.chars().collect();
    let mut uses = Uses::default();
    let mut i = 0;
    let is_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // The text up to the `close` that matches the opening at `i`.
    let block = |i: usize, close: char| -> (String, usize) {
        let end = (i + 1..chars.len())
            .find(|&j| chars[j] == close)
            .unwrap_or_else(|| panic!("unclosed {close:?} in {expr}"));
        (chars[i + 1..end].iter().collect(), end + 1)
    };
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = block(i, c).1;
        } else if c == '[' {
            i = block(i, ']').1; // a range or a duration
        } else if c == '{' {
            // Matchers without a name before them: `{__name__="x"}` is not
            // used in deploy/, so the scanner asks for a name.
            panic!("a selector without a metric name in {expr}");
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A Grafana variable or a number: one word, skipped.
            i += 1;
            while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = next_non_space(i);
            let lower = word.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) && chars.get(after) == Some(&'(') {
                let (list, end) = block(after, ')');
                uses.grouping.extend(
                    list.split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from),
                );
                i = end;
            } else if KEYWORDS.contains(&lower.as_str()) || chars.get(after) == Some(&'(') {
                // An operator, or a function or aggregation's name.
            } else {
                let mut labels = Vec::new();
                if chars.get(after) == Some(&'{') {
                    let (matchers, end) = block(after, '}');
                    labels = matcher_labels(&matchers);
                    i = end;
                }
                uses.selectors.push(Selector { name: word, labels });
            }
        } else {
            i += 1;
        }
    }
    uses
}

/// The label names of matchers such as `a="x,y", b=~"$v"` (the commas and
/// quotes inside values left alone).
fn matcher_labels(matchers: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut name = String::new();
    let mut quote = None;
    let mut in_name = true;
    for c in matchers.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None if c == ',' => in_name = true,
            None if in_name && (c == '=' || c == '!') => {
                labels.push(std::mem::take(&mut name).trim().to_string());
                in_name = false;
            }
            None if in_name => name.push(c),
            None => {}
        }
    }
    labels
}

/// The Grafana dashboard's PromQL: each panel target's `expr`, and the
/// metric of each `label_values(metric, label)` variable.
fn dashboard_queries(json: &str) -> Vec<String> {
    fn targets(panels: &[serde_json::Value], out: &mut Vec<String>) {
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(target["expr"].as_str().expect("a target's expr").into());
            }
            targets(panel["panels"].as_array().map_or(&[], |v| v), out);
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("dashboard JSON");
    let mut queries = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] == "query" {
            let query = variable["query"].as_str().expect("a variable's query");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, label) = inner.rsplit_once(',').expect("metric, label");
            // The label is checked like a grouping label.
            queries.push(format!("group by ({}) ({})", label.trim(), metric.trim()));
        }
    }
    targets(
        dashboard["panels"].as_array().expect("panels"),
        &mut queries,
    );
    queries
}

/// The alert rules' `expr`s, read from the YAML by indentation: a value on
/// the `expr:` line, or a block (`>-`, `|`) indented deeper below it.
fn alert_queries(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut queries = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with(['>', '|']) {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            queries.push(block.join("\n").trim().to_string());
        } else {
            queries.push(value.to_string());
        }
    }
    queries
}

/// What the queries ask for that the exposition does not have, one line
/// each (empty when all is there).
fn missing(queries: &[String], exposition: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut missing = Vec::new();
    for query in queries {
        let uses = uses(query);
        assert!(!uses.selectors.is_empty(), "no metric found in {query}");
        let mut labels_here = BTreeSet::new();
        for selector in &uses.selectors {
            let Some(labels) = exposition.get(&selector.name) else {
                missing.push(format!("no metric {} (in {query})", selector.name));
                continue;
            };
            labels_here.extend(labels.iter().cloned());
            // A family with no sample yet shows no labels to check.
            let has_samples = labels.len() > TARGET_LABELS.len();
            for label in &selector.labels {
                if has_samples && !labels.contains(label) {
                    missing.push(format!(
                        "{} has no label {label} (in {query})",
                        selector.name
                    ));
                }
            }
        }
        for label in &uses.grouping {
            let bucketed = uses.selectors.iter().any(|s| s.name.ends_with("_bucket"));
            let known = labels_here.contains(label) || (label == "le" && bucketed);
            let checkable = uses.selectors.iter().all(|s| {
                exposition
                    .get(&s.name)
                    .is_some_and(|l| l.len() > TARGET_LABELS.len())
            });
            if checkable && !known {
                missing.push(format!("no label {label} to group by (in {query})"));
            }
        }
    }
    missing
}

fn deploy_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query of the dashboard and of the alert rules.
fn deploy_queries() -> Vec<String> {
    let mut queries = dashboard_queries(&deploy_file("grafana-dashboard.json"));
    let alerts = alert_queries(&deploy_file("prometheus-alerts.yml"));
    let rules = deploy_file("prometheus-alerts.yml")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(alerts.len(), rules, "one expr per alert rule");
    queries.extend(alerts);
    queries
}

async fn scrape(lb: &Balancer) -> String {
    let reply = get(&format!(
        "http://{}/metrics",
        lb.metrics_addr.expect("metrics served")
    ))
    .await;
    assert_eq!(reply.status, 200);
    reply.body
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let queries = deploy_queries();
    // Servers 0 and 1 at first; server 2 comes with the reload.
    let sims = Cluster::sims(3).await;
    let entries = vec![entry(&sims, 0), entry(&sims, 1)];
    // Polls at their usual pace: the calls below, not a poll, find the
    // refusing server, so they count as backend errors.
    let cluster = Cluster::launch(sims, entries, &[]);

    // Fresh: no call yet, and every name is already there.
    let fresh = exported(&scrape(&cluster.lb).await);
    let absent = missing(&queries, &fresh);
    assert!(absent.is_empty(), "fresh tinyscale:\n{}", absent.join("\n"));

    // Calls: creates, a join, lists, a bad checksum.
    let on_first = cluster.create("dash-a").await;
    cluster.create("dash-b").await;
    let on_other = ["dash-a", "dash-b"]
        .into_iter()
        .find(|m| cluster.holder(m) != Some(on_first))
        .expect("round-robin used both servers");
    cluster
        .call("join", "meetingID=dash-a&fullName=A&role=VIEWER")
        .await;
    cluster.call("getMeetingInfo", "meetingID=dash-a").await;
    cluster.call("getMeetings", "").await;
    cluster.call("getRecordings", "").await;
    cluster.call("getMeetings", "checksum=bad").await;

    // A server that refuses connections: calls to it fail until it counts
    // as down (TINYSCALE_DOWN_AFTER failures), then its meeting is
    // unavailable.
    let refused = cluster.holder(on_other).expect("held");
    cluster.sims[refused].set_mode(Mode::Refuse);
    let query = format!("meetingID={on_other}");
    let mut answers = Vec::new();
    for _ in 0..10 {
        let reply = cluster.call("getMeetingInfo", &query).await;
        answers.push(reply.message_key().unwrap_or("-").to_string());
        if reply.message_key() == Some("serverUnavailable") {
            break;
        }
    }
    assert_eq!(
        answers.last().map(String::as_str),
        Some("serverUnavailable"),
        "{answers:?}"
    );
    assert!(cluster.lb.wait_for_log("server went down").await);

    // A reload that adds server 2, and one that is refused.
    cluster.reload(vec![cluster.entry(0), cluster.entry(1), cluster.entry(2)]);
    assert!(cluster.lb.wait_for_log("reloaded the servers file").await);
    write_file(&cluster.servers_file, "not json");
    cluster.lb.signal("HUP");
    assert!(cluster.lb.wait_for_log("reload refused").await);

    let text = scrape(&cluster.lb).await;
    let after = exported(&text);
    let absent = missing(&queries, &after);
    assert!(absent.is_empty(), "{}\n\n{text}", absent.join("\n"));
    // The traffic made the label checks bite: these families have samples.
    for name in [
        "tinyscale_requests_total",
        "tinyscale_request_duration_seconds_bucket",
        "tinyscale_backend_request_duration_seconds_bucket",
        "tinyscale_backend_errors_total",
        "tinyscale_reloads_total",
        "tinyscale_server_up",
        "tinyscale_server_state",
    ] {
        assert!(
            after[name].len() > TARGET_LABELS.len(),
            "{name} has no sample"
        );
    }
}

#[test]
fn the_scanner_finds_names_and_labels() {
    let found = uses(
        r#"histogram_quantile(0.95, sum by (server, le) (rate(x_bucket{job=~"$job",server!="a,b"}[$__rate_interval])))
           / on (instance) group_left y unless z offset 5m and absent(up{job="t"}) > bool 1e3"#,
    );
    let names: Vec<&str> = found.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["x_bucket", "y", "z", "up"]);
    assert_eq!(found.selectors[0].labels, ["job", "server"]);
    assert_eq!(found.grouping, ["server", "le", "instance"]);
}

#[test]
fn a_misspelt_metric_or_label_is_reported() {
    let exposition = exported(
        "# TYPE tinyscale_requests counter\ntinyscale_requests_total{call=\"create\",result=\"SUCCESS\"} 1\n\
         # TYPE tinyscale_request_duration_seconds histogram\n# EOF\n",
    );
    let queries = [
        "rate(tinyscale_requests_total[5m])",
        "rate(tinyscale_request_duration_seconds_sum[5m])",
        "tinyscale_requests",
        "rate(tinyscale_requests_total{reslt=\"x\"}[5m])",
        "sum by (server) (tinyscale_requests_total)",
        "up{job=\"tinyscale\"} == 0",
    ]
    .map(String::from);
    assert_eq!(
        missing(&queries, &exposition),
        [
            "no metric tinyscale_requests (in tinyscale_requests)",
            "tinyscale_requests_total has no label reslt (in rate(tinyscale_requests_total{reslt=\"x\"}[5m]))",
            "no label server to group by (in sum by (server) (tinyscale_requests_total))",
        ]
    );
}
