//! A session's outbound queue of encoded frames: bounded, shared by the session's reply
//! tasks and by fan-out (from shard threads), drained by the session's writer task.
//!
//! It does what a bounded `tokio::sync::mpsc` channel does for this one use, with one
//! difference that matters at scale: an idle session's queue holds no buffer. A tokio
//! channel allocates its first block of slots (and cache-padded counters) up front,
//! about 2 KiB per session; this queue is a `VecDeque` that grows while frames wait and
//! gives its buffer back once drained, so 100,000 idle sessions cost no queue memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue holds its bound: the session has fallen behind.
    Full,
    /// The writer is gone: the session has ended.
    Closed,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Bytes>,
    /// Live [`Sender`]s; at 0 the writer finishes after the last frame.
    senders: usize,
    /// The [`Receiver`] is gone; nothing more is taken.
    receiver_gone: bool,
    /// The session is being torn down with this code: the writer resets its stream.
    aborted: Option<u32>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    bound: usize,
    /// Frames were queued, or the last sender left.
    readable: Notify,
    /// Frames were taken, or the receiver left.
    writable: Notify,
    /// The session was aborted.
    abort: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A queue bounded at `bound` frames.
pub fn channel(bound: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { frames: VecDeque::new(), senders: 1, receiver_gone: false, aborted: None }),
        bound: bound.max(1),
        readable: Notify::new(),
        writable: Notify::new(),
        abort: Notify::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

/// Queues frames.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: self.shared.clone() }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let last = {
            let mut s = self.shared.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.shared.readable.notify_one();
        }
    }
}

impl Sender {
    /// Queues `frame` now, or says why not.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        {
            let mut s = self.shared.lock();
            if s.receiver_gone || s.aborted.is_some() {
                return Err(TrySendError::Closed);
            }
            if s.frames.len() >= self.shared.bound {
                return Err(TrySendError::Full);
            }
            s.frames.push_back(frame);
        }
        self.shared.readable.notify_one();
        Ok(())
    }

    /// Queues `frame`, waiting for room; `Err` with the frame when the session has ended.
    pub async fn send(&self, frame: Bytes) -> Result<(), Bytes> {
        loop {
            let room = self.shared.writable.notified();
            tokio::pin!(room);
            {
                let mut s = self.shared.lock();
                if s.receiver_gone || s.aborted.is_some() {
                    return Err(frame);
                }
                if s.frames.len() < self.shared.bound {
                    s.frames.push_back(frame);
                    drop(s);
                    self.shared.readable.notify_one();
                    return Ok(());
                }
                // Registered before the lock is let go: a frame taken meanwhile wakes us.
                room.as_mut().enable();
            }
            room.await;
        }
    }

    /// Drops what is queued and tells the writer to reset the stream with `code`.
    pub fn abort(&self, code: u32) {
        {
            let mut s = self.shared.lock();
            s.aborted.get_or_insert(code);
            s.frames = VecDeque::new();
        }
        self.shared.readable.notify_one();
        self.shared.writable.notify_waiters();
        self.shared.abort.notify_waiters();
    }
}

/// What [`Receiver::recv_many`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// This many frames.
    Frames(usize),
    /// Every sender is gone and the queue is empty: finish the stream.
    Ended,
    /// The session was aborted with this code: reset the stream.
    Aborted(u32),
}

/// Takes frames, for the writer task.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        {
            let mut s = self.shared.lock();
            s.receiver_gone = true;
            s.frames = VecDeque::new();
        }
        self.shared.writable.notify_waiters();
    }
}

impl Receiver {
    /// Moves up to `most` queued frames into `into`, waiting while there are none.
    pub async fn recv_many(&mut self, into: &mut Vec<Bytes>, most: usize) -> Taken {
        loop {
            {
                let mut s = self.shared.lock();
                if let Some(code) = s.aborted {
                    return Taken::Aborted(code);
                }
                if !s.frames.is_empty() {
                    let n = s.frames.len().min(most);
                    if n == s.frames.len() && into.is_empty() {
                        // All of it: the writer takes the buffer itself (no allocation, no
                        // copy), and the queue is left holding none, as an idle one should.
                        *into = Vec::from(std::mem::take(&mut s.frames));
                    } else {
                        into.extend(s.frames.drain(..n));
                        if s.frames.is_empty() {
                            // An idle session keeps no buffer.
                            s.frames = VecDeque::new();
                        }
                    }
                    drop(s);
                    self.shared.writable.notify_waiters();
                    return Taken::Frames(n);
                }
                if s.senders == 0 {
                    return Taken::Ended;
                }
            }
            // A frame queued after the check above left a permit: this returns at once.
            self.shared.readable.notified().await;
        }
    }

    /// Resolves with the code once the session is aborted, e.g. while a write waits on a
    /// slow client.
    pub async fn aborted(&self) -> u32 {
        loop {
            let abort = self.shared.abort.notified();
            tokio::pin!(abort);
            abort.as_mut().enable();
            if let Some(code) = self.shared.lock().aborted {
                return code;
            }
            abort.await;
        }
    }

    /// The next frame, waiting for one; `None` once every sender is gone and the queue
    /// is empty.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Bytes> {
        let mut one = Vec::with_capacity(1);
        (self.recv_many(&mut one, 1).await == Taken::Frames(1)).then(|| one.remove(0))
    }

    /// The next frame if one is queued now.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.shared.lock().frames.pop_front()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_the_end_follows_the_last_sender() {
        let (tx, mut rx) = channel(8);
        let tx2 = tx.clone();
        tx.try_send(frame(b"1")).expect("room");
        tx2.send(frame(b"2")).await.expect("room");
        tx.try_send(frame(b"3")).expect("room");
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 2).await, Taken::Frames(2));
        assert_eq!(rx.recv_many(&mut got, 64).await, Taken::Frames(1));
        assert_eq!(got, [frame(b"1"), frame(b"2"), frame(b"3")]);
        drop(tx);
        tx2.try_send(frame(b"4")).expect("one sender is left");
        drop(tx2);
        got.clear();
        assert_eq!(rx.recv_many(&mut got, 64).await, Taken::Frames(1), "what was queued before the end still comes out");
        assert_eq!(rx.recv_many(&mut got, 64).await, Taken::Ended, "then the end");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_waiting_send_gets_in_once_there_is_room() {
        let (tx, mut rx) = channel(2);
        tx.try_send(frame(b"1")).expect("room");
        tx.try_send(frame(b"2")).expect("room");
        assert_eq!(tx.try_send(frame(b"3")), Err(TrySendError::Full));
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(frame(b"3")).await.is_ok() });
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 1).await, Taken::Frames(1));
        assert!(waiting.await.expect("the sender task"), "the waiting send got in");
        got.clear();
        assert_eq!(rx.recv_many(&mut got, 64).await, Taken::Frames(2));
        assert_eq!(got, [frame(b"2"), frame(b"3")]);
    }

    #[tokio::test]
    async fn a_gone_writer_closes_the_queue_and_frees_waiting_senders() {
        let (tx, rx) = channel(1);
        tx.try_send(frame(b"1")).expect("room");
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(frame(b"2")).await });
        drop(rx);
        assert_eq!(waiting.await.expect("the sender task"), Err(frame(b"2")));
        assert_eq!(tx.try_send(frame(b"3")), Err(TrySendError::Closed));
    }

    #[tokio::test]
    async fn an_abort_drops_what_waits_and_reaches_the_writer_first() {
        let (tx, mut rx) = channel(1);
        tx.try_send(frame(b"1")).expect("room");
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(frame(b"2")).await });
        tx.abort(3);
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 64).await, Taken::Aborted(3));
        assert!(got.is_empty(), "nothing queued goes out after an abort");
        drop(rx);
        assert_eq!(waiting.await.expect("the sender task"), Err(frame(b"2")), "a waiting sender is freed");
    }

    #[tokio::test]
    async fn a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = channel(1_000);
        for _ in 0..100 {
            tx.try_send(frame(b"x")).expect("room");
        }
        assert!(tx.shared.lock().frames.capacity() >= 100);
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 1_000).await, Taken::Frames(100));
        assert_eq!(tx.shared.lock().frames.capacity(), 0);
        assert!(rx.is_empty());
    }
    #[tokio::test]
    async fn a_writer_that_takes_everything_takes_the_buffer_itself_in_order() {
        let (tx, mut rx) = channel(8);
        for b in [b"1", b"2", b"3"] {
            tx.try_send(frame(b)).expect("room");
        }
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 2).await, Taken::Frames(2), "a part is copied out");
        // The queue's buffer now starts at its second slot; these wrap around its end.
        for b in [b"4", b"5", b"6"] {
            tx.try_send(frame(b)).expect("room");
        }
        let buffer = {
            let s = tx.shared.lock();
            let (_, wrapped) = s.frames.as_slices();
            assert!(!wrapped.is_empty(), "the queue wrapped around its buffer's end");
            // What wrapped sits at the start of the buffer.
            wrapped.as_ptr()
        };
        let mut rest = Vec::new();
        assert_eq!(rx.recv_many(&mut rest, 64).await, Taken::Frames(4));
        assert_eq!(rest.as_ptr(), buffer, "the writer holds the queue's own buffer");
        assert_eq!(rest, [frame(b"3"), frame(b"4"), frame(b"5"), frame(b"6")], "in order, though it had wrapped");
        assert_eq!(tx.shared.lock().frames.capacity(), 0, "the queue keeps none");
        tx.try_send(frame(b"7")).expect("room");
        rest.clear();
        assert_eq!(rx.recv_many(&mut rest, 64).await, Taken::Frames(1), "a writer with capacity of its own gets the frame too");
        assert_eq!(rest, [frame(b"7")]);
    }
}
