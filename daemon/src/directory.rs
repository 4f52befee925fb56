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
    /// Each user looked up so far.
    cache: RwLock<HashMap<String, Known>>,
    last_seen: RwLock<HashMap<String, i64>>,
}

/// What the directory holds of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    role: Role,
    name: String,
    /// Deactivated by an admin.
    deactivated: bool,
    /// Tokens issued before this are refused (0: none).
    revoked_before_ms: i64,
}

impl Known {
    fn record(&self, user: &str, last_seen_ms: i64) -> StoredUser {
        StoredUser {
            user_id: user.to_owned(),
            role: self.role.to_pb() as i32,
            name: self.name.clone(),
            last_seen_ms,
            deactivated: self.deactivated,
            revoked_before_ms: self.revoked_before_ms,
        }
    }
}

impl Directory {
    /// A directory over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, cache: RwLock::new(HashMap::new()), last_seen: RwLock::new(HashMap::new()) }
    }

    /// The role of `user`, if they have ever signed in (or were provisioned).
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.entry(user).map(|k| k.role)
    }

    /// The display name of `user` (the `name` claim of their latest token), empty when
    /// they have none or never signed in.
    pub fn name_of(&self, user: &str) -> String {
        self.entry(user).map(|k| k.name).unwrap_or_default()
    }

    fn entry(&self, user: &str) -> Option<Known> {
        if let Some(e) = self.cache.read().unwrap_or_else(|e| e.into_inner()).get(user) {
            return Some(e.clone());
        }
        let stored = self.store.user(user).ok().flatten()?;
        let entry = Known {
            role: Role::from_pb(stored.role)?,
            name: stored.name,
            deactivated: stored.deactivated,
            revoked_before_ms: stored.revoked_before_ms,
        };
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(user.to_owned(), entry.clone());
        Some(entry)
    }

    /// Why `user` may not sign in (or renew) with a token issued at `issued_at_ms`, if
    /// they may not: deactivated, or their sessions revoked after the token was issued (a
    /// token without `iat` counts as issued before). Memory only: the entry is loaded by
    /// [`Self::record_for`] or [`Self::remember`] first.
    pub fn refusal(&self, user: &str, issued_at_ms: Option<i64>) -> Option<&'static str> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let known = cache.get(user)?;
        if known.deactivated {
            return Some("this account is deactivated; ask an administrator");
        }
        if known.revoked_before_ms > 0 && issued_at_ms.is_none_or(|iat| iat < known.revoked_before_ms) {
            return Some("this token was revoked; sign in again for a new one");
        }
        None
    }

    /// The record that deactivates, reactivates or revokes `user` (`None` for a user the
    /// directory does not know). May read the store: call it from a blocking context,
    /// commit the record, then [`Self::apply`] it.
    pub fn admin_record(&self, user: &str, deactivated: Option<bool>, revoke_at_ms: Option<i64>) -> Option<StoredUser> {
        let mut known = self.entry(user)?;
        if let Some(d) = deactivated {
            known.deactivated = d;
        }
        if let Some(at) = revoke_at_ms {
            known.revoked_before_ms = at;
        }
        Some(known.record(user, self.last_seen(user)))
    }

    /// Takes a committed admin record into memory.
    pub fn apply(&self, record: &StoredUser) {
        if let Some(role) = Role::from_pb(record.role) {
            let known =
                Known { role, name: record.name.clone(), deactivated: record.deactivated, revoked_before_ms: record.revoked_before_ms };
            self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(record.user_id.clone(), known);
        }
    }

    /// The record to write for a signed-in identity, or `None` when the directory already
    /// holds its role and name, so that a reconnect storm does not become a write storm.
    /// May read the store: call it from a blocking context (the storage pool), then commit
    /// the record (through the user's shard) and [`Self::remember`] the identity.
    pub fn record_for(&self, id: &Identity) -> Option<StoredUser> {
        let name = id.name.clone().unwrap_or_default();
        let known = self.entry(&id.user_id);
        if known.as_ref().is_some_and(|k| k.role == id.role && k.name == name) {
            return None;
        }
        let (deactivated, revoked_before_ms) = known.map_or((false, 0), |k| (k.deactivated, k.revoked_before_ms));
        Some(StoredUser {
            user_id: id.user_id.clone(),
            role: id.role.to_pb() as i32,
            name,
            last_seen_ms: ids::now_ms(),
            deactivated,
            revoked_before_ms,
        })
    }

    /// Whether the directory holds `id`'s role and name in memory already, so there is
    /// nothing to record. No IO.
    pub fn is_current(&self, id: &Identity) -> bool {
        let name = id.name.as_deref().unwrap_or_default();
        self.cache.read().unwrap_or_else(|e| e.into_inner()).get(&id.user_id).is_some_and(|k| k.role == id.role && k.name == name)
    }

    /// Remembers a signed-in identity whose record is committed.
    pub fn remember(&self, id: &Identity) {
        let name = id.name.clone().unwrap_or_default();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        match cache.get_mut(&id.user_id) {
            Some(k) => {
                k.role = id.role;
                k.name = name;
            }
            None => {
                cache.insert(id.user_id.clone(), Known { role: id.role, name, deactivated: false, revoked_before_ms: 0 });
            }
        }
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
        Some(self.entry(user)?.record(user, ms))
    }

    /// When `user` was last connected (0 if never seen).
    pub fn last_seen(&self, user: &str) -> i64 {
        if let Some(ms) = self.last_seen.read().unwrap_or_else(|e| e.into_inner()).get(user) {
            return *ms;
        }
        self.store.user(user).ok().flatten().map_or(0, |u| u.last_seen_ms)
    }
}
