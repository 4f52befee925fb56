//! Senders pipelining many sends; `kill -9` in the middle, then the power cut, then a
//! restart on the same disk: every acknowledged message is there, seqs have no gap,
//! unacknowledged ones are there once or not at all, and resends are stored once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use legalchat_sdk::pb::{self, client_frame::Request, server_frame::Event as Ev};
use legalchat_sdk::{Client, NewConversation, Sent, new_client_message_id};
use legalchat_tests::{RawEvent, RawSession, full_history, text_of};
use tokio::sync::watch;
use tokio::task::JoinSet;

use legalchat_powercut::SyncModel;

use crate::{Fsync, Machine, bounded};

/// SDK senders, each with this many sends in flight at once, out of this many.
const SENDERS: usize = 6;
const IN_FLIGHT: usize = 16;
const PER_SENDER: usize = 60;
/// A raw session pipelining sends with this many unanswered at once, out of this many;
/// it does not reconnect or resend, so what it had in flight at the crash stays
/// unacknowledged.
const RAW_IN_FLIGHT: usize = 24;
const RAW_SENDS: usize = 400;
/// The crash comes once this many sends were acknowledged (SDK and raw together).
const ACKS_BEFORE_CRASH: u64 = 200;

fn text(t: &str) -> pb::MessageContent {
    pb::MessageContent { text: t.into(), r#type: pb::ContentType::Text.into(), format: pb::TextFormat::Plain.into(), ..Default::default() }
}

/// One SDK sender: `PER_SENDER` sends with up to `IN_FLIGHT` at once; each result with
/// its text. Sends made while the daemon is down wait in the SDK's outbox.
async fn sdk_sender(client: Client, conv: String, acks: watch::Sender<u64>) -> Vec<(String, Result<Sent, String>)> {
    let mut in_flight = JoinSet::new();
    let mut results = Vec::new();
    let mut next = 0;
    while next < PER_SENDER || !in_flight.is_empty() {
        while next < PER_SENDER && in_flight.len() < IN_FLIGHT {
            let (client, conv, text) = (client.clone(), conv.clone(), format!("{} #{next}", client.user_id()));
            in_flight.spawn(async move {
                let result = client.send_text(&conv, &text).await.map_err(|e| e.to_string());
                (text, result)
            });
            next += 1;
        }
        let Some(joined) = in_flight.join_next().await else { break };
        let (text, result) = joined.expect("a send task");
        if result.is_ok() {
            acks.send_modify(|n| *n += 1);
        }
        results.push((text, result));
    }
    results
}

/// What the raw sender sent and what was acknowledged: client message id → (text,
/// the ack if one came).
type RawLog = Arc<Mutex<BTreeMap<String, (String, Option<pb::MessageAccepted>)>>>;

/// The raw sender: keeps `RAW_IN_FLIGHT` sends unanswered, until `RAW_SENDS` or the
/// session ends (the crash).
async fn raw_sender(mut raw: RawSession, conv: String, log: RawLog, acks: watch::Sender<u64>) {
    let mut by_request: HashMap<u64, String> = HashMap::new();
    let mut sent = 0usize;
    loop {
        while sent < RAW_SENDS && by_request.len() < RAW_IN_FLIGHT {
            let cmid = new_client_message_id();
            let body = format!("raw #{sent}");
            let request_id = 100 + sent as u64;
            log.lock().unwrap().insert(cmid.clone(), (body.clone(), None));
            let send = pb::SendMessage {
                conversation_id: conv.clone(),
                client_message_id: cmid.clone(),
                content: Some(text(&body)),
                reply_to_seq: 0,
            };
            let frame = pb::ClientFrame { request_id, request: Some(Request::SendMessage(send)) };
            if raw.send_frame(&frame).await.is_err() {
                return;
            }
            by_request.insert(request_id, cmid);
            sent += 1;
        }
        if by_request.is_empty() {
            return;
        }
        match raw.next(Duration::from_secs(60)).await {
            Ok(RawEvent::Frame(frame)) => {
                if let Some(Ev::Ack(pb::Ack { request_id, result: Some(pb::ack::Result::MessageAccepted(accepted)) })) = frame.event
                    && let Some(cmid) = by_request.remove(&request_id)
                {
                    if let Some(entry) = log.lock().unwrap().get_mut(&cmid) {
                        entry.1 = Some(accepted);
                    }
                    acks.send_modify(|n| *n += 1);
                }
            }
            Ok(RawEvent::Closed(_)) | Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_and_a_power_cut() {
    scenario("acknowledged_messages_survive_kill_9_and_a_power_cut", SyncModel::Journal).await;
}

/// The same where a name is durable only once its directory is fsynced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_and_a_power_cut_under_strict_posix() {
    scenario("acknowledged_messages_survive_kill_9_and_a_power_cut_under_strict_posix", SyncModel::Posix).await;
}

async fn scenario(test: &str, model: SyncModel) {
    bounded(test, async {
        let Some(mut m) = Machine::boot_with(test, Fsync::Always, model).await else { return };
        let owner = m.client("owner", "advocate").await;
        let mut senders = Vec::new();
        for s in 0..SENDERS {
            senders.push(m.client(&format!("sender{s}"), "advocate").await);
        }
        let mut members: Vec<String> = senders.iter().map(|c| c.user_id().to_owned()).collect();
        members.push("rawsender".into());
        let conv = owner.create_conversation(NewConversation::group("Power cut", members)).await.expect("create the group").id;
        let mut raw = RawSession::connect(m.daemon().quic_addr(), &m.ca_pem()).await.expect("a raw session");
        raw.authenticate(&m.token("rawsender", "advocate")).await.expect("raw authentication");

        let (acks, mut acked) = watch::channel(0u64);
        let mut sdk_tasks = JoinSet::new();
        for sender in &senders {
            sdk_tasks.spawn(sdk_sender(sender.clone(), conv.clone(), acks.clone()));
        }
        let raw_log: RawLog = Arc::default();
        let raw_task = tokio::spawn(raw_sender(raw, conv.clone(), raw_log.clone(), acks.clone()));

        // The crash, in the middle of the pipelines.
        tokio::time::timeout(Duration::from_secs(120), acked.wait_for(|n| *n >= ACKS_BEFORE_CRASH))
            .await
            .expect("enough acknowledgments before the crash")
            .expect("the counter");
        m.kill9().await;
        let acks_at_crash = *acked.borrow();
        let pending = m.pending();
        eprintln!("{test}: not durable at the crash: {}", m.pending_paths());
        let lost = m.power_cut();
        raw_task.abort();
        let _ = raw_task.await;
        eprintln!("{test}: {acks_at_crash} acks at the crash; the cut dropped {lost} (pending at the kill: {pending})");

        m.start().await.unwrap_or_else(|e| panic!("restart after the power cut: {e:#}"));
        for client in senders.iter().chain([&owner]) {
            client.reconnect_now();
        }
        let mut sdk_results = Vec::new();
        while let Some(done) = sdk_tasks.join_next().await {
            sdk_results.extend(done.expect("a sender task"));
        }

        let reader = m.client("owner", "advocate").await;
        let history = full_history(&reader, &conv).await;
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seqs are gap-free from 1");
        let by_cmid: HashMap<&str, Vec<&pb::Message>> = history.iter().fold(HashMap::new(), |mut acc, msg| {
            acc.entry(msg.client_message_id.as_str()).or_default().push(msg);
            acc
        });
        let by_text: HashMap<&str, Vec<&pb::Message>> = history.iter().fold(HashMap::new(), |mut acc, msg| {
            acc.entry(text_of(msg)).or_default().push(msg);
            acc
        });

        // Every SDK send: the SDK resends what was in flight with the same client id, so
        // each was acknowledged by the end — and stored exactly once, where the ack said.
        let mut duplicates = 0;
        for (body, result) in &sdk_results {
            let copies = by_text.get(body.as_str()).map_or(0, Vec::len);
            match result {
                Ok(sent) => {
                    assert_eq!(copies, 1, "{body}: acknowledged as seq {}, stored {copies} times", sent.seq);
                    let stored = by_text[body.as_str()][0];
                    assert_eq!((stored.seq, stored.message_id.as_str()), (sent.seq, sent.message_id.as_str()), "{body}");
                    duplicates += usize::from(sent.duplicate);
                }
                Err(e) => assert!(copies <= 1, "{body} failed ({e}) and is stored {copies} times"),
            }
        }
        let sdk_acked = sdk_results.iter().filter(|(_, r)| r.is_ok()).count();
        assert_eq!(sdk_acked, SENDERS * PER_SENDER, "every SDK send is acknowledged in the end: {:?}", sdk_results.iter().filter(|(_, r)| r.is_err()).collect::<Vec<_>>());

        // The raw session's: acknowledged ones stored where the ack said; the others once
        // or not at all.
        let raw_log = raw_log.lock().unwrap().clone();
        let (mut raw_acked, mut raw_unacked_stored, mut raw_unacked_absent) = (0, 0, 0);
        for (cmid, (body, ack)) in &raw_log {
            let stored = by_cmid.get(cmid.as_str()).map_or(&[][..], Vec::as_slice);
            assert!(stored.len() <= 1, "{body} stored {} times", stored.len());
            match ack {
                Some(a) => {
                    raw_acked += 1;
                    let s = stored.first().unwrap_or_else(|| panic!("{body} was acknowledged as seq {} and is lost", a.seq));
                    assert_eq!((s.seq, s.message_id.as_str(), text_of(s)), (a.seq, a.message_id.as_str(), body.as_str()));
                }
                None if stored.is_empty() => raw_unacked_absent += 1,
                None => raw_unacked_stored += 1,
            }
        }
        eprintln!(
            "{test}: {} messages after the restart; SDK: {sdk_acked} acknowledged ({duplicates} as duplicates of a send stored before the crash); raw: {raw_acked} acknowledged, unacknowledged {raw_unacked_stored} stored and {raw_unacked_absent} absent",
            history.len()
        );
        assert!(raw_acked > 0 && raw_acked < raw_log.len(), "the crash came while the raw session had sends in flight");

        // Resending every raw send with its client id stores none twice: those stored
        // answer as duplicates with their original seq, the others are stored now.
        let mut raw = RawSession::connect(m.daemon().quic_addr(), &m.ca_pem()).await.expect("a raw session after the restart");
        raw.authenticate(&m.token("rawsender", "advocate")).await.expect("raw authentication");
        for (n, (cmid, (body, _))) in raw_log.iter().enumerate() {
            let send = pb::SendMessage { conversation_id: conv.clone(), client_message_id: cmid.clone(), content: Some(text(body)), reply_to_seq: 0 };
            let answer = raw.request(10_000 + n as u64, Request::SendMessage(send)).await.expect("a resend");
            let Ev::Ack(pb::Ack { result: Some(pb::ack::Result::MessageAccepted(a)), .. }) = answer else {
                panic!("resending {body}: {answer:?}");
            };
            match by_cmid.get(cmid.as_str()).and_then(|v| v.first()) {
                Some(before) => {
                    assert!(a.duplicate, "{body} was stored before the crash; the resend must be a duplicate");
                    assert_eq!((a.seq, a.message_id.as_str()), (before.seq, before.message_id.as_str()));
                }
                None => assert!(!a.duplicate, "{body} was not stored; the resend stores it"),
            }
        }
        let after = full_history(&reader, &conv).await;
        let seqs: Vec<u64> = after.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "still gap-free");
        for cmid in raw_log.keys() {
            let copies = after.iter().filter(|msg| &msg.client_message_id == cmid).count();
            assert_eq!(copies, 1, "{cmid} stored {copies} times after the resend");
        }
        assert_eq!(after.len(), history.len() + raw_unacked_absent);
    })
    .await;
}
