//! What several tinyscale instances share through Redis (optional): which
//! server holds each meeting, the create lock of a new meetingID, the
//! round-robin turn, the least-loaded reservations, and each meeting's kept
//! create call (see `recreate`). Without Redis (or
//! while it is unreachable) each instance decides alone, from its own
//! memory: `state` keeps that memory and asks this module first.
//!
//! Owns the keys, the scripts that change several of them at once, and
//! Redis's own health: every operation is bounded (no call waits more than
//! about half a second for Redis), an outage is logged once when it begins
//! and once when it ends, and while Redis is down nothing waits for it at
//! all. Does not own the rules (see `state` and `routing`): every answer
//! here may be `None`, and the caller then does what one instance alone
//! would do.
//!
//! Keys, all under the prefix (`TINYSCALE_REDIS_PREFIX`, `tinyscale:`):
//! - `meeting:<id>` → `<unix ms confirmed>|<server root>`, expiring after
//!   [`MEETING_TTL`] (refreshed by every poll that lists it);
//! - `create:<id>` → a random token while one instance places that meeting
//!   (expires by itself: a crashed holder blocks it no longer);
//! - `turn` → the round-robin counter;
//! - `reserved:<server root>` → a sorted set of reservations (score: unix
//!   ms), dropped by any instance's poll of that server that began after;
//! - `kept:<id>` → the meeting's kept create call as JSON, expiring after
//!   `recreate::KEPT_FOR` (deleted when the meeting is seen to end).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one Redis operation may take before Redis counts as down.
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// How often Redis is pinged (to see it go, and come back).
const PING_EVERY: Duration = Duration::from_secs(1);
/// A meeting key lives this long unless a poll or a call confirms it again.
pub const MEETING_TTL: Duration = Duration::from_secs(3600);
/// How long the keys of the turn and the reservations live unused.
const STATE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The connection to Redis and what is known of its health.
pub struct Redis {
    manager: redis::aio::ConnectionManager,
    prefix: String,
    /// The URL without its password, for logs and `status`.
    shown: String,
    up: AtomicBool,
    /// Set once an outage has been logged, so it is logged once.
    outage_logged: AtomicBool,
    lock_ttl: Duration,
    tokens: AtomicU64,
}

/// Milliseconds since the epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A meeting key's value: when it was confirmed, and where.
pub fn meeting_value(confirmed_ms: u64, server: &str) -> String {
    format!("{confirmed_ms}|{server}")
}

/// The parts of a meeting key's value.
pub fn parse_meeting_value(value: &str) -> Option<(u64, &str)> {
    let (ms, server) = value.split_once('|')?;
    Some((ms.parse().ok()?, server))
}

/// The URL as it may be shown: without user and password.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => "(an invalid URL)".into(),
    }
}

const FORGET: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local bar = string.find(v, '|', 1, true)
  if bar and string.sub(v, bar + 1) == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
end
return 0
"#;

/// A poll of server ARGV[1] that began at ARGV[2] (unix ms): KEYS[1] is its
/// reservations, the next ARGV[3] keys the meetings it listed, the rest
/// meetings remembered there that it did not list. A listed meeting is
/// recorded there unless confirmed elsewhere after the poll began; an
/// unlisted one is dropped if still recorded there from before the poll.
const POLL: &str = r#"
local server, started, listed, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local value = ARGV[2] .. '|' .. server
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  local ms, where = nil, nil
  if v then
    local bar = string.find(v, '|', 1, true)
    if bar then
      ms = tonumber(string.sub(v, 1, bar - 1))
      where = string.sub(v, bar + 1)
    end
  end
  if i <= listed + 1 then
    if not (ms and ms > started) then
      redis.call('SET', KEYS[i], value, 'PX', ttl)
    end
  elseif where == server and ms and ms <= started then
    redis.call('DEL', KEYS[i])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', started)
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Least-loaded placement as one step for all instances: KEYS are the
/// candidates' reservation sets; ARGV[1] the load a reservation counts as,
/// ARGV[2] now (unix ms), ARGV[3] a unique member, then per candidate its
/// polled participants and its weight. Reserves on the least loaded (the
/// first of equals) and returns every candidate's reservation count before.
const LEAST_LOADED: &str = r#"
local per, now, member, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local counts, best, best_load = {}, 0, nil
for i = 1, #KEYS do
  local n = redis.call('ZCARD', KEYS[i])
  counts[i] = n
  local load = (tonumber(ARGV[3 + 2 * i]) + per * n) / tonumber(ARGV[4 + 2 * i])
  if best_load == nil or load < best_load then
    best, best_load = i, load
  end
end
if best > 0 then
  redis.call('ZADD', KEYS[best], now, member)
  redis.call('PEXPIRE', KEYS[best], ttl)
end
return counts
"#;

impl Redis {
    /// A connection made when first needed: Redis may come later than
    /// tinyscale. `url` is `redis://` or `rediss://`.
    pub fn new(url: &str, prefix: &str, lock_ttl: Duration) -> Result<Redis, String> {
        let shown = shown_url(url);
        let client = match crate::backend::extra_ca_pem() {
            Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            ),
            _ => redis::Client::open(url),
        }
        .map_err(|e| format!("TINYSCALE_REDIS_URL ({shown}) is not valid: {:?}", e.kind()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("Redis ({shown}): {:?}", e.kind()))?;
        Ok(Redis {
            manager,
            prefix: prefix.to_string(),
            shown,
            up: AtomicBool::new(false),
            outage_logged: AtomicBool::new(false),
            lock_ttl,
            tokens: AtomicU64::new(0),
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// A token no other holder has: this process, this moment, a counter.
    fn token(&self) -> String {
        format!(
            "{}-{}-{}",
            std::process::id(),
            unix_ms(),
            self.tokens.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Asks Redis whether it is there, bypassing the up/down state.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.manager.clone();
        let cmd = redis::cmd("PING");
        let pong = cmd.query_async::<String>(&mut connection);
        match tokio::time::timeout(OP_TIMEOUT * 2, pong).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {:?}", OP_TIMEOUT * 2)),
        }
    }

    /// Pings Redis every second until `stop`, marking it up or down (and
    /// logging each change once).
    pub async fn watch(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.ping().await {
                Ok(()) => self.mark_up(),
                Err(why) => self.mark_down(&why),
            }
            tokio::select! {
                _ = tokio::time::sleep(PING_EVERY) => {}
                _ = &mut stop => return,
            }
        }
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed)
            && self.outage_logged.swap(false, Ordering::Relaxed)
        {
            tracing::warn!(
                redis = self.shown,
                "Redis is reachable again: state is shared again"
            );
        }
    }

    fn mark_down(&self, why: &str) {
        self.up.store(false, Ordering::Relaxed);
        if !self.outage_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                redis = self.shown,
                "Redis is unreachable ({why}): this instance decides alone until it is back (meetings found by searching, creates locked here only)"
            );
        }
    }

    /// Runs one command or script while Redis is up, within the operation
    /// timeout; `None` (and Redis marked down) when it fails.
    async fn run<T: redis::FromRedisValue>(
        &self,
        work: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(OP_TIMEOUT, work).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.mark_down(&describe(&e));
                None
            }
            Err(_) => {
                self.mark_down(&format!("no answer within {OP_TIMEOUT:?}"));
                None
            }
        }
    }

    /// Where another instance (or this one) last saw the meeting:
    /// (unix ms confirmed, server root).
    pub async fn owner(&self, meeting_id: &str) -> Option<(u64, String)> {
        let key = self.key("meeting", meeting_id);
        let mut connection = self.manager.clone();
        let value: Option<String> = self
            .run(redis::cmd("GET").arg(&key).query_async(&mut connection))
            .await?;
        let value = value?;
        let (ms, server) = parse_meeting_value(&value)?;
        Some((ms, server.to_string()))
    }

    /// Records that `server` holds the meeting, confirmed now.
    pub async fn remember(&self, meeting_id: &str, server: &str) {
        let key = self.key("meeting", meeting_id);
        let mut connection = self.manager.clone();
        let _: Option<()> = self
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(meeting_value(unix_ms(), server))
                    .arg("PX")
                    .arg(MEETING_TTL.as_millis() as u64)
                    .query_async(&mut connection),
            )
            .await;
    }

    /// Forgets the meeting if it is still recorded on `server`.
    pub async fn forget(&self, meeting_id: &str, server: &str) {
        let key = self.key("meeting", meeting_id);
        let mut connection = self.manager.clone();
        let script = redis::Script::new(FORGET);
        let _: Option<i64> = self
            .run(script.key(&key).arg(server).invoke_async(&mut connection))
            .await;
    }

    /// Takes in a poll of `server` that began at `started_ms`.
    pub async fn apply_poll(
        &self,
        server: &str,
        started_ms: u64,
        listed: &[String],
        unlisted: &[String],
    ) {
        let mut connection = self.manager.clone();
        let script = redis::Script::new(POLL);
        let mut invocation = script.key(self.key("reserved", server));
        for id in listed.iter().chain(unlisted) {
            invocation.key(self.key("meeting", id));
        }
        invocation
            .arg(server)
            .arg(started_ms)
            .arg(listed.len())
            .arg(MEETING_TTL.as_millis() as u64);
        let _: Option<i64> = self.run(invocation.invoke_async(&mut connection)).await;
    }

    /// The next round-robin position of a pool (`pool` is its key, empty
    /// for every available server), the same sequence for every instance.
    pub async fn next_turn(&self, pool: &str) -> Option<usize> {
        let key = if pool.is_empty() {
            format!("{}turn", self.prefix)
        } else {
            format!("{}turn:{pool}", self.prefix)
        };
        let mut connection = self.manager.clone();
        let (turn, _): (u64, i64) = self
            .run(
                redis::pipe()
                    .cmd("INCR")
                    .arg(&key)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(STATE_TTL.as_millis() as u64)
                    .query_async(&mut connection),
            )
            .await?;
        Some(turn.saturating_sub(1) as usize)
    }

    /// Least-loaded placement across instances: reserves on the least
    /// loaded of `candidates` (server root, polled participants, weight)
    /// and returns each one's reservation count from before.
    pub async fn reserve_least_loaded(
        &self,
        candidates: &[(&str, u64, f64)],
        per_meeting: f64,
    ) -> Option<Vec<u64>> {
        if candidates.is_empty() {
            return Some(Vec::new());
        }
        let mut connection = self.manager.clone();
        let script = redis::Script::new(LEAST_LOADED);
        let mut invocation = script.prepare_invoke();
        for (server, _, _) in candidates {
            invocation.key(self.key("reserved", server));
        }
        invocation
            .arg(per_meeting)
            .arg(unix_ms())
            .arg(self.token())
            .arg(STATE_TTL.as_millis() as u64);
        for (_, participants, weight) in candidates {
            invocation.arg(*participants).arg(*weight);
        }
        self.run(invocation.invoke_async(&mut connection)).await
    }

    /// Adds a reservation on `server` (a create that went on to the next
    /// server after the first could not be reached).
    pub async fn reserve(&self, server: &str) {
        let key = self.key("reserved", server);
        let mut connection = self.manager.clone();
        let _: Option<((), i64)> = self
            .run(
                redis::pipe()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(unix_ms())
                    .arg(self.token())
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(STATE_TTL.as_millis() as u64)
                    .query_async(&mut connection),
            )
            .await;
    }

    /// Tries to take the create lock of a meetingID: its token when taken,
    /// `Err(true)` when another instance holds it, `Err(false)` when Redis
    /// could not be asked.
    pub async fn try_lock_create(&self, meeting_id: &str) -> Result<String, bool> {
        let key = self.key("create", meeting_id);
        let token = self.token();
        let mut connection = self.manager.clone();
        let set: Option<Option<String>> = self
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lock_ttl.as_millis() as u64)
                    .query_async(&mut connection),
            )
            .await;
        match set {
            Some(Some(_)) => Ok(token),
            Some(None) => Err(true),
            None => Err(false),
        }
    }

    /// How long a create lock lives at most.
    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// Releases the create lock, if this token still holds it.
    pub async fn unlock_create(&self, meeting_id: &str, token: &str) {
        let key = self.key("create", meeting_id);
        let mut connection = self.manager.clone();
        let script = redis::Script::new(RELEASE);
        let _: Option<i64> = self
            .run(script.key(&key).arg(token).invoke_async(&mut connection))
            .await;
    }

    /// Keeps a meeting's create call (JSON) for `ttl`, replacing any.
    pub async fn keep(&self, meeting_id: &str, json: &str, ttl: Duration) {
        let key = self.key("kept", meeting_id);
        let mut connection = self.manager.clone();
        let _: Option<()> = self
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(json)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut connection),
            )
            .await;
    }

    /// The meeting's kept create call (JSON): `Some(None)` when Redis has
    /// none, `None` when Redis could not be asked.
    pub async fn kept(&self, meeting_id: &str) -> Option<Option<String>> {
        let key = self.key("kept", meeting_id);
        let mut connection = self.manager.clone();
        self.run(redis::cmd("GET").arg(&key).query_async(&mut connection))
            .await
    }

    /// Drops the kept create calls of meetings that ended.
    pub async fn forget_kept(&self, meeting_ids: &[String]) {
        if meeting_ids.is_empty() {
            return;
        }
        let mut command = redis::cmd("DEL");
        for id in meeting_ids {
            command.arg(self.key("kept", id));
        }
        let mut connection = self.manager.clone();
        let _: Option<i64> = self.run(command.query_async(&mut connection)).await;
    }
}

/// What went wrong, without the URL (which may carry the password): an
/// I/O error's own words ("Connection refused"), or the kind of error.
fn describe(error: &redis::RedisError) -> String {
    if error.is_io_error() {
        error.to_string()
    } else if error.is_timeout() {
        "timed out".into()
    } else {
        format!("{:?}", error.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_values_round_trip() {
        let v = meeting_value(1700000000123, "https://bbb1.example.org");
        assert_eq!(v, "1700000000123|https://bbb1.example.org");
        assert_eq!(
            parse_meeting_value(&v),
            Some((1700000000123, "https://bbb1.example.org"))
        );
        assert_eq!(parse_meeting_value("x|y"), None);
        assert_eq!(parse_meeting_value("12"), None);
    }

    #[test]
    fn the_shown_url_has_no_password() {
        assert_eq!(
            shown_url("redis://:s3cret@127.0.0.1:6379/2"),
            "redis://127.0.0.1:6379/2"
        );
        assert_eq!(
            shown_url("rediss://user:p@ss@redis.example.org"),
            "rediss://redis.example.org"
        );
        assert_eq!(shown_url("redis://127.0.0.1"), "redis://127.0.0.1");
        assert_eq!(shown_url("nonsense"), "(an invalid URL)");
    }
}
