//! Presence: who is subscribed to a channel, from identified subscriptions.
//!
//! Each channel keeps its clients (connection, user, info, join time) and a
//! count per user, so several connections of one user (browser tabs) count
//! once in the user set and separately at client level. A user "joins" when
//! their first connection arrives and "leaves" when their last one goes.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;

use super::ClientId;

/// One client in a channel's presence.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEntry {
    pub client: ClientId,
    pub user: String,
    pub info: Option<Value>,
    /// Seconds since the epoch.
    pub joined: u64,
}

#[derive(Default)]
struct ChannelPresence {
    clients: HashMap<ClientId, PresenceEntry>,
    users: HashMap<String, usize>,
}

/// Whether a user arrived or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceEventKind {
    Join,
    Leave,
}

/// A user's first connection arrived on a channel (join) or their last
/// one left (leave).
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    pub kind: PresenceEventKind,
    pub user: String,
    pub client: ClientId,
    pub info: Option<Value>,
}

impl PresenceEvent {
    pub fn name(&self) -> &'static str {
        match self.kind {
            PresenceEventKind::Join => "join",
            PresenceEventKind::Leave => "leave",
        }
    }

    /// The event as RESP clients read it on `__presence__:C`:
    /// `{"event", "user", "client", "info"}`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "event": self.name(),
            "user": self.user,
            "client": self.client.to_string(),
            "info": self.info,
        })
        .to_string()
    }
}

/// The presence of every channel.
#[derive(Default)]
pub struct Presence {
    channels: Mutex<HashMap<Bytes, ChannelPresence>>,
}

/// The key prefix under which RESP clients read presence sets.
pub const PRESENCE_PREFIX: &[u8] = b"__presence__:";

/// The channel whose presence a `__presence__:C` key names.
pub fn presence_channel(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(PRESENCE_PREFIX)
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, ChannelPresence>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client; true when it is the user's first connection here.
    pub fn join(&self, channel: &Bytes, entry: PresenceEntry) -> bool {
        let mut map = self.lock();
        let ch = map.entry(channel.clone()).or_default();
        if ch.clients.contains_key(&entry.client) {
            return false;
        }
        let n = ch.users.entry(entry.user.clone()).or_insert(0);
        *n += 1;
        let first = *n == 1;
        ch.clients.insert(entry.client, entry);
        first
    }

    /// Removes a client; returns its entry and whether it was the user's
    /// last connection here.
    pub fn leave(&self, channel: &[u8], client: ClientId) -> Option<(PresenceEntry, bool)> {
        let mut map = self.lock();
        let ch = map.get_mut(channel)?;
        let entry = ch.clients.remove(&client)?;
        let last = match ch.users.get_mut(&entry.user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                ch.users.remove(&entry.user);
                true
            }
        };
        if ch.clients.is_empty() {
            map.remove(channel);
        }
        Some((entry, last))
    }

    /// Every client, oldest first.
    pub fn clients(&self, channel: &[u8]) -> Vec<PresenceEntry> {
        let mut v: Vec<PresenceEntry> = self
            .lock()
            .get(channel)
            .map(|c| c.clients.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|e| (e.joined, e.client));
        v
    }

    /// The distinct user ids, sorted.
    pub fn users(&self, channel: &[u8]) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .get(channel)
            .map(|c| c.users.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// (clients, unique users).
    pub fn stats(&self, channel: &[u8]) -> (usize, usize) {
        self.lock()
            .get(channel)
            .map_or((0, 0), |c| (c.clients.len(), c.users.len()))
    }

    pub fn has_user(&self, channel: &[u8], user: &[u8]) -> bool {
        let Ok(user) = std::str::from_utf8(user) else {
            return false;
        };
        self.lock()
            .get(channel)
            .is_some_and(|c| c.users.contains_key(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(client: ClientId, user: &str) -> PresenceEntry {
        PresenceEntry {
            client,
            user: user.into(),
            info: None,
            joined: 0,
        }
    }

    #[test]
    fn tabs_count_once() {
        let p = Presence::default();
        let ch = Bytes::from_static(b"chat:1");
        assert!(p.join(&ch, e(1, "ann")));
        assert!(!p.join(&ch, e(2, "ann")), "second tab");
        assert!(p.join(&ch, e(3, "bob")));
        assert_eq!(p.stats(&ch), (3, 2));
        assert!(!p.leave(&ch, 1).unwrap().1);
        assert!(p.leave(&ch, 2).unwrap().1);
        assert_eq!(p.users(&ch), vec!["bob".to_string()]);
        assert!(p.leave(&ch, 2).is_none());
        p.leave(&ch, 3);
        assert_eq!(p.stats(&ch), (0, 0));
    }
}
