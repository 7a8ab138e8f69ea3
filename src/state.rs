//! The state a request reads, behind one small interface: the servers, which
//! server holds which meeting, the round-robin position, and the creates in
//! flight.
//!
//! Kept in memory; the BBB servers stay the source of truth, so losing it
//! only costs a search. Everything here is synchronous and quick: no lock is
//! held across an `.await` except a create's own per-meeting lock. A later
//! issue moves the meeting map to a shared store; callers only see these
//! methods.

use crate::config::ServerSpec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// One BBB server as the running balancer knows it.
#[derive(Debug)]
pub struct Server {
    pub spec: ServerSpec,
}

impl Server {
    /// The name used in logs and error messages: the server root, no secret.
    pub fn name(&self) -> &str {
        &self.spec.base
    }
}

/// Where a meeting was last seen.
#[derive(Clone, Debug)]
pub struct Owner {
    pub server: Arc<Server>,
    /// When the server last said it holds the meeting.
    pub confirmed: Instant,
}

/// Entries not confirmed for this long are dropped once the map is large:
/// a meeting that ended by itself (nobody called `end`) is not kept forever.
const STALE_AFTER: Duration = Duration::from_secs(12 * 3600);
const PRUNE_ABOVE: usize = 50_000;

pub struct State {
    // A whole new list is swapped in on change, so a request never sees half
    // an update; the RwLock is held only to clone the Arc.
    servers: RwLock<Arc<Vec<Arc<Server>>>>,
    // std Mutex: held for a map operation only, never across an .await.
    meetings: Mutex<HashMap<String, Owner>>,
    creates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next: AtomicUsize,
}

impl State {
    pub fn new(specs: Vec<ServerSpec>) -> State {
        State {
            servers: RwLock::new(Arc::new(
                specs
                    .into_iter()
                    .map(|spec| Arc::new(Server { spec }))
                    .collect(),
            )),
            meetings: Mutex::new(HashMap::new()),
            creates: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// The servers, as one consistent list.
    pub fn servers(&self) -> Arc<Vec<Arc<Server>>> {
        self.servers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where the meeting was last seen, if anywhere.
    pub fn owner(&self, meeting_id: &str) -> Option<Owner> {
        self.meetings().get(meeting_id).cloned()
    }

    /// Records that `server` said just now that it holds the meeting.
    pub fn remember(&self, meeting_id: &str, server: &Arc<Server>) {
        let mut meetings = self.meetings();
        let now = Instant::now();
        if meetings.len() >= PRUNE_ABOVE {
            meetings.retain(|_, owner| now.duration_since(owner.confirmed) < STALE_AFTER);
        }
        meetings.insert(
            meeting_id.to_string(),
            Owner {
                server: server.clone(),
                confirmed: now,
            },
        );
    }

    /// Forgets the meeting, if it is still recorded on `server`.
    pub fn forget(&self, meeting_id: &str, server: &Arc<Server>) {
        let mut meetings = self.meetings();
        if meetings
            .get(meeting_id)
            .is_some_and(|o| Arc::ptr_eq(&o.server, server))
        {
            meetings.remove(meeting_id);
        }
    }

    pub fn known_meetings(&self) -> usize {
        self.meetings().len()
    }

    fn meetings(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.meetings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The servers in the order a new meeting should try them: round-robin,
    /// each create starting one further than the last.
    pub fn placement_order(&self) -> Vec<Arc<Server>> {
        let servers = self.servers();
        if servers.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % servers.len();
        servers[start..]
            .iter()
            .chain(&servers[..start])
            .cloned()
            .collect()
    }

    /// Serialises creates of one meetingID, so that creates arriving together
    /// are placed once and all end on the same server.
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
            _guard: Some(guard),
        }
    }

    fn creates_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.creates.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn creates_in_flight(&self) -> usize {
        self.creates_map().len()
    }
}

/// Held while one create of a meetingID is placed and sent.
pub struct CreateGuard<'a> {
    state: &'a State,
    meeting_id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        self._guard.take();
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
        ServerSpec {
            base: format!("http://127.0.0.1:{n}"),
            secret: "s".into(),
            checksum: Algorithm::Sha256,
        }
    }

    #[test]
    fn round_robin_rotates() {
        let state = State::new(vec![spec(1), spec(2), spec(3)]);
        let firsts: Vec<String> = (0..4)
            .map(|_| state.placement_order()[0].name().to_string())
            .collect();
        assert_eq!(
            firsts,
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3",
                "http://127.0.0.1:1"
            ]
        );
        assert_eq!(state.placement_order().len(), 3);
    }

    #[test]
    fn remember_and_forget() {
        let state = State::new(vec![spec(1), spec(2)]);
        let servers = state.servers();
        state.remember("m", &servers[0]);
        assert_eq!(
            state.owner("m").unwrap().server.name(),
            "http://127.0.0.1:1"
        );
        state.forget("m", &servers[1]);
        assert!(state.owner("m").is_some());
        state.forget("m", &servers[0]);
        assert!(state.owner("m").is_none());
    }

    #[tokio::test]
    async fn create_locks_are_per_meeting_and_cleaned_up() {
        let state = Arc::new(State::new(vec![spec(1)]));
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
