//! The scenarios that are not a rate: idle sessions (memory per session) and the
//! reconnect storm (time until everyone is back with nothing missed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Conn, Heard, Latency, Target, Via, connect_all, histogram, micros, partition};
use crate::probe::{ProcessProbe, Usage};
use crate::tokens::TokenMinter;

/// Events an idle session may queue (it receives nothing).
const IDLE_EVENT_BUFFER: usize = 16;

/// What the idle scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// `legalchatd` or `socket.io peer`.
    pub server: &'static str,
    /// Authenticated sessions held open.
    pub sessions: usize,
    /// Transport connections they use (QUIC connections, several sessions each when
    /// multiplexed; or WebSockets).
    pub connections: usize,
    /// Seconds until all were connected and authenticated.
    pub connect_s: f64,
    /// Server RSS before the sessions, MiB.
    pub rss_before_mib: f64,
    /// Server RSS with every session connected and settled, MiB.
    pub rss_after_mib: f64,
    /// (RSS after − RSS before) / sessions, bytes.
    pub bytes_per_session: f64,
    /// The server's CPU while the sessions sat idle (keep-alives, timers).
    pub idle_server_usage: Option<Usage>,
    /// The load generator's own memory at the end, MiB (all its processes).
    pub generator_rss_mib: Option<f64>,
    /// How the sessions were spread over processes, when over more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
}

impl IdleReport {
    /// The human-readable report.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{}: {} idle authenticated sessions over {} connections, connected in {:.1} s\n",
            self.server, self.sessions, self.connections, self.connect_s
        );
        if let Some(spread) = &self.spread {
            out.push_str(&format!("  {spread}\n"));
        }
        out.push_str(&format!(
            "  server RSS {:.1} MiB before, {:.1} MiB after: {:.0} bytes ({:.2} KiB) per session\n",
            self.rss_before_mib,
            self.rss_after_mib,
            self.bytes_per_session,
            self.bytes_per_session / 1024.0
        ));
        if let Some(u) = &self.idle_server_usage {
            out.push_str(&format!("  server while idle: {}\n", u.describe()));
        }
        if let Some(rss) = self.generator_rss_mib {
            out.push_str(&format!("  load generator RSS {rss:.1} MiB\n"));
        }
        out
    }
}

/// Opens `sessions` idle authenticated sessions on `target` (LegalChat clients spread
/// over `sockets` shared UDP sockets), lets them settle for `settle`, and reports the
/// server's memory per session (`server` must be the server's process).
pub async fn idle(target: &Target, server: ProcessProbe, sessions: usize, sockets: usize, settle: Duration) -> anyhow::Result<IdleReport> {
    if sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let before = server.sample()?;
    eprintln!(
        "server RSS before: {:.1} MiB; connecting {sessions} sessions to {} ({})",
        mib(before.rss_bytes),
        target.addr(),
        target.name()
    );
    let started = Instant::now();
    let conns = hold(target, sessions, sockets, true).await?;
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!("all {sessions} connected in {connect_s:.1} s; settling for {} s", settle.as_secs_f64());
    let settle_start = server.sample()?;
    tokio::time::sleep(settle).await;
    let after = server.sample()?;
    let generator_rss_mib = ProcessProbe::this_process().and_then(|p| p.sample()).ok().map(|s| mib(s.rss_bytes));
    let report = IdleReport {
        server: target.name(),
        sessions,
        connections: conns.len().div_ceil(target.sessions_per_connection()),
        connect_s,
        rss_before_mib: mib(before.rss_bytes),
        rss_after_mib: mib(after.rss_bytes),
        bytes_per_session: after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / sessions as f64,
        idle_server_usage: Some(ProcessProbe::usage(&settle_start, &after)),
        generator_rss_mib,
        spread: None,
    };
    eprintln!("closing the sessions");
    close_all(&conns).await;
    Ok(report)
}

/// Opens `sessions` idle authenticated sessions on `target` (users of their own, LegalChat
/// clients spread over `sockets` shared UDP sockets), with progress on stderr when asked.
pub async fn hold(target: &Target, sessions: usize, sockets: usize, progress: bool) -> anyhow::Result<Vec<Arc<Conn>>> {
    if sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let minter = TokenMinter::new(target.secret());
    let run_id: u32 = rand::random();
    let user_ids: Vec<String> = (0..sessions).map(|i| format!("idle-{run_id:08x}-u{i}")).collect();
    connect_all(target, &minter, &user_ids, sockets, IDLE_EVENT_BUFFER, progress).await
}

/// Closes every session of `conns`, a thousand at a time.
pub async fn close_all(conns: &[Arc<Conn>]) {
    let mut closing = JoinSet::new();
    for chunk in conns.chunks(1_000) {
        let chunk: Vec<Arc<Conn>> = chunk.to_vec();
        closing.spawn(async move {
            for c in chunk {
                c.close().await;
            }
        });
    }
    while closing.join_next().await.is_some() {}
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// What the reconnect storm measured.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// `legalchatd` or `socket.io peer`.
    pub server: &'static str,
    /// Clients dropped at once.
    pub clients: usize,
    /// Members per group.
    pub group_size: usize,
    /// Clients back with a session (LegalChat: resumed; peer: reconnected and rejoined).
    pub back: usize,
    /// Clients that got the message sent to their group while they were away.
    pub got_missed_message: usize,
    /// From the drop until the last client was back (and, where it can be, held the missed
    /// message), ms.
    pub all_back_ms: f64,
    /// Per client, drop → back, ms.
    pub back_ms: Latency,
    /// The server's CPU and memory from the drop until all were back.
    pub server_usage: Option<Usage>,
}

impl StormReport {
    /// The human-readable report.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{}: reconnect storm, {} clients in groups of {}, all dropped at once, 1 message per group sent meanwhile\n",
            self.server, self.clients, self.group_size
        );
        out.push_str(&format!(
            "  {} of {} back after {:.1} ms; {} of {} hold the message sent while they were away\n",
            self.back, self.clients, self.all_back_ms, self.got_missed_message, self.clients
        ));
        out.push_str(&format!("  per-client drop → back ms: {}\n", self.back_ms.describe()));
        if let Some(u) = &self.server_usage {
            out.push_str(&format!("  server: {}\n", u.describe()));
        }
        out
    }
}

/// Connects `clients` users in groups of `group_size`, drops every connection at once,
/// sends one message per group while they are away, and measures until every client is
/// back. LegalChat clients must resume *with* the missed message (a client still missing
/// it after `timeout` fails the run); the Socket.IO peer has no resume, so its clients
/// reconnect, rejoin their rooms, and whether they got the message is counted.
pub async fn reconnect_storm(
    target: &Target,
    server: Option<ProcessProbe>,
    clients: usize,
    group_size: usize,
    sockets: usize,
    timeout: Duration,
) -> anyhow::Result<StormReport> {
    if clients < 2 || group_size < 2 {
        bail!("need at least 2 clients and groups of 2");
    }
    let minter = TokenMinter::new(target.secret());
    let run_id: u32 = rand::random();
    let user_ids: Vec<String> = (0..clients).map(|i| format!("storm-{run_id:08x}-u{i}")).collect();
    let groups = partition(clients, group_size);
    let admin_id = format!("storm-{run_id:08x}-admin");
    let admin = Arc::new(Conn::connect(target, Via::Own, minter.token(&admin_id, "admin")?, 1_000).await.context("connecting the admin")?);

    // Conversations (LegalChat) or rooms (peer); the admin sends into each.
    let mut conversation_of = vec![String::new(); clients];
    let mut conversations = Vec::with_capacity(groups.len());
    for (g, members) in groups.iter().enumerate() {
        let conv = match &*admin {
            Conn::LegalChat(c) => {
                let participants = members.iter().map(|&i| user_ids[i].clone()).collect();
                c.create_conversation(legalchat_sdk::NewConversation::group(format!("storm {g}"), participants)).await?.id
            }
            Conn::Peer(..) => format!("storm-{run_id:08x}-room{g}"),
        };
        admin.join(&conv).await?;
        for &i in members {
            conversation_of[i].clone_from(&conv);
        }
        conversations.push(conv);
    }
    // The admin's own copies of the messages are not needed: keep its queue moving.
    let admin_drain = {
        let admin = admin.clone();
        tokio::spawn(async move { while !matches!(admin.next().await, Heard::Closed) {} })
    };

    let setup = Instant::now();
    let conns = connect_all(target, &minter, &user_ids, sockets, 1_000, true).await?;
    for (i, c) in conns.iter().enumerate() {
        c.join(&conversation_of[i]).await?;
    }
    eprintln!("connected {clients} clients in {:.1} s", setup.elapsed().as_secs_f64());

    // Drop every connection at once, then send one message per group while they are away.
    let dropped = Instant::now();
    let server_start = server.and_then(|p| p.sample().ok());
    for c in &conns {
        c.drop_connection().await;
    }
    let mut expected: HashMap<String, u64> = HashMap::new();
    for conv in &conversations {
        let seq = admin.send(conv, "sent during the storm").await.map_err(|kind| anyhow::anyhow!("the admin's send failed: {kind}"))?;
        expected.insert(conv.clone(), seq);
    }

    let mut waits = JoinSet::new();
    let is_peer = matches!(target, Target::Peer { .. } | Target::Bridge { .. });
    for (i, c) in conns.into_iter().enumerate() {
        let conv = conversation_of[i].clone();
        let missed = expected.get(&conv).copied();
        let token = if is_peer { Some(minter.token(&user_ids[i], "advocate")?) } else { None };
        let target = target.clone();
        waits.spawn(async move {
            if let Some(token) = token {
                // Socket.IO: a new connection and the room joined again. Events arrive in
                // order on the one WebSocket, so anything the server replayed on connecting
                // is queued by the time the join is acknowledged.
                let back = Conn::connect(&target, Via::Own, token, 1_000).await?;
                back.join(&conv).await?;
                let at = dropped.elapsed();
                let got = match &back {
                    Conn::Peer(_, rx) => {
                        let mut rx = rx.lock().await;
                        std::iter::from_fn(|| rx.try_recv().ok()).any(|m| m.room == conv && Some(m.seq) == missed)
                    }
                    Conn::LegalChat(_) => false,
                };
                back.close().await;
                return Ok::<_, anyhow::Error>((at, got));
            }
            let (mut resumed, mut got) = (None, false);
            while resumed.is_none() || !got {
                match c.next().await {
                    Heard::Resumed => resumed = Some(dropped.elapsed()),
                    Heard::Message { conversation, seq, .. } if conversation == conv && Some(seq) == missed => got = true,
                    Heard::Closed => bail!("a client closed before it resumed"),
                    _ => {}
                }
            }
            let done = dropped.elapsed();
            c.close().await;
            Ok((done, got))
        });
    }
    let mut hist = histogram();
    let (mut last, mut back, mut got_missed) = (Duration::ZERO, 0usize, 0usize);
    let deadline = dropped + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, waits.join_next()).await;
        let Ok(Some(r)) = next else {
            if next.is_err() {
                bail!("{} clients were not back within {timeout:?}", clients - back);
            }
            break;
        };
        let (at, got) = r??;
        hist.saturating_record(micros(at));
        last = last.max(at);
        back += 1;
        got_missed += usize::from(got);
    }
    let server_end = server.and_then(|p| p.sample().ok());
    admin.close().await;
    admin_drain.abort();
    Ok(StormReport {
        server: target.name(),
        clients,
        group_size,
        back,
        got_missed_message: got_missed,
        all_back_ms: last.as_secs_f64() * 1000.0,
        back_ms: Latency::of(&hist),
        server_usage: match (server_start, server_end) {
            (Some(a), Some(b)) => Some(ProcessProbe::usage(&a, &b)),
            _ => None,
        },
    })
}

/// What the transfer scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct TransferReport {
    /// Size of the file moved, bytes.
    pub file_bytes: u64,
    /// Uploads completed during the chat step.
    pub uploads: usize,
    /// Downloads completed during the chat step.
    pub downloads: usize,
    /// Upload throughput, MB/s (10^6 bytes), median of the uploads.
    pub upload_mb_s: f64,
    /// Download throughput, MB/s, median of the downloads.
    pub download_mb_s: f64,
    /// The daemon's RSS before the transfers, MiB.
    pub rss_before_mib: Option<f64>,
    /// The highest RSS sampled (every 50 ms) while files moved, MiB.
    pub rss_during_max_mib: Option<f64>,
    /// Chat without transfers.
    pub chat_alone: super::Summary,
    /// The same chat while files moved.
    pub chat_with_transfers: super::Summary,
}

impl TransferReport {
    /// The human-readable report.
    pub fn report(&self) -> String {
        let mb = self.file_bytes as f64 / 1e6;
        let mut out = format!(
            "transfers of {mb:.1} MB: {} uploads at {:.1} MB/s, {} downloads at {:.1} MB/s (medians)\n",
            self.uploads, self.upload_mb_s, self.downloads, self.download_mb_s
        );
        if let (Some(before), Some(during)) = (self.rss_before_mib, self.rss_during_max_mib) {
            out.push_str(&format!("  daemon RSS {before:.1} MiB before, at most {during:.1} MiB while files moved\n"));
        }
        out.push_str(&format!(
            "  chat delivery p99: {:.2} ms alone, {:.2} ms while files moved (p50 {:.2} / {:.2} ms)\n",
            self.chat_alone.delivery_latency_ms.p99,
            self.chat_with_transfers.delivery_latency_ms.p99,
            self.chat_alone.delivery_latency_ms.p50,
            self.chat_with_transfers.delivery_latency_ms.p50
        ));
        out
    }
}

/// Copies the file at `path` into `out` at `rate` MB/s, a piece every few milliseconds
/// (a client on a link of that speed).
async fn paced_copy(path: std::path::PathBuf, mut out: tokio::io::DuplexStream, rate: f64) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut file = tokio::fs::File::open(&path).await?;
    let mut piece = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let n = file.read(&mut piece).await?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&piece[..n]).await?;
        sent += n as u64;
        tokio::time::sleep_until(started + Duration::from_secs_f64(sent as f64 / (rate * 1e6))).await;
    }
}

/// Reads `input` to its end, at `rate` MB/s when given; returns the bytes read.
async fn paced_drain(mut input: tokio::io::DuplexStream, rate: Option<f64>) -> anyhow::Result<u64> {
    use tokio::io::AsyncReadExt as _;
    let mut piece = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut got = 0u64;
    loop {
        let n = input.read(&mut piece).await?;
        if n == 0 {
            return Ok(got);
        }
        got += n as u64;
        if let Some(rate) = rate {
            tokio::time::sleep_until(started + Duration::from_secs_f64(got as f64 / (rate * 1e6))).await;
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Chat at `opts` twice, back to back: alone, then while a file of `file_bytes` goes up
/// and down in a loop (each round by the next of ten uploaders, so that the hourly upload
/// limit does not end the loop). Reports throughput, the daemon's memory while files
/// move, and chat delivery latency with and without them. LegalChat targets only.
pub async fn transfer(
    target: &Target,
    probe: Option<ProcessProbe>,
    opts: &super::LoadOptions,
    file_bytes: u64,
    throttle_mb_s: Option<f64>,
) -> anyhow::Result<TransferReport> {
    use legalchat_sdk::{Client, ClientConfig, NewConversation};
    let (server, ca_pem, server_name) = target.daemon().context("the transfer scenario needs a LegalChat daemon")?;
    let minter = TokenMinter::new(target.secret());
    let run_id: u32 = rand::random();
    let connect = |user: String| {
        let token = minter.token(&user, "advocate");
        let ca_pem = ca_pem.to_vec();
        async move {
            let config = ClientConfig::new(server, token?).with_ca_pem(ca_pem).with_server_name(server_name);
            Client::connect(config).await.with_context(|| format!("connecting {user}"))
        }
    };
    let uploader_ids: Vec<String> = (0..10).map(|i| format!("xfer-{run_id:08x}-up{i}")).collect();
    let mut uploaders = Vec::new();
    for id in &uploader_ids {
        uploaders.push(connect(id.clone()).await?);
    }
    let conv = uploaders[0]
        .create_conversation(NewConversation::group("transfers", uploader_ids[1..].to_vec()))
        .await
        .context("creating the transfer conversation")?
        .id;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bundle.pdf");
    {
        let mut content = b"%PDF-1.7\n".to_vec();
        let mut state = u64::from(run_id) | 1;
        while (content.len() as u64) < file_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            content.extend_from_slice(&state.to_le_bytes());
        }
        content.truncate(usize::try_from(file_bytes)?);
        std::fs::write(&path, &content)?;
    }

    let fleet = super::Fleet::connect(target, opts, super::Layout::Groups).await?;
    eprintln!("step 1: chat alone");
    let chat_alone = fleet.step(opts, probe).await?;
    let rss_before_mib = probe.as_ref().and_then(|p| p.sample().ok()).map(|s| s.rss_bytes as f64 / 1024.0 / 1024.0);

    eprintln!("step 2: the same chat while {:.1} MB files go up and down", file_bytes as f64 / 1e6);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let stop = stop.clone();
        let conv = conv.clone();
        let path = path.clone();
        tokio::spawn(async move {
            let (mut up, mut down) = (Vec::new(), Vec::new());
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let client = &uploaders[round % uploaders.len()];
                round += 1;
                let started = Instant::now();
                let attachment = match throttle_mb_s {
                    None => client.upload_file(&conv, &path, None, &mut |_| {}).await.context("uploading")?,
                    Some(rate) => {
                        let (sha256, size) = legalchat_sdk::hash_file(&path).await?;
                        let ticket = client.start_upload(&conv, "bundle.pdf", size, sha256, None).await?;
                        let (writer, reader) = tokio::io::duplex(256 * 1024);
                        let feeder = tokio::spawn(paced_copy(path.clone(), writer, rate));
                        let attachment = client.upload_from(&ticket, reader, &mut |_| {}).await.context("uploading")?;
                        feeder.await??;
                        attachment
                    }
                };
                up.push(file_bytes as f64 / 1e6 / started.elapsed().as_secs_f64());
                let started = Instant::now();
                let ticket = client.start_download(&conv, &attachment.file_id).await?;
                let (mut writer, reader) = tokio::io::duplex(256 * 1024);
                let drain = tokio::spawn(paced_drain(reader, throttle_mb_s));
                client.download_into(&ticket, 0, &mut writer, &mut |_| {}).await.context("downloading")?;
                drop(writer);
                anyhow::ensure!(drain.await?? == file_bytes, "the download is short");
                down.push(file_bytes as f64 / 1e6 / started.elapsed().as_secs_f64());
            }
            for c in uploaders {
                c.close().await;
            }
            anyhow::Ok((up, down))
        })
    };
    let sampler = {
        let stop = stop.clone();

        tokio::spawn(async move {
            let mut max: Option<u64> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(s) = probe.as_ref().and_then(|p| p.sample().ok()) {
                    max = Some(max.unwrap_or(0).max(s.rss_bytes));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        })
    };
    let chat_with_transfers = fleet.step(opts, probe).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (up, down) = mover.await.context("the transfer task")??;
    let rss_max = sampler.await.context("the sampler")?;
    fleet.close().await;
    Ok(TransferReport {
        file_bytes,
        uploads: up.len(),
        downloads: down.len(),
        upload_mb_s: median(up),
        download_mb_s: median(down),
        rss_before_mib,
        rss_during_max_mib: rss_max.map(|b| b as f64 / 1024.0 / 1024.0),
        chat_alone,
        chat_with_transfers: chat_with_transfers?,
    })
}
