//! `legalchat-resume`: how fast clients get back everything they missed.
//!
//! ```text
//! legalchat-resume catch-up        --messages 100000 --conversations 50
//!   senders fill 50 conversations while the reader is away; the reader then connects
//!   with its cursors and the time until every missed message reached it, in order, is
//!   measured (one CatchUp chain, pages of --page messages).
//! ```
//!
//! It spawns its own daemon (`--dev`, temporary data directory, loopback) and stops by
//! itself. It measures; it asserts only completeness (nothing missed). The reconnect storm
//! is `legalchat-load reconnect`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};
use legalchat_benches::tokens::TokenMinter;
use legalchat_sdk::{Client, ClientConfig, Event, NewConversation};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Measures catch-up against a spawned legalchatd.
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
