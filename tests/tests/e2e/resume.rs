//! Nothing missed after reconnect, exactly once to the app: clients behind a UDP relay
//! that the tests cut (a dead network, as a phone in a tunnel sees it) reconnect by
//! themselves, catch up, and resend what they could not send.
//!
//! Every cut is driven by what the client has seen, and healed when the client reports
//! the connection lost; nothing here waits for a timer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use legalchat_sdk::pb::{self, ReceiptKind};
use legalchat_sdk::{Client, ClientConfig, ConnectionState, Event, NewConversation, ReconnectPolicy, Sent, TransportPolicy};
use legalchat_tests::{EVENT_TIMEOUT, TestDaemon, UdpRelay, bounded, full_history, next_event, text_of};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{daemon, daemon_with};

/// Settings for a client that reaches the daemon through `relay`: a short idle timeout
/// so that a cut is noticed quickly, and quick reconnect attempts.
fn through_relay(d: &TestDaemon, relay: &UdpRelay, user: &str) -> ClientConfig {
    let mut config = d.client_config(d.token(user, "advocate"));
    config.server_addr = relay.addr();
    // QUIC only: the relay's cuts are what these tests are about, not the TCP fallback.
    config
        .with_transport(TransportPolicy::QuicOnly)
        .with_idle_timeout(Duration::from_millis(1_500), Duration::from_millis(300))
        .with_connect_timeout(Duration::from_secs(2))
        .with_reconnect_policy(
            ReconnectPolicy::default().with_initial_delay(Duration::from_millis(50)).with_max_delay(Duration::from_millis(500)),
        )
}

async fn connect(config: ClientConfig, what: &str) -> Client {
    Client::connect(config).await.unwrap_or_else(|e| panic!("connecting {what}: {e}"))
}

/// Takes events off a client until it ends, so that its queue never fills.
fn drain_events(client: &Client) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move { while client.next_event().await.is_some() {} })
}

/// Waits for the client to report the connection lost; other events are returned.
async fn until_disconnected(client: &Client) -> Vec<Event> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut before = Vec::new();
    loop {
        match next_event(client, deadline, "the connection to drop").await {
            Event::State(ConnectionState::Disconnected { .. }) => return before,
            Event::Closed { reason } => panic!("{}: closed ({reason}) instead of reconnecting", client.user_id()),
            other => before.push(other),
        }
    }
}

/// (conversation, seq) → (message id, text), as acknowledged to senders or as received.
type Transcript = BTreeMap<(String, u64), (String, String)>;

/// The headline: a client whose connection is cut again and again while others send
/// 10,000 messages gets every one of them, once, in order, with the ids the senders
/// were given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_repeated_cuts_arrive_once_and_in_order() {
    const CONVERSATIONS: usize = 4;
    const SENDERS_PER_CONVERSATION: usize = 2;
    const TOTAL: u64 = 10_000;
    // Senders stay at most this far ahead of what the victim has seen, so that every cut
    // happens while messages are still being sent.
    const WINDOW: u64 = 1_000;
    // A cut after every this many messages seen: seven cuts. Each of the first six forces
    // a reconnect, because the senders cannot get WINDOW past the cut until the victim
    // sees more; the last may be outrun by the end of the run.
    const CUT_EVERY: u64 = 1_400;
    bounded("ten_thousand_through_cuts", async {
        // Durability is not what this test is about; fsync would only slow it down.
        let d = daemon_with(&["--fsync", "never"]).await;
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        // A lossy network as well: QUIC retransmits, the SDK never notices.
        relay.set_loss(5);
        let victim = connect(through_relay(&d, &relay, "victim"), "victim").await;

        let mut senders: Vec<(Client, String)> = Vec::new();
        for c in 0..CONVERSATIONS {
            let names: Vec<String> = (0..SENDERS_PER_CONVERSATION).map(|s| format!("sender{c}-{s}")).collect();
            let first = d.client(&names[0], "advocate").await;
            let mut members = names[1..].to_vec();
            members.push("victim".into());
            let conv = first.create_conversation(NewConversation::group(format!("Matter {c}"), members)).await.expect("create group");
            senders.push((first, conv.id.clone()));
            for name in &names[1..] {
                senders.push((d.client(name, "advocate").await, conv.id.clone()));
            }
        }
        let drains: Vec<_> = senders.iter().map(|(c, _)| drain_events(c)).collect();

        let (seen_tx, seen_rx) = watch::channel(0u64);
        let tickets = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(Mutex::new(Transcript::new()));
        let mut sending = JoinSet::new();
        for (client, conv) in &senders {
            let (client, conv) = (client.clone(), conv.clone());
            let (tickets, acked, mut seen) = (tickets.clone(), acked.clone(), seen_rx.clone());
            sending.spawn(async move {
                loop {
                    let k = tickets.fetch_add(1, Ordering::Relaxed);
                    if k >= TOTAL {
                        return;
                    }
                    seen.wait_for(|seen| seen + WINDOW > k).await.expect("the victim is still counting");
                    let text = format!("message {k} from {}", client.user_id());
                    let sent = client.send_text(&conv, &text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
                    assert!(acked.lock().unwrap().insert((conv.clone(), sent.seq), (sent.message_id, text)).is_none());
                }
            });
        }

        // The victim: count, cut every CUT_EVERY messages, heal when the loss is noticed.
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut received = Transcript::new();
        let mut order: HashMap<String, Vec<u64>> = HashMap::new();
        let (mut seen, mut next_cut, mut cuts, mut resumes, mut caught_up) = (0u64, CUT_EVERY, 0u32, 0u32, 0u64);
        while seen < TOTAL {
            match next_event(&victim, deadline, &format!("message {} of {TOTAL}", seen + 1)).await {
                Event::Message(m) => {
                    order.entry(m.conversation_id.clone()).or_default().push(m.seq);
                    let entry = (m.message_id.clone(), text_of(&m).to_owned());
                    assert!(received.insert((m.conversation_id.clone(), m.seq), entry).is_none(), "seq {} of {} twice", m.seq, m.conversation_id);
                    seen += 1;
                    seen_tx.send_replace(seen);
                    if seen >= next_cut {
                        relay.cut();
                        cuts += 1;
                        next_cut += CUT_EVERY;
                    }
                }
                Event::State(ConnectionState::Disconnected { .. }) => relay.heal(),
                Event::State(ConnectionState::Resumed { missed }) => {
                    resumes += 1;
                    caught_up += missed;
                }
                Event::Closed { reason } => panic!("the victim ended: {reason}"),
                _ => {}
            }
        }
        while let Some(joined) = sending.join_next().await {
            joined.expect("sender task");
        }

        // Per conversation, the app saw 1..=N in order, and exactly what was acknowledged.
        let acked = acked.lock().unwrap().clone();
        assert_eq!(acked.len() as u64, TOTAL);
        for (conv, seqs) in &order {
            let n = seqs.len() as u64;
            assert_eq!(seqs, &(1..=n).collect::<Vec<u64>>(), "{conv}: not 1..={n} in order");
        }
        assert_eq!(received, acked, "the victim's messages differ from what the senders were acknowledged");
        let mut cursors: Vec<(String, u64)> = order.iter().map(|(c, s)| (c.clone(), s.len() as u64)).collect();
        cursors.sort();
        assert_eq!(victim.cursors(), cursors);
        assert!(resumes >= 5, "only {resumes} reconnects for {cuts} cuts");
        let (forwarded, dropped) = relay.stats();
        eprintln!(
            "resume: {TOTAL} messages, {cuts} cuts, {resumes} reconnects, {caught_up} delivered by catch-up, relay forwarded {forwarded} / dropped {dropped} datagrams"
        );
        victim.close().await;
        for (client, _) in &senders {
            client.close().await;
        }
        for drain in drains {
            drain.await.expect("drain task");
        }
    })
    .await;
}

/// Futures driven in a fixed order: `poll_once` polls each pending one once, in order —
/// for sends, that queues them in the outbox in this order.
struct InOrder<T> {
    futures: Vec<Pin<Box<dyn Future<Output = T> + Send>>>,
    results: Vec<Option<T>>,
}

impl<T> InOrder<T> {
    fn new(futures: Vec<Pin<Box<dyn Future<Output = T> + Send>>>) -> Self {
        let results = futures.iter().map(|_| None).collect();
        Self { futures, results }
    }

    fn poll_pending(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let mut all_done = true;
        for (f, r) in self.futures.iter_mut().zip(self.results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *r = Some(v),
                    Poll::Pending => all_done = false,
                }
            }
        }
        all_done
    }

    async fn poll_once(&mut self) {
        std::future::poll_fn(|cx| {
            self.poll_pending(cx);
            Poll::Ready(())
        })
        .await;
    }

    async fn finish(mut self) -> Vec<T> {
        std::future::poll_fn(|cx| if self.poll_pending(cx) { Poll::Ready(()) } else { Poll::Pending }).await;
        self.results.into_iter().map(|r| r.expect("finished")).collect()
    }
}

/// Sends made while disconnected wait in the outbox and arrive exactly once after the
/// reconnect, in the order they were made; a send in flight when the connection died is
/// retried with its client message id and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_made_while_disconnected_arrive_exactly_once() {
    const BEFORE: usize = 20;
    const SEQUENTIAL: usize = 10;
    const BURST: usize = 30;
    bounded("outbox", async {
        let d = daemon().await;
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        let sender = connect(through_relay(&d, &relay, "sender"), "sender").await;
        let reader = d.client("reader", "advocate").await;
        let conv = sender.create_conversation(NewConversation::group("Outbox", vec!["reader".into()])).await.expect("create");
        let mut expected: Vec<String> = Vec::new();
        for n in 0..BEFORE {
            let text = format!("before {n}");
            sender.send_text(&conv.id, &text).await.expect("send while connected");
            expected.push(text);
        }

        // The network dies. A task keeps sending, one after the other: the first of these
        // is in flight on the dead connection.
        relay.cut();
        let sequential = tokio::spawn({
            let (sender, conv) = (sender.clone(), conv.id.clone());
            async move {
                let mut sent = Vec::new();
                for n in 0..SEQUENTIAL {
                    let text = format!("sequential {n}");
                    let s = sender.send_text(&conv, &text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
                    sent.push((text, s));
                }
                sent
            }
        });
        until_disconnected(&sender).await;
        assert!(matches!(sender.state(), ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }));

        // While disconnected: a burst of sends, queued in this order.
        let burst_texts: Vec<String> = (0..BURST).map(|n| format!("burst {n}")).collect();
        let mut burst: InOrder<legalchat_sdk::Result<Sent>> = InOrder::new(
            burst_texts
                .iter()
                .map(|text| {
                    let (sender, conv, text) = (sender.clone(), conv.id.clone(), text.clone());
                    Box::pin(async move { sender.send_text(&conv, &text).await }) as Pin<Box<dyn Future<Output = _> + Send>>
                })
                .collect(),
        );
        burst.poll_once().await;
        relay.heal();

        let burst_sent: Vec<Sent> = burst.finish().await.into_iter().map(|r| r.expect("a queued send resolves")).collect();
        let sequential_sent = sequential.await.expect("sequential task");
        let burst_seqs: Vec<u64> = burst_sent.iter().map(|s| s.seq).collect();
        assert!(burst_seqs.windows(2).all(|w| w[0] < w[1]), "the burst was stored out of order: {burst_seqs:?}");
        assert!(burst_sent.iter().all(|s| !s.duplicate), "queued sends were never sent before");
        let seq_seqs: Vec<u64> = sequential_sent.iter().map(|(_, s)| s.seq).collect();
        assert!(seq_seqs.windows(2).all(|w| w[0] < w[1]), "{seq_seqs:?}");
        expected.extend(sequential_sent.iter().map(|(t, _)| t.clone()));
        expected.extend(burst_texts.iter().cloned());
        let total = expected.len();

        // The reader got each exactly once, in seq order; history agrees.
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut got: Vec<pb::Message> = Vec::new();
        while got.len() < total {
            if let Event::Message(m) = next_event(&reader, deadline, "the sender's messages").await
                && m.conversation_id == conv.id
            {
                got.push(m);
            }
        }
        let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
        let history = full_history(&reader, &conv.id).await;
        assert_eq!(history.len(), total, "each send stored once");
        let mut stored: Vec<String> = history.iter().map(|m| text_of(m).to_owned()).collect();
        let mut want = expected.clone();
        stored.sort();
        want.sort();
        assert_eq!(stored, want, "every text exactly once");
        let received: Vec<&str> = got.iter().map(text_of).collect();
        let stored_in_order: Vec<&str> = history.iter().map(text_of).collect();
        assert_eq!(received, stored_in_order);
        // The sender's app was never handed its own messages back: once closed, its event
        // stream is finite; none of it is a message.
        sender.close().await;
        let mut echoes = 0;
        while let Some(e) = sender.next_event().await {
            echoes += usize::from(matches!(e, Event::Message(_)));
        }
        assert_eq!(echoes, 0, "the sender received its own messages");
    })
    .await;
}

/// A user away while 50 conversations move on catches up on reconnecting: every missed
/// message in order, in one chain of bounded `CatchUp` pages (no per-conversation history
/// calls), and the read receipts it missed, before `Resumed`. Saved cursors do the same
/// for a fresh client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_offline_in_fifty_conversations_catches_up_in_one_chain() {
    const PEERS: usize = 5;
    const PER_PEER: usize = 10;
    const CONVERSATIONS: usize = PEERS * PER_PEER;
    const MISSED_PER_CONVERSATION: u64 = 30;
    // 1,500 missed messages in pages of 200: continuation is exercised.
    const PAGE: u32 = 200;
    bounded("offline_catch_up", async {
        let d = daemon_with(&["--fsync", "never"]).await;
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        let away = connect(through_relay(&d, &relay, "away").with_catch_up_page(PAGE), "away").await;
        let mut peers = Vec::new();
        for p in 0..PEERS {
            peers.push(d.client(&format!("peer{p}"), "advocate").await);
        }
        // conversation → the peer who talks there
        let mut convs: Vec<(String, usize)> = Vec::new();
        for (p, peer) in peers.iter().enumerate() {
            for n in 0..PER_PEER {
                let c =
                    peer.create_conversation(NewConversation::group(format!("Matter {p}-{n}"), vec!["away".into()])).await.expect("create");
                convs.push((c.id, p));
            }
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut added = 0;
        while added < CONVERSATIONS {
            if let Event::ConversationUpdated(_) = next_event(&away, deadline, "being added to the conversations").await {
                added += 1;
            }
        }
        // Away says something everywhere, then goes offline.
        for (conv, _) in &convs {
            assert_eq!(away.send_text(conv, "Back on Monday.").await.expect("send").seq, 1);
        }
        relay.cut();
        until_disconnected(&away).await;

        // Meanwhile: each peer reads away's message and writes 30 more in each of its
        // conversations.
        let mut work = JoinSet::new();
        for (conv, p) in convs.iter().cloned() {
            let peer = peers[p].clone();
            work.spawn(async move {
                peer.mark_read(&conv, 1).await.expect("mark read");
                for n in 0..MISSED_PER_CONVERSATION {
                    peer.send_text(&conv, &format!("while away {n}")).await.expect("send");
                }
            });
        }
        while let Some(joined) = work.join_next().await {
            joined.expect("peer task");
        }
        let served_before = catch_up_served(&d).await;
        relay.heal();

        // Back: messages (in order, exactly the missed ones), receipts, then Resumed.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got: HashMap<String, Vec<u64>> = HashMap::new();
        let mut read_receipts: HashMap<String, u64> = HashMap::new();
        let missed = loop {
            match next_event(&away, deadline, "catching up").await {
                Event::Message(m) => {
                    assert!(!read_receipts.contains_key(&m.conversation_id), "a receipt came before the messages it caught up with");
                    got.entry(m.conversation_id.clone()).or_default().push(m.seq);
                }
                Event::Receipt(r) if r.kind() == ReceiptKind::Read => {
                    read_receipts.insert(r.conversation_id.clone(), r.seq);
                }
                Event::State(ConnectionState::Resumed { missed }) => break missed,
                Event::Closed { reason } => panic!("ended: {reason}"),
                _ => {}
            }
        };
        assert_eq!(missed, CONVERSATIONS as u64 * MISSED_PER_CONVERSATION);
        for (conv, _) in &convs {
            assert_eq!(got.get(conv), Some(&(2..=MISSED_PER_CONVERSATION + 1).collect::<Vec<u64>>()), "{conv}");
            let read = read_receipts.get(conv).copied().unwrap_or_else(|| panic!("no read receipt caught up for {conv}"));
            assert!(read >= 1, "{conv}: read up to {read}");
        }
        // One chain: the server served each missed message exactly once through CatchUp.
        assert_eq!(catch_up_served(&d).await - served_before, missed, "messages served by CatchUp");

        // A fresh client resuming from the saved cursors gets what came after them.
        let saved = away.cursors();
        assert_eq!(saved.len(), CONVERSATIONS);
        away.close().await;
        for (conv, p) in convs.iter().take(10) {
            peers[*p].send_text(conv, "one more thing").await.expect("send");
        }
        let resumed = connect(d.client_config(d.token("away", "advocate")).with_resume_cursors(saved), "away again").await;
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut later = Vec::new();
        let missed = loop {
            match next_event(&resumed, deadline, "resuming from saved cursors").await {
                Event::Message(m) => later.push((m.conversation_id.clone(), m.seq, text_of(&m).to_owned())),
                Event::State(ConnectionState::Resumed { missed }) => break missed,
                _ => {}
            }
        };
        assert_eq!(missed, 10);
        let mut want: Vec<(String, u64, String)> =
            convs.iter().take(10).map(|(c, _)| (c.clone(), MISSED_PER_CONVERSATION + 2, "one more thing".to_string())).collect();
        want.sort();
        later.sort();
        assert_eq!(later, want);
        resumed.close().await;
    })
    .await;
}

/// Messages the daemon has served through `CatchUp` so far (its metric).
async fn catch_up_served(d: &TestDaemon) -> u64 {
    let metrics = d.http_get("/metrics").await;
    metrics
        .body
        .lines()
        .find(|l| l.starts_with("legalchat_catch_up_messages_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Rooms joined before a drop are joined again after it: a fresh `RoomUsers` after
/// `Resumed`, and typing reaches the client again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_joined_again_after_a_reconnect() {
    bounded("rooms_rejoined", async {
        let d = daemon().await;
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        let alice = d.client("alice", "advocate").await;
        let bob = connect(through_relay(&d, &relay, "bob"), "bob").await;
        let conv = alice.create_conversation(NewConversation::group("Hearing", vec!["bob".into()])).await.expect("create");
        let room = bob.join_room(&conv.id).await.expect("join");
        assert!(room.online_user_ids.iter().any(|u| u == "bob"));

        relay.cut();
        until_disconnected(&bob).await;
        relay.heal();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut resumed = false;
        loop {
            match next_event(&bob, deadline, "the room joined again").await {
                Event::State(ConnectionState::Resumed { .. }) => resumed = true,
                Event::RoomUsers(r) if r.conversation_id == conv.id => {
                    assert!(resumed, "the room answer comes after the catch-up");
                    assert!(r.online_user_ids.iter().any(|u| u == "bob"), "{r:?}");
                    break;
                }
                Event::Closed { reason } => panic!("ended: {reason}"),
                _ => {}
            }
        }
        alice.start_typing(&conv.id).await.expect("typing");
        loop {
            if let Event::Typing(t) = next_event(&bob, deadline, "alice typing").await {
                assert_eq!((t.user_id.as_str(), t.active), ("alice", true));
                break;
            }
        }
        bob.close().await;
    })
    .await;
}

/// A read receipt that moved while the client was away is caught up even when the
/// conversation has no new message ("every message and receipt it missed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_are_caught_up_without_new_messages() {
    bounded("receipts_only_catch_up", async {
        let d = daemon().await;
        let relay = UdpRelay::start(d.quic_addr()).await.expect("relay");
        let away = connect(through_relay(&d, &relay, "away"), "away").await;
        let peer = d.client("peer", "advocate").await;
        let conv = away.create_conversation(NewConversation::group("Quiet", vec!["peer".into()])).await.expect("create");
        let last = {
            let mut last = 0;
            for n in 0..3 {
                last = away.send_text(&conv.id, &format!("please review {n}")).await.expect("send").seq;
            }
            last
        };
        legalchat_tests::wait_for_message(&peer, "away's last message", |m| m.seq == last).await;
        relay.cut();
        until_disconnected(&away).await;
        peer.mark_read(&conv.id, last).await.expect("peer reads");
        relay.heal();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let mut read = None;
        loop {
            match next_event(&away, deadline, "catching up").await {
                Event::Receipt(r) if r.kind() == ReceiptKind::Read && r.user_id == "peer" => read = Some(r.seq),
                Event::State(ConnectionState::Resumed { .. }) => break,
                Event::Closed { reason } => panic!("ended: {reason}"),
                _ => {}
            }
        }
        assert_eq!(read, Some(last), "the read receipt that moved while away was not caught up");
        away.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_changes_networks_keeps_its_connection_and_misses_nothing() {
    bounded("migration", async {
        let d = crate::daemon().await;
        let phone = d.client("alice", "advocate").await;
        let bob = d.client("bob", "advocate").await;
        let conv = bob.create_conversation(legalchat_sdk::NewConversation::group("Moving", vec!["alice".into()])).await.unwrap().id;
        let session = phone.session().session_id;
        let mut expected = Vec::new();
        for hop in 0..3 {
            for n in 0..10 {
                let text = format!("hop {hop} message {n}");
                bob.send_text(&conv, &text).await.unwrap();
                expected.push(text);
            }
            // Mid-stream: a new local socket, as when Wi-Fi gives way to cellular.
            let moved_to = phone.rebind().expect("rebound");
            assert!(moved_to.port() != 0);
            phone.send_text(&conv, &format!("alice from her new address, hop {hop}")).await.expect("sends from the new address");
        }
        let got = legalchat_tests::collect_messages(&phone, &conv, EVENT_TIMEOUT, |m| {
            m.iter().filter(|m| m.sender_id == "bob" && m.event.is_none()).count() >= expected.len()
        })
        .await;
        let texts: Vec<&str> = got.iter().filter(|m| m.sender_id == "bob" && m.event.is_none()).map(text_of).collect();
        assert_eq!(texts, expected.iter().map(String::as_str).collect::<Vec<_>>(), "every message, in order, exactly once");
        assert_eq!(phone.session().session_id, session, "the same session throughout: no reconnect");
    })
    .await;
}
