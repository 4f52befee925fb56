//! A lingering close for the bridge's TCP connections.
//!
//! A socket closed while the peer's data waits unread in it is reset, not closed: the
//! kernel sends RST, and the browser may then discard what the bridge wrote last and it
//! had not read yet (the answers, the `error` that says why, the disconnect). A socket cut
//! off for flooding is exactly one whose data waits unread. So a connection, when the
//! bridge is done with it, sends its end (FIN) after everything written, then reads and
//! discards what still comes until the peer closes too, bounded in time and bytes; only
//! then is the socket closed. HTTP servers do the same ("lingering close").

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// How long a closed connection waits for the peer's end.
const LINGER: Duration = Duration::from_secs(5);
/// How much of the peer's data a closed connection reads and discards at most.
const LINGER_BYTES: usize = 4 << 20;

/// A TCP connection that closes by lingering (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Lingering {
    /// `None` only once dropped.
    stream: Option<TcpStream>,
}

impl Lingering {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self { stream: Some(stream) }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else { return };
        // Outside a runtime (the process ending) the socket is simply closed.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream));
        }
    }
}

/// Ends our side after what was written, then drains the peer's side until it ends.
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut discarded = 0usize;
    let _ = tokio::time::timeout(LINGER, async {
        while discarded < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

impl AsyncRead for Lingering {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(stream) => stream.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// The flooding browser's case: its data waits unread when the bridge is done with the
    /// connection. The browser still reads all the bridge wrote, then an orderly end (a
    /// reset would fail `read_to_end`).
    #[tokio::test]
    async fn a_connection_closed_with_unread_input_ends_in_order_after_what_it_wrote() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut browser = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut ours = Lingering::new(accepted);
        browser.write_all(&[b'x'; 64 * 1024]).await.unwrap();
        // Some of it has arrived; the rest stays unread.
        let mut first = [0u8; 1];
        ours.read_exact(&mut first).await.unwrap();
        ours.write_all(b"the last answer").await.unwrap();
        drop(ours);
        let mut got = Vec::new();
        browser.read_to_end(&mut got).await.expect("an orderly end, not a reset");
        assert_eq!(got, b"the last answer");
    }

    /// A peer that never ends its side is let go after the bound.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_ends_is_let_go_after_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let lingering = tokio::spawn(linger(accepted));
        let mut got = Vec::new();
        // Our end comes first, at once.
        peer.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
        // The peer stays open; the linger ends by its bound (the paused clock jumps to it).
        tokio::time::timeout(LINGER * 2, lingering).await.expect("the linger ends by itself").unwrap();
    }
}
