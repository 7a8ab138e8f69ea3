//! The state a request reads, behind one small interface: the servers and
//! their health, which server holds which meeting (and which copies of a
//! meeting are stale), where new meetings go, the creates in flight, and
//! the meetings' kept create calls (see `recreate`).
//!
//! Kept in memory; the BBB servers stay the source of truth, so losing it
//! only costs a search. Everything here is synchronous and quick: no lock is
//! held across an `.await` except a create's own per-meeting lock. A later
//! issue moves the meeting map to a shared store; callers only see these
//! methods. Deciding *when* to poll is `poller`'s, what a poll means for a
//! server `health`'s; choosing among servers is `placement`'s.

use crate::config::{ServerSpec, ServerState, Strategy};
use crate::health::{Health, HealthPolicy, Load, Transition};
use crate::meetings::Meetings;
use crate::placement::{self, Candidate, NoServerWithTag, ServerTag};
use crate::recreate::{self, KeptCreate, StaleCopies};
use crate::shared::{self, Redis};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// One BBB server as the running balancer knows it: its identity (the
/// server root), its configuration, and its health, which survives reloads.
#[derive(Debug)]
pub struct Server {
    pub spec: ServerSpec,
    pub id: Arc<str>,
    health: Arc<Mutex<Health>>,
    /// Merged-list calls under way to this server, each holding its answer
    /// whole until merged: bounded, so that many concurrent getMeetings
    /// hold a bounded number of answers (kept across reloads too).
    list_calls: Arc<tokio::sync::Semaphore>,
}

/// Merged-list calls sent to one server at once; more wait their turn.
pub const LIST_CALLS_PER_SERVER: usize = 2;

impl Server {
    /// The name used in logs and error messages: the server root, no secret.
    pub fn name(&self) -> &str {
        &self.spec.base
    }

    /// Its health as of now, a copy: changes go through [`State`]'s
    /// methods.
    pub fn health(&self) -> Health {
        self.lock_health().clone()
    }

    fn lock_health(&self) -> MutexGuard<'_, Health> {
        lock(&self.health)
    }

    /// A turn to send this server a merged-list call (see
    /// [`LIST_CALLS_PER_SERVER`]); held until its answer has been read.
    pub async fn list_call_turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.list_calls
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Up, and not disabled: calls for its meetings may be sent to it.
    pub fn is_usable(&self) -> bool {
        self.spec.state != ServerState::Disabled && self.lock_health().up
    }

    /// Usable and enabled: it may get new meetings.
    pub fn takes_new_meetings(&self) -> bool {
        self.spec.state == ServerState::Enabled && self.lock_health().up
    }
}

pub use crate::meetings::Owner;

/// The servers, as one consistent list, swapped whole on reload so that no
/// request sees half an update.
#[derive(Debug, Default)]
pub struct Cluster {
    pub list: Vec<Arc<Server>>,
    by_id: HashMap<Arc<str>, Arc<Server>>,
}

impl Cluster {
    pub fn get(&self, id: &str) -> Option<&Arc<Server>> {
        self.by_id.get(id)
    }

    /// The servers calls may be sent to (up, not disabled).
    pub fn usable(&self) -> Vec<Arc<Server>> {
        self.list
            .iter()
            .filter(|s| s.is_usable())
            .cloned()
            .collect()
    }
}

/// What a reload changed, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// How new meetings are placed.
#[derive(Clone, Copy, Debug)]
pub struct PlacementPolicy {
    pub strategy: Strategy,
    /// Users a meeting placed since the last poll counts as.
    pub new_meeting_load: f64,
}

/// Entries not confirmed for this long are dropped once the map is large:
/// a meeting that ended by itself (nobody called `end`) is not kept forever.
const STALE_AFTER: Duration = Duration::from_secs(12 * 3600);
const PRUNE_ABOVE: usize = 50_000;
/// How often kept calls and stale copies past their time are dropped.
const PRUNE_KEPT_EVERY: Duration = Duration::from_secs(600);

/// What re-creation keeps in memory (see `recreate`).
#[derive(Default)]
struct Kept {
    /// meetingID → its kept create call, and when it was kept.
    calls: HashMap<String, (KeptCreate, Instant)>,
    stale: StaleCopies,
    pruned: Option<Instant>,
}

impl Kept {
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|t| now.duration_since(t) < PRUNE_KEPT_EVERY)
        {
            return;
        }
        self.pruned = Some(now);
        self.calls
            .retain(|_, (_, kept)| now.duration_since(*kept) < recreate::KEPT_FOR);
        self.stale.prune(now);
    }
}

pub struct State {
    /// Redis, when several instances share their state (see `shared`):
    /// asked first, with this memory as the fallback and the cache.
    shared: Option<Arc<Redis>>,
    // The RwLock is held only to clone the Arc.
    cluster: RwLock<Arc<Cluster>>,
    // std Mutex: held for a map operation only, never across an .await.
    meetings: Mutex<Meetings>,
    creates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    // Choosing a server and reserving load on it is one step, so a burst of
    // creates sees each other's reservations. Holds the round-robin
    // position of each pool (see [`pool_key`]).
    placing: Mutex<HashMap<String, usize>>,
    health_policy: HealthPolicy,
    placement: PlacementPolicy,
    /// Whether a join re-creates a meeting whose server is unavailable
    /// (`TINYSCALE_RECREATE`); create calls are kept only then.
    recreate: bool,
    // Taken after `meetings` when both are held.
    kept: Mutex<Kept>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub fn new(
        specs: Vec<ServerSpec>,
        health_policy: HealthPolicy,
        placement: PlacementPolicy,
    ) -> State {
        let state = State {
            shared: None,
            cluster: RwLock::new(Arc::new(Cluster::default())),
            meetings: Mutex::new(Meetings::default()),
            creates: Mutex::new(HashMap::new()),
            placing: Mutex::new(HashMap::new()),
            health_policy,
            placement,
            recreate: true,
            kept: Mutex::new(Kept::default()),
        };
        state.replace_servers(specs);
        state
    }

    /// Turns re-creation on or off (on by default).
    pub fn with_recreation(mut self, on: bool) -> State {
        self.recreate = on;
        self
    }

    /// Whether meetings whose server is unavailable are re-created.
    pub fn recreates(&self) -> bool {
        self.recreate
    }

    /// Shares the state with other instances through Redis.
    pub fn with_redis(mut self, redis: Redis) -> State {
        self.shared = Some(Arc::new(redis));
        self
    }

    /// Redis, when configured (for its watcher, `status` and metrics).
    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.shared.as_ref()
    }

    /// A state with plain defaults (round-robin, 2 polls each way) for
    /// tests.
    #[cfg(test)]
    pub fn with_defaults(specs: Vec<ServerSpec>) -> State {
        State::new(
            specs,
            HealthPolicy {
                down_after: 2,
                up_after: 2,
            },
            PlacementPolicy {
                strategy: Strategy::RoundRobin,
                new_meeting_load: 15.0,
            },
        )
    }

    /// The servers, as one consistent snapshot.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.cluster
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new server list. A server that stays (same root) keeps its
    /// health and its meetings; a new one starts down until it answers a
    /// poll; a removed one gets no more calls, and its meetings answer
    /// serverUnavailable.
    pub fn replace_servers(&self, specs: Vec<ServerSpec>) -> ReloadSummary {
        let mut cluster = self.cluster.write().unwrap_or_else(PoisonError::into_inner);
        let mut summary = ReloadSummary::default();
        let mut list = Vec::with_capacity(specs.len());
        let mut by_id = HashMap::with_capacity(specs.len());
        for spec in specs {
            let (health, list_calls) = match cluster.get(&spec.base) {
                Some(old) => {
                    if old.spec != spec {
                        summary.changed.push(spec.base.clone());
                    }
                    (old.health.clone(), old.list_calls.clone())
                }
                None => {
                    summary.added.push(spec.base.clone());
                    (
                        Arc::new(Mutex::new(Health::default())),
                        Arc::new(tokio::sync::Semaphore::new(LIST_CALLS_PER_SERVER)),
                    )
                }
            };
            let server = Arc::new(Server {
                id: Arc::from(spec.base.as_str()),
                spec,
                health,
                list_calls,
            });
            by_id.insert(server.id.clone(), server.clone());
            list.push(server);
        }
        summary.removed = cluster
            .list
            .iter()
            .filter(|old| !by_id.contains_key(&old.id))
            .map(|old| old.spec.base.clone())
            .collect();
        *cluster = Arc::new(Cluster { list, by_id });
        summary
    }

    /// Where the meeting was last seen, if anywhere: by this instance, or
    /// (with Redis) by another one, which this instance then remembers too.
    /// A meeting this instance knows on a server that cannot be used now is
    /// looked up in Redis as well: another instance may have re-created it.
    pub async fn owner(&self, meeting_id: &str) -> Option<Owner> {
        let known = self.meetings().get(meeting_id).cloned();
        let usable = |server: &str| self.cluster().get(server).is_some_and(|s| s.is_usable());
        if known.as_ref().is_some_and(|k| usable(&k.server)) {
            return known;
        }
        let Some(redis) = &self.shared else {
            return known;
        };
        let Some((confirmed_ms, server)) = redis.owner(meeting_id).await else {
            return known;
        };
        match &known {
            None => self.learn(meeting_id, confirmed_ms, &server, false),
            Some(k) if *k.server != *server && usable(&server) => self
                .learn(meeting_id, confirmed_ms, &server, true)
                .or(known),
            Some(_) => known,
        }
    }

    /// The server `id` is configured, up and not disabled.
    fn is_usable(&self, id: &str) -> bool {
        self.cluster().get(id).is_some_and(|s| s.is_usable())
    }

    /// Takes in another instance's word (through Redis) that `server` held
    /// the meeting at `confirmed_ms`, as old as that word is. Without
    /// `overwrite`, what this instance learnt meanwhile stays.
    fn learn(
        &self,
        meeting_id: &str,
        confirmed_ms: u64,
        server: &str,
        overwrite: bool,
    ) -> Option<Owner> {
        let id = self.cluster().get(server)?.id.clone();
        let age = Duration::from_millis(shared::unix_ms().saturating_sub(confirmed_ms))
            .min(shared::MEETING_TTL);
        let now = Instant::now();
        let confirmed = now.checked_sub(age).unwrap_or(now);
        let mut meetings = self.meetings();
        if overwrite || meetings.get(meeting_id).is_none() {
            meetings.set(meeting_id, &id, confirmed);
        }
        meetings.get(meeting_id).cloned()
    }

    /// Records that `server` said just now that it holds the meeting.
    /// Other instances are told (through Redis) when the meeting is new
    /// here or has moved; polls keep their word fresh after that, so a
    /// create or join of a known meeting costs no Redis round trip.
    pub async fn remember(&self, meeting_id: &str, server: &Server) {
        self.remember_copy(meeting_id, server, None).await;
    }

    /// Records that `server` said just now that it holds the meeting, in a
    /// copy created at `create_time` (from a create or getMeetingInfo
    /// answer). A copy older than the one known elsewhere is stale and not
    /// taken (see [`State::take_copy`]).
    pub async fn remember_copy(&self, meeting_id: &str, server: &Server, create_time: Option<u64>) {
        let mut noted = Vec::new();
        let (taken, news) = {
            let mut meetings = self.meetings();
            let now = Instant::now();
            if meetings.len() >= PRUNE_ABOVE {
                meetings.retain(|_, owner| now.duration_since(owner.confirmed) < STALE_AFTER);
            }
            let news = meetings
                .get(meeting_id)
                .is_none_or(|o| o.server != server.id);
            let mut kept = self.kept();
            let taken = take_copy(
                &mut meetings,
                &mut kept.stale,
                (meeting_id, &server.id, create_time),
                now,
                &mut noted,
            );
            (taken, news)
        };
        log_stale(&noted);
        if taken
            && news
            && let Some(redis) = &self.shared
        {
            redis.remember(meeting_id, &server.id).await;
        }
    }

    /// Notes that the copy of the meeting on `server_id` created at
    /// `create_time` is not the meeting (it was re-created elsewhere).
    pub fn note_stale(&self, meeting_id: &str, server_id: &Arc<str>, create_time: u64) {
        if self.kept().stale.note(meeting_id, server_id, create_time) {
            log_stale(&[(meeting_id.to_string(), server_id.clone(), create_time)]);
        }
    }

    /// Is the copy of the meeting on `server_id` created at `create_time` a
    /// stale one, never to be chosen?
    pub fn is_stale(&self, meeting_id: &str, server_id: &str, create_time: Option<u64>) -> bool {
        self.kept()
            .stale
            .is_stale(meeting_id, server_id, create_time)
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        lock(&self.kept)
    }

    /// Keeps a meeting's create call (here, and with Redis for every
    /// instance) until the meeting is gone or [`recreate::KEPT_FOR`] has
    /// passed. Nothing is kept while re-creation is off.
    pub async fn keep_create(&self, meeting_id: &str, call: KeptCreate) {
        if !self.recreate {
            return;
        }
        let json = self.shared.as_ref().map(|_| call.to_json());
        {
            let mut kept = self.kept();
            let now = Instant::now();
            kept.prune(now);
            kept.calls.insert(meeting_id.to_string(), (call, now));
        }
        if let (Some(redis), Some(json)) = (&self.shared, json) {
            redis.keep(meeting_id, &json, recreate::KEPT_FOR).await;
        }
    }

    /// The meeting's kept create call: Redis's word first (another instance
    /// may have re-created the meeting and kept a newer one), this
    /// instance's memory while Redis cannot be asked.
    pub async fn kept_create(&self, meeting_id: &str) -> Option<KeptCreate> {
        if let Some(redis) = &self.shared
            && let Some(answer) = redis.kept(meeting_id).await
        {
            let call = answer.and_then(|json| match KeptCreate::from_json(&json) {
                Ok(call) => Some(call),
                Err(e) => {
                    tracing::warn!(
                        meeting = meeting_id,
                        "a kept create call in Redis is unreadable: {e}"
                    );
                    None
                }
            });
            let mut kept = self.kept();
            match &call {
                Some(call) => {
                    let kept_at = kept
                        .calls
                        .get(meeting_id)
                        .map_or_else(Instant::now, |(_, t)| *t);
                    kept.calls
                        .insert(meeting_id.to_string(), (call.clone(), kept_at));
                }
                None => {
                    kept.calls.remove(meeting_id);
                }
            }
            return call;
        }
        self.kept()
            .calls
            .get(meeting_id)
            .filter(|(_, kept)| kept.elapsed() < recreate::KEPT_FOR)
            .map(|(call, _)| call.clone())
    }

    /// Drops the meeting's kept create call: the meeting ended.
    pub async fn forget_kept(&self, meeting_id: &str) {
        self.kept().calls.remove(meeting_id);
        if let Some(redis) = &self.shared {
            redis.forget_kept(&[meeting_id.to_string()]).await;
        }
    }

    /// Forgets the meeting, if it is still recorded on the server `server_id`.
    pub async fn forget(&self, meeting_id: &str, server_id: &str) {
        self.meetings().remove_if_on(meeting_id, server_id);
        if let Some(redis) = &self.shared {
            redis.forget(meeting_id, server_id).await;
        }
    }

    pub fn known_meetings(&self) -> usize {
        self.meetings().len()
    }

    fn meetings(&self) -> MutexGuard<'_, Meetings> {
        lock(&self.meetings)
    }

    /// Takes in what a poll that started at `started` saw on `server`: the
    /// meetings it lists (with their copies' createTimes) are known to be
    /// there; meetings remembered there that it did not list have ended,
    /// and their kept create calls go — unless they were confirmed after
    /// the poll began (a create that raced the poll is not dropped by its
    /// older answer). A listed copy older than the one known elsewhere is
    /// stale: passed by. Meetings placed since the poll began keep their
    /// reservation. Touches only this server's meetings and the ones it
    /// listed.
    pub async fn apply_poll(
        &self,
        server: &Server,
        started: Instant,
        listed: &[(String, Option<u64>)],
    ) {
        let mut unlisted = Vec::new();
        let mut taken = Vec::with_capacity(listed.len());
        let mut noted = Vec::new();
        {
            let mut meetings = self.meetings();
            let ids: std::collections::HashSet<&str> =
                listed.iter().map(|(id, _)| id.as_str()).collect();
            for id in meetings.on_server(&server.id) {
                let ended = !ids.contains(&*id)
                    && meetings.get(&id).is_some_and(|o| o.confirmed <= started);
                if ended {
                    meetings.remove_if_on(&id, &server.id);
                    unlisted.push(id.to_string());
                }
            }
            let mut kept = self.kept();
            for (id, create_time) in listed {
                let copy = (id.as_str(), &server.id, *create_time);
                let newer_word = meetings.get(id).is_some_and(|o| o.confirmed > started);
                if newer_word {
                    // Seen elsewhere after this poll began: the newer word
                    // wins (Redis, too, keeps it: see its script) — unless
                    // this copy is a stale one.
                    if !kept.stale.is_stale(id, &server.id, *create_time) {
                        taken.push(id.clone());
                    }
                } else if take_copy(&mut meetings, &mut kept.stale, copy, started, &mut noted) {
                    taken.push(id.clone());
                }
            }
            for id in &unlisted {
                kept.calls.remove(id);
            }
        }
        log_stale(&noted);
        server.lock_health().clear_reservations_before(started);
        if let Some(redis) = &self.shared {
            let started_ms = shared::unix_ms().saturating_sub(started.elapsed().as_millis() as u64);
            redis
                .apply_poll(&server.id, started_ms, &taken, &unlisted)
                .await;
            redis.forget_kept(&unlisted).await;
        }
    }

    /// Counts a poll or call result towards the server's health, and logs a
    /// change of state, once, when it happens.
    pub fn note(&self, server: &Server, result: Result<(), String>) {
        let transition = server.lock_health().record(result, self.health_policy);
        match transition {
            Some(Transition::Down(why)) => {
                tracing::warn!(server = server.name(), "server went down: {why}")
            }
            Some(Transition::Up) => tracing::info!(server = server.name(), "server is up again"),
            None => {}
        }
    }

    /// The server answered the start-up probe: it is up from now on.
    pub fn mark_up(&self, server: &Server) {
        server.lock_health().mark_up_after_probe();
    }

    /// Takes in the figures of a good poll, and how long it took.
    pub fn take_figures(&self, server: &Server, load: Load, latency: Duration) {
        let mut health = server.lock_health();
        health.load = load;
        health.latency = Some(latency);
    }

    /// The BBB version the server reported.
    pub fn set_version(&self, server: &Server, version: Option<String>) {
        server.lock_health().version = version;
    }

    /// Marks a poll of the server as under way; false when one already is
    /// (a slow server is not polled twice at once).
    pub fn begin_poll(&self, server: &Server) -> bool {
        server.lock_health().begin_poll()
    }

    pub fn end_poll(&self, server: &Server) {
        server.lock_health().end_poll();
    }

    /// The servers a new meeting should try, best first, with load reserved
    /// on the first. Only enabled servers that are up are candidates, and of
    /// those only the pool `asked` allows (see [`placement::tag_pool`]).
    pub async fn placement_order(
        &self,
        asked: &ServerTag,
    ) -> Result<Vec<Arc<Server>>, NoServerWithTag> {
        let (pool, key) = self.pool(asked)?;
        if let Some(order) = self.shared_placement_order(&pool, &key).await {
            return Ok(order);
        }
        let mut turns = lock(&self.placing);
        let candidates: Vec<Candidate> = pool
            .iter()
            .map(|s| {
                let health = s.lock_health();
                Candidate {
                    load: health.load(self.placement.new_meeting_load),
                    weight: s.spec.weight,
                }
            })
            .collect();
        let order = match self.placement.strategy {
            Strategy::RoundRobin if candidates.is_empty() => Vec::new(),
            Strategy::RoundRobin => {
                let turn = turns.entry(key).or_default();
                let position = *turn;
                *turn = position.wrapping_add(1);
                placement::round_robin(candidates.len(), position)
            }
            Strategy::LeastLoaded => placement::least_loaded(&candidates),
        };
        let ordered: Vec<Arc<Server>> = order.into_iter().map(|i| pool[i].clone()).collect();
        if let Some(first) = ordered.first() {
            first.lock_health().reserve();
        }
        Ok(ordered)
    }

    /// The servers a new meeting may go to now, and its pool's key.
    fn pool(&self, asked: &ServerTag) -> Result<(Vec<Arc<Server>>, String), NoServerWithTag> {
        let cluster = self.cluster();
        let available: Vec<&Arc<Server>> = cluster
            .list
            .iter()
            .filter(|s| s.takes_new_meetings())
            .collect();
        let tags: Vec<&[String]> = available.iter().map(|s| &s.spec.tags[..]).collect();
        let chosen = placement::tag_pool(asked, &tags)?;
        let key = pool_key(&available, &chosen);
        Ok((
            chosen.into_iter().map(|i| available[i].clone()).collect(),
            key,
        ))
    }

    /// The placement of every instance as one, through Redis: the shared
    /// round-robin turn of the pool, or the least-loaded choice with every
    /// instance's reservations. `None` without Redis (or while it is down).
    async fn shared_placement_order(
        &self,
        eligible: &[Arc<Server>],
        key: &str,
    ) -> Option<Vec<Arc<Server>>> {
        let redis = self.shared.as_ref()?;
        if !redis.is_up() {
            return None;
        }
        if eligible.is_empty() {
            return Some(Vec::new());
        }
        let order = match self.placement.strategy {
            Strategy::RoundRobin => {
                placement::round_robin(eligible.len(), redis.next_turn(key).await?)
            }
            Strategy::LeastLoaded => {
                let polled: Vec<(u64, f64)> = eligible
                    .iter()
                    .map(|s| (s.lock_health().load.participants, s.spec.weight))
                    .collect();
                let asked: Vec<(&str, u64, f64)> = eligible
                    .iter()
                    .zip(&polled)
                    .map(|(s, (participants, weight))| (&*s.id, *participants, *weight))
                    .collect();
                let per = self.placement.new_meeting_load;
                let counts = redis.reserve_least_loaded(&asked, per).await?;
                let candidates: Vec<Candidate> = polled
                    .iter()
                    .zip(&counts)
                    .map(|((participants, weight), n)| Candidate {
                        load: *participants as f64 + per * *n as f64,
                        weight: *weight,
                    })
                    .collect();
                placement::least_loaded(&candidates)
            }
        };
        let ordered: Vec<Arc<Server>> = order.into_iter().map(|i| eligible[i].clone()).collect();
        if let Some(first) = ordered.first() {
            // Kept here too, for the time Redis may be away.
            first.lock_health().reserve();
        }
        Some(ordered)
    }

    /// Moves a reservation to `server` when the first choice could not be
    /// reached and the create went on to the next.
    pub async fn reserve(&self, server: &Server) {
        server.lock_health().reserve();
        if let Some(redis) = &self.shared {
            redis.reserve(&server.id).await;
        }
    }

    /// Serialises creates of one meetingID on this instance, so that creates
    /// arriving together are placed once and all end on the same server.
    /// For a new meeting, [`CreateGuard::share`] extends it to every
    /// instance.
    pub async fn lock_create(&self, meeting_id: &str) -> CreateGuard<'_> {
        let lock = self
            .creates_map()
            .entry(meeting_id.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        CreateGuard {
            state: self,
            meeting_id: meeting_id.to_string(),
            lock,
            guard: Some(guard),
            shared_token: None,
        }
    }

    fn creates_map(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        lock(&self.creates)
    }

    pub fn creates_in_flight(&self) -> usize {
        self.creates_map().len()
    }
}

/// Which round-robin turn a pool takes: each pool rotates on its own, so
/// that creates for other pools in between do not skip its servers. Empty
/// for the pool of every available server (every pool without tags).
fn pool_key(available: &[&Arc<Server>], chosen: &[usize]) -> String {
    if chosen.len() == available.len() {
        return String::new();
    }
    let ids: Vec<&str> = chosen.iter().map(|&i| &*available[i].id).collect();
    ids.join(" ")
}

/// Records the copy `(meeting, server, createTime)` as where the meeting
/// is, as of `confirmed` — unless it is stale: noted so before, or older
/// than the copy known on another server (then noted now). A later copy
/// than the known one makes that one stale. Newly noted stale copies are
/// added to `noted`, to be logged once the locks are released. True when
/// the copy was taken.
fn take_copy(
    meetings: &mut Meetings,
    stale: &mut StaleCopies,
    (meeting_id, server, create_time): (&str, &Arc<str>, Option<u64>),
    confirmed: Instant,
    noted: &mut Vec<(String, Arc<str>, u64)>,
) -> bool {
    if stale.is_stale(meeting_id, server, create_time) {
        return false;
    }
    if let Some(known) = meetings.get(meeting_id)
        && known.server != *server
    {
        if recreate::is_earlier(create_time, known.create_time) {
            if let Some(t) = create_time
                && stale.note(meeting_id, server, t)
            {
                noted.push((meeting_id.to_string(), server.clone(), t));
            }
            return false;
        }
        if recreate::is_earlier(known.create_time, create_time)
            && let Some(t) = known.create_time
            && stale.note(meeting_id, &known.server, t)
        {
            noted.push((meeting_id.to_string(), known.server.clone(), t));
        }
    }
    meetings.set(meeting_id, server, confirmed);
    if let Some(t) = create_time {
        meetings.set_create_time(meeting_id, t);
    }
    true
}

/// One line per stale copy, once: its server came back still holding a
/// meeting that was made again elsewhere.
fn log_stale(noted: &[(String, Arc<str>, u64)]) {
    for (meeting, server, create_time) in noted {
        tracing::warn!(
            meeting = meeting.as_str(),
            server = &**server,
            create_time,
            "an older copy of the meeting is on this server; the later copy is the meeting and this one is never chosen"
        );
    }
}

/// Held while one create of a meetingID is placed and sent.
pub struct CreateGuard<'a> {
    state: &'a State,
    meeting_id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The shared lock's token, when this instance holds it.
    shared_token: Option<String>,
}

impl CreateGuard<'_> {
    /// With Redis, the create lock of every instance: the instance that
    /// takes it places the new meeting; the others wait until its server is
    /// known (then their create goes there, and BBB answers
    /// `duplicateWarning`), or until the lock is gone (a holder that
    /// crashed: its lock expires), and then take it themselves. True when
    /// another instance's create landed meanwhile (its server is now
    /// known here too). Without Redis, or while it is down: this
    /// instance's lock alone, and false.
    pub async fn share(&mut self, meeting_id: &str) -> bool {
        let state = self.state;
        let Some(redis) = &state.shared else {
            return false;
        };
        let give_up = tokio::time::Instant::now() + redis.lock_ttl() + Duration::from_secs(1);
        loop {
            match redis.try_lock_create(meeting_id).await {
                Ok(token) => {
                    self.shared_token = Some(token);
                    // The last holder's create may have landed just before.
                    return match redis.owner(meeting_id).await {
                        Some((ms, server)) if state.is_usable(&server) => {
                            state.learn(meeting_id, ms, &server, true).is_some()
                        }
                        _ => false,
                    };
                }
                Err(false) => return false,
                Err(true) => {
                    // A meeting still recorded on a server that cannot be
                    // used is being made anew: wait for the new copy.
                    if let Some((ms, server)) = redis.owner(meeting_id).await
                        && state.is_usable(&server)
                        && state.learn(meeting_id, ms, &server, true).is_some()
                    {
                        return true;
                    }
                    if tokio::time::Instant::now() > give_up {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
    }
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if let (Some(token), Some(redis)) = (self.shared_token.take(), self.state.shared.clone()) {
            let meeting_id = self.meeting_id.clone();
            // Dropped inside a request, on its event loop.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { redis.unlock_create(&meeting_id, &token).await });
            }
        }
        self.guard.take();
        let mut creates = self.state.creates_map();
        // The map and this guard hold the lock; nobody else waits on it.
        if Arc::strong_count(&self.lock) == 2 {
            creates.remove(&self.meeting_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Algorithm;

    fn spec(n: u16) -> ServerSpec {
        ServerSpec::new(format!("http://127.0.0.1:{n}"), "s", Algorithm::Sha256)
    }

    fn up(state: &State) {
        for server in &state.cluster().list {
            state.mark_up(server);
        }
    }

    #[tokio::test]
    async fn round_robin_rotates_over_servers_that_take_meetings() {
        let state = State::with_defaults(vec![spec(1), spec(2), spec(3)]);
        assert!(
            state
                .placement_order(&ServerTag::default())
                .await
                .unwrap()
                .is_empty(),
            "nobody is up before the probe"
        );
        up(&state);
        let mut firsts = Vec::new();
        for _ in 0..4 {
            firsts.push(
                state.placement_order(&ServerTag::default()).await.unwrap()[0]
                    .name()
                    .to_string(),
            );
        }
        assert_eq!(
            firsts,
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
                "http://127.0.0.1:1"
            ]
        );
        let mut cordoned = spec(2);
        cordoned.state = ServerState::Cordoned;
        state.replace_servers(vec![spec(1), cordoned, spec(3)]);
        for _ in 0..4 {
            assert!(
                state
                    .placement_order(&ServerTag::default())
                    .await
                    .unwrap()
                    .iter()
                    .all(|s| s.name() != "http://127.0.0.1:2")
            );
        }
    }

    #[tokio::test]
    async fn remember_and_forget() {
        let state = State::with_defaults(vec![spec(1), spec(2)]);
        let cluster = state.cluster();
        state.remember("m", &cluster.list[0]).await;
        assert_eq!(
            &*state.owner("m").await.unwrap().server,
            "http://127.0.0.1:1"
        );
        state.forget("m", &cluster.list[1].id).await;
        assert!(state.owner("m").await.is_some());
        state.forget("m", &cluster.list[0].id).await;
        assert!(state.owner("m").await.is_none());
    }

    #[tokio::test]
    async fn reload_keeps_health_and_meetings_of_servers_that_stay() {
        let state = State::with_defaults(vec![spec(1), spec(2)]);
        up(&state);
        state.remember("m", &state.cluster().list[1]).await;
        let mut heavier = spec(2);
        heavier.weight = 3.0;
        let summary = state.replace_servers(vec![heavier, spec(3)]);
        assert_eq!(summary.added, ["http://127.0.0.1:3"]);
        assert_eq!(summary.removed, ["http://127.0.0.1:1"]);
        assert_eq!(summary.changed, ["http://127.0.0.1:2"]);
        let cluster = state.cluster();
        let kept = cluster.get("http://127.0.0.1:2").unwrap();
        assert!(kept.is_usable(), "health kept");
        assert_eq!(kept.spec.weight, 3.0);
        assert!(
            !cluster.get("http://127.0.0.1:3").unwrap().is_usable(),
            "new servers wait for a poll"
        );
        assert_eq!(
            &*state.owner("m").await.unwrap().server,
            "http://127.0.0.1:2"
        );
    }

    #[tokio::test]
    async fn a_poll_does_not_drop_a_meeting_created_after_it_began() {
        let state = State::with_defaults(vec![spec(1)]);
        let server = state.cluster().list[0].clone();
        state.remember("old-ended", &server).await;
        let poll_started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        state.remember("created-during-poll", &server).await;
        state
            .apply_poll(&server, poll_started, &[("seen".to_string(), None)])
            .await;
        assert!(
            state.owner("old-ended").await.is_none(),
            "ended before the poll: dropped"
        );
        assert!(
            state.owner("created-during-poll").await.is_some(),
            "raced the poll: kept"
        );
        assert!(
            state.owner("seen").await.is_some(),
            "seen by the poll: known"
        );
        state.meetings().check_index();
    }

    #[tokio::test]
    async fn a_poll_touches_only_its_own_server_and_what_it_listed() {
        let state = State::with_defaults(vec![spec(1), spec(2)]);
        let cluster = state.cluster();
        let (one, two) = (&cluster.list[0], &cluster.list[1]);
        state.remember("on-one", one).await;
        state.remember("on-two", two).await;
        state.remember("moved", one).await;
        let poll_started = Instant::now();
        // Server two's poll lists "moved" (it ended on one and was made
        // again on two, say) and not "on-two", which has ended.
        state
            .apply_poll(two, poll_started, &[("moved".to_string(), None)])
            .await;
        assert_eq!(&*state.owner("on-one").await.unwrap().server, one.name());
        assert!(state.owner("on-two").await.is_none());
        assert_eq!(&*state.owner("moved").await.unwrap().server, two.name());
        state.meetings().check_index();
        // One's poll then lists only "on-one": "moved" is two's now.
        state
            .apply_poll(one, Instant::now(), &[("on-one".to_string(), None)])
            .await;
        assert_eq!(&*state.owner("moved").await.unwrap().server, two.name());
        assert_eq!(state.known_meetings(), 2);
        state.meetings().check_index();
    }

    #[tokio::test]
    async fn of_two_copies_the_later_is_the_meeting() {
        let state = State::with_defaults(vec![spec(1), spec(2)]);
        let cluster = state.cluster();
        let (old, new) = (&cluster.list[0], &cluster.list[1]);
        state.remember_copy("m", old, Some(100)).await;
        // The meeting made again on `new`; a poll of `new` lists it.
        state
            .apply_poll(new, Instant::now(), &[("m".to_string(), Some(200))])
            .await;
        assert_eq!(&*state.owner("m").await.unwrap().server, new.name());
        assert!(state.is_stale("m", &old.id, Some(100)), "the older copy");
        // `old` lists its older copy: passed by, however often.
        for _ in 0..3 {
            state
                .apply_poll(old, Instant::now(), &[("m".to_string(), Some(100))])
                .await;
            assert_eq!(&*state.owner("m").await.unwrap().server, new.name());
        }
        // A copy older than the known one is stale on first sight.
        state
            .apply_poll(old, Instant::now(), &[("n".to_string(), Some(5))])
            .await;
        state.remember_copy("n", new, Some(1)).await;
        assert_eq!(&*state.owner("n").await.unwrap().server, old.name());
        assert!(state.is_stale("n", &new.id, Some(1)));
        // Unknown times move as before.
        state.remember_copy("n", new, None).await;
        assert_eq!(&*state.owner("n").await.unwrap().server, new.name());
        state.meetings().check_index();
    }

    #[tokio::test]
    async fn a_kept_call_lives_until_its_meeting_ends() {
        let state = State::with_defaults(vec![spec(1)]);
        let server = state.cluster().list[0].clone();
        let call = KeptCreate {
            method: "GET".into(),
            query: Some("meetingID=m&name=N".into()),
            content_type: None,
            body: Vec::new(),
            body_left_out: false,
            create_time: Some(1),
            replaced: Vec::new(),
        };
        state.remember("m", &server).await;
        state.keep_create("m", call.clone()).await;
        state.keep_create("ended", call.clone()).await;
        assert_eq!(state.kept_create("m").await, Some(call.clone()));
        // A poll lists "m" only: "ended" (not remembered there) stays,
        // since this poll says nothing of it...
        let listed = [("m".to_string(), Some(1))];
        state.apply_poll(&server, Instant::now(), &listed).await;
        assert!(state.kept_create("ended").await.is_some());
        // ...and a poll that no longer lists "m" drops it.
        state.apply_poll(&server, Instant::now(), &[]).await;
        assert_eq!(state.kept_create("m").await, None);
        state.forget_kept("ended").await;
        assert_eq!(state.kept_create("ended").await, None);
        // Nothing is kept while re-creation is off.
        let off = State::with_defaults(vec![spec(1)]).with_recreation(false);
        off.keep_create("m", call).await;
        assert_eq!(off.kept_create("m").await, None);
    }

    #[tokio::test]
    async fn least_loaded_spreads_a_burst_by_weight() {
        let mut specs = vec![spec(1), spec(2), spec(3)];
        specs[1].weight = 2.0;
        specs[2].weight = 3.0;
        let state = State::new(
            specs,
            HealthPolicy {
                down_after: 2,
                up_after: 2,
            },
            PlacementPolicy {
                strategy: Strategy::LeastLoaded,
                new_meeting_load: 15.0,
            },
        );
        up(&state);
        let mut counts = HashMap::new();
        for _ in 0..60 {
            *counts
                .entry(
                    state.placement_order(&ServerTag::default()).await.unwrap()[0]
                        .name()
                        .to_string(),
                )
                .or_insert(0) += 1;
        }
        assert_eq!(counts["http://127.0.0.1:1"], 10);
        assert_eq!(counts["http://127.0.0.1:2"], 20);
        assert_eq!(counts["http://127.0.0.1:3"], 30);
    }

    #[tokio::test]
    async fn create_locks_are_per_meeting_and_cleaned_up() {
        let state = Arc::new(State::with_defaults(vec![spec(1)]));
        let a = state.lock_create("a").await;
        let _b = state.lock_create("b").await;
        let waiter = {
            let state = state.clone();
            tokio::spawn(async move {
                let _again = state.lock_create("a").await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
        assert_eq!(state.creates_in_flight(), 1);
    }
}
