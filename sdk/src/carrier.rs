//! What carries a session: a QUIC connection, or TLS over TCP for networks that block UDP
//! (the same frames; one session, or one transfer, per TCP connection).
//!
//! Over TCP, what QUIC does per connection is done here: closing it tells the reader and
//! the writer of its one stream to stop, and the socket closes when both have let go.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::connection::{ReadFailure, describe_connection_error};
use crate::{Error, Result};

/// The transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// QUIC over UDP: the default.
    Quic,
    /// TLS 1.3 over TCP: the fallback when QUIC does not answer (a network that blocks
    /// UDP).
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Quic => "QUIC",
            Transport::Tcp => "TLS over TCP",
        })
    }
}

/// Which transports a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransportPolicy {
    /// QUIC first; TLS over TCP when QUIC has not answered within
    /// [`ClientConfig::tcp_fallback_after`](crate::ClientConfig::tcp_fallback_after), and
    /// back to QUIC once it answers again.
    #[default]
    Auto,
    /// QUIC only.
    QuicOnly,
    /// TLS over TCP only.
    TcpOnly,
}

/// A TLS session over TCP, as the client makes it.
pub(crate) type TcpTls = tokio_rustls::client::TlsStream<TcpStream>;

/// How to reach the server over TCP.
#[derive(Debug, Clone)]
pub(crate) struct TcpDialer {
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

/// TCP keep-alive: a server that vanished without a FIN is noticed after about 30 s
/// (QUIC has its idle timeout for this).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

impl TcpDialer {
    /// A new TLS-over-TCP connection, handshake done.
    pub(crate) async fn connect(&self) -> Result<TcpTls> {
        let addr = self.addr;
        let stream = TcpStream::connect(addr).await.map_err(|e| Error::Connect(format!("{addr} over TCP: {e}")))?;
        let _ = stream.set_nodelay(true);
        let keepalive =
            socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_RETRIES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| Error::Tls(format!("{:?} is not a server name: {e}", self.server_name)))?;
        tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, stream).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::Tls(format!("the certificate of {addr} is not trusted or does not match: {e}"))
            } else {
                Error::Connect(format!("{addr} over TCP: the TLS handshake failed: {e}"))
            }
        })
    }

    /// A new TLS-over-TCP connection, as the halves of a stream that end when `closed`
    /// says so.
    pub(crate) async fn open(&self, closed: watch::Receiver<Option<String>>) -> Result<(SendHalf, RecvHalf)> {
        let (recv, send) = tokio::io::split(self.connect().await?);
        Ok((SendHalf::Tcp(send, closed.clone()), RecvHalf::Tcp(recv, closed)))
    }
}

/// A connection to the server.
#[derive(Debug, Clone)]
pub(crate) enum Carrier {
    /// A QUIC connection (possibly shared by several clients' sessions).
    Quic(quinn::Connection),
    /// A TLS-over-TCP connection carrying this one session.
    Tcp(Arc<TcpCarrier>),
}

/// A TLS-over-TCP connection's state: whether (and why) it was closed, and how to open
/// the further connections its transfers need.
#[derive(Debug)]
pub(crate) struct TcpCarrier {
    pub(crate) dialer: TcpDialer,
    closed: watch::Sender<Option<String>>,
}

impl TcpCarrier {
    pub(crate) fn new(dialer: TcpDialer) -> Arc<Self> {
        Arc::new(Self { dialer, closed: watch::channel(None).0 })
    }

    /// What the halves of its stream watch to stop.
    pub(crate) fn closing(&self) -> watch::Receiver<Option<String>> {
        self.closed.subscribe()
    }
}

impl Carrier {
    /// Which transport this is.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Carrier::Quic(_) => Transport::Quic,
            Carrier::Tcp(_) => Transport::Tcp,
        }
    }

    /// Closes the connection.
    pub(crate) fn close(&self, code: u32, why: &[u8]) {
        match self {
            Carrier::Quic(c) => c.close(code.into(), why),
            Carrier::Tcp(t) => {
                t.closed.send_if_modified(|reason| {
                    let first = reason.is_none();
                    if first {
                        *reason =
                            Some(if why.is_empty() { "closed by this client".into() } else { String::from_utf8_lossy(why).into_owned() });
                    }
                    first
                });
            }
        }
    }

    /// Waits until the connection is closed; says why.
    pub(crate) async fn closed(&self, idle_timeout: Duration) -> String {
        match self {
            Carrier::Quic(c) => describe_connection_error(&c.closed().await, idle_timeout),
            Carrier::Tcp(t) => {
                let mut rx = t.closing();
                match rx.wait_for(Option::is_some).await {
                    Ok(reason) => reason.clone().unwrap_or_default(),
                    Err(_) => "the connection is gone".into(),
                }
            }
        }
    }

    /// Opens a stream for a transfer: on QUIC a stream of this connection, over TCP a
    /// connection of its own.
    pub(crate) async fn open_transfer(&self) -> Result<(SendHalf, RecvHalf)> {
        match self {
            Carrier::Quic(c) => {
                let (send, recv) = c.open_bi().await.map_err(|e| Error::Disconnected(format!("cannot open a transfer stream: {e}")))?;
                Ok((SendHalf::Quic(send), RecvHalf::Quic(recv)))
            }
            Carrier::Tcp(t) => t.dialer.open(t.closing()).await,
        }
    }
}

/// The receiving half of a stream.
#[derive(Debug)]
pub(crate) enum RecvHalf {
    Quic(quinn::RecvStream),
    /// Stops when its connection is closed.
    Tcp(ReadHalf<TcpTls>, watch::Receiver<Option<String>>),
}

impl RecvHalf {
    /// Up to `max` bytes; `Ok(None)` when the server finished the stream.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> std::result::Result<Option<Bytes>, ReadFailure> {
        match self {
            RecvHalf::Quic(recv) => match recv.read_chunk(max, true).await {
                Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
                Err(e) => Err(ReadFailure::Stream(e)),
            },
            RecvHalf::Tcp(recv, closed) => {
                // TLS records hold at most 16 KiB: a larger buffer would only be half used.
                let mut buf = BytesMut::with_capacity(max.clamp(1, 16 * 1024));
                tokio::select! {
                    read = recv.read_buf(&mut buf) => match read {
                        Ok(0) => Ok(None),
                        Ok(_) => Ok(Some(buf.freeze())),
                        Err(e) => Err(ReadFailure::Tcp(e)),
                    },
                    reason = closed.wait_for(Option::is_some) => {
                        Err(ReadFailure::Closed(reason.ok().and_then(|r| r.clone()).unwrap_or_default()))
                    }
                }
            }
        }
    }

    /// Tells the server to stop sending (QUIC `STOP_SENDING`); over TCP the connection
    /// closes with the session.
    pub(crate) fn stop(&mut self, code: u32) {
        if let RecvHalf::Quic(recv) = self {
            let _ = recv.stop(code.into());
        }
    }
}

/// The sending half of a stream.
#[derive(Debug)]
pub(crate) enum SendHalf {
    Quic(quinn::SendStream),
    /// Stops when its connection is closed.
    Tcp(WriteHalf<TcpTls>, watch::Receiver<Option<String>>),
}

impl SendHalf {
    /// Writes all of `buf`.
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> std::result::Result<(), String> {
        match self {
            SendHalf::Quic(send) => send.write_all(buf).await.map_err(|e| e.to_string()),
            SendHalf::Tcp(send, closed) => {
                let write = async {
                    send.write_all(buf).await?;
                    send.flush().await
                };
                tokio::select! {
                    written = write => written.map_err(|e| e.to_string()),
                    _ = closed.wait_for(Option::is_some) => Err("the connection is closed".into()),
                }
            }
        }
    }

    /// Writes one frame, without copying it on QUIC.
    pub(crate) async fn write_chunk(&mut self, frame: Bytes) -> std::result::Result<(), String> {
        match self {
            SendHalf::Quic(send) => send.write_chunk(frame).await.map_err(|e| e.to_string()),
            SendHalf::Tcp(..) => self.write_all(&frame).await,
        }
    }

    /// Ends the stream after what was written (over TCP: TLS close_notify and FIN).
    pub(crate) async fn finish(&mut self) {
        match self {
            SendHalf::Quic(send) => {
                let _ = send.finish();
            }
            SendHalf::Tcp(send, _) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), send.shutdown()).await;
            }
        }
    }

    /// [`finish`](Self::finish), then waits up to `grace` for the server to have it all,
    /// so that closing the connection next cannot drop a frame in flight.
    pub(crate) async fn finish_and_wait(&mut self, grace: Duration) {
        match self {
            SendHalf::Quic(send) => {
                if send.finish().is_ok() {
                    let _ = tokio::time::timeout(grace, send.stopped()).await;
                }
            }
            SendHalf::Tcp(send, _) => {
                let _ = tokio::time::timeout(grace, send.shutdown()).await;
            }
        }
    }
}
