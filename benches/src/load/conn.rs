//! One simulated user's connection, to LegalChat (the SDK over QUIC) or to the Node.js
//! Socket.IO peer: the load generator drives both through this one interface, so that
//! every scenario measures both the same way.

use std::net::SocketAddr;

use legalchat_sdk::{Client, ClientConfig, ClientEndpoint, Event, SharedConnection};
use tokio::sync::{Mutex, mpsc};

use crate::sio::{Dialect, PeerMessage, SioClient};

/// The server a run loads.
#[derive(Clone)]
pub enum Target {
    /// `legalchatd` over QUIC.
    LegalChat {
        /// Its QUIC address.
        server: SocketAddr,
        /// PEM of the certificate to trust.
        ca_pem: Vec<u8>,
        /// Its HS256 secret, to mint tokens with.
        secret: String,
        /// TLS name to verify.
        server_name: String,
        /// Sessions multiplexed on each QUIC connection (1: a connection per client).
        sessions_per_connection: usize,
        /// The clients' shortest interval between two delivery reports of a conversation
        /// (`None`: the SDK's default).
        delivery_report_interval: Option<std::time::Duration>,
    },
    /// The Node.js Socket.IO peer (`benches/peers/socketio`).
    Peer {
        /// Its HTTP address.
        addr: SocketAddr,
        /// Its HS256 secret.
        secret: String,
    },
    /// `legalchat-bridge` in front of `legalchatd`: Socket.IO clients, as browsers use it.
    Bridge {
        /// The bridge's HTTP address.
        addr: SocketAddr,
        /// The daemon behind it (conversations are set up there, over QUIC).
        daemon: SocketAddr,
        /// PEM of the daemon's certificate.
        ca_pem: Vec<u8>,
        /// The daemon's HS256 secret.
        secret: String,
        /// The daemon's TLS name.
        server_name: String,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        match self {
            Self::LegalChat { server, .. } => f.debug_struct("LegalChat").field("server", server).finish_non_exhaustive(),
            Self::Peer { addr, .. } => f.debug_struct("Peer").field("addr", addr).finish_non_exhaustive(),
            Self::Bridge { addr, daemon, .. } => {
                f.debug_struct("Bridge").field("addr", addr).field("daemon", daemon).finish_non_exhaustive()
            }
        }
    }
}

impl Target {
    /// The HS256 secret tokens are minted with.
    pub fn secret(&self) -> &str {
        match self {
            Self::LegalChat { secret, .. } | Self::Peer { secret, .. } | Self::Bridge { secret, .. } => secret,
        }
    }

    /// Sessions on each transport connection.
    pub fn sessions_per_connection(&self) -> usize {
        match self {
            Self::LegalChat { sessions_per_connection, .. } => (*sessions_per_connection).max(1),
            Self::Peer { .. } | Self::Bridge { .. } => 1,
        }
    }

    /// `legalchatd` or `socket.io peer`, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LegalChat { .. } => "legalchatd",
            Self::Peer { .. } => "socket.io peer",
            Self::Bridge { .. } => "legalchat-bridge + legalchatd",
        }
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::LegalChat { server, .. } => *server,
            Self::Peer { addr, .. } | Self::Bridge { addr, .. } => *addr,
        }
    }

    /// Where conversations are created: the daemon over QUIC (`None` for the peer, whose
    /// rooms need no setting up).
    pub fn daemon(&self) -> Option<(SocketAddr, &[u8], &str)> {
        match self {
            Self::LegalChat { server, ca_pem, server_name, .. } => Some((*server, ca_pem, server_name)),
            Self::Bridge { daemon, ca_pem, server_name, .. } => Some((*daemon, ca_pem, server_name)),
            Self::Peer { .. } => None,
        }
    }
}

/// What a connection hears.
#[derive(Debug)]
pub enum Heard {
    /// A chat message.
    Message {
        /// Its conversation (LegalChat) or room (peer).
        conversation: String,
        /// Its sender's user id.
        sender: String,
        /// Its identity in the conversation: (seq, text).
        seq: u64,
        /// Its text.
        text: String,
    },
    /// LegalChat resumed after a reconnect.
    Resumed,
    /// Something a run counts as an error, by kind.
    Error(String),
    /// The connection is gone for good.
    Closed,
    /// Anything else (receipts, presence, ...).
    Other,
}

/// One user's connection.
/// How a LegalChat client reaches the server.
#[derive(Debug, Clone)]
pub enum Via {
    /// A socket and a connection of its own.
    Own,
    /// Its own connection, on a UDP socket shared with other clients.
    Socket(ClientEndpoint),
    /// A QUIC connection shared with other clients, its session on a stream of its own.
    Connection(SharedConnection),
}

#[derive(Debug)]
pub enum Conn {
    /// An SDK client.
    LegalChat(Client),
    /// A Socket.IO client (of the peer or of the bridge), and its incoming messages
    /// (taken by one reader at a time).
    Peer(SioClient, Mutex<mpsc::Receiver<PeerMessage>>),
}

impl Conn {
    /// Connects `user` (with `token`) to `target`; LegalChat clients go `via` a socket
    /// or a connection shared with other clients of the run.
    pub async fn connect(target: &Target, via: Via, token: String, event_buffer: usize) -> anyhow::Result<Self> {
        match target {
            Target::LegalChat { server, ca_pem, server_name, delivery_report_interval, .. } => {
                // The generator plays a thousand devices in one process, measuring the
                // server: like the peer's clients, they keep no message state.
                let mut config = ClientConfig::new(*server, token)
                    .with_ca_pem(ca_pem.clone())
                    .with_server_name(server_name.as_str())
                    .with_event_buffer(event_buffer)
                    .with_timeline_capacity(0);
                if let Some(interval) = delivery_report_interval {
                    config = config.with_delivery_report_interval(*interval);
                }
                match via {
                    Via::Own => {}
                    Via::Socket(endpoint) => config = config.with_endpoint(endpoint),
                    Via::Connection(connection) => config = config.with_shared_connection(connection),
                }
                Ok(Self::LegalChat(Client::connect(config).await?))
            }
            Target::Peer { addr, .. } => {
                let (client, rx) = SioClient::connect(*addr, &token).await?;
                Ok(Self::Peer(client, Mutex::new(rx)))
            }
            Target::Bridge { addr, .. } => {
                let (client, rx) = SioClient::connect_speaking(*addr, &token, Dialect::Bridge).await?;
                Ok(Self::Peer(client, Mutex::new(rx)))
            }
        }
    }

    /// Sends `text` into `conversation` and waits for the server's acknowledgment.
    /// Errors come back as their kind (see [`error_kind`]).
    pub async fn send(&self, conversation: &str, text: &str) -> Result<u64, String> {
        match self {
            Self::LegalChat(c) => c.send_text(conversation, text).await.map(|sent| sent.seq).map_err(|e| error_kind(&e)),
            Self::Peer(c, _) => {
                let client_message_id = legalchat_sdk::new_client_message_id();
                c.send_message(conversation, &client_message_id, text).await.map_err(|e| format!("peer: {e:#}"))
            }
        }
    }

    /// An event about message `seq` of the user's own (LegalChat only): the mix of
    /// [`LoadOptions::event_mix`](super::LoadOptions::event_mix). An edit carries `text`.
    pub async fn act(&self, conversation: &str, seq: u64, action: super::MixedEvent, text: &str) -> Result<u64, String> {
        use super::MixedEvent as M;
        let Self::LegalChat(c) = self else { return Err("the event mix needs LegalChat".into()) };
        let sent = match action {
            M::React => c.react(conversation, seq, "👍").await,
            M::Unreact => c.unreact(conversation, seq, "👍").await,
            M::Edit => c.edit_text(conversation, seq, text).await,
            M::Delete => c.delete(conversation, seq).await,
        };
        sent.map(|s| s.seq).map_err(|e| error_kind(&e))
    }

    /// Joins the peer's room (LegalChat delivers to participants without joining).
    pub async fn join(&self, conversation: &str) -> anyhow::Result<()> {
        match self {
            Self::LegalChat(_) => Ok(()),
            Self::Peer(c, _) => c.join_room(conversation).await,
        }
    }

    /// Waits for what comes next. For the peer, the receiver is taken for as long as the
    /// future lives: one reader at a time.
    pub async fn next(&self) -> Heard {
        match self {
            Self::LegalChat(c) => match c.next_event().await {
                Some(Event::Message(m)) => {
                    // An edit carries its new text (and so the send's timestamp).
                    let edited = match m.event.as_ref().and_then(|e| e.kind.as_ref()) {
                        Some(legalchat_sdk::pb::conversation_event::Kind::Edited(e)) => e.content.as_ref().map(|c| c.text.clone()),
                        _ => None,
                    };
                    let text = m.content.map(|c| c.text).or(edited).unwrap_or_default();
                    Heard::Message { conversation: m.conversation_id, sender: m.sender_id, seq: m.seq, text }
                }
                Some(Event::State(legalchat_sdk::ConnectionState::Resumed { .. })) => Heard::Resumed,
                Some(Event::Goodbye { code, .. }) => Heard::Error(format!("goodbye:{}", code.as_str_name())),
                Some(Event::Closed { .. }) | None => Heard::Closed,
                Some(_) => Heard::Other,
            },
            Self::Peer(_, rx) => match rx.lock().await.recv().await {
                Some(m) => Heard::Message { conversation: m.room, sender: m.sender, seq: m.seq, text: m.text },
                None => Heard::Closed,
            },
        }
    }

    /// Drops the connection at once; LegalChat reconnects and resumes by itself.
    pub async fn drop_connection(&self) {
        match self {
            Self::LegalChat(c) => c.reconnect_now(),
            Self::Peer(c, _) => c.close().await,
        }
    }

    /// Closes the session.
    pub async fn close(&self) {
        match self {
            Self::LegalChat(c) => c.close().await,
            Self::Peer(c, _) => c.close().await,
        }
    }
}

/// A short name for an SDK error, to count errors by kind.
pub fn error_kind(e: &legalchat_sdk::Error) -> String {
    use legalchat_sdk::Error;
    if let Some(code) = e.code() {
        return format!("server:{}", code.as_str_name());
    }
    match e {
        Error::Timeout => "timeout".into(),
        Error::Closed(_) => "closed".into(),
        Error::Connect(_) => "connect".into(),
        Error::Tls(_) => "tls".into(),
        Error::Invalid(_) => "invalid".into(),
        Error::Protocol(_) => "protocol".into(),
        _ => "other".into(),
    }
}
