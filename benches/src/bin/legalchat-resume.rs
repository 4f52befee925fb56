//! `legalchat-resume`: how fast clients get back everything they missed.
//!
//! ```text
//! legalchat-resume catch-up        --messages 100000 --conversations 50
//!   senders fill 50 conversations while the reader is away; the reader then connects
//!   with its cursors and the time until every missed message reached it, in order, is
//!   measured (one CatchUp chain, pages of --page messages).
//! legalchat-resume reconnect-storm --clients 1000 --group-size 10
//!   every client drops its connection at once; one message per group is sent during the
//!   outage; measured: time until every client has resumed and holds that message.
//! ```
//!
//! Both spawn their own daemon (`--dev`, temporary data directory, loopback) and stop by
//! themselves. They measure; they assert only completeness (nothing missed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};
use legalchat_benches::tokens::TokenMinter;
use legalchat_sdk::{Client, ClientConfig, ConnectionState, Event, NewConversation};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Measures catch-up and reconnect storms against a spawned legalchatd.
#[derive(Debug, Parser)]
#[command(name = "legalchat-resume", version)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
    /// The daemon binary [default: `legalchatd` next to this executable].
    #[arg(long, global = true)]
    daemon_bin: Option<PathBuf>,
    /// Extra argument for the daemon (repeatable).
    #[arg(long = "daemon-arg", global = true, allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, global = true, default_value_t = 600)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// A reader away while messages pile up in many conversations, then catching up.
    CatchUp {
        /// Messages missed in total.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Conversations they are spread over.
        #[arg(long, default_value_t = 50)]
        conversations: usize,
        /// Messages per CatchUp page (1..=5000).
        #[arg(long, default_value_t = 5_000)]
        page: u32,
        /// Bytes of text per message.
        #[arg(long, default_value_t = 100)]
        text_bytes: usize,
    },
    /// Every client dropped at once; time until all have resumed with nothing missed.
    ReconnectStorm {
        /// Connected clients (one user each).
        #[arg(long, default_value_t = 1_000)]
        clients: usize,
        /// Members per group conversation.
        #[arg(long, default_value_t = 10)]
        group_size: usize,
    },
}

struct Env {
    daemon: DaemonProcess,
    minter: TokenMinter,
    ca: Vec<u8>,
}

impl Env {
    fn config(&self, user: &str, role: &str) -> anyhow::Result<ClientConfig> {
        Ok(ClientConfig::new(self.daemon.quic_addr(), self.minter.token(user, role)?).with_ca_pem(self.ca.clone()))
    }

    async fn client(&self, user: &str, role: &str) -> anyhow::Result<Client> {
        Client::connect(self.config(user, role)?).await.with_context(|| format!("connecting {user}"))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.daemon_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("legalchatd"),
    };
    let daemon = DaemonProcess::start(DaemonConfig::new(bin).args(args.daemon_args.clone())).await?;
    eprintln!("spawned legalchatd: quic={} dir={}", daemon.quic_addr(), daemon.root_dir().display());
    let env = Env { minter: TokenMinter::new(daemon.jwt_secret()), ca: daemon.ca_cert_pem()?, daemon };
    let deadline = Duration::from_secs(args.timeout);
    let result = match args.scenario {
        Scenario::CatchUp { messages, conversations, page, text_bytes } => {
            tokio::time::timeout(deadline, catch_up(&env, messages, conversations, page, text_bytes)).await
        }
        Scenario::ReconnectStorm { clients, group_size } => tokio::time::timeout(deadline, storm(&env, clients, group_size)).await,
    };
    let mut daemon = env.daemon;
    let _ = daemon.stop().await;
    result.context("the scenario did not finish in time")?
}

async fn catch_up(env: &Env, messages: usize, conversations: usize, page: u32, text_bytes: usize) -> anyhow::Result<()> {
    if conversations == 0 || messages < conversations {
        bail!("need at least one message per conversation");
    }
    // Sends in flight count against the outbox; make room for the pipelining window.
    let writer = Client::connect(env.config("writer", "advocate")?.with_outbox_capacity(4_000)).await?;
    let mut convs = Vec::new();
    for k in 0..conversations {
        let c = writer.create_conversation(NewConversation::group(format!("Matter {k}"), vec!["reader".into()])).await?;
        convs.push(c.id);
    }
    // Fill while the reader has never connected: everything is missed.
    let filled = Instant::now();
    let window = Arc::new(Semaphore::new(2_000));
    let mut sends = JoinSet::new();
    let pad = "x".repeat(text_bytes.saturating_sub(20));
    for n in 0..messages {
        let permit = window.clone().acquire_owned().await?;
        let (w, conv, text) = (writer.clone(), convs[n % conversations].clone(), format!("m{n} {pad}"));
        sends.spawn(async move {
            let r = w.send_text(&conv, &text).await;
            drop(permit);
            r
        });
        while let Some(done) = sends.try_join_next() {
            done??;
        }
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    let fill = filled.elapsed();
    eprintln!("filled {messages} messages in {conversations} conversations in {:.1} s", fill.as_secs_f64());

    let cursors = convs.iter().map(|c| (c.clone(), 0)).collect();
    let started = Instant::now();
    let reader = Client::connect(env.config("reader", "advocate")?.with_resume_cursors(cursors).with_catch_up_page(page)).await?;
    let connected = started.elapsed();
    let mut next: HashMap<String, u64> = convs.iter().map(|c| (c.clone(), 1)).collect();
    let mut got = 0usize;
    while got < messages {
        match reader.next_event().await {
            Some(Event::Message(m)) => {
                let want = next.get_mut(&m.conversation_id).context("a message of an unknown conversation")?;
                if m.seq != *want {
                    bail!("conversation {}: got seq {} where {} was due", m.conversation_id, m.seq, want);
                }
                *want += 1;
                got += 1;
            }
            Some(Event::Closed { reason }) => bail!("reader closed: {reason}"),
            Some(_) => {}
            None => bail!("reader ended"),
        }
    }
    let took = started.elapsed();
    println!("catch-up: {messages} missed messages in {conversations} conversations, pages of {page}, {text_bytes} B texts");
    println!("  connect + authenticate: {:.1} ms", ms(connected));
    println!("  all delivered to the app, in order: {:.1} ms ({:.0} msgs/s)", ms(took), messages as f64 / took.as_secs_f64());
    println!("  (filling took {:.1} s: {:.0} durable msgs/s from one sender)", fill.as_secs_f64(), messages as f64 / fill.as_secs_f64());
    reader.close().await;
    writer.close().await;
    Ok(())
}

async fn storm(env: &Env, clients: usize, group_size: usize) -> anyhow::Result<()> {
    if clients < 2 || group_size < 2 {
        bail!("need at least 2 clients and groups of 2");
    }
    let admin = env.client("storm-admin", "admin").await?;
    let users: Vec<String> = (0..clients).map(|i| format!("u{i}")).collect();
    let mut groups = Vec::new();
    for chunk in users.chunks(group_size) {
        let c = admin.create_conversation(NewConversation::group("storm", chunk.to_vec())).await?;
        groups.push((c.id, chunk.to_vec()));
    }
    let mut connected = Vec::with_capacity(clients);
    let setup = Instant::now();
    for batch in users.chunks(100) {
        let mut js = JoinSet::new();
        for u in batch {
            let cfg = env.config(u, "advocate")?;
            js.spawn(async move { Client::connect(cfg).await });
        }
        while let Some(c) = js.join_next().await {
            connected.push(c??);
        }
    }
    eprintln!("connected {clients} clients in {:.1} s", setup.elapsed().as_secs_f64());

    // Drop every connection at once, then send one message per group while they are away.
    let dropped = Instant::now();
    for c in &connected {
        c.reconnect_now();
    }
    let mut expected: HashMap<String, String> = HashMap::new();
    for (conv, _) in &groups {
        let sent = admin.send_text(conv, "sent during the storm").await?;
        expected.insert(conv.clone(), sent.message_id);
    }
    let mut waits = JoinSet::new();
    for c in connected {
        let expected = expected.clone();
        waits.spawn(async move {
            let (mut resumed, mut got) = (None, false);
            let mut reconnects = 0u32;
            while resumed.is_none() || !got {
                match c.next_event().await {
                    Some(Event::State(ConnectionState::Resumed { .. })) => resumed = Some(dropped.elapsed()),
                    Some(Event::State(ConnectionState::Reconnecting { .. })) => reconnects += 1,
                    Some(Event::Message(m)) if expected.get(&m.conversation_id) == Some(&m.message_id) => got = true,
                    Some(Event::Closed { reason }) => return Err(anyhow::anyhow!("{} closed: {reason}", c.user_id())),
                    None => return Err(anyhow::anyhow!("{} ended", c.user_id())),
                    _ => {}
                }
            }
            let done = dropped.elapsed();
            c.close().await;
            Ok::<_, anyhow::Error>((resumed.unwrap_or(done), done, reconnects))
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut last, mut attempts) = (Duration::ZERO, 0u64);
    while let Some(r) = waits.join_next().await {
        let (resumed, done, reconnects) = r??;
        hist.record(u64::try_from(resumed.as_micros()).unwrap_or(u64::MAX))?;
        last = last.max(done);
        attempts += u64::from(reconnects);
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    println!("reconnect storm: {clients} clients in groups of {group_size}, all dropped at once, 1 message per group sent meanwhile");
    println!("  every client resumed and holds the missed message after {:.1} ms", ms(last));
    println!("  per-client resume ms: p50 {:.1} p99 {:.1} max {:.1}", q(0.5), q(0.99), hist.max() as f64 / 1000.0);
    println!("  reconnect attempts: {attempts} for {clients} clients (default policy: 200 ms initial delay, full jitter)");
    admin.close().await;
    Ok(())
}
