//! The users this server has seen, with the role their latest token claimed.
//!
//! Identity comes from tokens, so the server learns of a user when they first sign in.
//! The role policy needs other users' roles (a client may not open a private chat with
//! another client), which is what this directory answers. Reads hit an in-memory map;
//! the store is the fallback after a restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::{Identity, Role};
use crate::ids;
use crate::store::{Store, StoredUser};

/// Known users and their roles.
#[derive(Debug)]
pub struct Directory {
    store: Arc<dyn Store>,
    /// Role and display name of each user looked up so far.
    cache: RwLock<HashMap<String, (Role, String)>>,
    last_seen: RwLock<HashMap<String, i64>>,
}

impl Directory {
    /// A directory over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, cache: RwLock::new(HashMap::new()), last_seen: RwLock::new(HashMap::new()) }
    }

    /// The role of `user`, if they have ever signed in (or were provisioned).
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.entry(user).map(|(role, _)| role)
    }

    /// The display name of `user` (the `name` claim of their latest token), empty when
    /// they have none or never signed in.
    pub fn name_of(&self, user: &str) -> String {
        self.entry(user).map(|(_, name)| name).unwrap_or_default()
    }

    fn entry(&self, user: &str) -> Option<(Role, String)> {
        if let Some(e) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(user) {
            return Some(e.clone());
        }
        let stored = self.store.user(user).ok().flatten()?;
        let entry = (Role::from_pb(stored.role)?, stored.name);
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(user.to_owned(), entry.clone());
        Some(entry)
    }

    /// The record to write for a signed-in identity, or `None` when the directory already
    /// holds its role and name, so that a reconnect storm does not become a write storm.
    /// May read the store: call it from a blocking context (the storage pool), then commit
    /// the record (through the user's shard) and [`Self::remember`] the identity.
    pub fn record_for(&self, id: &Identity) -> Option<StoredUser> {
        let name = id.name.clone().unwrap_or_default();
        if self.entry(&id.user_id).is_some_and(|(role, known)| role == id.role && known == name) {
            return None;
        }
        Some(StoredUser { user_id: id.user_id.clone(), role: id.role.to_pb() as i32, name, last_seen_ms: ids::now_ms() })
    }

    /// Whether the directory holds `id`'s role and name in memory already, so there is
    /// nothing to record. No IO.
    pub fn is_current(&self, id: &Identity) -> bool {
        let name = id.name.as_deref().unwrap_or_default();
        self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&id.user_id).is_some_and(|(role, known)| *role == id.role && known == name)
    }

    /// Remembers a signed-in identity whose record is committed.
    pub fn remember(&self, id: &Identity) {
        let name = id.name.clone().unwrap_or_default();
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(id.user_id.clone(), (id.role, name));
    }

    /// Notes in memory that `user` was last connected at `ms` (their last session ended).
    /// No IO: the durable copy is [`Self::last_seen_record`], written through a shard.
    pub fn saw(&self, user: &str, ms: i64) {
        self.last_seen.write().unwrap_or_else(|e| e.into_inner()).insert(user.to_owned(), ms);
    }

    /// The directory record that keeps `user`'s last-seen time `ms`, or `None` for a user
    /// the directory does not know. May read the store: call it from a blocking context.
    /// Last-seen is informative, not a promise: it is committed without waiting for fsync.
    pub fn last_seen_record(&self, user: &str, ms: i64) -> Option<StoredUser> {
        let (role, name) = self.entry(user)?;
        Some(StoredUser { user_id: user.to_owned(), role: role.to_pb() as i32, name, last_seen_ms: ms })
    }

    /// When `user` was last connected (0 if never seen).
    pub fn last_seen(&self, user: &str) -> i64 {
        if let Some(ms) = self.last_seen.read().unwrap_or_else(|e| e.into_inner()).get(user) {
            return *ms;
        }
        self.store.user(user).ok().flatten().map_or(0, |u| u.last_seen_ms)
    }
}
