//! One connection (QUIC, or TLS over TCP): the handshake and authentication, reading frames off the session
//! stream, and the writer task that owns its send half. No policy here: what the frames
//! mean and when to reconnect is decided by [`crate::driver`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use legalchat_protocol::codec::{self, DecodeError, FrameDecoder};
use legalchat_protocol::pb;
use tokio::time::{Instant, timeout_at};
use tracing::debug;

use crate::carrier::{Carrier, RecvHalf, SendHalf, TcpCarrier, TcpDialer, Transport, TransportPolicy};
use crate::session::{self, SessionInfo};
use crate::{ClientConfig, Error, Result, SharedConnection};

/// Request id of `Authenticate`, the first request of every session.
pub(crate) const AUTH_REQUEST_ID: u64 = 1;
/// Most bytes taken off the stream per read.
const READ_CHUNK: usize = 64 * 1024;
/// Read buffer kept between frames; a larger one is released once empty.
const RETAINED_BUFFER: usize = 16 * 1024;
/// How long each step of a graceful close may take.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a closing client waits for its endpoint to go idle. The CONNECTION_CLOSE
/// leaves at once; what follows is QUIC's draining period (three probe timeouts, which
/// grow with the round-trip times seen under load), only there to answer stray packets.
/// A short wait lets the close go out before a process exits without making each close
/// cost the whole draining period.
pub(crate) const CLOSE_DRAIN: Duration = Duration::from_millis(100);
/// Application close code for "goodbye, all is well".
pub(crate) const CLOSE_NORMAL: u32 = 0;
/// Application close code when the server sent bytes this client cannot frame. The
/// same table as the daemon's close codes (0 normal, 1 unauthorized, 2 protocol).
pub(crate) const CLOSE_PROTOCOL: u32 = 2;

/// What the writer task sends.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// One encoded frame.
    Frame(Bytes),
    /// Finish the stream after everything queued before.
    Finish,
}

/// An authenticated session on a fresh connection, or on a shared one.
#[derive(Debug)]
pub(crate) struct Established {
    pub(crate) carrier: Carrier,
    /// The connection carries other clients' sessions too: ending this session must not
    /// close it.
    pub(crate) shared: bool,
    pub(crate) session: SessionInfo,
    pub(crate) reader: FrameReader,
    pub(crate) send: SendHalf,
    /// The session's tag on the shared connection's fan-out stream, when its events come
    /// there.
    pub(crate) fanout_tag: Option<u32>,
}

/// What a client connects with: its QUIC endpoint and configuration, and how to reach
/// the server over TCP.
#[derive(Debug)]
pub(crate) struct Dial<'a> {
    pub(crate) endpoint: &'a quinn::Endpoint,
    pub(crate) quic: quinn::ClientConfig,
    pub(crate) tcp: &'a TcpDialer,
}

/// Connects and authenticates before `deadline`, by the configured [`TransportPolicy`]:
/// under `Auto`, `first` is tried first, and the other transport beside it once
/// `tcp_fallback_after` has passed (or `first` failed); the first session up wins. A
/// shared connection is always QUIC.
pub(crate) async fn establish(dial: &Dial<'_>, config: &ClientConfig, deadline: Instant, first: Transport) -> Result<Established> {
    // Boxed: the handshakes' state must not weigh on every caller's future.
    if config.connection.is_some() {
        return Box::pin(establish_quic(dial, config, deadline)).await;
    }
    match config.transport {
        TransportPolicy::QuicOnly => Box::pin(establish_quic(dial, config, deadline)).await,
        TransportPolicy::TcpOnly => Box::pin(establish_tcp(dial.tcp, config, deadline)).await,
        TransportPolicy::Auto => Box::pin(race(dial, config, deadline, first)).await,
    }
}

async fn establish_on(transport: Transport, dial: &Dial<'_>, config: &ClientConfig, deadline: Instant) -> Result<Established> {
    match transport {
        Transport::Quic => establish_quic(dial, config, deadline).await,
        Transport::Tcp => establish_tcp(dial.tcp, config, deadline).await,
    }
}

/// Whether `e` means the server was reached and said no (a refused token, an untrusted
/// certificate, a limit): the other transport would hear the same.
fn answered(e: &Error) -> bool {
    !matches!(e, Error::Connect(_) | Error::Timeout | Error::Disconnected(_))
}

/// Happy eyeballs between the transports: `first` now, the other after the head start.
async fn race(dial: &Dial<'_>, config: &ClientConfig, deadline: Instant, first: Transport) -> Result<Established> {
    let second = match first {
        Transport::Quic => Transport::Tcp,
        Transport::Tcp => Transport::Quic,
    };
    let mut a = Box::pin(establish_on(first, dial, config, deadline));
    let mut b = Box::pin(establish_on(second, dial, config, deadline));
    let head_start = tokio::time::sleep(config.tcp_fallback_after);
    tokio::pin!(head_start);
    let (mut b_started, mut a_failed, mut b_failed) = (false, None::<Error>, None::<Error>);
    loop {
        tokio::select! {
            r = &mut a, if a_failed.is_none() => match r {
                Ok(e) => return Ok(e),
                Err(e) if answered(&e) => return Err(e),
                Err(e) => {
                    debug!(error = %e, transport = %first, "connecting failed; trying the other transport");
                    a_failed = Some(e);
                    b_started = true;
                }
            },
            r = &mut b, if b_started && b_failed.is_none() => match r {
                Ok(e) => {
                    debug!(transport = %second, "connected on the second transport");
                    return Ok(e);
                }
                Err(e) if answered(&e) => return Err(e),
                Err(e) => b_failed = Some(e),
            },
            () = &mut head_start, if !b_started => {
                debug!(transport = %first, after = ?config.tcp_fallback_after, "no connection yet; trying the other transport beside it");
                b_started = true;
            }
        }
        if let (Some(x), Some(y)) = (&a_failed, &b_failed) {
            return Err(Error::Connect(format!("{first}: {x}; {second}: {y}")));
        }
    }
}

/// A session over QUIC: on the shared connection, or on a new one of its own.
async fn establish_quic(dial: &Dial<'_>, config: &ClientConfig, deadline: Instant) -> Result<Established> {
    let shared = config.connection.is_some();
    let addr = config.server_addr;
    // A shared connection may be closing as this session starts on it (a server ends a
    // connection when its last session ends, or when it has been idle): a session that
    // failed because its connection closed under it is tried once more on a fresh one.
    let mut retried = false;
    loop {
        let connection = match &config.connection {
            Some(connection) => shared_connection(connection, dial.quic.clone(), config, deadline).await?,
            None => connect(dial.endpoint, dial.quic.clone(), config, deadline).await?,
        };
        // On failure, a connection of this client's own goes; a shared one stays for the
        // others, and this session's stream ends as its halves are dropped.
        // A session of a shared connection takes its events from the connection's fan-out
        // stream, under a tag of its own.
        let tag = config.connection.as_ref().map_or(0, |c| c.fanout.next_tag());
        match timeout_at(deadline, authenticate_on(&connection, config, tag)).await {
            Ok(Ok((session, reader, send))) => {
                let fanout_tag = session.fanout.then_some(tag).filter(|&t| t != 0);
                return Ok(Established { carrier: Carrier::Quic(connection), shared, session, reader, send, fanout_tag });
            }
            Ok(Err(failure)) => {
                // Only the answer on this session's own stream speaks of its token: a shared
                // connection closed with another session's refusal says nothing of this one.
                if shared && !retried && !failure.answered && connection.close_reason().is_some() {
                    debug!(error = %failure.error, "the shared connection closed while this session started; trying a fresh one");
                    retried = true;
                    continue;
                }
                let e = failure.error;
                if !shared {
                    connection.close(CLOSE_NORMAL.into(), b"");
                }
                return Err(e);
            }
            Err(_) => {
                if !shared {
                    connection.close(CLOSE_NORMAL.into(), b"");
                }
                return Err(Error::Connect(format!("{addr} accepted the connection but did not answer Authenticate in time")));
            }
        }
    }
}

/// A session over TLS over TCP, on a connection of its own.
async fn establish_tcp(tcp: &TcpDialer, config: &ClientConfig, deadline: Instant) -> Result<Established> {
    let addr = tcp.addr;
    let tls = match timeout_at(deadline, tcp.connect()).await {
        Ok(tls) => tls?,
        Err(_) => return Err(Error::Connect(format!("no answer from {addr} over TCP; is the server running and reachable?"))),
    };
    let carrier = TcpCarrier::new(tcp.clone());
    let (recv, send) = tokio::io::split(tls);
    let (send, recv) = (SendHalf::Tcp(send, carrier.closing()), RecvHalf::Tcp(recv, carrier.closing()));
    let carrier = Carrier::Tcp(carrier);
    match timeout_at(deadline, authenticate_with(send, recv, &carrier, config, 0)).await.map(|r| r.map_err(|f| f.error)) {
        Ok(Ok((session, reader, send))) => Ok(Established { carrier, shared: false, session, reader, send, fanout_tag: None }),
        Ok(Err(e)) => {
            carrier.close(CLOSE_NORMAL, b"");
            Err(e)
        }
        Err(_) => {
            carrier.close(CLOSE_NORMAL, b"");
            Err(Error::Connect(format!("{addr} accepted the TCP connection but did not answer Authenticate in time")))
        }
    }
}

/// Opens the session stream on `connection`, sends `Authenticate` and reads its answer.
/// Why a session did not start.
struct NotStarted {
    error: Error,
    /// The server answered on the session's own stream (a refusal of this session); when
    /// false the stream or its connection failed before any answer.
    answered: bool,
}

impl NotStarted {
    fn lost(error: Error) -> Self {
        Self { error, answered: false }
    }
}

type Started = std::result::Result<(SessionInfo, FrameReader, SendHalf), NotStarted>;

async fn authenticate_on(connection: &quinn::Connection, config: &ClientConfig, fanout_tag: u32) -> Started {
    let (send, recv) = connection
        .open_bi()
        .await
        // A server that refuses the connection (too many from this address) may close it
        // before the stream opens: its close code says so.
        .map_err(|e| {
            NotStarted::lost(refused_during_auth(
                &Carrier::Quic(connection.clone()),
                config.idle_timeout,
                &format!("cannot open the session stream: {}", describe_connection_error(&e, config.idle_timeout)),
            ))
        })?;
    authenticate_with(SendHalf::Quic(send), RecvHalf::Quic(recv), &Carrier::Quic(connection.clone()), config, fanout_tag).await
}

/// Sends `Authenticate` (asking for events under `fanout_tag` when it is not 0) on a new
/// session stream and reads its answer.
async fn authenticate_with(mut send: SendHalf, recv: RecvHalf, carrier: &Carrier, config: &ClientConfig, fanout_tag: u32) -> Started {
    let hello = pb::ClientFrame {
        request_id: AUTH_REQUEST_ID,
        request: Some(pb::client_frame::Request::Authenticate(pb::Authenticate {
            token: config.token.clone(),
            client_info: config.client_info.clone(),
            echo_own_messages: config.echo_own_messages,
            fanout_tag,
        })),
    };
    send.write_all(&codec::encode(&hello))
        .await
        .map_err(|e| NotStarted::lost(refused_during_auth(carrier, config.idle_timeout, &format!("cannot send Authenticate: {e}"))))?;

    let mut reader = FrameReader::new(recv, config.max_inbound_frame);
    loop {
        match reader.read_frame().await {
            Ok(Some(frame)) => match session::authentication_outcome(frame, AUTH_REQUEST_ID) {
                Some(Ok(session)) => return Ok((session, reader, send)),
                Some(Err(error)) => return Err(NotStarted { error, answered: true }),
                None => debug!("ignored a frame of an unknown kind before authentication"),
            },
            Ok(None) => {
                return Err(NotStarted::lost(refused_during_auth(
                    carrier,
                    config.idle_timeout,
                    "the server ended the session without answering Authenticate",
                )));
            }
            Err(failure) => {
                return Err(NotStarted::lost(refused_during_auth(carrier, config.idle_timeout, &failure.describe(config.idle_timeout))));
            }
        }
    }
}

/// A new QUIC connection to the configured server, handshake done.
async fn connect(
    endpoint: &quinn::Endpoint,
    quic_config: quinn::ClientConfig,
    config: &ClientConfig,
    deadline: Instant,
) -> Result<quinn::Connection> {
    let addr = config.server_addr;
    let connecting = endpoint.connect_with(quic_config, addr, &config.server_name).map_err(|e| Error::Connect(format!("{addr}: {e}")))?;
    match timeout_at(deadline, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(handshake_error(addr, &e, config.idle_timeout)),
        Err(_) => Err(Error::Connect(format!("no answer from {addr}; is the server running and reachable?"))),
    }
}

/// Whether a QUIC handshake with the server succeeds now (the connection is closed at
/// once): a client on TLS over TCP asks this to know when to move back.
pub(crate) async fn quic_answers(endpoint: &quinn::Endpoint, quic: quinn::ClientConfig, config: &ClientConfig, deadline: Instant) -> bool {
    match connect(endpoint, quic, config, deadline).await {
        Ok(connection) => {
            connection.close(CLOSE_NORMAL.into(), b"probe");
            true
        }
        Err(_) => false,
    }
}

/// The shared connection, made (once, however many clients ask together) when it is not
/// up.
async fn shared_connection(
    shared: &SharedConnection,
    quic_config: quinn::ClientConfig,
    config: &ClientConfig,
    deadline: Instant,
) -> Result<quinn::Connection> {
    let addr = config.server_addr;
    let current = |shared: &SharedConnection| {
        shared.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().filter(|c| c.close_reason().is_none())
    };
    let Ok(_connecting) = timeout_at(deadline, shared.connecting.lock()).await else {
        return Err(Error::Connect(format!("the shared connection to {addr} was not made in time")));
    };
    let connection = match current(shared) {
        Some(c) => c,
        None => {
            let c = connect(&shared.endpoint.endpoint, quic_config, config, deadline).await?;
            *shared.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(c.clone());
            tokio::spawn(crate::fanout::read(c.clone(), shared.fanout.clone(), config.max_inbound_frame));
            c
        }
    };
    if connection.remote_address() != addr {
        return Err(Error::Connect(format!(
            "the shared connection goes to {}, not to {addr}: clients sharing a connection must use the same server",
            connection.remote_address()
        )));
    }
    Ok(connection)
}

/// The error for a session that ended while authenticating. A server that closes the
/// connection with application code `UNAUTHORIZED` (1) refused the token, whether or not
/// its `Unauthorized` frame made it through before the close.
fn refused_during_auth(carrier: &Carrier, idle_timeout: Duration, what: &str) -> Error {
    // Over TCP every refusal comes in-band, as a frame.
    let Carrier::Quic(connection) = carrier else {
        return Error::Connect(what.to_owned());
    };
    match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) if close.error_code.into_inner() == pb::ErrorCode::Unauthorized as u64 => {
            let reason = String::from_utf8_lossy(&close.reason);
            Error::Unauthorized(if reason.is_empty() { "the server refused the token".into() } else { reason.into_owned() })
        }
        Some(quinn::ConnectionError::ApplicationClosed(close)) if close.error_code.into_inner() == pb::ErrorCode::RateLimited as u64 => {
            Error::Server {
                code: pb::ErrorCode::RateLimited,
                message: String::from_utf8_lossy(&close.reason).into_owned(),
                retry_after: None,
            }
        }
        Some(e) => Error::Connect(format!("{what}: {}", describe_connection_error(&e, idle_timeout))),
        None => Error::Connect(what.to_owned()),
    }
}

/// Maps a failed QUIC handshake to the error that tells the user what to fix.
fn handshake_error(addr: SocketAddr, e: &quinn::ConnectionError, idle_timeout: Duration) -> Error {
    // QUIC carries TLS alerts as transport error codes 0x100..=0x1ff.
    let is_tls = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) if is_tls(t.code) => {
            Error::Tls(format!("the certificate of {addr} is not trusted or does not match: {t}"))
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_tls(c.error_code) => Error::Tls(format!("{addr} refused the TLS handshake: {c}")),
        quinn::ConnectionError::TimedOut => Error::Connect(format!("no answer from {addr}; is the server running and reachable?")),
        other => Error::Connect(format!("{addr}: {}", describe_connection_error(other, idle_timeout))),
    }
}

/// A sentence saying why a connection ended.
pub(crate) fn describe_connection_error(e: &quinn::ConnectionError, idle_timeout: Duration) -> String {
    use quinn::ConnectionError as C;
    match e {
        C::LocallyClosed => "closed by this client".into(),
        C::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            if reason.is_empty() {
                format!("the server closed the connection (code {})", close.error_code)
            } else {
                format!("the server closed the connection: {reason}")
            }
        }
        C::TimedOut => format!("nothing heard from the server for {} ms", idle_timeout.as_millis()),
        C::Reset => "the server reset the connection (it may have restarted)".into(),
        C::ConnectionClosed(close) => format!("the server's QUIC stack aborted the connection: {close}"),
        C::TransportError(t) => format!("QUIC transport error: {t}"),
        other => other.to_string(),
    }
}

/// Why reading frames stopped.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The server sent bytes that are not a valid frame.
    Decode(DecodeError),
    /// The stream ended inside a frame.
    Truncated(usize),
    /// The stream or connection failed.
    Stream(quinn::ReadError),
    /// The TCP connection failed.
    Tcp(std::io::Error),
    /// This client closed the connection; the reason it gave.
    Closed(String),
}

impl ReadFailure {
    pub(crate) fn describe(&self, idle_timeout: Duration) -> String {
        match self {
            ReadFailure::Decode(e) => format!("the server sent an invalid frame: {e}"),
            ReadFailure::Truncated(n) => format!("the server ended the session stream inside a frame ({n} bytes left over)"),
            ReadFailure::Stream(quinn::ReadError::ConnectionLost(e)) => describe_connection_error(e, idle_timeout),
            ReadFailure::Stream(quinn::ReadError::Reset(code)) => format!("the server reset the session stream (code {code})"),
            ReadFailure::Stream(e) => format!("session stream: {e}"),
            ReadFailure::Tcp(e) => format!("the TCP connection failed: {e}"),
            ReadFailure::Closed(reason) => reason.clone(),
        }
    }

    /// Whether the byte stream itself is broken (as opposed to the connection ending).
    pub(crate) fn is_malformed(&self) -> bool {
        matches!(self, ReadFailure::Decode(_) | ReadFailure::Truncated(_))
    }
}

/// Frames off the session stream (mini-redis' `Connection::read_frame`).
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: RecvHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameReader {
    /// Tells the server to stop sending on this session stream.
    pub(crate) fn stop(&mut self, code: u32) {
        self.recv.stop(code);
    }

    pub(crate) fn new(recv: RecvHalf, max_frame: usize) -> Self {
        // No buffer up front: a gateway holds thousands of sessions, most of them idle.
        Self { recv, buf: BytesMut::new(), decoder: FrameDecoder::new(max_frame) }
    }

    /// The next frame; `Ok(None)` when the server finished the stream cleanly between
    /// frames. The buffer never holds more than one maximal frame plus one read, because
    /// the decoder rejects an oversized length before its body is read.
    pub(crate) async fn read_frame(&mut self) -> Result<Option<pb::ServerFrame>, ReadFailure> {
        self.read_message().await
    }

    /// The next frame as an `M` (the fan-out stream carries `Fanout`s).
    pub(crate) async fn read_message<M: prost::Message + Default>(&mut self) -> Result<Option<M>, ReadFailure> {
        loop {
            if let Some(frame) = self.decoder.decode::<M>(&mut self.buf).map_err(ReadFailure::Decode)? {
                if self.buf.is_empty() && self.buf.capacity() > RETAINED_BUFFER {
                    // A burst (a catch-up page, a large message) grew it: an idle session
                    // keeps none of that.
                    self.buf = BytesMut::new();
                }
                return Ok(Some(frame));
            }
            match self.recv.read_chunk(READ_CHUNK).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(ReadFailure::Truncated(self.buf.len())),
            }
        }
    }
}

/// The writer task: the only owner of the send half of the session stream.
// Every session's writer waits here nearly all its life (one per session of a gateway):
// an async block rather than an `async fn` (which keeps its arguments twice for the
// future's whole life), and the writes boxed, so that the idle wait is all it holds.
#[allow(clippy::manual_async_fn)] // an `async fn` would keep its arguments twice (see above)
pub(crate) fn write_loop(mut send: SendHalf, mut outbound: crate::queue::Receiver<Outbound>) -> impl Future<Output = ()> {
    async move {
        while let Some(item) = outbound.recv().await {
            match item {
                Outbound::Frame(frame) => {
                    if let Err(e) = Box::pin(send.write_chunk(frame)).await {
                        debug!(error = %e, "session stream closed for writing");
                        return;
                    }
                }
                Outbound::Finish => break,
            }
        }
        // Finish after the last frame (on `close`, or when every `Client` is gone), and
        // wait until the server has acknowledged everything, so that closing the
        // connection next cannot drop a frame in flight.
        Box::pin(send.finish_and_wait(CLOSE_GRACE)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_read_as_sentences() {
        let closed = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: 0u32.into(),
            reason: Bytes::from_static(b"server shutting down"),
        });
        let idle = Duration::from_secs(30);
        assert_eq!(describe_connection_error(&closed, idle), "the server closed the connection: server shutting down");
        assert_eq!(describe_connection_error(&quinn::ConnectionError::LocallyClosed, idle), "closed by this client");
        assert!(describe_connection_error(&quinn::ConnectionError::TimedOut, idle).contains("30000 ms"));
    }

    #[test]
    fn handshake_timeouts_say_where() {
        let addr: SocketAddr = ([127, 0, 0, 1], 7443).into();
        let err = handshake_error(addr, &quinn::ConnectionError::TimedOut, Duration::from_secs(30));
        assert!(matches!(&err, Error::Connect(m) if m.contains("127.0.0.1:7443")), "{err}");
    }

    #[test]
    fn read_failures_describe_themselves() {
        let f = ReadFailure::Decode(DecodeError::TooLarge { len: 99, max: 10 });
        assert!(f.is_malformed());
        assert!(f.describe(Duration::from_secs(30)).contains("invalid frame"));
        let f = ReadFailure::Stream(quinn::ReadError::Reset(3u32.into()));
        assert!(!f.is_malformed());
        assert_eq!(f.describe(Duration::from_secs(30)), "the server reset the session stream (code 3)");
    }
}
