//! What global admins do to users: revoke their sessions, deactivate or reactivate them.
//! The record is committed through the user's shard (so sign-ins after it see it), then
//! every live session of the user is ended: through QUIC and the bridge alike, since the
//! bridge's sessions are daemon sessions too.

use legalchat_protocol::pb::{self, ErrorCode};
use legalchat_protocol::validate;

use super::{Services, invalid};
use crate::auth::{Identity, Role};
use crate::ids;
use crate::policy::RequestError;
use crate::store::Write;

/// A change to a user's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    user: String,
    /// `Some(false)`: deactivate; `Some(true)`: reactivate; `None`: only revoke.
    active: Option<bool>,
}

/// `RevokeSessions`.
pub fn revoke(r: pb::RevokeSessions) -> Result<Admin, RequestError> {
    validate::user_id("user_id", &r.user_id).map_err(invalid)?;
    Ok(Admin { user: r.user_id, active: None })
}

/// `SetUserActive`.
pub fn set_active(s: pb::SetUserActive) -> Result<Admin, RequestError> {
    validate::user_id("user_id", &s.user_id).map_err(invalid)?;
    Ok(Admin { user: s.user_id, active: Some(s.active) })
}

impl Admin {
    /// Applies it for `caller`, who must be a global admin.
    pub async fn run(self, services: &Services, caller: &Identity) -> Result<pb::ack::Result, RequestError> {
        if caller.role != Role::Admin {
            return Err(RequestError::forbidden("only global admins revoke sessions or deactivate users"));
        }
        let Admin { user, active } = self;
        // Revoking also fences tokens issued before now; reactivating fences nothing.
        let revoke_at = (active != Some(true)).then(ids::now_ms);
        let deactivated = active.map(|a| !a);
        let directory = services.directory.clone();
        let who = user.clone();
        let record = services
            .pool
            .read(move |_| directory.admin_record(&who, deactivated, revoke_at))
            .await?
            .ok_or_else(|| RequestError::not_found(format!("user_id: {user} has never signed in")))?;
        services.commit_records(&user, vec![Write::User(record.clone())], true).await?;
        services.directory.apply(&record);
        let reason = match active {
            Some(false) => "your account was deactivated by an administrator",
            Some(true) => return Ok(pb::ack::Result::Done(pb::Done {})),
            None => "your sessions were revoked by an administrator; sign in again",
        };
        let ended = services.registry.kick_user(&user, ErrorCode::Unauthorized, reason);
        tracing::info!(target: "legalchat::audit", admin = %caller.user_id, %user, ?active, sessions = ended, "user sessions revoked");
        Ok(pb::ack::Result::Done(pb::Done {}))
    }
}
