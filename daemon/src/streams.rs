//! The two halves of a bidirectional byte stream, whichever transport carries it: a QUIC
//! stream, or a TLS-over-TCP connection (the fallback for networks that block UDP).
//!
//! A TCP connection carries exactly one stream, so what QUIC does per stream (stop,
//! reset, finish) is done to the connection: stopping or resetting just stops using it,
//! and it closes once both halves are dropped.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};

/// A TLS session over TCP, as the daemon accepts it.
pub type TcpTls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// The receiving half of a stream.
#[derive(Debug)]
pub enum RecvHalf {
    /// A QUIC stream's.
    Quic(quinn::RecvStream),
    /// A TLS-over-TCP connection's.
    Tcp(ReadHalf<TcpTls>),
}

/// The sending half of a stream.
#[derive(Debug)]
pub enum SendHalf {
    /// A QUIC stream's.
    Quic(quinn::SendStream),
    /// A TLS-over-TCP connection's.
    Tcp(WriteHalf<TcpTls>),
}

/// The halves of a TLS-over-TCP connection.
pub fn split_tcp(tls: TcpTls) -> (SendHalf, RecvHalf) {
    let (recv, send) = tokio::io::split(tls);
    (SendHalf::Tcp(send), RecvHalf::Tcp(recv))
}

impl RecvHalf {
    /// Up to `max` bytes (at least one); `Ok(None)` once the peer finished the stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, String> {
        match self {
            RecvHalf::Quic(recv) => match recv.read_chunk(max, true).await {
                Ok(Some(chunk)) => Ok(Some(chunk.bytes)),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            RecvHalf::Tcp(recv) => {
                // TLS records hold at most 16 KiB: a larger buffer would only be half used.
                let mut buf = BytesMut::with_capacity(max.clamp(1, 16 * 1024));
                match recv.read_buf(&mut buf).await {
                    Ok(0) => Ok(None),
                    Ok(_) => Ok(Some(buf.freeze())),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Tells the peer nothing more will be read (QUIC `STOP_SENDING`). Over TCP the
    /// connection closes with the session.
    pub fn stop(&mut self, code: u32) {
        if let RecvHalf::Quic(recv) = self {
            let _ = recv.stop(code.into());
        }
    }
}

impl SendHalf {
    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> Result<(), String> {
        match self {
            SendHalf::Quic(send) => send.write_all(buf).await.map_err(|e| e.to_string()),
            SendHalf::Tcp(send) => {
                send.write_all(buf).await.map_err(|e| e.to_string())?;
                send.flush().await.map_err(|e| e.to_string())
            }
        }
    }

    /// Writes every chunk, in order, in as few writes as the transport allows.
    pub async fn write_all_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), String> {
        match self {
            SendHalf::Quic(send) => send.write_all_chunks(chunks).await.map_err(|e| e.to_string()),
            SendHalf::Tcp(send) => {
                // rustls gathers the writes into records; the flush sends them together.
                for chunk in chunks.iter() {
                    send.write_all(chunk).await.map_err(|e| e.to_string())?;
                }
                send.flush().await.map_err(|e| e.to_string())
            }
        }
    }

    /// Abandons the stream (QUIC `RESET_STREAM`). Over TCP the connection closes with the
    /// session.
    pub fn reset(&mut self, code: u32) {
        if let SendHalf::Quic(send) = self {
            let _ = send.reset(code.into());
        }
    }

    /// Ends the stream after what was written, and waits up to `grace` for the peer to
    /// have it all: closing the connection sooner could discard a last frame.
    pub async fn finish(&mut self, grace: Duration) {
        match self {
            SendHalf::Quic(send) => {
                if send.finish().is_ok() {
                    let _ = tokio::time::timeout(grace, send.stopped()).await;
                }
            }
            // TLS close_notify, then the TCP FIN.
            SendHalf::Tcp(send) => {
                let _ = tokio::time::timeout(grace, send.shutdown()).await;
            }
        }
    }
}
