//! The one error type of the SDK.

use legalchat_protocol::pb;
use legalchat_protocol::validate::ValidationError;

/// Why a call failed.
///
/// Match on the variant to decide what to do: [`Error::Unauthorized`] means "get a new
/// token", [`Error::Closed`] means "this client has ended; connect a new one",
/// [`Error::Disconnected`] means "the connection is down; the client is reconnecting by
/// itself, try again shortly", [`Error::Server`] with [`pb::ErrorCode::Overloaded`] or
/// [`pb::ErrorCode::RateLimited`] means "retry later (with the same client message id)",
/// [`Error::Invalid`] means the caller's input is wrong and retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached or the QUIC connection could not be set up.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// TLS failed: the CA file is unusable, or the server's certificate is not trusted.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the token (bad, expired, wrongly signed, or missing).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The server answered the request with an error.
    #[error("server refused the request ({}): {message}", code.as_str_name())]
    Server {
        /// Machine-readable category.
        code: pb::ErrorCode,
        /// The server's explanation.
        message: String,
        /// `RATE_LIMITED`: how long until the request would be accepted, when the server
        /// said.
        retry_after: Option<std::time::Duration>,
    },
    /// An argument broke a protocol rule; nothing was sent.
    // The rule is part of the message and therefore not also reported as `source()`:
    // printing an error chain would otherwise say it twice.
    #[error("invalid argument: {0}")]
    Invalid(ValidationError),
    /// The client has ended (closed by the app, refused by the server, or the reconnect
    /// policy gave up); the string says why. Connect a new client to continue.
    #[error("session closed: {0}")]
    Closed(String),
    /// The connection is down: it dropped while the request was in flight (which may or
    /// may not have been applied), or it did not come back within the request's timeout.
    /// The client reconnects by itself. Sends are not failed this way while the outbox
    /// holds them; see [`Client::send`](crate::Client::send).
    #[error("not connected: {0}")]
    Disconnected(String),
    /// The outbox already holds its capacity of unacknowledged sends (see
    /// [`ClientConfig::outbox_capacity`](crate::ClientConfig::outbox_capacity)); this
    /// send was refused and nothing was sent.
    #[error("the outbox is full: {0} sends are waiting for the server")]
    OutboxFull(usize),
    /// No answer arrived in time. The request may or may not have been applied; a
    /// message send is safe to retry with the same client message id.
    #[error("no answer from the server in time")]
    Timeout,
    /// The server sent something this client cannot make sense of.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
}

impl Error {
    /// The server's error code, for the variants that carry one.
    pub fn code(&self) -> Option<pb::ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            Error::Unauthorized(_) => Some(pb::ErrorCode::Unauthorized),
            _ => None,
        }
    }

    /// Whether retrying the same call later (on this or a new session) may succeed.
    ///
    /// Sends are idempotent per client message id, so a retryable send is retried with
    /// the id of the first attempt.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect(_) | Error::Closed(_) | Error::Disconnected(_) | Error::OutboxFull(_) | Error::Timeout => true,
            Error::Server { code, .. } => matches!(
                code,
                pb::ErrorCode::Overloaded | pb::ErrorCode::RateLimited | pb::ErrorCode::Unavailable | pb::ErrorCode::Internal
            ),
            _ => false,
        }
    }

    /// Builds the error for a server `Error` frame. `UNAUTHORIZED` becomes
    /// [`Error::Unauthorized`] so that callers have one place to look for "bad token".
    pub(crate) fn from_server(error: &pb::Error) -> Self {
        match error.code() {
            pb::ErrorCode::Unauthorized => Error::Unauthorized(error.message.clone()),
            code => Error::Server {
                code,
                message: error.message.clone(),
                retry_after: (error.retry_after_ms > 0).then(|| std::time::Duration::from_millis(error.retry_after_ms)),
            },
        }
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Invalid(e)
    }
}

/// Shorthand for results of SDK calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_their_code() {
        let e = Error::from_server(&pb::Error {
            request_id: 3,
            code: pb::ErrorCode::Forbidden as i32,
            message: "not a participant".into(),
            ..Default::default()
        });
        assert_eq!(e.code(), Some(pb::ErrorCode::Forbidden));
        assert_eq!(e.to_string(), "server refused the request (FORBIDDEN): not a participant");
        assert!(!e.is_retryable());
    }

    #[test]
    fn unauthorized_is_its_own_variant() {
        let e = Error::from_server(&pb::Error {
            request_id: 1,
            code: pb::ErrorCode::Unauthorized as i32,
            message: "token expired".into(),
            ..Default::default()
        });
        assert!(matches!(&e, Error::Unauthorized(r) if r == "token expired"));
        assert_eq!(e.code(), Some(pb::ErrorCode::Unauthorized));
    }

    #[test]
    fn unknown_codes_do_not_panic() {
        let e = Error::from_server(&pb::Error { request_id: 1, code: 9_999, message: String::new(), ..Default::default() });
        assert_eq!(e.code(), Some(pb::ErrorCode::Unspecified));
    }

    #[test]
    fn invalid_arguments_are_said_once() {
        let e = Error::from(ValidationError::new("limit", "is 900; the maximum is 500"));
        assert_eq!(e.to_string(), "invalid argument: limit: is 900; the maximum is 500");
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn overload_is_retryable() {
        let e = Error::Server { code: pb::ErrorCode::Overloaded, message: "busy".into(), retry_after: None };
        assert!(e.is_retryable());
        assert!(Error::Timeout.is_retryable());
        assert_eq!(Error::Timeout.code(), None);
        assert!(Error::Disconnected("connection lost".into()).is_retryable());
        assert!(Error::OutboxFull(1_000).is_retryable());
        assert_eq!(Error::OutboxFull(1_000).to_string(), "the outbox is full: 1000 sends are waiting for the server");
    }
}
