//! The role policy: who may create which conversations and manage participants.
//!
//! Pure functions of roles, so that the rules read in one place and are tested without a
//! server. The starting policy (documented in the README):
//! - clients cannot open private chats with other clients, nor create group or case
//!   conversations; they may open support conversations, and may bring in only firm
//!   staff (advocates and admins) the server has seen sign in;
//! - advocates may create every kind of conversation;
//! - admins may do everything, including managing participants of any conversation.

use legalchat_protocol::pb::{self, ConversationType, ErrorCode, ParticipantRole};

use crate::auth::Role;

/// A refused request: the code and the sentence the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Category.
    pub code: ErrorCode,
    /// Explanation that names the problem.
    pub message: String,
    /// RATE_LIMITED: how long until the request would be accepted.
    pub retry_after_ms: u64,
}

impl RequestError {
    /// An error of `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_ms: 0 }
    }
    /// RATE_LIMITED: `what` may be done again after `wait`; the message says when.
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let when = match secs {
            0..=90 => format!("{secs} s"),
            _ => format!("{} min {} s", secs / 60, secs % 60),
        };
        Self {
            code: ErrorCode::RateLimited,
            message: format!("{what}; try again in {when}"),
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        }
    }
    /// FORBIDDEN.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// INVALID_ARGUMENT.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    /// NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A conversation the caller may not see: the same answer whether it does not exist
    /// or the caller is not a participant, so that nobody learns which (a private
    /// conversation's id follows from its two users, so a difference would tell who talks
    /// to whom).
    pub fn unknown_conversation(id: &str) -> Self {
        Self::not_found(format!("conversation {id} not found: it does not exist, or you are not a participant"))
    }
    /// INTERNAL.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// As the wire error for `request_id`.
    pub fn to_pb(&self, request_id: u64) -> pb::Error {
        pb::Error { request_id, code: self.code as i32, message: self.message.clone(), retry_after_ms: self.retry_after_ms }
    }
}

/// Most participants a conversation may have.
pub const MAX_PARTICIPANTS: usize = 1_000;

/// May `creator` create a conversation of `kind` with `others`? `others` pairs each other
/// participant with the role the server knows for them (`None`: never signed in).
pub fn may_create(creator: Role, kind: ConversationType, others: &[(&str, Option<Role>)]) -> Result<(), RequestError> {
    match (creator, kind) {
        (_, ConversationType::Unspecified) => return Err(RequestError::invalid("type: must be PRIVATE, GROUP, CASE or SUPPORT")),
        (Role::Client, ConversationType::Group | ConversationType::Case) => {
            return Err(RequestError::forbidden("clients cannot create group or case conversations; ask your advocate"));
        }
        (Role::Client, ConversationType::Private) => {
            if let Some((user, role)) = others.first() {
                match role {
                    Some(Role::Client) => return Err(RequestError::forbidden("clients cannot open private chats with other clients")),
                    None => return Err(RequestError::not_found(format!("user {user} is not known to this server yet"))),
                    Some(_) => {}
                }
            }
        }
        _ => {}
    }
    if creator == Role::Client {
        clients_bring_only_staff(others)?;
    }
    Ok(())
}

fn clients_bring_only_staff(others: &[(&str, Option<Role>)]) -> Result<(), RequestError> {
    for (user, role) in others {
        match role {
            Some(Role::Advocate | Role::Admin) => {}
            Some(Role::Client) => return Err(RequestError::forbidden(format!("clients cannot add other clients (user {user})"))),
            None => return Err(RequestError::not_found(format!("user {user} is not known to this server yet"))),
        }
    }
    Ok(())
}

/// May `caller` (global role, conversation role if a participant) add `others` with `role`?
pub fn may_add(
    caller: Role,
    caller_role_here: Option<ParticipantRole>,
    kind: ConversationType,
    role: ParticipantRole,
    others: &[(&str, Option<Role>)],
) -> Result<(), RequestError> {
    if kind == ConversationType::Private {
        return Err(RequestError::forbidden("private conversations have exactly two participants; create a group instead"));
    }
    let is_admin = caller == Role::Admin;
    match caller_role_here {
        Some(ParticipantRole::AdminRole) => {}
        Some(ParticipantRole::Moderator) if matches!(role, ParticipantRole::Member | ParticipantRole::Unspecified) => {}
        Some(ParticipantRole::Moderator) if !is_admin => {
            return Err(RequestError::forbidden("moderators may add members only; granting MODERATOR or ADMIN needs a conversation admin"));
        }
        _ if is_admin => {}
        Some(_) => return Err(RequestError::forbidden("only conversation admins and moderators may add participants")),
        // Callers check participation first; should one not, the answer still reveals nothing.
        None => return Err(RequestError::unknown_conversation("of this request")),
    }
    if caller == Role::Client {
        clients_bring_only_staff(others)?;
    }
    Ok(())
}

/// May `caller` remove `target` from a conversation?
pub fn may_remove(
    caller: Role,
    caller_id: &str,
    caller_role_here: Option<ParticipantRole>,
    kind: ConversationType,
    target: &str,
) -> Result<(), RequestError> {
    if kind == ConversationType::Private {
        return Err(RequestError::forbidden("participants cannot be removed from a private conversation"));
    }
    if caller == Role::Admin || caller_id == target {
        return Ok(());
    }
    match caller_role_here {
        Some(ParticipantRole::AdminRole | ParticipantRole::Moderator) => Ok(()),
        Some(_) => Err(RequestError::forbidden("only conversation admins and moderators may remove participants")),
        None => Err(RequestError::unknown_conversation("of this request")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_cannot_create_groups_or_private_with_clients() {
        assert_eq!(may_create(Role::Client, ConversationType::Group, &[]).unwrap_err().code, ErrorCode::Forbidden);
        assert_eq!(may_create(Role::Client, ConversationType::Case, &[]).unwrap_err().code, ErrorCode::Forbidden);
        let e = may_create(Role::Client, ConversationType::Private, &[("bob", Some(Role::Client))]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert!(e.message.contains("other clients"));
        assert!(may_create(Role::Client, ConversationType::Private, &[("adv", Some(Role::Advocate))]).is_ok());
        assert_eq!(may_create(Role::Client, ConversationType::Private, &[("ghost", None)]).unwrap_err().code, ErrorCode::NotFound);
        assert!(may_create(Role::Client, ConversationType::Support, &[("adm", Some(Role::Admin))]).is_ok());
        assert!(may_create(Role::Client, ConversationType::Support, &[("c2", Some(Role::Client))]).is_err());
    }

    #[test]
    fn advocates_and_admins_create_anything() {
        for kind in [ConversationType::Private, ConversationType::Group, ConversationType::Case, ConversationType::Support] {
            assert!(may_create(Role::Advocate, kind, &[("c", Some(Role::Client))]).is_ok());
            assert!(may_create(Role::Admin, kind, &[("c", None)]).is_ok());
        }
        assert!(may_create(Role::Admin, ConversationType::Unspecified, &[]).is_err());
    }

    #[test]
    fn participant_management() {
        use ParticipantRole::*;
        let g = ConversationType::Group;
        assert!(may_add(Role::Advocate, Some(AdminRole), g, Moderator, &[]).is_ok());
        assert!(may_add(Role::Advocate, Some(Moderator), g, Member, &[]).is_ok());
        assert!(may_add(Role::Advocate, Some(Moderator), g, AdminRole, &[]).is_err());
        assert!(may_add(Role::Advocate, Some(Member), g, Member, &[]).is_err());
        assert!(may_add(Role::Advocate, None, g, Member, &[]).is_err());
        assert!(may_add(Role::Admin, None, g, AdminRole, &[]).is_ok());
        assert!(may_add(Role::Admin, Some(AdminRole), ConversationType::Private, Member, &[]).is_err());
        assert!(may_remove(Role::Client, "me", Some(Member), g, "me").is_ok());
        assert!(may_remove(Role::Client, "me", Some(Member), g, "you").is_err());
        assert!(may_remove(Role::Advocate, "me", Some(Moderator), g, "you").is_ok());
        assert!(may_remove(Role::Admin, "me", None, ConversationType::Private, "you").is_err());
    }
}
