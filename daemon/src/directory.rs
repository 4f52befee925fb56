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
use crate::store::{Store, StoreError, StoredUser, Write};

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

    /// Records a signed-in identity. Writes only when the role or name is new or
    /// changed, so a reconnect storm does not become a write storm.
    pub fn observe(&self, id: &Identity) -> Result<(), StoreError> {
        let name = id.name.clone().unwrap_or_default();
        if self.entry(&id.user_id).is_some_and(|(role, known)| role == id.role && known == name) {
            return Ok(());
        }
        let user = StoredUser {
            user_id: id.user_id.clone(),
            role: id.role.to_pb() as i32,
            name: id.name.clone().unwrap_or_default(),
            last_seen_ms: ids::now_ms(),
        };
        self.store.commit(vec![Write::User(user)], false)?;
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(id.user_id.clone(), (id.role, name));
        Ok(())
    }

    /// Records that `user` was last connected at `ms` (their last session ended).
    pub fn seen(&self, user: &str, ms: i64) {
        self.last_seen.write().unwrap_or_else(|e| e.into_inner()).insert(user.to_owned(), ms);
        let Some(role) = self.role_of(user) else { return };
        let name = self.store.user(user).ok().flatten().map(|u| u.name).unwrap_or_default();
        let record = StoredUser { user_id: user.to_owned(), role: role.to_pb() as i32, name, last_seen_ms: ms };
        // Last-seen is informative, not a promise: a lost update after a crash is fine,
        // so it does not wait for fsync.
        if let Err(e) = self.store.commit(vec![Write::User(record)], false) {
            tracing::warn!(%user, error = %e, "last-seen not stored");
        }
    }

    /// When `user` was last connected (0 if never seen).
    pub fn last_seen(&self, user: &str) -> i64 {
        if let Some(ms) = self.last_seen.read().unwrap_or_else(|e| e.into_inner()).get(user) {
            return *ms;
        }
        self.store.user(user).ok().flatten().map_or(0, |u| u.last_seen_ms)
    }
}
