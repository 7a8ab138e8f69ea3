//! Configuration: the environment (`PORT`, `TINYSCALE_*`) and `servers.json`.
//!
//! Owns parsing and validating both, and explaining what is wrong in a way an
//! administrator can act on (file, entry, problem). Does not own the running
//! state built from it (see `state`) nor the reading of files at reload time
//! beyond [`load_servers`].

use crate::checksum::Algorithm;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings taken from the environment at start-up. `Debug` shows the
/// secret as `***`.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The one secret the LMS signs with.
    pub secret: String,
    pub servers_path: PathBuf,
    /// Algorithms accepted from clients.
    pub algorithms: Vec<Algorithm>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Largest upload accepted (create slides, insertDocument, text tracks);
    /// uploads stream to the server, never held whole.
    pub max_body: usize,
    /// Largest body read whole: a form's parameters are the call's (the
    /// checksum may be among them), and calls that are not uploads.
    pub max_form_body: usize,
    /// Largest answer of one server held whole: one server's part of a
    /// merged list, a poll's getMeetings, tinyscale's own lookups.
    pub max_list_answer: usize,
    pub log_filter: String,
    /// How often every server is asked `getMeetings`.
    pub poll_interval: Duration,
    /// How long one poll may take to count as good.
    pub poll_timeout: Duration,
    /// Failed polls in a row before a server is down.
    pub down_after: u32,
    /// Good polls in a row before a down server is up again.
    pub up_after: u32,
    pub strategy: Strategy,
    /// The users a new meeting is counted as until the next poll
    /// (least-loaded placement).
    pub new_meeting_load: f64,
    /// How long requests in flight may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Where `/metrics` and `/healthz` are served; `None` when turned off.
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Event-loop threads serving requests (one per core by default).
    pub threads: usize,
    /// Largest request line and headers together, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// How long a keep-alive client connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request head, from its first byte.
    pub header_timeout: Duration,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Redis shared by several instances (`redis://` or `rediss://`); it may
    /// carry a password: shown only through [`crate::shared::shown_url`].
    pub redis_url: Option<String>,
    /// Put before every Redis key.
    pub redis_prefix: String,
    /// Whether a join re-creates a meeting whose server is down, disabled
    /// or removed, from its kept create call (`TINYSCALE_RECREATE`).
    pub recreate: bool,
    /// The URL at which the servers reach tinyscale (`TINYSCALE_PUBLIC_URL`,
    /// without a trailing slash): with it, the callbacks servers sign are
    /// relayed and re-signed (see `callbacks`).
    pub public_url: Option<String>,
}

/// What `Debug` shows in place of a secret.
pub const HIDDEN: &str = "***";

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field but the secret, so that a new field cannot be
        // forgotten silently: destructuring fails to compile without it.
        let Settings {
            listen,
            secret: _,
            servers_path,
            algorithms,
            connect_timeout,
            response_timeout,
            max_body,
            max_form_body,
            max_list_answer,
            log_filter,
            poll_interval,
            poll_timeout,
            down_after,
            up_after,
            strategy,
            new_meeting_load,
            shutdown_timeout,
            metrics_listen,
            log_format,
            threads,
            max_header_bytes,
            max_headers,
            idle_timeout,
            header_timeout,
            max_connections,
            redis_url,
            redis_prefix,
            recreate,
            public_url,
        } = self;
        f.debug_struct("Settings")
            .field("listen", listen)
            .field("secret", &format_args!("{HIDDEN}"))
            .field("servers_path", servers_path)
            .field("algorithms", algorithms)
            .field("connect_timeout", connect_timeout)
            .field("response_timeout", response_timeout)
            .field("max_body", max_body)
            .field("max_form_body", max_form_body)
            .field("max_list_answer", max_list_answer)
            .field("log_filter", log_filter)
            .field("poll_interval", poll_interval)
            .field("poll_timeout", poll_timeout)
            .field("down_after", down_after)
            .field("up_after", up_after)
            .field("strategy", strategy)
            .field("new_meeting_load", new_meeting_load)
            .field("shutdown_timeout", shutdown_timeout)
            .field("metrics_listen", metrics_listen)
            .field("log_format", log_format)
            .field("threads", threads)
            .field("max_header_bytes", max_header_bytes)
            .field("max_headers", max_headers)
            .field("idle_timeout", idle_timeout)
            .field("header_timeout", header_timeout)
            .field("max_connections", max_connections)
            .field(
                "redis_url",
                &redis_url.as_deref().map(crate::shared::shown_url),
            )
            .field("redis_prefix", redis_prefix)
            .field("recreate", recreate)
            .field("public_url", public_url)
            .finish()
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How a new meeting's server is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastLoaded,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastLoaded => "least-loaded",
        }
    }
}

/// The reasons the environment can be refused. Each displays as one line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("TINYSCALE_SECRET is not set: set it to the shared secret your LMS uses")]
    MissingSecret,
    #[error("{name}={value:?} is not valid: {why}")]
    BadVariable {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("{file}: {problem}")]
    Servers { file: String, problem: String },
}

pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_FORM_BODY: usize = 1024 * 1024;
pub const DEFAULT_MAX_LIST_ANSWER: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Settings {
    /// Reads the settings through `var` (the process environment in
    /// production, a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let secret = var("TINYSCALE_SECRET").unwrap_or_default();
        if secret.trim().is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        let port = parsed(
            &var,
            "PORT",
            || DEFAULT_PORT,
            |v| {
                v.parse()
                    .map_err(|_| "expected a port number from 0 to 65535".into())
            },
        )?;
        let bind = parsed(
            &var,
            "TINYSCALE_BIND",
            || IpAddr::from([0, 0, 0, 0]),
            |v| {
                v.parse()
                    .map_err(|_| "expected an IP address such as 0.0.0.0, 127.0.0.1 or ::".into())
            },
        )?;
        let algorithms = parsed(
            &var,
            "TINYSCALE_CHECKSUM_ALGORITHMS",
            || Algorithm::ALL.to_vec(),
            parse_algorithms,
        )?;
        let seconds = |name: &'static str, default: f64| {
            parsed(
                &var,
                name,
                || Duration::from_secs_f64(default),
                parse_seconds,
            )
        };
        let max_body = parsed(&var, "TINYSCALE_MAX_BODY", || DEFAULT_MAX_BODY, parse_size)?;
        let max_form_body = parsed(
            &var,
            "TINYSCALE_MAX_FORM_BODY",
            || DEFAULT_MAX_FORM_BODY,
            parse_size,
        )?;
        let max_list_answer = parsed(
            &var,
            "TINYSCALE_MAX_LIST_ANSWER",
            || DEFAULT_MAX_LIST_ANSWER,
            parse_size,
        )?;
        let count = |name: &'static str, default: u32| {
            parsed(
                &var,
                name,
                || default,
                |v| {
                    v.parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| "expected a whole number from 1 to 100".into())
                },
            )
        };
        let strategy = parsed(
            &var,
            "TINYSCALE_STRATEGY",
            || Strategy::RoundRobin,
            |v| match v.to_ascii_lowercase().as_str() {
                "round-robin" | "roundrobin" => Ok(Strategy::RoundRobin),
                "least-loaded" | "leastloaded" => Ok(Strategy::LeastLoaded),
                _ => Err("expected round-robin or least-loaded".into()),
            },
        )?;
        let new_meeting_load = parsed(
            &var,
            "TINYSCALE_NEW_MEETING_LOAD",
            || 15.0,
            |v| {
                v.parse()
                    .ok()
                    .filter(|n| (0.0..=100_000.0).contains(n))
                    .ok_or_else(|| "expected a number of users, such as 15".into())
            },
        )?;
        let metrics_listen = parsed(
            &var,
            "TINYSCALE_METRICS_BIND",
            || DEFAULT_METRICS_LISTEN.parse().ok(),
            |v| match v {
                "off" | "" => Ok(None),
                _ => v.parse().map(Some).map_err(|_| {
                    "expected an address with a port, such as 127.0.0.1:9464, or off".into()
                }),
            },
        )?;
        let log_format = parsed(
            &var,
            "TINYSCALE_LOG_FORMAT",
            || LogFormat::Text,
            |v| match v {
                "text" | "" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".into()),
            },
        )?;
        let threads = parsed(
            &var,
            "TINYSCALE_THREADS",
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |v| {
                v.parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| "expected a number of threads from 1 to 256".into())
            },
        )?;
        let max_header_bytes = parsed(
            &var,
            "TINYSCALE_MAX_HEADER_BYTES",
            || DEFAULT_MAX_HEADER_BYTES,
            |v| {
                parse_size(v)
                    .ok()
                    .filter(|n| (1 << 10..=16 << 20).contains(n))
                    .ok_or_else(|| "expected a size from 1K to 16M, such as 65536 or 64K".into())
            },
        )?;
        let whole = |name: &'static str, default: usize, range: std::ops::RangeInclusive<usize>| {
            parsed(
                &var,
                name,
                || default,
                |v| {
                    v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                        format!(
                            "expected a whole number from {} to {}",
                            range.start(),
                            range.end()
                        )
                    })
                },
            )
        };
        Ok(Settings {
            listen: SocketAddr::new(bind, port),
            secret,
            servers_path: PathBuf::from(
                var("TINYSCALE_SERVERS").unwrap_or_else(|| "./servers.json".into()),
            ),
            algorithms,
            connect_timeout: seconds("TINYSCALE_CONNECT_TIMEOUT", 3.0)?,
            response_timeout: seconds("TINYSCALE_RESPONSE_TIMEOUT", 10.0)?,
            max_body,
            max_form_body,
            max_list_answer,
            log_filter: var("TINYSCALE_LOG").unwrap_or_else(|| "info".into()),
            poll_interval: seconds("TINYSCALE_POLL_INTERVAL", 10.0)?,
            poll_timeout: seconds("TINYSCALE_POLL_TIMEOUT", 3.0)?,
            down_after: count("TINYSCALE_DOWN_AFTER", 2)?,
            up_after: count("TINYSCALE_UP_AFTER", 2)?,
            strategy,
            new_meeting_load,
            shutdown_timeout: seconds("TINYSCALE_SHUTDOWN_TIMEOUT", 10.0)?,
            metrics_listen,
            log_format,
            threads,
            max_header_bytes,
            max_headers: whole("TINYSCALE_MAX_HEADERS", DEFAULT_MAX_HEADERS, 10..=10_000)?,
            idle_timeout: seconds("TINYSCALE_IDLE_TIMEOUT", 60.0)?,
            header_timeout: seconds("TINYSCALE_HEADER_TIMEOUT", 30.0)?,
            max_connections: whole(
                "TINYSCALE_MAX_CONNECTIONS",
                DEFAULT_MAX_CONNECTIONS,
                1..=1_000_000,
            )?,
            redis_url: parsed(
                &var,
                "TINYSCALE_REDIS_URL",
                || None,
                |v| match v {
                    "" => Ok(None),
                    _ if v.starts_with("redis://") || v.starts_with("rediss://") => {
                        Ok(Some(v.to_string()))
                    }
                    _ => Err("expected a redis:// or rediss:// URL".into()),
                },
            )
            // The value may hold a password: never echo it.
            .map_err(|e| match e {
                ConfigError::BadVariable { name, value, why } => ConfigError::BadVariable {
                    name,
                    value: crate::shared::shown_url(&value),
                    why,
                },
                other => other,
            })?,
            public_url: parsed(
                &var,
                "TINYSCALE_PUBLIC_URL",
                || None,
                |v| match v {
                    "" => Ok(None),
                    _ => parse_public_url(v).map(Some),
                },
            )?,
            redis_prefix: var("TINYSCALE_REDIS_PREFIX").unwrap_or_else(|| "tinyscale:".into()),
            recreate: parsed(
                &var,
                "TINYSCALE_RECREATE",
                || true,
                |v| match v {
                    "on" => Ok(true),
                    "off" => Ok(false),
                    _ => Err("expected on or off".into()),
                },
            )?,
        })
    }
}

/// The variable `name`: `default()` when unset, else `parse` of its trimmed
/// value, refused with the variable, its value and the reason.
fn parsed<T>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: impl FnOnce() -> T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default()),
        Some(value) => {
            parse(value.trim()).map_err(|why| ConfigError::BadVariable { name, value, why })
        }
    }
}

fn parse_algorithms(text: &str) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let algorithm = Algorithm::parse(name).ok_or_else(|| {
            format!("unknown algorithm {name:?} (use sha1, sha256, sha384, sha512)")
        })?;
        if !out.contains(&algorithm) {
            out.push(algorithm);
        }
    }
    if out.is_empty() {
        return Err("name at least one of sha1, sha256, sha384, sha512".into());
    }
    Ok(out)
}

/// Seconds, decimals allowed (`0.5`), more than zero.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, such as 3 or 0.5".to_string())?;
    if !(value > 0.0 && value < 86_400.0) {
        return Err("expected more than 0 and less than a day".into());
    }
    Ok(Duration::from_secs_f64(value))
}

/// A byte count, optionally with a K, M or G suffix (binary: 64M = 64 MiB).
/// `TINYSCALE_PUBLIC_URL`: an absolute http(s) URL, a path prefix allowed,
/// no query; empty: none.
fn parse_public_url(text: &str) -> Result<String, String> {
    const EXPECTED: &str =
        "expected the URL at which the servers reach tinyscale, such as https://lb.example.org";
    let uri: hyper::Uri = text.parse().map_err(|_| EXPECTED.to_string())?;
    let fine = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.query().is_none()
        && !text.contains('#');
    if !fine {
        return Err(EXPECTED.into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (digits, factor) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1usize << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&n| n > 0)
        .ok_or_else(|| "expected a size in bytes, such as 67108864 or 64M".into())
}

/// What an administrator wants of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Takes new meetings.
    Enabled,
    /// Draining: no new meetings; its meetings keep working, and creates for
    /// them still go there.
    Cordoned,
    /// Out of service: sent no request at all; its meetings answer
    /// serverUnavailable.
    Disabled,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Enabled => "enabled",
            ServerState::Cordoned => "cordoned",
            ServerState::Disabled => "disabled",
        }
    }
}

/// One BBB server as configured. `Debug` shows the secret as `***`.
#[derive(Clone, PartialEq)]
pub struct ServerSpec {
    /// The server root, `scheme://host[:port]` plus any path before
    /// `/bigbluebutton/api`, without a trailing slash. Also its identity.
    pub base: String,
    pub secret: String,
    /// The algorithm used to sign calls to this server.
    pub checksum: Algorithm,
    pub state: ServerState,
    /// Relative capacity, for least-loaded placement.
    pub weight: f64,
    /// What create's `meta_server-tag` can ask for (see `placement`); none:
    /// the server is in the default pool.
    pub tags: Vec<String>,
    /// `{base}/bigbluebutton/api/`, made once: every forwarded call starts
    /// with it.
    api_root: String,
}

impl std::fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ServerSpec {
            base,
            secret: _,
            checksum,
            state,
            weight,
            tags,
            api_root: _,
        } = self;
        f.debug_struct("ServerSpec")
            .field("base", base)
            .field("secret", &format_args!("{HIDDEN}"))
            .field("checksum", checksum)
            .field("state", state)
            .field("weight", weight)
            .field("tags", tags)
            .finish_non_exhaustive()
    }
}

impl ServerSpec {
    /// An enabled server of weight 1; `base` is the server root.
    pub fn new(
        base: impl Into<String>,
        secret: impl Into<String>,
        checksum: Algorithm,
    ) -> ServerSpec {
        let base = base.into();
        ServerSpec {
            api_root: format!("{base}/bigbluebutton/api/"),
            base,
            secret: secret.into(),
            checksum,
            state: ServerState::Enabled,
            weight: 1.0,
            tags: Vec::new(),
        }
    }

    /// The API root, ending in a slash: `https://bbb1.example.org/bigbluebutton/api/`.
    pub fn api_root(&self) -> &str {
        &self.api_root
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    host: Option<String>,
    /// Any JSON value, checked below: serde's own type error would quote
    /// a secret written as a number in the error message.
    secret: Option<serde_json::Value>,
    checksum: Option<String>,
    state: Option<String>,
    weight: Option<f64>,
    tags: Option<Vec<String>>,
}

/// Reads and validates a servers file.
pub async fn load_servers(path: &Path) -> Result<Vec<ServerSpec>, ConfigError> {
    let file = path.display().to_string();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ConfigError::Servers {
            file: file.clone(),
            problem: format!("cannot be read: {e}"),
        })?;
    parse_servers(&text, &file)
}

/// Validates the text of a servers file; `file` names it in errors.
pub fn parse_servers(text: &str, file: &str) -> Result<Vec<ServerSpec>, ConfigError> {
    let fail = |problem: String| ConfigError::Servers {
        file: file.to_string(),
        problem,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| fail(format!("is not valid JSON: {e}")))?;
    let entries = value.as_array().ok_or_else(|| {
        fail(r#"must be a JSON array of servers, such as [{"host": "https://bbb1.example.org", "secret": "…"}]"#.into())
    })?;
    if entries.is_empty() {
        return Err(fail("lists no servers: add at least one".into()));
    }
    let mut servers: Vec<ServerSpec> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let n = index + 1;
        let raw: RawServer =
            serde_json::from_value(entry.clone()).map_err(|e| fail(format!("server #{n}: {e}")))?;
        let host = raw
            .host
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| fail(format!("server #{n}: \"host\" is missing")))?;
        let base =
            normalize_host(&host).map_err(|why| fail(format!("server #{n} ({host}): {why}")))?;
        let secret = match raw.secret {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s,
            None | Some(serde_json::Value::String(_)) | Some(serde_json::Value::Null) => {
                return Err(fail(format!(
                    "server #{n} ({host}): \"secret\" is missing or empty"
                )));
            }
            Some(_) => {
                return Err(fail(format!(
                    "server #{n} ({host}): \"secret\" must be a string (in quotes)"
                )));
            }
        };
        let checksum = match raw.checksum {
            None => Algorithm::Sha256,
            Some(name) => Algorithm::parse(&name).ok_or_else(|| {
                fail(format!(
                    "server #{n} ({host}): \"checksum\" must be sha1, sha256, sha384 or sha512, not {name:?}"
                ))
            })?,
        };
        let state = match raw.state.as_deref() {
            None | Some("enabled") => ServerState::Enabled,
            Some("cordoned") => ServerState::Cordoned,
            Some("disabled") => ServerState::Disabled,
            Some(other) => {
                return Err(fail(format!(
                    "server #{n} ({host}): \"state\" must be enabled, cordoned or disabled, not {other:?}"
                )));
            }
        };
        let weight = raw.weight.unwrap_or(1.0);
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(fail(format!(
                "server #{n} ({host}): \"weight\" must be a number above 0, not {weight}"
            )));
        }
        let tags = raw.tags.unwrap_or_default();
        if let Some(why) = tags.iter().find_map(|t| bad_tag(t, &tags)) {
            return Err(fail(format!("server #{n} ({host}): \"tags\": {why}")));
        }
        if let Some(first) = servers.iter().position(|s| s.base == base) {
            return Err(fail(format!(
                "server #{n} ({host}) is the same server as #{}",
                first + 1
            )));
        }
        servers.push(ServerSpec {
            state,
            weight,
            tags,
            ..ServerSpec::new(base, secret, checksum)
        });
    }
    Ok(servers)
}

/// Why a server's tag cannot be used, if it cannot: create's
/// `meta_server-tag` could never ask for it, or it would mean something
/// else there.
fn bad_tag(tag: &str, all: &[String]) -> Option<String> {
    if tag.trim().is_empty() {
        Some("a tag is empty".into())
    } else if tag.trim() != tag {
        Some(format!("{tag:?} starts or ends with a space"))
    } else if tag.contains([',', ';']) || tag.ends_with('!') {
        Some(format!(
            "{tag:?}: a tag cannot contain , or ; nor end in ! (they separate tags and mark them required in meta_server-tag)"
        ))
    } else if tag == crate::placement::UNTAGGED {
        Some(format!(
            "{tag:?} is reserved: in meta_server-tag it means the servers without tags"
        ))
    } else if all.iter().filter(|t| *t == tag).count() > 1 {
        Some(format!("{tag:?} is listed twice"))
    } else {
        None
    }
}

/// Turns `https://bbb.example.org`, `https://bbb.example.org/` and
/// `https://bbb.example.org/bigbluebutton/api[/]` into the same server root.
fn normalize_host(host: &str) -> Result<String, String> {
    let host = host.trim();
    let (scheme, rest) = host
        .split_once("://")
        .ok_or("is not a URL: it must start with https:// or http://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "uses {scheme}://: only https:// and http:// are supported"
        ));
    }
    if rest.contains(['?', '#']) {
        return Err("must not have a query or fragment".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err("has no valid host name".into());
    }
    let uri: hyper::Uri = format!("{scheme}://{authority}/")
        .parse()
        .map_err(|_| "has no valid host name".to_string())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no valid host name".into());
    }
    // hyper's client takes a port it cannot read for no port (443 or 80):
    // a typo such as :99999 would quietly reach another service.
    let port = authority
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| !port.contains(']'));
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
    {
        return Err(format!(
            "has a port that is not a number from 0 to 65535: {port:?}"
        ));
    }
    let path = path.trim_end_matches('/');
    let prefix = path.strip_suffix("/bigbluebutton/api").unwrap_or(path);
    if !prefix.is_empty() && path == prefix {
        return Err("has a path that is neither empty nor ends in /bigbluebutton/api".into());
    }
    // `//bigbluebutton/api` leaves `/`: the root never ends in a slash.
    let prefix = prefix.trim_end_matches('/');
    Ok(format!(
        "{scheme}://{}{prefix}",
        authority.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = settings(&[("TINYSCALE_SECRET", "s")]).unwrap();
        assert_eq!(s.listen, "0.0.0.0:8000".parse().unwrap());
        assert_eq!(s.algorithms, Algorithm::ALL.to_vec());
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.response_timeout, Duration::from_secs(10));
        assert_eq!(s.max_body, 64 << 20);
        assert_eq!(s.max_form_body, 1 << 20);
        assert_eq!(s.max_list_answer, 16 << 20);
        assert_eq!(s.servers_path, PathBuf::from("./servers.json"));
        assert_eq!(s.poll_interval, Duration::from_secs(10));
        assert_eq!(s.poll_timeout, Duration::from_secs(3));
        assert_eq!((s.down_after, s.up_after), (2, 2));
        assert_eq!(s.strategy, Strategy::RoundRobin);
        assert_eq!(s.new_meeting_load, 15.0);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.max_header_bytes, 65536);
        assert_eq!(s.max_headers, 100);
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.header_timeout, Duration::from_secs(30));
        assert_eq!(s.max_connections, 10_000);
        assert!(s.recreate, "re-creation is on by default");
        assert_eq!(s.public_url, None, "callbacks pass unchanged by default");
        let off =
            settings(&[("TINYSCALE_SECRET", "s"), ("TINYSCALE_METRICS_BIND", "off")]).unwrap();
        assert_eq!(off.metrics_listen, None);
    }

    #[test]
    fn secret_is_required() {
        assert_eq!(settings(&[]).unwrap_err(), ConfigError::MissingSecret);
        assert_eq!(
            settings(&[("TINYSCALE_SECRET", " ")]).unwrap_err(),
            ConfigError::MissingSecret
        );
    }

    #[test]
    fn variables_are_parsed_or_refused() {
        let s = settings(&[
            ("TINYSCALE_SECRET", "s"),
            ("PORT", "3005"),
            ("TINYSCALE_BIND", "127.0.0.1"),
            ("TINYSCALE_CHECKSUM_ALGORITHMS", "SHA256, sha512"),
            ("TINYSCALE_CONNECT_TIMEOUT", "0.5"),
            ("TINYSCALE_MAX_BODY", "10M"),
            ("TINYSCALE_POLL_INTERVAL", "0.5"),
            ("TINYSCALE_STRATEGY", "least-loaded"),
            ("TINYSCALE_DOWN_AFTER", "3"),
            ("TINYSCALE_MAX_HEADER_BYTES", "16K"),
            ("TINYSCALE_MAX_HEADERS", "50"),
            ("TINYSCALE_IDLE_TIMEOUT", "5"),
            ("TINYSCALE_HEADER_TIMEOUT", "0.5"),
            ("TINYSCALE_MAX_CONNECTIONS", "200"),
            ("TINYSCALE_RECREATE", "off"),
            ("TINYSCALE_PUBLIC_URL", "https://lb.example.org/bbb/"),
        ])
        .unwrap();
        assert!(!s.recreate);
        assert_eq!(s.public_url.as_deref(), Some("https://lb.example.org/bbb"));
        assert_eq!((s.max_header_bytes, s.max_headers), (16 << 10, 50));
        assert_eq!(s.idle_timeout, Duration::from_secs(5));
        assert_eq!(s.header_timeout, Duration::from_millis(500));
        assert_eq!(s.max_connections, 200);
        assert_eq!(s.poll_interval, Duration::from_millis(500));
        assert_eq!(s.strategy, Strategy::LeastLoaded);
        assert_eq!(s.down_after, 3);
        assert_eq!(s.listen, "127.0.0.1:3005".parse().unwrap());
        assert_eq!(s.algorithms, vec![Algorithm::Sha256, Algorithm::Sha512]);
        assert_eq!(s.connect_timeout, Duration::from_millis(500));
        assert_eq!(s.max_body, 10 << 20);
        for (name, value) in [
            ("PORT", "http"),
            ("TINYSCALE_BIND", "localhost"),
            ("TINYSCALE_CHECKSUM_ALGORITHMS", "md5"),
            ("TINYSCALE_RESPONSE_TIMEOUT", "-1"),
            ("TINYSCALE_MAX_BODY", "lots"),
            ("TINYSCALE_MAX_FORM_BODY", "0"),
            ("TINYSCALE_MAX_LIST_ANSWER", "-5M"),
            ("TINYSCALE_POLL_INTERVAL", "0"),
            ("TINYSCALE_STRATEGY", "random"),
            ("TINYSCALE_UP_AFTER", "0"),
            ("TINYSCALE_NEW_MEETING_LOAD", "-1"),
            ("TINYSCALE_METRICS_BIND", "9464"),
            ("TINYSCALE_LOG_FORMAT", "xml"),
            ("TINYSCALE_THREADS", "0"),
            ("TINYSCALE_MAX_HEADER_BYTES", "100"),
            ("TINYSCALE_MAX_HEADER_BYTES", "1G"),
            ("TINYSCALE_MAX_HEADERS", "many"),
            ("TINYSCALE_MAX_HEADERS", "1"),
            ("TINYSCALE_IDLE_TIMEOUT", "0"),
            ("TINYSCALE_HEADER_TIMEOUT", "never"),
            ("TINYSCALE_MAX_CONNECTIONS", "0"),
            ("TINYSCALE_MAX_CONNECTIONS", "-5"),
            ("TINYSCALE_RECREATE", "yes"),
            ("TINYSCALE_RECREATE", "OFF!"),
            ("TINYSCALE_PUBLIC_URL", "lb.example.org"),
            ("TINYSCALE_PUBLIC_URL", "ftp://lb.example.org"),
            ("TINYSCALE_PUBLIC_URL", "https://lb.example.org/?x=1"),
            ("TINYSCALE_PUBLIC_URL", "https://lb.example.org/#top"),
        ] {
            let err = settings(&[("TINYSCALE_SECRET", "s"), (name, value)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = settings(&[("TINYSCALE_SECRET", "settings-secret-4711")]).unwrap();
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("settings-secret-4711"), "{shown}");
        assert!(shown.contains("secret: ***"), "{shown}");
        assert!(shown.contains("max_connections: 10000"), "{shown}");

        let spec = ServerSpec::new(
            "https://a.example.org",
            "server-secret-0815",
            Algorithm::Sha1,
        );
        let servers = parse_servers(
            r#"[{"host":"https://b.example.org","secret":"file-secret-1234"}]"#,
            "servers.json",
        )
        .unwrap();
        let shown = format!("{spec:?} {spec:#?} {servers:?}");
        for secret in ["server-secret-0815", "file-secret-1234"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("secret: ***"), "{shown}");
        assert!(shown.contains("https://a.example.org"), "{shown}");
    }

    #[test]
    fn host_forms_mean_the_same_server() {
        for host in [
            "https://bbb1.example.org",
            "https://bbb1.example.org/",
            "https://bbb1.example.org/bigbluebutton/api",
            "https://BBB1.example.org/bigbluebutton/api/",
        ] {
            assert_eq!(normalize_host(host).unwrap(), "https://bbb1.example.org");
        }
        assert_eq!(
            normalize_host("http://127.0.0.1:8080/bbb/bigbluebutton/api/").unwrap(),
            "http://127.0.0.1:8080/bbb"
        );
        for bad in [
            "bbb1.example.org",
            "ftp://x",
            "https://",
            "https://x/other",
            "https://x/?a",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_must_be_one() {
        for bad in [
            "https://x:99999",
            "https://x:",
            "https://x:+80/",
            "http://[::1]:65536",
        ] {
            let err = normalize_host(bad).unwrap_err();
            assert!(
                err.starts_with("has a port that is not a number"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            normalize_host("http://[::1]:65535/").unwrap(),
            "http://[::1]:65535"
        );
        assert_eq!(normalize_host("http://[::1]").unwrap(), "http://[::1]");
    }

    #[test]
    fn a_root_never_ends_in_a_slash() {
        assert_eq!(
            normalize_host("https://x//bigbluebutton/api").unwrap(),
            "https://x"
        );
        assert_eq!(
            normalize_host("https://x/p//bigbluebutton/api/").unwrap(),
            "https://x/p"
        );
    }

    #[test]
    fn servers_file_is_validated() {
        let ok = parse_servers(
            r#"[{"host":"https://a.example.org","secret":"x"},
                {"host":"https://b.example.org/bigbluebutton/api/","secret":"y","checksum":"sha1"}]"#,
            "servers.json",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].checksum, Algorithm::Sha256);
        assert_eq!(ok[1].checksum, Algorithm::Sha1);
        assert_eq!(ok[1].api_root(), "https://b.example.org/bigbluebutton/api/");
        assert_eq!((ok[0].state, ok[0].weight), (ServerState::Enabled, 1.0));
        let drained = parse_servers(
            r#"[{"host":"https://a","secret":"x","state":"cordoned","weight":2.5},
                {"host":"https://b","secret":"y","state":"disabled"}]"#,
            "servers.json",
        )
        .unwrap();
        assert_eq!(
            (drained[0].state, drained[0].weight),
            (ServerState::Cordoned, 2.5)
        );
        assert_eq!(drained[1].state, ServerState::Disabled);
        assert!(drained[0].tags.is_empty());
        let tagged = parse_servers(
            r#"[{"host":"https://a","secret":"x","tags":["large","eu"]},
                {"host":"https://b","secret":"y","tags":[]}]"#,
            "servers.json",
        )
        .unwrap();
        assert_eq!(tagged[0].tags, ["large", "eu"]);
        assert!(tagged[1].tags.is_empty());

        let cases = [
            ("not json", "is not valid JSON"),
            ("{}", "must be a JSON array"),
            ("[]", "lists no servers"),
            (
                r#"[{"host":"https://a"}]"#,
                "server #1 (https://a): \"secret\" is missing",
            ),
            (r#"[{"secret":"x"}]"#, "server #1: \"host\" is missing"),
            (
                r#"[{"host":"a.org","secret":"x"}]"#,
                "server #1 (a.org): is not a URL",
            ),
            (
                r#"[{"host":"https://a","secret":"x"},{"host":"https://a/bigbluebutton/api","secret":"y"}]"#,
                "is the same server as #1",
            ),
            (
                r#"[{"host":"https://a","secret":"x","wieght":2}]"#,
                "unknown field `wieght`",
            ),
            (
                r#"[{"host":"https://a","secret":"x","checksum":"md5"}]"#,
                "\"checksum\" must be",
            ),
            (
                r#"[{"host":"https://a","secret":"x","state":"off"}]"#,
                "\"state\" must be",
            ),
            (
                r#"[{"host":"https://a","secret":"x","weight":0}]"#,
                "\"weight\" must be",
            ),
            (
                r#"[{"host":"https://a","secret":"x","weight":"big"}]"#,
                "server #1",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":"large"}]"#,
                "server #1",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":[""]}]"#,
                "\"tags\": a tag is empty",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":[" eu"]}]"#,
                "starts or ends with a space",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":["a,b"]}]"#,
                "cannot contain , or ;",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":["big!"]}]"#,
                "nor end in !",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":["none"]}]"#,
                "\"none\" is reserved",
            ),
            (
                r#"[{"host":"https://a","secret":"x","tags":["eu","eu"]}]"#,
                "\"eu\" is listed twice",
            ),
            (
                r#"[{"host":"https://a","secret":""}]"#,
                "\"secret\" is missing or empty",
            ),
            (
                r#"[{"host":"https://a","secret":918273645}]"#,
                "\"secret\" must be a string",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_servers(text, "servers.json").unwrap_err().to_string();
            assert!(err.starts_with("servers.json: "), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("918273645"), "a secret in the error: {err}");
        }
    }
}
