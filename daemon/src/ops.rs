//! The ops HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/readyz` (the daemon accepts sessions; 503 while starting or shutting down).
//!
//! Metrics are recorded where things happen, through the `metrics` facade; `describe`
//! names every one of them with its meaning (the `# HELP` lines, and the table in
//! `docs/observability.md`). What costs nothing until someone asks — mailbox depths, the
//! process's CPU time and memory — is sampled here, when `/metrics` is scraped.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::shard::Shards;

/// Latency buckets in seconds: 50 µs .. 5 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Batch size buckets.
const SIZE_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Installs the process-wide metrics recorder (once; later calls reuse it).
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("legalchat_write_batch_w".into()), &SIZE_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Prefix("legalchat_write_batch_m".into()), &SIZE_BUCKETS));
            match builder.map(|b| b.build_recorder()) {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder is installed (embedding); then our
                    // handle renders an empty page rather than taking the process down.
                    if metrics::set_global_recorder(recorder).is_ok() {
                        start_upkeep(handle.clone());
                    }
                    describe();
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Handles of the metrics recorded for every message, registered once. Through the macros
/// each record looks its metric up again (hashing the name and labels) and allocates its
/// key: 36 allocations per message of the seed load, before these handles.
///
/// The `stage_*` histograms time one stage of a message's path each: `receive` (frame
/// decoded → handed to the shard), `queue` (waiting in the mailbox), `sequence` (checks,
/// seq, sealing), `commit` (the batch's write and fsync), `fanout` (queuing to recipients).
pub(crate) struct Hot {
    pub stage_receive: Histogram,
    pub stage_queue: Histogram,
    pub stage_sequence: Histogram,
    pub stage_commit: Histogram,
    pub stage_fanout: Histogram,
    pub write_batch_seconds: Histogram,
    pub write_batch_writes: Histogram,
    pub write_batch_messages: Histogram,
    pub send_ack_seconds: Histogram,
    pub messages_received: Counter,
    pub messages_stored: Counter,
    pub messages_delivered: Counter,
    pub frames_delivered: Counter,
    pub frames_sent: Counter,
    pub receipts_delivered: Counter,
    pub receipts_read: Counter,
}

/// The hot-path metric handles, registered with the daemon's recorder (installed first if
/// it is not yet: a handle taken before would record into nothing, for good).
pub(crate) fn hot() -> &'static Hot {
    static HOT: std::sync::OnceLock<Hot> = std::sync::OnceLock::new();
    HOT.get_or_init(|| {
        install_recorder();
        let stage = |name: &'static str| metrics::histogram!("legalchat_stage_seconds", "stage" => name);
        Hot {
            stage_receive: stage("receive"),
            stage_queue: stage("queue"),
            stage_sequence: stage("sequence"),
            stage_commit: stage("commit"),
            stage_fanout: stage("fanout"),
            write_batch_seconds: metrics::histogram!("legalchat_write_batch_seconds"),
            write_batch_writes: metrics::histogram!("legalchat_write_batch_writes"),
            write_batch_messages: metrics::histogram!("legalchat_write_batch_messages"),
            send_ack_seconds: metrics::histogram!("legalchat_send_ack_seconds"),
            messages_received: metrics::counter!("legalchat_messages_received_total"),
            messages_stored: metrics::counter!("legalchat_messages_stored_total"),
            messages_delivered: metrics::counter!("legalchat_messages_delivered_total"),
            frames_delivered: metrics::counter!("legalchat_frames_delivered_total"),
            frames_sent: metrics::counter!("legalchat_frames_sent_total"),
            receipts_delivered: metrics::counter!("legalchat_receipts_total", "kind" => legalchat_protocol::pb::ReceiptKind::Delivered.as_str_name()),
            receipts_read: metrics::counter!("legalchat_receipts_total", "kind" => legalchat_protocol::pb::ReceiptKind::Read.as_str_name()),
        }
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Folds the samples histograms have recorded since the last time into their buckets, every
/// [`UPKEEP_EVERY`], on a thread of its own. The recorder keeps every sample until then: left
/// to scrapes alone, it would hold them all in memory between scrapes (without bound if
/// nobody scrapes), and a scrape would fold millions of them on a runtime worker, stalling
/// every session on it (seed load: deliveries of a whole 20–40 ms window late at each scrape).
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread; histograms are folded at each scrape");
    }
}

/// Gives every metric its `# HELP` line, and creates at zero those that would otherwise
/// appear only with their first event, so that dashboards and alerts see a flat line rather
/// than no data (and `rate()` counts the first refusal). `docs/observability.md` holds the
/// same list for operators; keep the two together.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};

    // Connections and sessions.
    describe_counter!("legalchat_connections_total", "QUIC connections whose handshake completed.");
    describe_gauge!("legalchat_connections_active", "QUIC connections open now.");
    describe_counter!("legalchat_connections_refused_total", "QUIC connections refused at max_connections.");
    describe_counter!("legalchat_sessions_total", "Sessions authenticated.");
    describe_counter!(
        "legalchat_sessions_refused_total",
        "Session streams refused because their connection carried max_sessions_per_connection."
    );
    describe_gauge!("legalchat_sessions_active", "Authenticated sessions open now.");
    describe_counter!("legalchat_auth_failures_total", "Sessions closed before authenticating, by reason.");
    describe_counter!("legalchat_frames_rejected_total", "Client frames rejected as malformed or oversize, by reason.");
    describe_counter!("legalchat_frames_sent_total", "Frames written to sessions.");
    describe_counter!(
        "legalchat_slow_consumer_disconnects_total",
        "Sessions disconnected (OVERLOADED) because their outbound queue was full."
    );

    // The message path.
    describe_counter!("legalchat_messages_received_total", "SendMessage requests received.");
    describe_counter!("legalchat_messages_stored_total", "New messages committed (accepted); retried duplicates are not counted.");
    describe_histogram!(
        "legalchat_send_ack_seconds",
        "Server-side latency of an accepted send: SendMessage decoded to MessageAccepted queued (receive to ack)."
    );
    describe_histogram!(
        "legalchat_stage_seconds",
        "Time a message spends in each stage: receive, queue (shard mailbox), sequence, commit, fanout."
    );
    describe_counter!(
        "legalchat_messages_delivered_total",
        "New messages queued to recipients' sessions (one per session reached; the sender's own session excluded)."
    );
    describe_counter!("legalchat_frames_delivered_total", "Events of every kind (messages, receipts, membership) queued to sessions.");
    describe_histogram!("legalchat_write_batch_seconds", "Duration of one group commit (write batch and fsync).");
    describe_histogram!("legalchat_write_batch_messages", "New messages per group commit.");
    describe_histogram!("legalchat_write_batch_writes", "Store writes per group commit.");
    describe_counter!("legalchat_shard_mailbox_full_total", "Requests answered OVERLOADED because their shard's mailbox was full.");
    describe_gauge!("legalchat_shard_mailbox_depth", "Commands waiting in each shard's mailbox, sampled at scrape.");

    // Conversations, receipts, presence, catch-up.
    describe_counter!("legalchat_conversations_created_total", "Conversations created.");
    describe_counter!("legalchat_receipts_total", "Read and delivery positions moved, by kind.");
    describe_counter!("legalchat_presence_events_total", "Users going online or offline.");
    describe_counter!("legalchat_catch_up_messages_total", "Messages sent in CatchUp pages.");
    describe_gauge!("legalchat_rooms_active", "Rooms with at least one member.");

    // Push notifications.
    describe_counter!("legalchat_push_queued_total", "Push notifications queued.");
    describe_counter!("legalchat_push_dropped_total", "Push notifications dropped (queue full or shutdown).");
    describe_counter!("legalchat_push_sent_total", "Push notifications delivered, by kind.");
    describe_counter!("legalchat_push_retries_total", "Push delivery retries, by kind.");
    describe_counter!("legalchat_push_failed_total", "Push notifications given up on, by kind and reason.");
    describe_counter!(
        "legalchat_push_subscriptions_removed_total",
        "Web Push subscriptions removed because the push service said they are gone."
    );

    for counter in [
        "legalchat_connections_refused_total",
        "legalchat_slow_consumer_disconnects_total",
        "legalchat_messages_received_total",
        "legalchat_messages_stored_total",
        "legalchat_messages_delivered_total",
        "legalchat_frames_delivered_total",
        "legalchat_shard_mailbox_full_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for gauge in ["legalchat_connections_active", "legalchat_sessions_active"] {
        metrics::gauge!(gauge).increment(0.0);
    }
}

#[derive(Clone)]
struct OpsState {
    metrics: PrometheusHandle,
    shards: Shards,
    ready: Arc<AtomicBool>,
}

/// Binds the ops listener; returns its address and the server future.
pub async fn bind(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    shards: Shards,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { metrics, shards, ready });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serve = async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "ops listener stopped");
        }
    };
    Ok((local, serve))
}

async fn render(State(s): State<OpsState>) -> String {
    for (shard, depth) in s.shards.mailbox_depths().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("legalchat_shard_mailbox_depth", "shard" => shard.to_string()).set(depth as f64);
    }
    let mut page = s.metrics.render();
    // Files in /proc are generated by the kernel from memory when read: no disk, no wait
    // worth a blocking-pool hop.
    if let (Ok(stat), Ok(status)) = (std::fs::read_to_string("/proc/self/stat"), std::fs::read_to_string("/proc/self/status")) {
        write_process_metrics(&mut page, &stat, &status);
    }
    page
}

/// The time unit of `/proc/<pid>/stat`: `USER_HZ`, which the kernel fixes at 100 for user
/// space whatever its internal tick rate (Prometheus's own procfs reader assumes the same).
const USER_HZ: f64 = 100.0;

/// Appends `process_cpu_seconds_total` and `process_resident_memory_bytes` — the names
/// every Prometheus client library uses, so standard dashboards find them — from the
/// contents of `/proc/self/stat` and `/proc/self/status`. Read by hand rather than through
/// `metrics-process`: that crate reports CPU through a `metrics` counter in whole seconds,
/// too coarse for a per-second rate, and brings a procfs crate for two numbers. A field
/// that cannot be read is left out rather than reported wrong.
fn write_process_metrics(page: &mut String, stat: &str, status: &str) {
    if let Some(cpu) = cpu_seconds(stat) {
        let _ = write!(
            page,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {cpu}\n\n"
        );
    }
    if let Some(rss) = resident_bytes(status) {
        let _ = write!(
            page,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {rss}\n\n"
        );
    }
}

/// User plus system CPU time from `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // Field 2, the command name, is in parentheses and may itself hold spaces and ')':
    // count fields after the last ')'. That one is field 3; utime and stime are 14 and 15.
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)]
    Some(utime.saturating_add(stime) as f64 / USER_HZ)
}

/// Resident set size from the `VmRSS:` line of `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

async fn readyz(State(s): State<OpsState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Acquire) { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real line, with a command name made as awkward as the kernel allows.
    const STAT: &str = "4242 (legal chat) d) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 123456 \
                        987654321 4321 18446744073709551615 1 1 0 0 0 0 0 4096 17922 0 0 0 17 1 0 0 0 0 0\n";
    const STATUS: &str = "Name:\tlegalchatd\nVmPeak:\t  200000 kB\nVmRSS:\t   17284 kB\nRssAnon:\t    9000 kB\nThreads:\t9\n";

    #[test]
    fn cpu_time_is_user_plus_system_in_seconds() {
        assert_eq!(cpu_seconds(STAT), Some(3.25));
        assert_eq!(cpu_seconds("4242 (short"), None);
        assert_eq!(cpu_seconds(""), None);
    }

    #[test]
    fn resident_memory_comes_from_vm_rss() {
        assert_eq!(resident_bytes(STATUS), Some(17284 * 1024));
        assert_eq!(resident_bytes("Name:\tkthreadd\n"), None, "kernel threads have no VmRSS");
    }

    #[test]
    fn process_metrics_are_prometheus_text() {
        let mut page = String::new();
        write_process_metrics(&mut page, STAT, STATUS);
        assert!(page.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.25\n"), "{page}");
        assert!(page.contains("# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 17698816\n"), "{page}");
        assert!(page.lines().all(|l| !l.starts_with(' ')), "continuation indent leaked:\n{page}");

        let mut nothing = String::new();
        write_process_metrics(&mut nothing, "", "");
        assert!(nothing.is_empty());
    }
}
