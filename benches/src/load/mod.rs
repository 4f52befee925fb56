//! The open-loop load generator behind `legalchat-load`, as a library so that the
//! end-to-end tests can run it in-process against a test daemon (a smoke test of the
//! generator itself).
//!
//! ```text
//!  Fleet::connect   users in groups (LegalChat: GROUP conversations an admin creates;
//!                   peer: Socket.IO rooms every member joins)
//!  Fleet::step      user i ── sender:   pacer(users / rate) ──► send("load <t_sched_ns> …") ─► ack latency
//!                          └─ receiver: messages from the other members ─► now − t_sched = delivery latency
//!  ramp             steps of rising rate until the p99 passes a bound (max ingest, max fan-out)
//!  scenarios        idle sessions, reconnect storm
//! ```
//!
//! Open loop: every sender sends at its share of the rate whatever the server does, on a
//! schedule one pacing thread keeps (late sends go at once), and each send is its own task (at most
//! [`LoadOptions::max_in_flight`] at once). Latencies are measured from the send's
//! *scheduled* instant, not from when the send actually went out, so a stalled generator or
//! a full in-flight window shows up as latency instead of silently lowering the offered
//! load (no coordinated omission). Only messages scheduled after the warm-up are measured.
//! Memory is bounded: fixed-size histograms per user, merged at the end. Every run ends by
//! itself: warm-up + duration + drain, under an overall deadline.

mod conn;
pub mod scenarios;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use legalchat_sdk::{Client, ClientConfig, ClientEndpoint, NewConversation, SharedConnection};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, TryAcquireError, watch};
use tokio::time::Instant;

pub use conn::{Conn, Heard, Target, Via, error_kind};

use crate::probe::{ProcessProbe, Usage};
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
    /// UDP sockets the LegalChat clients share (clients are spread over them).
    #[arg(long, default_value_t = 8)]
    pub sockets: usize,
    /// Make each user's sends a mix of events (LegalChat only): of every 20, 16 new
    /// messages, 2 reactions (added, then taken back), 1 edit and 1 delete of the user's
    /// own newest message — 80 / 10 / 5 / 5 %.
    #[arg(long)]
    pub event_mix: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            users: 100,
            group_size: 10,
            rate: 1000.0,
            duration: 10.0,
            warmup: 2.0,
            text_bytes: 100,
            max_in_flight: 10_000,
            drain: 10.0,
            sockets: 8,
            event_mix: false,
        }
    }
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
        if self.max_in_flight == 0 || self.sockets == 0 {
            bail!("--max-in-flight and --sockets must be at least 1");
        }
        Ok(())
    }

    /// The longest one measured step with these options may take.
    pub fn step_deadline(&self) -> Duration {
        Duration::from_secs(30) + Duration::from_secs_f64(self.warmup + self.duration + 2.0 * self.drain)
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
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// `p50 1.234 p99 5.678 p99.9 9.012 max 12.345 (n=100)`.
    pub fn describe(&self) -> String {
        format!("p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} (n={})", self.p50, self.p99, self.p999, self.max, self.count)
    }
}

/// What one measured step (a run at one rate) measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `legalchatd` or `socket.io peer`.
    pub server: &'static str,
    /// Users.
    pub users: usize,
    /// Members per group.
    pub group_size: usize,
    /// Live recipients of each message (group size − 1, or 0 when the other members are
    /// offline).
    pub recipients: usize,
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
    /// Scheduled instant → send handed to the client (the generator's own lateness, part of
    /// every latency below).
    pub send_lateness_ms: Latency,
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
    /// Deliveries the measured acks imply: acks × live recipients.
    pub deliveries_expected: u64,
    /// Measured acks per second.
    pub acked_per_s: f64,
    /// Measured deliveries per second.
    pub deliveries_per_s: f64,
    /// Deliveries (of anything: messages and other events) that arrived within the
    /// measured window.
    pub deliveries_in_window: u64,
    /// The server's CPU time over the measured window per delivery in it, microseconds:
    /// independent of how fast the generator is.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The server's CPU time over the measured window per send acknowledged in it,
    /// microseconds.
    pub server_cpu_us_per_ack: Option<f64>,
    /// The server's system calls over the measured window per delivery in it (`perf
    /// stat`, where it may trace).
    pub server_syscalls_per_delivery: Option<f64>,
    /// Whether sends were the 80 / 10 / 5 / 5 mix of messages, reactions, edits, deletes.
    pub event_mix: bool,
    /// Scheduled instant → ack.
    pub ack_latency_ms: Latency,
    /// Scheduled instant → message at a recipient.
    pub delivery_latency_ms: Latency,
    /// The server's CPU and memory over the measured window (when it can be probed).
    pub server_usage: Option<Usage>,
    /// The load generator's own CPU and memory over the measured window.
    pub generator_usage: Option<Usage>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// What a send of the event mix does instead of a new message (see
/// [`LoadOptions::event_mix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixedEvent {
    /// Add 👍 to the user's newest message.
    React,
    /// Take the 👍 back.
    Unreact,
    /// Replace the newest message's text.
    Edit,
    /// Delete the newest message.
    Delete,
}

impl MixedEvent {
    /// The `n`th send of a user: of every 20, 16 messages (`None`), 2 reactions, an edit
    /// and a delete.
    pub fn of(n: u64) -> Option<Self> {
        match n % 20 {
            16 => Some(Self::React),
            17 => Some(Self::Unreact),
            18 => Some(Self::Edit),
            19 => Some(Self::Delete),
            _ => None,
        }
    }
}

/// How sends are paced (reported with every run).
pub const PACING: &str = "open loop: one pacing thread on the OS's timers, late sends go at once, latency from the scheduled instant";

impl Summary {
    /// The human-readable report.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "{}: {} users, groups of {} ({} live recipients each), offered {} msg/s, {} s measured after {} s warm-up, {} B texts",
            self.server, self.users, self.group_size, self.recipients, self.rate, self.duration_s, self.warmup_s, self.text_bytes
        ));
        line(format!("  pacing: {}", self.pacing));
        line(format!("  send lateness ms (the generator's own): {}", self.send_lateness_ms.describe()));
        line(format!("  messages: sent {} acked {} (measured window: acked {})", self.sent, self.acked, self.acked_measured));
        line(format!("  deliveries: {} (measured {} of {} expected)", self.deliveries, self.deliveries_measured, self.deliveries_expected));
        line(format!("  throughput: {:.1} msgs/s acked, {:.1} deliveries/s", self.acked_per_s, self.deliveries_per_s));
        line(format!("  ack latency ms: {}", self.ack_latency_ms.describe()));
        line(format!("  delivery latency ms: {}", self.delivery_latency_ms.describe()));
        if let Some(u) = &self.server_usage {
            line(format!("  server: {}", u.describe()));
        }
        if let Some(us) = self.server_cpu_us_per_delivery {
            let what = if self.event_mix { "event (80/10/5/5 mix)" } else { "message" };
            line(format!("  server cpu per delivered {what}: {us:.1} µs ({} deliveries in the window)", self.deliveries_in_window));
        }
        if let Some(us) = self.server_cpu_us_per_ack {
            line(format!("  server cpu per acknowledged send: {us:.1} µs"));
        }
        if let Some(n) = self.server_syscalls_per_delivery {
            line(format!("  server system calls per delivery: {n:.2}"));
        }
        if let Some(u) = &self.generator_usage {
            line(format!("  load generator: {}", u.describe()));
        }
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

/// An empty latency histogram (microseconds).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// A duration in whole microseconds, clamped into the histogram's range.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US)
}

/// Latency samples of many tasks, in one histogram. Each task keeps up to [`FOLD_EVERY`]
/// samples of its own and folds them in together under the lock. (A histogram per task
/// instead, 1,000 of them of about 190 KB each, cost a cache miss on nearly every record
/// and 190 MB to set up per step.)
#[derive(Debug, Clone)]
struct LatencySink(Arc<Mutex<Histogram<u64>>>);

/// Samples a task keeps before folding them into its [`LatencySink`].
const FOLD_EVERY: usize = 512;

impl LatencySink {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(histogram())))
    }

    /// Adds `samples` (microseconds) to the histogram and empties it.
    fn fold(&self, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for us in samples.drain(..) {
            h.saturating_record(us);
        }
    }

    /// Keeps `us`, folding what `samples` holds once it is full.
    fn record(&self, samples: &mut Vec<u64>, us: u64) {
        if samples.capacity() == 0 {
            samples.reserve_exact(FOLD_EVERY);
        }
        samples.push(us);
        if samples.len() >= FOLD_EVERY {
            self.fold(samples);
        }
    }

    fn latency(&self) -> Latency {
        Latency::of(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Counters and the not yet folded ack samples of one sender; merged at the end.
#[derive(Debug, Default)]
struct SenderStats {
    sent: u64,
    acked: u64,
    acked_measured: u64,
    ack_samples: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// Counters and the not yet folded delivery samples of one receiver.
#[derive(Debug, Default)]
struct ReceiverStats {
    deliveries: u64,
    deliveries_measured: u64,
    /// Deliveries that arrived within the measured window (the window the server's CPU
    /// is probed over), whatever they carried.
    deliveries_in_window: u64,
    samples: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// Phase boundaries of one step. Every timestamp in a message text is nanoseconds since
/// the fleet's `base`, comparable because senders and receivers live in this one process.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    measure_from: Instant,
    end: Instant,
}

fn nanos_since(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// When every send of a step is due: user `i`'s `n`-th send (from 1) at
/// `start + ((n − 1) · users + i) · gap`, so that each user sends at its share of the rate
/// and the users are phase-shifted instead of firing together.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    gap: Duration,
    users: usize,
    measure_from: Instant,
    end: Instant,
}

/// The pacing thread's shortest sleep: a trade of the generator's own lateness (measured and
/// reported) against its CPU, which it shares with the server.
const MIN_WAKE: Duration = Duration::from_micros(200);

/// Keeps `schedule` on the calling (blocking) thread: sleeps until each send is due and hands
/// it to `dispatch(user, n, scheduled)`, which returns false to stop. The thread sleeps on the
/// OS's timers, which wake within tens of microseconds; the runtime's timer wheel has a
/// resolution of 1 ms, which would add up to a millisecond of the generator's own lateness
/// to every latency measured from the schedule. A send that is due while the previous ones
/// are still being handed over goes at once (a burst), so a slow generator shows up as
/// latency, never as a lower offered load. Returns how late the sends of the measured window
/// were handed over (microseconds).
fn pace(schedule: &Schedule, mut dispatch: impl FnMut(usize, u64, Instant) -> bool) -> Histogram<u64> {
    let mut lateness = histogram();
    let users = schedule.users.max(1) as u64;
    let gap_ns = schedule.gap.as_nanos();
    let mut last_wake = Instant::now();
    for k in 0u64.. {
        let offset = u64::try_from(gap_ns.saturating_mul(u128::from(k))).unwrap_or(u64::MAX);
        let scheduled = schedule.start + Duration::from_nanos(offset);
        if scheduled >= schedule.end {
            break;
        }
        let now = Instant::now();
        if scheduled > now {
            // Never wake sooner than `MIN_WAKE` after the previous wake: sends due meanwhile
            // go together, a little late (and measured so), instead of one wake-up each.
            std::thread::sleep((scheduled - now).max(MIN_WAKE.saturating_sub(now - last_wake)));
            last_wake = Instant::now();
        }
        let user = usize::try_from(k % users).unwrap_or(0);
        if !dispatch(user, k / users + 1, scheduled) {
            break;
        }
        if scheduled >= schedule.measure_from {
            lateness.saturating_record(micros(Instant::now().saturating_duration_since(scheduled)));
        }
    }
    lateness
}

/// Adds `n` to the count of `kind`.
pub fn bump(map: &mut BTreeMap<String, u64>, kind: String, n: u64) {
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

/// Who is in which conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every user online, in groups of `group_size`: each message fans out to the others.
    Groups,
    /// Each online user alone with `group_size − 1` members who never connect: messages
    /// are stored (and acknowledged) but reach nobody live. Measures durable ingest.
    OfflineMembers,
}

/// How many connections are opened at once while setting up.
const CONNECT_CONCURRENCY: usize = 64;
/// Events a load client may queue before it stops reading (the receivers keep up).
const CLIENT_EVENT_BUFFER: usize = 10_000;

/// Connects `count` users named by `user_id(i)` to `target`, a bounded number at a time,
/// LegalChat clients spread over `sockets` shared UDP sockets, and multiplexed on shared
/// connections when the target says so (consecutive users share one).
pub async fn connect_all(
    target: &Target,
    minter: &TokenMinter,
    user_ids: &[String],
    sockets: usize,
    event_buffer: usize,
    progress: bool,
) -> anyhow::Result<Vec<Arc<Conn>>> {
    let (endpoints, per_connection) = match target {
        Target::LegalChat { server, sessions_per_connection, .. } => {
            let bind: std::net::SocketAddr =
                if server.is_ipv6() { (std::net::Ipv6Addr::LOCALHOST, 0).into() } else { (std::net::Ipv4Addr::LOCALHOST, 0).into() };
            let endpoints = (0..sockets.max(1)).map(|_| ClientEndpoint::bind(bind)).collect::<Result<Vec<_>, _>>()?;
            (endpoints, (*sessions_per_connection).max(1))
        }
        Target::Peer { .. } | Target::Bridge { .. } => (Vec::new(), 1),
    };
    let shared: Vec<SharedConnection> = if per_connection > 1 && !endpoints.is_empty() {
        let n = user_ids.len().div_ceil(per_connection);
        (0..n).map(|i| SharedConnection::new(endpoints[i % endpoints.len()].clone())).collect()
    } else {
        Vec::new()
    };
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut handles = Vec::with_capacity(user_ids.len());
    for (i, id) in user_ids.iter().enumerate() {
        let token = minter.token(id, "advocate")?;
        let via = if !shared.is_empty() {
            Via::Connection(shared[i / per_connection].clone())
        } else if !endpoints.is_empty() {
            Via::Socket(endpoints[i % endpoints.len()].clone())
        } else {
            Via::Own
        };
        let (target, permits) = (target.clone(), permits.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            Conn::connect(&target, via, token, event_buffer).await
        }));
    }
    let started = Instant::now();
    let mut conns = Vec::with_capacity(user_ids.len());
    for (i, h) in handles.into_iter().enumerate() {
        conns.push(Arc::new(h.await?.with_context(|| format!("connecting {}", user_ids[i]))?));
        if progress && (i + 1) % 10_000 == 0 {
            eprintln!("  {} of {} connected ({:.1} s)", i + 1, user_ids.len(), started.elapsed().as_secs_f64());
        }
    }
    Ok(conns)
}

/// Connected users in their conversations, ready for measured steps.
#[derive(Debug)]
pub struct Fleet {
    target: Target,
    conns: Vec<Arc<Conn>>,
    user_ids: Vec<String>,
    conversation_of: Vec<String>,
    recipients_of: Vec<u64>,
    group_size: usize,
    base: Instant,
}

impl Fleet {
    /// Creates the conversations (LegalChat) or joins the rooms (peer) of `layout` and
    /// connects every user. Progress goes to stderr.
    pub async fn connect(target: &Target, opts: &LoadOptions, layout: Layout) -> anyhow::Result<Self> {
        opts.validate()?;
        let minter = TokenMinter::new(target.secret());
        // A fresh prefix per run, so that runs against one long-lived server do not mix.
        let run_id: u32 = rand::random();
        let user_ids: Vec<String> = (0..opts.users).map(|i| format!("load-{run_id:08x}-u{i}")).collect();
        let groups: Vec<Vec<String>> = match layout {
            Layout::Groups => {
                partition(opts.users, opts.group_size).into_iter().map(|g| g.into_iter().map(|i| user_ids[i].clone()).collect()).collect()
            }
            Layout::OfflineMembers => (0..opts.users)
                .map(|i| {
                    let mut g = vec![user_ids[i].clone()];
                    g.extend((1..opts.group_size).map(|k| format!("load-{run_id:08x}-u{i}-away{k}")));
                    g
                })
                .collect(),
        };
        eprintln!("setting up {} users in {} conversations on {} ({})", opts.users, groups.len(), target.addr(), target.name());

        let mut conversation_of = vec![String::new(); opts.users];
        let mut recipients_of = vec![0u64; opts.users];
        let index: BTreeMap<&str, usize> = user_ids.iter().enumerate().map(|(i, u)| (u.as_str(), i)).collect();
        let mut conversations = Vec::with_capacity(groups.len());
        if let Some((server, ca_pem, server_name)) = target.daemon() {
            let token = minter.token(&format!("load-{run_id:08x}-admin"), "admin")?;
            let config = ClientConfig::new(server, token).with_ca_pem(ca_pem.to_vec()).with_server_name(server_name);
            let admin = Client::connect(config).await.context("connecting the admin")?;
            for (g, members) in groups.iter().enumerate() {
                let conv = admin
                    .create_conversation(NewConversation::group(format!("load group {g}"), members.clone()))
                    .await
                    .with_context(|| format!("creating group {g}"))?;
                conversations.push(conv.id);
            }
            admin.close().await;
        } else {
            conversations.extend((0..groups.len()).map(|g| format!("load-{run_id:08x}-room{g}")));
        }
        for (members, conv) in groups.iter().zip(&conversations) {
            let online: Vec<usize> = members.iter().filter_map(|m| index.get(m.as_str()).copied()).collect();
            for &i in &online {
                conversation_of[i].clone_from(conv);
                recipients_of[i] = (online.len() - 1) as u64;
            }
        }

        let conns = connect_all(target, &minter, &user_ids, opts.sockets, CLIENT_EVENT_BUFFER, true).await?;
        for (i, c) in conns.iter().enumerate() {
            c.join(&conversation_of[i]).await.with_context(|| format!("{} joining its room", user_ids[i]))?;
        }
        eprintln!("connected {} users", conns.len());
        Ok(Self {
            target: target.clone(),
            conns,
            user_ids,
            conversation_of,
            recipients_of,
            group_size: opts.group_size,
            base: Instant::now(),
        })
    }

    /// Runs one step at `opts.rate` for `opts.warmup` + `opts.duration` (+ drain) and
    /// returns what it measured; `server` is probed over the measured window.
    pub async fn step(&self, opts: &LoadOptions, server: Option<ProcessProbe>) -> anyhow::Result<Summary> {
        opts.validate()?;
        let deadline = opts.step_deadline();
        tokio::time::timeout(deadline, self.step_unbounded(opts, server))
            .await
            .map_err(|_| anyhow::anyhow!("the step did not finish within {deadline:?}; aborted"))?
    }

    async fn step_unbounded(&self, opts: &LoadOptions, server: Option<ProcessProbe>) -> anyhow::Result<Summary> {
        let users = self.conns.len();
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(opts.warmup);
        let clock = Clock { base: self.base, measure_from, end: measure_from + Duration::from_secs_f64(opts.duration) };
        let (stop_tx, stop_rx) = watch::channel(false);
        let delivered_measured = Arc::new(AtomicU64::new(0));
        let delivery_progress = Arc::new(Notify::new());
        // Receivers wake the drain only once it waits: a wake-up per delivery costs the
        // generator a lock each, a million times a second at high fan-out.
        let draining = Arc::new(AtomicBool::new(false));
        let usage = tokio::spawn(probe_window(server, clock.measure_from, clock.end));

        // Receivers: one task per user, recording every message from someone else.
        let (delivery_sink, ack_sink) = (LatencySink::new(), LatencySink::new());
        let mut receivers = Vec::with_capacity(users);
        for (i, conn) in self.conns.iter().enumerate() {
            let (conn, me, mut stop) = (conn.clone(), self.user_ids[i].clone(), stop_rx.clone());
            let (counter, progress, draining) = (delivered_measured.clone(), delivery_progress.clone(), draining.clone());
            let sink = delivery_sink.clone();
            receivers.push(tokio::spawn(async move {
                let mut stats = ReceiverStats::default();
                let measure_from = nanos_since(clock.base, clock.measure_from);
                // One wait for the stop signal for the whole loop: a fresh one per delivery
                // would register with (and leave) the channel shared by every receiver each time.
                let stopped = stop.changed();
                tokio::pin!(stopped);
                loop {
                    let heard = tokio::select! {
                        heard = conn.next() => heard,
                        _ = &mut stopped => break,
                    };
                    match heard {
                        Heard::Message { sender, text, .. } if sender != me => {
                            let now = Instant::now();
                            stats.deliveries += 1;
                            if now >= clock.measure_from && now <= clock.end {
                                stats.deliveries_in_window += 1;
                            }
                            let Some(sent_at) = scheduled_nanos(&text) else { continue };
                            if sent_at >= measure_from {
                                stats.deliveries_measured += 1;
                                let latency = Duration::from_nanos(nanos_since(clock.base, now).saturating_sub(sent_at));
                                sink.record(&mut stats.samples, micros(latency));
                                counter.fetch_add(1, Ordering::SeqCst);
                                if draining.load(Ordering::SeqCst) {
                                    progress.notify_waiters();
                                }
                            }
                        }
                        Heard::Error(kind) => bump(&mut stats.errors, kind, 1),
                        Heard::Closed => {
                            bump(&mut stats.errors, "session closed".into(), 1);
                            break;
                        }
                        Heard::Message { .. } | Heard::Resumed | Heard::Other => {}
                    }
                }
                sink.fold(&mut stats.samples);
                stats
            }));
        }

        // Senders: one pacing thread keeps every user's schedule (see `pace`); each send is
        // then a task of its own on the runtime.
        let in_flight = Arc::new(Semaphore::new(opts.max_in_flight.min(Semaphore::MAX_PERMITS)));
        let sender_stats: Arc<[Mutex<SenderStats>]> = (0..users).map(|_| Mutex::new(SenderStats::default())).collect();
        let schedule = Schedule { start, gap: Duration::from_secs_f64(1.0 / opts.rate), users, measure_from, end: clock.end };
        let runtime = tokio::runtime::Handle::current();
        let (conns, conversations, stats, text_bytes, acks) =
            (self.conns.clone(), self.conversation_of.clone(), sender_stats.clone(), opts.text_bytes, ack_sink.clone());
        // Each user's newest message of their own, the target of their mixed events.
        let own: Arc<[AtomicU64]> = (0..users).map(|_| AtomicU64::new(0)).collect();
        let event_mix = opts.event_mix;
        let permits = in_flight.clone();
        let give_up = clock.end + Duration::from_secs_f64(opts.drain);
        let lateness = tokio::task::spawn_blocking(move || {
            pace(&schedule, |i, n, scheduled| {
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // A full window waits, but not past the end of the drain: a server that
                    // stopped answering must not keep the pacer (and the process) forever.
                    Err(TryAcquireError::NoPermits) => {
                        match runtime.block_on(tokio::time::timeout_at(give_up, permits.clone().acquire_owned())) {
                            Ok(Ok(p)) => p,
                            Ok(Err(_)) | Err(_) => return false,
                        }
                    }
                    Err(TryAcquireError::Closed) => return false,
                };
                let text = message_text(nanos_since(clock.base, scheduled), i, n, text_bytes);
                let (conn, conversation, stats, acks) = (conns[i].clone(), conversations[i].clone(), stats.clone(), acks.clone());
                let own = own.clone();
                runtime.spawn(async move {
                    let target = own[i].load(Ordering::Relaxed);
                    let action = if event_mix && target > 0 { MixedEvent::of(n) } else { None };
                    let result = match action {
                        Some(action) => {
                            if action == MixedEvent::Delete {
                                own[i].store(0, Ordering::Relaxed);
                            }
                            conn.act(&conversation, target, action, &text).await
                        }
                        None => {
                            let r = conn.send(&conversation, &text).await;
                            if let Ok(seq) = r {
                                own[i].fetch_max(seq, Ordering::Relaxed);
                            }
                            r
                        }
                    };
                    let now = Instant::now();
                    let mut guard = stats[i].lock().unwrap_or_else(PoisonError::into_inner);
                    let s = &mut *guard;
                    s.sent += 1;
                    // Only what carries the send's timestamp to its recipients (messages,
                    // edits) is measured end to end.
                    let timed = action.is_none_or(|a| a == MixedEvent::Edit);
                    match result {
                        Ok(_) => {
                            s.acked += 1;
                            if scheduled >= clock.measure_from && timed {
                                s.acked_measured += 1;
                                acks.record(&mut s.ack_samples, micros(now - scheduled));
                            }
                        }
                        Err(kind) => bump(&mut s.errors, kind, 1),
                    }
                    drop(permit);
                });
                true
            })
        })
        .await?;

        // Drain: wait (bounded) for every send to be answered, then for the deliveries the
        // measured acks imply.
        let drain_deadline = Instant::now() + Duration::from_secs_f64(opts.drain);
        let all_permits = u32::try_from(opts.max_in_flight.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let acks_drained = tokio::time::timeout_at(drain_deadline, in_flight.acquire_many(all_permits)).await.is_ok();
        let mut totals = SenderStats::default();
        let mut expected = 0u64;
        for (i, s) in sender_stats.iter().enumerate() {
            let mut s = s.lock().unwrap_or_else(PoisonError::into_inner);
            totals.sent += s.sent;
            totals.acked += s.acked;
            totals.acked_measured += s.acked_measured;
            ack_sink.fold(&mut s.ack_samples);
            for (k, v) in &s.errors {
                bump(&mut totals.errors, k.clone(), *v);
            }
            expected += s.acked_measured * self.recipients_of[i];
        }
        draining.store(true, Ordering::SeqCst);
        let deliveries_drained = tokio::time::timeout_at(drain_deadline, async {
            loop {
                // Registered before the check, so a delivery between check and wait is not missed.
                let progressed = delivery_progress.notified();
                // SeqCst with the receivers' count-then-check: one that counts after this load
                // sees `draining` and wakes us.
                if delivered_measured.load(Ordering::SeqCst) >= expected {
                    break;
                }
                progressed.await;
            }
        })
        .await
        .is_ok();

        let _ = stop_tx.send(true);
        let (mut deliveries, mut deliveries_measured, mut deliveries_in_window) = (0u64, 0u64, 0u64);
        for r in receivers {
            let r = r.await?;
            deliveries += r.deliveries;
            deliveries_measured += r.deliveries_measured;
            deliveries_in_window += r.deliveries_in_window;
            for (k, v) in r.errors {
                bump(&mut totals.errors, k, v);
            }
        }
        if !acks_drained {
            bump(&mut totals.errors, "acks outstanding at end of drain".into(), 1);
        }
        if !deliveries_drained {
            bump(&mut totals.errors, "deliveries missing at end of drain".into(), expected.saturating_sub(deliveries_measured));
        }
        let (server_usage, generator_usage) = usage.await?;

        Ok(Summary {
            server: self.target.name(),
            users,
            group_size: self.group_size,
            recipients: usize::try_from(self.recipients_of.first().copied().unwrap_or(0)).unwrap_or(usize::MAX),
            rate: opts.rate,
            duration_s: opts.duration,
            warmup_s: opts.warmup,
            text_bytes: opts.text_bytes,
            event_mix: opts.event_mix,
            pacing: PACING,
            send_lateness_ms: Latency::of(&lateness),
            sent: totals.sent,
            acked: totals.acked,
            acked_measured: totals.acked_measured,
            deliveries,
            deliveries_measured,
            deliveries_expected: expected,
            acked_per_s: totals.acked_measured as f64 / opts.duration,
            deliveries_per_s: deliveries_measured as f64 / opts.duration,
            deliveries_in_window,
            server_cpu_us_per_delivery: server_usage
                .as_ref()
                .filter(|_| deliveries_in_window > 0)
                .map(|u| u.cpu_seconds * 1e6 / deliveries_in_window as f64),
            server_cpu_us_per_ack: server_usage
                .as_ref()
                .filter(|_| totals.acked_measured > 0)
                .map(|u| u.cpu_seconds * 1e6 / totals.acked_measured as f64),
            server_syscalls_per_delivery: server_usage
                .as_ref()
                .and_then(|u| u.syscalls)
                .filter(|_| deliveries_in_window > 0)
                .map(|n| n as f64 / deliveries_in_window as f64),
            ack_latency_ms: ack_sink.latency(),
            delivery_latency_ms: delivery_sink.latency(),
            server_usage,
            generator_usage,
            errors: totals.errors,
        })
    }

    /// Closes every connection.
    pub async fn close(self) {
        for c in &self.conns {
            c.close().await;
        }
    }
}

/// Samples the server (when given) and this process at `from` and at `to`.
async fn probe_window(server: Option<ProcessProbe>, from: Instant, to: Instant) -> (Option<Usage>, Option<Usage>) {
    let me = ProcessProbe::this_process().ok();
    tokio::time::sleep_until(from).await;
    let syscalls = server.and_then(|p| p.count_syscalls());
    let start = (server.and_then(|p| p.sample().ok()), me.and_then(|p| p.sample().ok()));
    tokio::time::sleep_until(to).await;
    let end = (server.and_then(|p| p.sample().ok()), me.and_then(|p| p.sample().ok()));
    let syscalls = match syscalls {
        Some(count) => count.finish().await,
        None => None,
    };
    let usage = |a: Option<crate::probe::Sample>, b: Option<crate::probe::Sample>| Some(ProcessProbe::usage(&a?, &b?));
    let server = usage(start.0, end.0).map(|u| Usage { syscalls, ..u });
    (server, usage(start.1, end.1))
}

/// One step against `target`: connects a fleet in groups, measures, closes.
pub async fn run(opts: &LoadOptions, target: &Target, server: Option<ProcessProbe>) -> anyhow::Result<Summary> {
    opts.validate()?;
    let fleet = tokio::time::timeout(Duration::from_secs(300), Fleet::connect(target, opts, Layout::Groups))
        .await
        .map_err(|_| anyhow::anyhow!("setting up {} users took more than 300 s; aborted", opts.users))??;
    eprintln!("warming up for {} s, then measuring for {} s", opts.warmup, opts.duration);
    let summary = fleet.step(opts, server).await;
    fleet.close().await;
    summary
}

/// What a ramp looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RampMetric {
    /// Acknowledged (durable) messages per second, bounded by the ack p99.
    Ingest,
    /// Deliveries per second, bounded by the delivery p99.
    Fanout,
}

/// A ramp: steps of rising rate until the p99 passes `max_p99_ms`.
#[derive(Debug, Clone, clap::Args)]
pub struct RampOptions {
    /// Messages per second of the first step.
    #[arg(long, default_value_t = 5_000.0)]
    pub start_rate: f64,
    /// Each step offers this many times the previous step's rate.
    #[arg(long, default_value_t = 1.25)]
    pub step_factor: f64,
    /// Stop after a step at or above this rate.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// A step passes while its p99 (ack for ingest, delivery for fan-out) stays at or under this many ms.
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
}

/// What a ramp found.
#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    /// What was ramped.
    pub metric: RampMetric,
    /// The p99 bound, ms.
    pub max_p99_ms: f64,
    /// Every step, in order.
    pub steps: Vec<Summary>,
    /// Index of the highest passing step.
    pub best: Option<usize>,
}

impl RampReport {
    /// Why a step fails, if it does.
    fn failure(metric: RampMetric, max_p99_ms: f64, s: &Summary) -> Option<String> {
        if !s.errors.is_empty() {
            return Some(format!("errors {:?}", s.errors));
        }
        let p99 = match metric {
            RampMetric::Ingest => s.ack_latency_ms.p99,
            RampMetric::Fanout => s.delivery_latency_ms.p99,
        };
        if p99 > max_p99_ms {
            return Some(format!("p99 {p99:.1} ms > {max_p99_ms} ms"));
        }
        if s.acked_per_s < 0.97 * s.rate {
            return Some(format!("acknowledged {:.0} of {:.0} msgs/s offered", s.acked_per_s, s.rate));
        }
        None
    }

    /// One line per step, then the result.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.steps.iter().enumerate() {
            let verdict = Self::failure(self.metric, self.max_p99_ms, s).unwrap_or_else(|| "pass".into());
            let server = s.server_usage.map(|u| format!(", server cpu {:.2} RSS {:.0} MiB", u.cpu_cores, u.rss_mib)).unwrap_or_default();
            out.push_str(&format!(
                "  step {}: offered {:.0} msgs/s: acked {:.0}/s, {:.0} deliveries/s; ack p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms; delivery p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms{}: {}\n",
                i + 1,
                s.rate,
                s.acked_per_s,
                s.deliveries_per_s,
                s.ack_latency_ms.p50,
                s.ack_latency_ms.p99,
                s.ack_latency_ms.p999,
                s.delivery_latency_ms.p50,
                s.delivery_latency_ms.p99,
                s.delivery_latency_ms.p999,
                server,
                verdict
            ));
        }
        match self.best.and_then(|b| self.steps.get(b)) {
            Some(best) => {
                let what = match self.metric {
                    RampMetric::Ingest => format!("max ingest {:.0} acknowledged msgs/s (durable only if the server is)", best.acked_per_s),
                    RampMetric::Fanout => format!("max fan-out {:.0} deliveries/s ({:.0} msgs/s)", best.deliveries_per_s, best.acked_per_s),
                };
                out.push_str(&format!("result ({}): {what} with p99 ≤ {} ms; that step in full:\n", best.server, self.max_p99_ms));
                out.push_str(&best.report());
            }
            None => out.push_str(&format!("result: no step passed (p99 ≤ {} ms without errors)\n", self.max_p99_ms)),
        }
        out
    }
}

/// Ramps the rate on `fleet` from `ramp.start_rate` until a step fails (p99 over the
/// bound, errors, or under 97 % of the offered rate acknowledged) or `ramp.max_rate`.
pub async fn ramp(
    fleet: &Fleet,
    opts: &LoadOptions,
    ramp: &RampOptions,
    metric: RampMetric,
    server: Option<ProcessProbe>,
) -> anyhow::Result<RampReport> {
    if !(ramp.start_rate > 0.0 && ramp.step_factor > 1.0 && ramp.max_p99_ms > 0.0) {
        bail!("--start-rate and --max-p99-ms must be positive and --step-factor above 1");
    }
    let mut report = RampReport { metric, max_p99_ms: ramp.max_p99_ms, steps: Vec::new(), best: None };
    let mut rate = ramp.start_rate;
    loop {
        let step_opts = LoadOptions { rate, ..opts.clone() };
        eprintln!("step {}: {rate:.0} msgs/s for {} s (+{} s warm-up)", report.steps.len() + 1, opts.duration, opts.warmup);
        let summary = fleet.step(&step_opts, server).await?;
        let failure = RampReport::failure(metric, ramp.max_p99_ms, &summary);
        eprintln!(
            "  acked {:.0}/s, {:.0} deliveries/s, ack p99 {:.2} ms, delivery p99 {:.2} ms: {}",
            summary.acked_per_s,
            summary.deliveries_per_s,
            summary.ack_latency_ms.p99,
            summary.delivery_latency_ms.p99,
            failure.as_deref().unwrap_or("pass")
        );
        report.steps.push(summary);
        if failure.is_some() {
            break;
        }
        report.best = Some(report.steps.len() - 1);
        if rate >= ramp.max_rate {
            break;
        }
        rate = (rate * ramp.step_factor).min(ramp.max_rate);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_keeps_every_users_schedule_in_order_and_stops_at_the_end() {
        let start = Instant::now();
        let gap = Duration::from_micros(500);
        let schedule = Schedule { start, gap, users: 3, measure_from: start + gap * 6, end: start + gap * 10 };
        let mut seen = Vec::new();
        let lateness = pace(&schedule, |user, n, scheduled| {
            assert!(Instant::now() >= scheduled, "a send went out before it was due");
            seen.push((user, n, scheduled - start));
            true
        });
        let expected: Vec<(usize, u64, Duration)> = (0..10u32).map(|k| ((k % 3) as usize, u64::from(k / 3 + 1), gap * k)).collect();
        assert_eq!(seen, expected);
        // Only the sends of the measured window count toward the generator's lateness.
        assert_eq!(lateness.len(), 4);

        let mut calls = 0;
        pace(&schedule, |_, _, _| {
            calls += 1;
            calls < 2
        });
        assert_eq!(calls, 2, "dispatch returning false stops the pacer");
    }

    #[test]
    fn a_latency_sink_counts_every_sample_of_every_task_once() {
        let sink = LatencySink::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // `a` fills up twice and folds on its own; `b` never does until told.
        for us in 1..=(2 * FOLD_EVERY as u64) {
            sink.record(&mut a, us);
        }
        assert!(a.is_empty(), "a full buffer is folded at once");
        for _ in 0..10 {
            sink.record(&mut b, 1_000_000);
        }
        assert_eq!(sink.latency().count, 2 * FOLD_EVERY as u64, "what a task still holds is not in yet");
        sink.fold(&mut b);
        sink.fold(&mut b);
        let l = sink.latency();
        assert_eq!(l.count, 2 * FOLD_EVERY as u64 + 10, "folding twice adds nothing");
        assert!((l.max - 1000.0).abs() < 1.0, "b's samples are the slowest: {}", l.max);
        assert!((l.p50 - FOLD_EVERY as f64 / 1000.0).abs() < 0.01, "median of 1..=2·FOLD_EVERY µs: {}", l.p50);
    }

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

    fn step(rate: f64, acked: f64, ack_p99: f64, delivery_p99: f64, errors: &[(&str, u64)]) -> Summary {
        let latency = |p99| Latency { count: 1, p50: 0.1, p99, p999: p99, max: p99 };
        Summary {
            server: "legalchatd",
            users: 10,
            group_size: 10,
            recipients: 9,
            rate,
            duration_s: 1.0,
            warmup_s: 0.0,
            text_bytes: 100,
            pacing: PACING,
            send_lateness_ms: Latency::of(&histogram()),
            sent: 0,
            acked: 0,
            acked_measured: 0,
            deliveries: 0,
            deliveries_measured: 0,
            deliveries_expected: 0,
            acked_per_s: acked,
            deliveries_per_s: acked * 9.0,
            deliveries_in_window: 0,
            server_cpu_us_per_delivery: None,
            server_cpu_us_per_ack: None,
            server_syscalls_per_delivery: None,
            event_mix: false,
            ack_latency_ms: latency(ack_p99),
            delivery_latency_ms: latency(delivery_p99),
            server_usage: None,
            generator_usage: None,
            errors: errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn a_ramp_step_fails_on_its_own_metric_errors_or_a_shortfall() {
        let fails = |m, s: &Summary| RampReport::failure(m, 50.0, s);
        let fast_acks_slow_deliveries = step(1000.0, 1000.0, 5.0, 80.0, &[]);
        assert!(fails(RampMetric::Ingest, &fast_acks_slow_deliveries).is_none());
        assert!(fails(RampMetric::Fanout, &fast_acks_slow_deliveries).unwrap().contains("p99 80.0"));
        assert!(fails(RampMetric::Ingest, &step(1000.0, 900.0, 5.0, 5.0, &[])).unwrap().contains("acknowledged 900"));
        assert!(fails(RampMetric::Ingest, &step(1000.0, 1000.0, 5.0, 5.0, &[("timeout", 1)])).unwrap().contains("timeout"));
    }
}
