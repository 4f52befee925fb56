//! What [`Client::connect`](crate::Client::connect) needs to know.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use legalchat_protocol::validate::{self, ValidationError};

use crate::Error;

/// Default time a request may wait for its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time the QUIC handshake plus authentication may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default capacity of the event queue behind [`Client::next_event`](crate::Client::next_event).
pub const DEFAULT_EVENT_BUFFER: usize = 10_000;
/// Default largest frame accepted *from* the server.
///
/// Larger than the server's own limit on what it accepts (64 KiB): a history page of 100
/// messages of 10 KiB each is about 1 MiB. The bound exists so that a broken or hostile
/// server cannot make the client buffer an arbitrary announced length.
pub const DEFAULT_MAX_INBOUND_FRAME: usize = 16 * 1024 * 1024;
/// Default most requests in flight at once on one session; further requests wait.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1_024;

/// Settings for one connection to a LegalChat server.
///
/// ```
/// # use legalchat_sdk::ClientConfig;
/// let config = ClientConfig::new("127.0.0.1:7443".parse().unwrap(), "eyJ...")
///     .with_server_name("chat.firm.example")
///     .with_client_info("Acme LegalChat for macOS 2.1");
/// assert_eq!(config.server_name, "chat.firm.example");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server's QUIC address.
    pub server_addr: SocketAddr,
    /// The name the server's certificate must be valid for (SNI and verification).
    pub server_name: String,
    /// PEM bundle of the certificates to trust as roots; only these are trusted.
    pub ca_cert_pem: Vec<u8>,
    /// The bearer token (JWT) presented in `Authenticate`.
    pub token: String,
    /// Free-form description of this client for the audit trail, at most 256 bytes.
    pub client_info: String,
    /// How long a request waits for its answer before failing with
    /// [`Error::Timeout`].
    pub request_timeout: Duration,
    /// How long the QUIC handshake plus authentication may take.
    pub connect_timeout: Duration,
    /// Capacity of the event queue. When it is full the client stops reading from the
    /// server (which then applies its own slow-consumer policy) instead of growing memory.
    pub event_buffer: usize,
    /// Largest frame accepted from the server, in bytes after the length prefix.
    pub max_inbound_frame: usize,
    /// Most requests in flight at once; further requests wait for a free slot.
    pub max_in_flight: usize,
}

impl std::fmt::Debug for ClientConfig {
    // Hand-written so that the token never lands in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server_addr", &self.server_addr)
            .field("server_name", &self.server_name)
            .field("ca_cert_pem", &format_args!("<{} bytes>", self.ca_cert_pem.len()))
            .field("token", &"<redacted>")
            .field("client_info", &self.client_info)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("event_buffer", &self.event_buffer)
            .field("max_inbound_frame", &self.max_inbound_frame)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with defaults: server name `localhost`, no trusted CA yet (set
    /// one with [`with_ca_pem`](Self::with_ca_pem) or [`with_ca_file`](Self::with_ca_file)),
    /// 10 s request timeout, 10,000 queued events.
    pub fn new(server_addr: SocketAddr, token: impl Into<String>) -> Self {
        Self {
            server_addr,
            server_name: "localhost".into(),
            ca_cert_pem: Vec::new(),
            token: token.into(),
            client_info: format!("legalchat-sdk/{}", env!("CARGO_PKG_VERSION")),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            event_buffer: DEFAULT_EVENT_BUFFER,
            max_inbound_frame: DEFAULT_MAX_INBOUND_FRAME,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Trust the certificates of this PEM bundle (and only them).
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert_pem = pem.into();
        self
    }

    /// Trust the certificates of the PEM file at `path` (and only them).
    pub fn with_ca_file(mut self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        self.ca_cert_pem = std::fs::read(path).map_err(|e| Error::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        Ok(self)
    }

    /// The name the server certificate must carry.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// The client description recorded in the server's audit trail.
    pub fn with_client_info(mut self, info: impl Into<String>) -> Self {
        self.client_info = info.into();
        self
    }

    /// How long a request waits for its answer.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting (handshake and authentication) may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Capacity of the event queue.
    pub fn with_event_buffer(mut self, capacity: usize) -> Self {
        self.event_buffer = capacity;
        self
    }

    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.token.is_empty() {
            return Err(ValidationError::new("token", "must not be empty"));
        }
        if self.server_name.is_empty() {
            return Err(ValidationError::new("server_name", "must not be empty"));
        }
        if self.client_info.len() > validate::MAX_CLIENT_INFO_LEN {
            return Err(ValidationError::new(
                "client_info",
                format!("is {} bytes; the maximum is {}", self.client_info.len(), validate::MAX_CLIENT_INFO_LEN),
            ));
        }
        if self.client_info.chars().any(char::is_control) {
            return Err(ValidationError::new("client_info", "must not contain control characters"));
        }
        let positive = [
            ("request_timeout", self.request_timeout.is_zero()),
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("event_buffer", self.event_buffer == 0),
            ("max_in_flight", self.max_in_flight == 0),
        ];
        if let Some((field, _)) = positive.into_iter().find(|(_, zero)| *zero) {
            return Err(ValidationError::new(field, "must be greater than zero"));
        }
        // tokio panics on a channel or semaphore larger than this; say so instead.
        const MAX: usize = tokio::sync::Semaphore::MAX_PERMITS;
        for (field, value) in [("event_buffer", self.event_buffer), ("max_in_flight", self.max_in_flight)] {
            if value > MAX {
                return Err(ValidationError::new(field, format!("is {value}; the maximum is {MAX}")));
            }
        }
        if self.max_inbound_frame < legalchat_protocol::codec::DEFAULT_MAX_FRAME_LEN {
            return Err(ValidationError::new(
                "max_inbound_frame",
                format!("must be at least {} bytes", legalchat_protocol::codec::DEFAULT_MAX_FRAME_LEN),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], 7443)), "token")
    }

    #[test]
    fn defaults_are_valid() {
        let c = config();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.event_buffer, DEFAULT_EVENT_BUFFER);
    }

    #[test]
    fn zero_sizes_are_rejected_by_name() {
        assert_eq!(config().with_event_buffer(0).validate().unwrap_err().field, "event_buffer");
        assert_eq!(config().with_request_timeout(Duration::ZERO).validate().unwrap_err().field, "request_timeout");
        let mut c = config();
        c.max_in_flight = 0;
        assert_eq!(c.validate().unwrap_err().field, "max_in_flight");
    }

    #[test]
    fn token_and_client_info_are_checked() {
        let mut c = config();
        c.token.clear();
        assert_eq!(c.validate().unwrap_err().field, "token");
        assert_eq!(config().with_client_info("x".repeat(257)).validate().unwrap_err().field, "client_info");
        assert_eq!(config().with_client_info("a\u{1b}[31m").validate().unwrap_err().field, "client_info");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = ClientConfig::new(SocketAddr::from(([127, 0, 0, 1], 7443)), "secret-jwt");
        assert!(!format!("{c:?}").contains("secret-jwt"));
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let err = config().with_ca_file("/nonexistent/legalchat/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/legalchat/ca.pem"), "{err}");
    }
}
