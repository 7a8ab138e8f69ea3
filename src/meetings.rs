//! The meeting → server map, indexed both ways.
//!
//! Owns which server each known meeting was last seen on, and when, plus
//! the reverse index from a server to its meetings, kept in step by every
//! change. The index lets a poll's answer be applied in time proportional
//! to that server's meetings instead of all meetings (with 100 servers and
//! 10,000 meetings, a walk of the whole map under the lock for each poll).
//! Does not own the rules of when to change an entry (see `state`) or any
//! locking: `state` holds it behind one mutex.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Where a meeting was last seen.
#[derive(Clone, Debug)]
pub struct Owner {
    /// The server's id; it may since have been removed or disabled.
    pub server: Arc<str>,
    /// When the server last said it holds the meeting.
    pub confirmed: Instant,
    /// When that server's copy was created (unix ms), if known: of two
    /// copies of one meetingID, the later is the meeting.
    pub create_time: Option<u64>,
}

#[derive(Default, Debug)]
pub struct Meetings {
    owners: HashMap<Arc<str>, Owner>,
    /// Server id → the meetings `owners` places there; no empty sets.
    by_server: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Meetings {
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    pub fn get(&self, meeting_id: &str) -> Option<&Owner> {
        self.owners.get(meeting_id)
    }

    /// Records that `server` holds the meeting as of `confirmed`, moving it
    /// off the server it was on before, if another. A copy's createTime
    /// stays known while the meeting stays on its server.
    pub fn set(&mut self, meeting_id: &str, server: &Arc<str>, confirmed: Instant) {
        let mut create_time = None;
        let id = match self.owners.get_key_value(meeting_id) {
            Some((id, owner)) if owner.server == *server => {
                create_time = owner.create_time;
                id.clone()
            }
            Some((id, owner)) => {
                let (id, old) = (id.clone(), owner.server.clone());
                self.unindex(&old, &id);
                self.index(server, id.clone());
                id
            }
            None => {
                let id: Arc<str> = Arc::from(meeting_id);
                self.index(server, id.clone());
                id
            }
        };
        let server = server.clone();
        self.owners.insert(
            id,
            Owner {
                server,
                confirmed,
                create_time,
            },
        );
    }

    /// Records when the copy the meeting is recorded on was created.
    pub fn set_create_time(&mut self, meeting_id: &str, create_time: u64) {
        if let Some(owner) = self.owners.get_mut(meeting_id) {
            owner.create_time = Some(create_time);
        }
    }

    /// Removes the meeting if it is recorded on `server_id`.
    pub fn remove_if_on(&mut self, meeting_id: &str, server_id: &str) {
        if self
            .owners
            .get(meeting_id)
            .is_some_and(|o| &*o.server == server_id)
            && let Some((id, owner)) = self.owners.remove_entry(meeting_id)
        {
            self.unindex(&owner.server, &id);
        }
    }

    /// The meetings recorded on `server_id`.
    pub fn on_server(&self, server_id: &str) -> Vec<Arc<str>> {
        self.by_server
            .get(server_id)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keeps the entries `keep` says yes to (a walk of every entry: for
    /// pruning, not for each poll).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Owner) -> bool) {
        let mut dropped = Vec::new();
        self.owners.retain(|id, owner| {
            let kept = keep(id, owner);
            if !kept {
                dropped.push((owner.server.clone(), id.clone()));
            }
            kept
        });
        for (server, id) in dropped {
            self.unindex(&server, &id);
        }
    }

    fn index(&mut self, server: &Arc<str>, id: Arc<str>) {
        match self.by_server.get_mut(server) {
            Some(ids) => {
                ids.insert(id);
            }
            None => {
                self.by_server.insert(server.clone(), HashSet::from([id]));
            }
        }
    }

    fn unindex(&mut self, server: &str, id: &str) {
        if let Some(ids) = self.by_server.get_mut(server) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_server.remove(server);
            }
        }
    }

    /// The index says exactly what the map says (for tests).
    #[cfg(test)]
    pub fn check_index(&self) {
        let mut expected: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (id, owner) in &self.owners {
            expected.entry(&owner.server).or_default().insert(id);
        }
        let actual: HashMap<&str, HashSet<&str>> = self
            .by_server
            .iter()
            .map(|(s, ids)| (&**s, ids.iter().map(|i| &**i).collect()))
            .collect();
        assert_eq!(expected, actual);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_follows_every_change() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let now = Instant::now();
        let mut m = Meetings::default();
        m.set("m1", &a, now);
        m.set("m2", &a, now);
        m.set("m3", &b, now);
        m.check_index();
        assert_eq!(m.on_server("a").len(), 2);
        m.set_create_time("m1", 7);
        m.set("m1", &a, now);
        assert_eq!(m.get("m1").unwrap().create_time, Some(7), "same copy");
        // Moved: off a, onto b.
        m.set("m1", &b, now);
        m.check_index();
        assert_eq!(m.on_server("a").len(), 1);
        assert_eq!(&*m.get("m1").unwrap().server, "b");
        assert_eq!(m.get("m1").unwrap().create_time, None, "another copy");
        // Only removed from the server it is on.
        m.remove_if_on("m1", "a");
        assert!(m.get("m1").is_some());
        m.remove_if_on("m1", "b");
        assert!(m.get("m1").is_none());
        m.check_index();
        m.retain(|id, _| id != "m2");
        m.check_index();
        assert!(m.on_server("a").is_empty());
        assert_eq!(m.len(), 1);
        m.remove_if_on("m3", "b");
        assert!(m.is_empty());
        m.check_index();
    }
}
