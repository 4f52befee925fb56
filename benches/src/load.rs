//! The open-loop load generator behind `legalchat-load`, as a library so that the
//! end-to-end tests can run it in-process against a test daemon (a smoke test of the
//! generator itself).
//!
//! ```text
//!  admin ── CreateConversation(GROUP) × ⌈users / group-size⌉
//!  user i ── sender:   interval(users / rate) ─► send_text("load <t_sched_ns> …") ─► ack latency
//!         └─ receiver: ReceiveMessage from the other members ─► now − t_sched = delivery latency
//! ```
//!
//! Open loop: every sender ticks at its share of the rate whatever the server does, with
//! `MissedTickBehavior::Burst`, and each send is its own task (at most
//! [`LoadOptions::max_in_flight`] at once). Latencies are measured from the tick's
//! *scheduled* instant, not from when the send actually went out, so a stalled generator or
//! a full in-flight window shows up as latency instead of silently lowering the offered
//! load (no coordinated omission). Only messages scheduled after the warm-up are measured.
//! Memory is bounded: fixed-size histograms per user, merged at the end. The run ends by
//! itself: warm-up + duration + drain, under an overall deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use legalchat_sdk::{Client, ClientConfig, Event, NewConversation};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::tokens::TokenMinter;

/// The shape of the load.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadOptions {
    /// Number of users (one connection each).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Members per group conversation: each message fans out to group-size − 1 others.
    #[arg(long, default_value_t = 10)]
    pub group_size: usize,
    /// Total messages per second over all senders.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Bytes of text per message (at least the timestamp header, about 30 bytes).
    #[arg(long, default_value_t = 100)]
    pub text_bytes: usize,
    /// Most sends awaiting their ack at once, over all senders.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Seconds to wait after the last send for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// TLS server name to verify.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

impl LoadOptions {
    /// Checks the options before anything connects.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.users < 2 || self.group_size < 2 {
            bail!("--users and --group-size must be at least 2 (a group needs a sender and a recipient)");
        }
        if !(self.rate > 0.0 && self.duration > 0.0 && self.warmup >= 0.0 && self.drain >= 0.0) {
            bail!("--rate and --duration must be positive, --warmup and --drain not negative");
        }
        if self.max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        Ok(())
    }

    /// The longest a run with these options may take, setup included.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(120) + Duration::from_secs_f64(self.warmup + self.duration + 2.0 * self.drain)
    }
}

/// The daemon to load.
#[derive(Clone)]
pub struct Target {
    /// Its QUIC address.
    pub server: SocketAddr,
    /// PEM of the certificate to trust.
    pub ca_pem: Vec<u8>,
    /// Its HS256 secret, to mint tokens with.
    pub secret: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Target").field("server", &self.server).finish_non_exhaustive()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Users.
    pub users: usize,
    /// Members per group.
    pub group_size: usize,
    /// Offered messages per second.
    pub rate: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Text bytes per message.
    pub text_bytes: usize,
    /// How sends are paced.
    pub pacing: &'static str,
    /// Sends attempted (warm-up included).
    pub sent: u64,
    /// Sends acknowledged (warm-up included).
    pub acked: u64,
    /// Sends acknowledged that were scheduled in the measured window.
    pub acked_measured: u64,
    /// Deliveries to recipients (warm-up included).
    pub deliveries: u64,
    /// Deliveries of measured messages.
    pub deliveries_measured: u64,
    /// Deliveries the measured acks imply: acks × (group size − 1).
    pub deliveries_expected: u64,
    /// Measured acks per second.
    pub acked_per_s: f64,
    /// Measured deliveries per second.
    pub deliveries_per_s: f64,
    /// Scheduled instant → ack.
    pub ack_latency_ms: Latency,
    /// Scheduled instant → `ReceiveMessage` at a recipient.
    pub delivery_latency_ms: Latency,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// How sends are paced (reported with every run).
pub const PACING: &str = "open loop: tokio interval with MissedTickBehavior::Burst, latency from the scheduled instant";

impl Summary {
    /// The human-readable report.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "legalchat-load: {} users, groups of {}, offered {} msg/s, {} s measured after {} s warm-up, {} B texts",
            self.users, self.group_size, self.rate, self.duration_s, self.warmup_s, self.text_bytes
        ));
        line(format!("  pacing: {}", self.pacing));
        line(format!("  messages: sent {} acked {} (measured window: acked {})", self.sent, self.acked, self.acked_measured));
        line(format!("  deliveries: {} (measured {} of {} expected)", self.deliveries, self.deliveries_measured, self.deliveries_expected));
        line(format!("  throughput: {:.1} msgs/s acked, {:.1} deliveries/s", self.acked_per_s, self.deliveries_per_s));
        let a = &self.ack_latency_ms;
        line(format!("  ack latency ms: p50 {:.3} p99 {:.3} p99.9 {:.3} (n={})", a.p50, a.p99, a.p999, a.count));
        let d = &self.delivery_latency_ms;
        line(format!("  delivery latency ms: p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (n={})", d.p50, d.p99, d.p999, d.max, d.count));
        if self.errors.is_empty() {
            line("  errors: none".into());
        } else {
            line("  errors:".into());
            for (kind, n) in &self.errors {
                line(format!("    {kind}: {n}"));
            }
        }
        out
    }

    /// The one-line JSON summary.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US)
}

/// Counters and the ack histogram of one sender; merged at the end.
#[derive(Debug)]
struct SenderStats {
    sent: u64,
    acked: u64,
    acked_measured: u64,
    ack_latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl SenderStats {
    fn new() -> Self {
        Self { sent: 0, acked: 0, acked_measured: 0, ack_latency: histogram(), errors: BTreeMap::new() }
    }
}

/// Counters and the delivery histogram of one receiver.
#[derive(Debug)]
struct ReceiverStats {
    deliveries: u64,
    deliveries_measured: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// Shared clock and phase boundaries. Every timestamp in a message text is nanoseconds
/// since `base`, comparable because senders and receivers live in this one process.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Clock {
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A short name for an error, to count errors by kind.
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

fn bump(map: &mut BTreeMap<String, u64>, kind: String, n: u64) {
    *map.entry(kind).or_default() += n;
}

/// The text of a message scheduled at `nanos`: a parseable header, padded to `len` bytes.
pub fn message_text(nanos: u64, sender: usize, n: u64, len: usize) -> String {
    let mut text = format!("load {nanos} u{sender} #{n} ");
    if text.len() < len {
        text.extend(std::iter::repeat_n('x', len - text.len()));
    }
    text
}

/// The scheduled instant a load message carries, if it is one.
pub fn scheduled_nanos(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    (words.next()? == "load").then_some(())?;
    words.next()?.parse().ok()
}

/// Partitions `users` into groups of `size`; a remainder too small to talk is folded into
/// the last full group.
pub fn partition(users: usize, size: usize) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..users).collect();
    let mut groups: Vec<Vec<usize>> = all.chunks(size.max(1)).map(<[usize]>::to_vec).collect();
    if groups.len() > 1 && groups.last().is_some_and(|g| g.len() < 2) {
        let rest = groups.pop().unwrap_or_default();
        if let Some(last) = groups.last_mut() {
            last.extend(rest);
        }
    }
    groups
}

async fn connect(target: &Target, server_name: &str, token: String) -> anyhow::Result<Client> {
    let config = ClientConfig::new(target.server, token).with_ca_pem(target.ca_pem.clone()).with_server_name(server_name);
    Ok(Client::connect(config).await?)
}

/// Runs the load against `target` and returns what it measured. Progress goes to stderr.
pub async fn run(opts: &LoadOptions, target: &Target) -> anyhow::Result<Summary> {
    opts.validate()?;
    let deadline = opts.deadline();
    tokio::time::timeout(deadline, run_unbounded(opts, target))
        .await
        .map_err(|_| anyhow::anyhow!("the run did not finish within {deadline:?}; aborted"))?
}

async fn run_unbounded(opts: &LoadOptions, target: &Target) -> anyhow::Result<Summary> {
    let minter = TokenMinter::new(&target.secret);
    // A fresh prefix per run, so that runs against one long-lived server do not mix.
    let run_id: u32 = rand::random();
    let user_ids: Vec<String> = (0..opts.users).map(|i| format!("load-{run_id:08x}-u{i}")).collect();
    let groups = partition(opts.users, opts.group_size);

    eprintln!("setting up {} users in {} groups on {}", opts.users, groups.len(), target.server);
    let admin = connect(target, &opts.server_name, minter.token(&format!("load-{run_id:08x}-admin"), "admin")?)
        .await
        .context("connecting the admin")?;
    let mut conversation_of = vec![String::new(); opts.users];
    let mut recipients_of = vec![0u64; opts.users];
    for (g, members) in groups.iter().enumerate() {
        let participants: Vec<String> = members.iter().map(|&i| user_ids[i].clone()).collect();
        let conv = admin
            .create_conversation(NewConversation::group(format!("load group {g}"), participants))
            .await
            .with_context(|| format!("creating group {g}"))?;
        for &i in members {
            conversation_of[i].clone_from(&conv.id);
            recipients_of[i] = (members.len() - 1) as u64;
        }
    }
    admin.close().await;

    // Connect every user, a bounded number at a time.
    let connecting = Arc::new(Semaphore::new(32));
    let mut handles = Vec::with_capacity(opts.users);
    for id in &user_ids {
        let token = minter.token(id, "advocate")?;
        let (target, name, permits) = (target.clone(), opts.server_name.clone(), connecting.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            connect(&target, &name, token).await
        }));
    }
    let mut clients = Vec::with_capacity(opts.users);
    for (i, h) in handles.into_iter().enumerate() {
        clients.push(h.await?.with_context(|| format!("connecting {}", user_ids[i]))?);
    }
    eprintln!("connected {} users; warming up for {} s, then measuring for {} s", clients.len(), opts.warmup, opts.duration);

    let base = Instant::now();
    let measure_from = base + Duration::from_secs_f64(opts.warmup);
    let clock = Clock { base, measure_from, end: measure_from + Duration::from_secs_f64(opts.duration) };
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered_measured = Arc::new(AtomicU64::new(0));
    let delivery_progress = Arc::new(Notify::new());

    // Receivers: one task per user, recording every message from someone else.
    let mut receivers = Vec::with_capacity(opts.users);
    for (i, client) in clients.iter().enumerate() {
        let (client, me, mut stop) = (client.clone(), user_ids[i].clone(), stop_rx.clone());
        let (counter, progress) = (delivered_measured.clone(), delivery_progress.clone());
        receivers.push(tokio::spawn(async move {
            let mut stats = ReceiverStats { deliveries: 0, deliveries_measured: 0, latency: histogram(), errors: BTreeMap::new() };
            let measure_from = clock.nanos(clock.measure_from);
            loop {
                let event = tokio::select! {
                    event = client.next_event() => event,
                    _ = stop.changed() => break,
                };
                match event {
                    Some(Event::Message(m)) if m.sender_id != me => {
                        let now = Instant::now();
                        stats.deliveries += 1;
                        let Some(sent_at) = m.content.as_ref().and_then(|c| scheduled_nanos(&c.text)) else { continue };
                        if sent_at >= measure_from {
                            stats.deliveries_measured += 1;
                            stats.latency.saturating_record(micros(Duration::from_nanos(clock.nanos(now).saturating_sub(sent_at))));
                            counter.fetch_add(1, Ordering::Relaxed);
                            progress.notify_waiters();
                        }
                    }
                    Some(Event::Goodbye { code, .. }) => bump(&mut stats.errors, format!("goodbye:{}", code.as_str_name()), 1),
                    Some(Event::Closed { .. }) | None => {
                        bump(&mut stats.errors, "session closed".into(), 1);
                        break;
                    }
                    Some(_) => {}
                }
            }
            stats
        }));
    }

    // Senders: user i ticks every `users / rate` seconds, phase-shifted by i/users of a
    // period so that the senders do not all fire at once.
    let period = Duration::from_secs_f64(opts.users as f64 / opts.rate);
    let in_flight = Arc::new(Semaphore::new(opts.max_in_flight.min(Semaphore::MAX_PERMITS)));
    let mut senders = Vec::with_capacity(opts.users);
    for (i, client) in clients.iter().enumerate() {
        let (client, conversation, in_flight, text_bytes) =
            (client.clone(), conversation_of[i].clone(), in_flight.clone(), opts.text_bytes);
        let offset = period.mul_f64(i as f64 / opts.users as f64);
        senders.push(tokio::spawn(async move {
            let stats = Arc::new(Mutex::new(SenderStats::new()));
            let mut ticker = tokio::time::interval_at(clock.base + offset, period);
            // Burst: ticks missed while this task was not scheduled fire at once, each with
            // its own scheduled instant, so the offered load stays what was asked for.
            ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut n = 0u64;
            loop {
                let scheduled = ticker.tick().await;
                if scheduled >= clock.end {
                    break;
                }
                n += 1;
                let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                let text = message_text(clock.nanos(scheduled), i, n, text_bytes);
                let (client, conversation, stats) = (client.clone(), conversation.clone(), stats.clone());
                tokio::spawn(async move {
                    let result = client.send_text(&conversation, &text).await;
                    let now = Instant::now();
                    let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
                    s.sent += 1;
                    match result {
                        Ok(_) => {
                            s.acked += 1;
                            if scheduled >= clock.measure_from {
                                s.acked_measured += 1;
                                s.ack_latency.saturating_record(micros(now - scheduled));
                            }
                        }
                        Err(e) => bump(&mut s.errors, error_kind(&e), 1),
                    }
                    drop(permit);
                });
            }
            stats
        }));
    }
    let mut sender_stats = Vec::with_capacity(opts.users);
    for s in senders {
        sender_stats.push(s.await?);
    }

    // Drain: wait (bounded) for every send to be answered, then for the deliveries the
    // measured acks imply.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(opts.drain);
    let all_permits = u32::try_from(opts.max_in_flight.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let acks_drained = tokio::time::timeout_at(drain_deadline, in_flight.acquire_many(all_permits)).await.is_ok();
    let mut totals = SenderStats::new();
    let mut expected = 0u64;
    for (i, s) in sender_stats.iter().enumerate() {
        let s = s.lock().unwrap_or_else(PoisonError::into_inner);
        totals.sent += s.sent;
        totals.acked += s.acked;
        totals.acked_measured += s.acked_measured;
        totals.ack_latency.add(&s.ack_latency).context("merging histograms")?;
        for (k, v) in &s.errors {
            bump(&mut totals.errors, k.clone(), *v);
        }
        expected += s.acked_measured * recipients_of[i];
    }
    let deliveries_drained = tokio::time::timeout_at(drain_deadline, async {
        loop {
            // Registered before the check, so a delivery between check and wait is not missed.
            let progressed = delivery_progress.notified();
            if delivered_measured.load(Ordering::Relaxed) >= expected {
                break;
            }
            progressed.await;
        }
    })
    .await
    .is_ok();

    let _ = stop_tx.send(true);
    let (mut deliveries, mut deliveries_measured, mut delivery_latency) = (0u64, 0u64, histogram());
    for r in receivers {
        let r = r.await?;
        deliveries += r.deliveries;
        deliveries_measured += r.deliveries_measured;
        delivery_latency.add(&r.latency).context("merging histograms")?;
        for (k, v) in r.errors {
            bump(&mut totals.errors, k, v);
        }
    }
    for c in &clients {
        c.close().await;
    }
    if !acks_drained {
        bump(&mut totals.errors, "acks outstanding at end of drain".into(), 1);
    }
    if !deliveries_drained {
        bump(&mut totals.errors, "deliveries missing at end of drain".into(), expected.saturating_sub(deliveries_measured));
    }

    Ok(Summary {
        users: opts.users,
        group_size: opts.group_size,
        rate: opts.rate,
        duration_s: opts.duration,
        warmup_s: opts.warmup,
        text_bytes: opts.text_bytes,
        pacing: PACING,
        sent: totals.sent,
        acked: totals.acked,
        acked_measured: totals.acked_measured,
        deliveries,
        deliveries_measured,
        deliveries_expected: expected,
        acked_per_s: totals.acked_measured as f64 / opts.duration,
        deliveries_per_s: deliveries_measured as f64 / opts.duration,
        ack_latency_ms: Latency::of(&totals.ack_latency),
        delivery_latency_ms: Latency::of(&delivery_latency),
        errors: totals.errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_texts_carry_their_schedule() {
        let t = message_text(123_456_789, 7, 3, 100);
        assert_eq!(t.len(), 100);
        assert_eq!(scheduled_nanos(&t), Some(123_456_789));
        assert_eq!(scheduled_nanos("hello world"), None);
        assert_eq!(scheduled_nanos(&message_text(5, 1, 1, 0)), Some(5));
    }

    #[test]
    fn users_are_partitioned_into_groups_that_can_talk() {
        assert_eq!(partition(10, 5), vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]);
        assert_eq!(partition(11, 5), vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9, 10]]);
        assert_eq!(partition(7, 5), vec![vec![0, 1, 2, 3, 4], vec![5, 6]]);
        assert_eq!(partition(3, 10), vec![vec![0, 1, 2]]);
    }
}
