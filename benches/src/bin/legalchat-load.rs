//! `legalchat-load`: the load scenarios, against `legalchatd` or the Node.js Socket.IO
//! peer (see `benches/README.md` and [`legalchat_benches::load`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use legalchat_benches::bridge_process::BridgeProcess;
use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};
use legalchat_benches::load::{self, Fleet, Layout, LoadOptions, RampMetric, RampOptions, Target, scenarios};
use legalchat_benches::peer_process::{PeerConfig, PeerProcess};
use legalchat_benches::probe::ProcessProbe;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load scenarios for legalchatd, and the same scenarios against a Node.js Socket.IO peer.
#[derive(Debug, Parser)]
#[command(name = "legalchat-load", version)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct TargetArgs {
    /// QUIC address of a running daemon (with --ca and --secret); without it, a daemon is
    /// started for the run (--dev, temporary data directory, loopback) and stopped after.
    #[arg(long, global = true, conflicts_with = "peer")]
    server: Option<SocketAddr>,
    /// PEM file of the certificate to trust (a --dev daemon's DATA_DIR/tls/cert.pem).
    #[arg(long, global = true, requires = "server")]
    ca: Option<PathBuf>,
    /// The running daemon's HS256 secret; tokens are minted with it.
    #[arg(long, global = true, env = "LEGALCHAT_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Process id of the running daemon, to report its CPU and memory.
    #[arg(long, global = true, requires = "server")]
    server_pid: Option<u32>,
    /// TLS server name to verify.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// The daemon binary to start [default: `legalchatd` next to this executable].
    #[arg(long, global = true)]
    daemon_bin: Option<PathBuf>,
    /// Extra argument for the started daemon (repeatable), e.g. --daemon-arg=--fsync=never.
    #[arg(long = "daemon-arg", global = true, allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Load the Node.js Socket.IO peer (benches/peers/socketio, started for the run) instead.
    #[arg(long, global = true)]
    peer: bool,
    /// The node binary for --peer.
    #[arg(long, global = true, default_value = "node")]
    node: PathBuf,
    /// LegalChat sessions multiplexed on each QUIC connection (the SDK's
    /// `SharedConnection`); 1 gives every client a connection of its own.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    sessions_per_connection: u32,
    /// Shortest interval between two automatic delivery reports of one conversation by a
    /// LegalChat client, in milliseconds (the SDK's default is 1000); a large value all but
    /// turns them off, to measure what they cost.
    #[arg(long, global = true, value_name = "MS")]
    delivery_report_interval_ms: Option<u64>,
    /// Load LegalChat through the Socket.IO bridge, as browsers use it: a daemon and a
    /// `legalchat-bridge` are started for the run, and the clients speak Socket.IO.
    #[arg(long, global = true, conflicts_with_all = ["peer", "server"])]
    bridge: bool,
    /// The bridge binary for --bridge [default: `legalchat-bridge` next to this executable].
    #[arg(long, global = true)]
    bridge_bin: Option<PathBuf>,
    /// HTTP address of a running `legalchat-bridge` in front of the --server daemon: load
    /// it with Socket.IO clients (--ca and --secret as for --server).
    #[arg(long, global = true, requires = "server")]
    bridge_addr: Option<SocketAddr>,
    /// Pin the servers started for the run to these CPUs (`taskset -a -p -c LIST`), e.g. 0
    /// with the generator itself run under `taskset -c 1`.
    #[arg(long, global = true)]
    server_cpus: Option<String>,
    /// Also print a one-line JSON summary (the last line of output).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// The seed load: 1,000 users in groups of 10, 10,000 messages/s in total, 60 s.
    Seed {
        #[command(flatten)]
        load: SeedArgs,
    },
    /// LegalChat against the Node.js Socket.IO peer, back to back: the seed's shape at
    /// --rate and at half of it; LegalChat with a connection per user and multiplexed
    /// (--multiplex sessions per connection), and through the bridge with --with-bridge.
    /// Each server is started here and pinned to --server-cpus; run the generator on the
    /// other CPUs (`taskset -c 1 legalchat-load compare --server-cpus 0`). Prints server CPU
    /// per delivery and per acknowledged send, system calls per delivery (perf), and the
    /// ratios to the peer.
    Compare {
        #[command(flatten)]
        load: SeedArgs,
        /// Sessions per QUIC connection in the multiplexed runs.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(2..=65_536))]
        multiplex: u32,
        /// Also load LegalChat through the Socket.IO bridge.
        #[arg(long)]
        with_bridge: bool,
    },
    /// One step with any shape (--users, --group-size, --rate, ...).
    Run {
        #[command(flatten)]
        load: LoadOptions,
    },
    /// Max durable ingest: senders whose conversations have only offline members; the rate
    /// rises until the ack p99 passes --max-p99-ms.
    Ingest {
        #[command(flatten)]
        load: StepArgs,
        #[command(flatten)]
        ramp: RampOptions,
    },
    /// Max fan-out: groups of --group-size (10, 100), all online; the rate rises until the
    /// delivery p99 passes --max-p99-ms.
    Fanout {
        #[command(flatten)]
        load: StepArgs,
        #[command(flatten)]
        ramp: RampOptions,
    },
    /// Idle authenticated sessions: server memory per session.
    Idle {
        /// Sessions to open.
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
        /// UDP sockets the LegalChat clients share.
        #[arg(long, default_value_t = 16)]
        sockets: usize,
        /// Seconds to let the server settle before measuring.
        #[arg(long, default_value_t = 10.0)]
        settle: f64,
        /// Generator processes that hold the sessions between them, for more sessions than
        /// one process may hold descriptors (`ulimit -n`); with --bridge each loads a bridge
        /// process of its own, in front of the one daemon. The servers are started here.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
        workers: u32,
    },
    /// One worker of `idle --workers`: opens --sessions sessions, prints `ready` on stdout,
    /// holds them until stdin closes, then closes them.
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        sessions: usize,
        #[arg(long, default_value_t = 16)]
        sockets: usize,
    },
    /// Attachments: chat (--users, --group-size, --rate, ...) alone, then the same chat
    /// while a file goes up and down in a loop; throughput, daemon memory, chat p99.
    Transfer {
        #[command(flatten)]
        load: LoadOptions,
        /// Size of the file, MB (10^6 bytes); the daemon's default limit is 52.4288 MB.
        #[arg(long, default_value_t = 52.4288)]
        file_mb: f64,
        /// Move files at this many MB/s, as a client on a link of that speed would
        /// (12.5: 100 Mbit/s) [default: as fast as they go].
        #[arg(long)]
        throttle_mb_s: Option<f64>,
    },
    /// Reconnect storm: every client dropped at once; time until all are back.
    Reconnect {
        /// Clients (one user each).
        #[arg(long, default_value_t = 1_000)]
        clients: usize,
        /// Members per group.
        #[arg(long, default_value_t = 10)]
        group_size: usize,
        /// UDP sockets the LegalChat clients share.
        #[arg(long, default_value_t = 8)]
        sockets: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// The seed's shape, changeable for experiments.
#[derive(Debug, clap::Args)]
struct SeedArgs {
    /// Users.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Members per group.
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Messages per second in total.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// UDP sockets the LegalChat clients share.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Make the sends a mix of events (LegalChat only): 80 % messages, 10 % reactions,
    /// 5 % edits, 5 % deletes of each user's own newest message.
    #[arg(long, conflicts_with = "peer")]
    event_mix: bool,
}

/// The fleet and step length of a ramp.
#[derive(Debug, clap::Args)]
struct StepArgs {
    /// Users (senders; in fan-out also the recipients).
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Members per conversation.
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 10.0)]
    step_secs: f64,
    /// Warm-up seconds per step.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 100)]
    text_bytes: usize,
    /// Most sends awaiting their ack at once.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// UDP sockets the LegalChat clients share.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
}

impl StepArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            users: self.users,
            group_size: self.group_size,
            duration: self.step_secs,
            warmup: self.warmup,
            text_bytes: self.text_bytes,
            max_in_flight: self.max_in_flight,
            drain: 5.0,
            sockets: self.sockets,
            ..LoadOptions::default()
        }
    }
}

/// The server under load, and who stops it.
enum Server {
    Daemon(DaemonProcess),
    Peer(PeerProcess),
    Bridge(Box<(Vec<BridgeProcess>, DaemonProcess)>),
    External,
}

/// Pins process `pid` (all its threads) to `cpus`.
fn pin(pid: u32, cpus: Option<&str>) -> anyhow::Result<()> {
    let Some(cpus) = cpus else { return Ok(()) };
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -a -p -c {cpus} {pid} failed: {status}");
    eprintln!("pinned pid {pid} to CPUs {cpus}");
    Ok(())
}

/// Starts the server `args` name (with `bridges` bridge processes for --bridge), or names
/// the running one.
async fn start(args: &TargetArgs, bridges: usize) -> anyhow::Result<(Target, Option<ProcessProbe>, Server)> {
    if args.peer {
        let mut config = PeerConfig::default();
        config.node_bin.clone_from(&args.node);
        let peer = PeerProcess::start(config).await?;
        eprintln!("started the socket.io peer: addr={} pid={}", peer.addr(), peer.pid());
        pin(peer.pid(), args.server_cpus.as_deref())?;
        let target = Target::Peer { addr: peer.addr(), secret: peer.secret().to_owned() };
        let probe = ProcessProbe::new(peer.pid()).ok();
        return Ok((target, probe, Server::Peer(peer)));
    }
    if let Some(server) = args.server {
        let ca = args.ca.as_ref().context("--ca is required with --server")?;
        let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let secret = args.secret.clone().context("--secret (or LEGALCHAT_JWT_SECRET) is required with --server")?;
        let probe = args.server_pid.map(ProcessProbe::new).transpose()?;
        if let Some(addr) = args.bridge_addr {
            let target = Target::Bridge { addr, daemon: server, ca_pem, secret, server_name: args.server_name.clone() };
            return Ok((target, probe, Server::External));
        }
        let target = Target::LegalChat {
            server,
            ca_pem,
            secret,
            server_name: args.server_name.clone(),
            sessions_per_connection: args.sessions_per_connection as usize,
            delivery_report_interval: args.delivery_report_interval_ms.map(Duration::from_millis),
        };
        return Ok((target, probe, Server::External));
    }
    let bin = match &args.daemon_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("legalchatd"),
    };
    let d = DaemonProcess::start(DaemonConfig::new(bin).args(args.daemon_args.clone())).await?;
    eprintln!("started legalchatd: quic={} ops={} dir={}", d.quic_addr(), d.ops_addr(), d.root_dir().display());
    if let Some(pid) = d.pid() {
        pin(pid, args.server_cpus.as_deref())?;
    }
    if args.bridge {
        let bin = match &args.bridge_bin {
            Some(bin) => bin.clone(),
            None => BridgeProcess::default_bin()?,
        };
        let mut started = Vec::with_capacity(bridges);
        for _ in 0..bridges.max(1) {
            let bridge = BridgeProcess::start(&bin, d.quic_addr(), &d.ca_cert_path(), &[]).await?;
            eprintln!("started legalchat-bridge: http={} pid={}", bridge.addr(), bridge.pid());
            pin(bridge.pid(), args.server_cpus.as_deref())?;
            started.push(bridge);
        }
        let target = Target::Bridge {
            addr: started[0].addr(),
            daemon: d.quic_addr(),
            ca_pem: d.ca_cert_pem()?,
            secret: d.jwt_secret().to_owned(),
            server_name: args.server_name.clone(),
        };
        let daemon_pid = d.pid().context("the daemon has no pid")?;
        let pids: Vec<u32> = started.iter().map(BridgeProcess::pid).chain([daemon_pid]).collect();
        let probe = Some(ProcessProbe::group(&pids)?);
        return Ok((target, probe, Server::Bridge(Box::new((started, d)))));
    }
    let target = Target::LegalChat {
        server: d.quic_addr(),
        ca_pem: d.ca_cert_pem()?,
        secret: d.jwt_secret().to_owned(),
        server_name: args.server_name.clone(),
        sessions_per_connection: args.sessions_per_connection as usize,
        delivery_report_interval: args.delivery_report_interval_ms.map(Duration::from_millis),
    };
    let probe = d.pid().map(ProcessProbe::new).transpose()?;
    Ok((target, probe, Server::Daemon(d)))
}

async fn stop(server: Server) {
    let stopped = match server {
        Server::Daemon(mut d) => d.stop().await.map(drop),
        Server::Peer(mut p) => p.stop().await.map(drop),
        Server::Bridge(both) => {
            let (bridges, mut daemon) = *both;
            let mut first = Ok(());
            for mut bridge in bridges {
                first = first.and(bridge.stop().await);
            }
            daemon.stop().await.map(drop).and(first)
        }
        Server::External => Ok(()),
    };
    if let Err(e) = stopped {
        eprintln!("warning: stopping the server: {e:#}");
    }
}

/// Prints a report, and its JSON when asked.
fn print(json: bool, report: &str, value: &impl serde::Serialize) {
    print!("{report}");
    if json {
        println!("{}", serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    }
}

async fn scenario(args: &Args, target: &Target, probe: Option<ProcessProbe>) -> anyhow::Result<()> {
    let json = args.target.json;
    match &args.scenario {
        Scenario::Seed { load: s } => {
            let opts = s.options(s.rate);
            let summary = load::run(&opts, target, probe).await?;
            print(json, &summary.report(), &summary);
        }
        Scenario::Compare { .. } => unreachable!("compare starts its own servers (see main)"),
        Scenario::Run { load: opts } => {
            let summary = load::run(opts, target, probe).await?;
            print(json, &summary.report(), &summary);
        }
        Scenario::Ingest { load: s, ramp } | Scenario::Fanout { load: s, ramp } => {
            let (metric, layout) = match &args.scenario {
                Scenario::Ingest { .. } => (RampMetric::Ingest, Layout::OfflineMembers),
                _ => (RampMetric::Fanout, Layout::Groups),
            };
            let opts = s.options();
            let fleet = Fleet::connect(target, &opts, layout).await?;
            let report = load::ramp(&fleet, &opts, ramp, metric, probe).await;
            fleet.close().await;
            let report = report?;
            print(json, &report.report(), &report);
        }
        Scenario::Idle { sessions, sockets, settle, .. } => {
            let probe = probe.context("the idle scenario needs the server's process (start it here, or give --server-pid)")?;
            let report = scenarios::idle(target, probe, *sessions, *sockets, Duration::from_secs_f64(*settle)).await?;
            print(json, &report.report(), &report);
        }
        Scenario::Transfer { load: opts, file_mb, throttle_mb_s } => {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bytes = (file_mb * 1e6).round() as u64;
            let report = scenarios::transfer(target, probe, opts, bytes, *throttle_mb_s).await?;
            print(json, &report.report(), &report);
        }
        Scenario::Reconnect { clients, group_size, sockets, timeout } => {
            let report = scenarios::reconnect_storm(target, probe, *clients, *group_size, *sockets, Duration::from_secs(*timeout)).await?;
            print(json, &report.report(), &report);
        }
        Scenario::Hold { sessions, sockets } => {
            let conns = scenarios::hold(target, *sessions, *sockets, false).await?;
            {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ready {}", conns.len())?;
                out.flush()?;
            }
            // Held until the parent closes our stdin (or goes away).
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
            scenarios::close_all(&conns).await;
        }
    }
    Ok(())
}

/// `idle --workers N`: starts the servers (with --bridge, N bridges in front of one
/// daemon), has N generator processes (this executable, `hold`) open the sessions between
/// them, each against its own bridge, and measures the servers' memory once all are open.
async fn idle_spread(args: &Args, sessions: usize, sockets: usize, settle: f64, workers: usize) -> anyhow::Result<()> {
    let t = &args.target;
    anyhow::ensure!(t.server.is_none() && !t.peer, "--workers starts the servers it loads: drop --server and --peer");
    anyhow::ensure!(sessions >= workers, "--sessions must be at least --workers");
    let (target, probe, server) = start(t, if t.bridge { workers } else { 1 }).await?;
    let outcome = match probe {
        Some(probe) => spread(args, &target, probe, &server, sessions, sockets, settle, workers).await,
        None => Err(anyhow::anyhow!("the started server has no process to measure")),
    };
    stop(server).await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn spread(
    args: &Args,
    target: &Target,
    probe: ProcessProbe,
    server: &Server,
    sessions: usize,
    sockets: usize,
    settle: f64,
    workers: usize,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let (daemon, bridges): (&DaemonProcess, Vec<std::net::SocketAddr>) = match server {
        Server::Daemon(d) => (d, Vec::new()),
        Server::Bridge(both) => (&both.1, both.0.iter().map(BridgeProcess::addr).collect()),
        Server::Peer(_) | Server::External => anyhow::bail!("--workers loads a daemon, or bridges and a daemon, started here"),
    };
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let before = probe.sample()?;
    eprintln!(
        "server RSS before: {:.1} MiB; {workers} generator processes open {sessions} sessions ({})",
        mib(before.rss_bytes),
        target.name()
    );
    let started = std::time::Instant::now();
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(workers);
    let mut connections = 0;
    for i in 0..workers {
        let share = sessions / workers + usize::from(i < sessions % workers);
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("--server").arg(daemon.quic_addr().to_string());
        cmd.arg("--ca").arg(daemon.ca_cert_path());
        cmd.args(["--server-name", &args.target.server_name]);
        cmd.args(["--sessions-per-connection", &args.target.sessions_per_connection.to_string()]);
        if let Some(bridge) = bridges.get(i) {
            cmd.args(["--bridge-addr", &bridge.to_string()]);
            connections += share;
        } else {
            connections += share.div_ceil(args.target.sessions_per_connection as usize);
        }
        cmd.args(["hold", "--sessions", &share.to_string(), "--sockets", &sockets.to_string()]);
        cmd.env("LEGALCHAT_JWT_SECRET", target.secret());
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().context("starting a generator process")?;
        let stdout = child.stdout.take().context("a generator process without stdout")?;
        children.push((child, tokio::io::BufReader::new(stdout).lines()));
    }
    for (i, (child, lines)) in children.iter_mut().enumerate() {
        let ready = tokio::time::timeout(Duration::from_secs(900), lines.next_line()).await;
        match ready {
            Ok(Ok(Some(line))) if line.starts_with("ready") => eprintln!("generator {} (pid {:?}): {line}", i + 1, child.id()),
            Ok(other) => anyhow::bail!("generator {} did not get its sessions open: {other:?}", i + 1),
            Err(_) => anyhow::bail!("generator {} did not get its sessions open within 900 s", i + 1),
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!("all {sessions} connected in {connect_s:.1} s; settling for {settle} s");
    let settle_start = probe.sample()?;
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let after = probe.sample()?;
    let generator_pids: Vec<u32> = children.iter().filter_map(|(c, _)| c.id()).chain([std::process::id()]).collect();
    let generator_rss_mib = ProcessProbe::group(&generator_pids).and_then(|p| p.sample()).ok().map(|s| mib(s.rss_bytes));
    let servers =
        if bridges.is_empty() { "one daemon".to_owned() } else { format!("{} bridge processes in front of one daemon", bridges.len()) };
    let report = scenarios::IdleReport {
        server: target.name(),
        sessions,
        connections,
        connect_s,
        rss_before_mib: mib(before.rss_bytes),
        rss_after_mib: mib(after.rss_bytes),
        bytes_per_session: after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / sessions as f64,
        idle_server_usage: Some(ProcessProbe::usage(&settle_start, &after)),
        generator_rss_mib,
        spread: Some(format!("held by {workers} generator processes; {servers}; RSS is the servers' sum")),
    };
    eprintln!("closing the sessions");
    for (child, _) in &mut children {
        drop(child.stdin.take());
    }
    for (mut child, _) in children {
        if tokio::time::timeout(Duration::from_secs(120), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    print(args.target.json, &report.report(), &report);
    Ok(())
}

impl SeedArgs {
    fn options(&self, rate: f64) -> LoadOptions {
        LoadOptions {
            users: self.users,
            group_size: self.group_size,
            rate,
            duration: self.duration,
            warmup: self.warmup,
            sockets: self.sockets,
            event_mix: self.event_mix,
            ..LoadOptions::default()
        }
    }
}

/// One run of `compare`.
struct Compared {
    server: String,
    rate: f64,
    summary: load::Summary,
}

/// The `compare` scenario: every server at both rates, one after the other, then the table.
async fn compare(target: &TargetArgs, load: &SeedArgs, multiplex: u32, with_bridge: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        target.server.is_none() && !target.peer && !target.bridge,
        "compare starts the servers it compares: drop --server, --peer and --bridge"
    );
    anyhow::ensure!(!load.event_mix, "--event-mix is LegalChat's alone: the peer has no reactions or edits to compare");
    if target.server_cpus.is_none() {
        eprintln!("warning: the servers are not pinned (--server-cpus): they share the CPUs with this generator");
    }
    let with = |peer: bool, bridge: bool, sessions: u32| TargetArgs { peer, bridge, sessions_per_connection: sessions, ..target.clone() };
    let mut servers = vec![
        ("legalchat, a connection per user".to_owned(), with(false, false, 1)),
        (format!("legalchat, {multiplex} sessions per connection"), with(false, false, multiplex)),
    ];
    if with_bridge {
        servers.push(("legalchat through the bridge".to_owned(), with(false, true, 1)));
    }
    servers.push(("socket.io peer".to_owned(), with(true, false, 1)));
    let mut runs = Vec::new();
    for rate in [load.rate, load.rate / 2.0] {
        for (name, args) in &servers {
            eprintln!("== {name} at {rate} msgs/s");
            let (t, probe, server) = start(args, 1).await?;
            let summary = load::run(&load.options(rate), &t, probe).await;
            stop(server).await;
            let summary = summary.with_context(|| format!("{name} at {rate} msgs/s"))?;
            eprint!("{}", summary.report());
            runs.push(Compared { server: name.clone(), rate, summary });
        }
    }
    print!("{}", comparison(&runs));
    Ok(())
}

/// The table of a comparison: a row per run, its ratio to the peer at the same rate, and
/// how each server's CPU falls at half the rate.
fn comparison(runs: &[Compared]) -> String {
    let peer = |rate: f64| runs.iter().find(|r| r.server.starts_with("socket.io") && (r.rate - rate).abs() < f64::EPSILON);
    let num = |v: Option<f64>, digits: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"));
    let mut out = String::from(
        "| server | msgs/s | server cores | CPU µs per delivery | CPU µs per ack | syscalls per delivery | delivery p99 ms | CPU per delivery / peer's |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let s = &r.summary;
        let ratio = match (s.server_cpu_us_per_delivery, peer(r.rate).and_then(|p| p.summary.server_cpu_us_per_delivery)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
            r.server,
            r.rate,
            num(s.server_usage.as_ref().map(|u| u.cpu_cores), 2),
            num(s.server_cpu_us_per_delivery, 1),
            num(s.server_cpu_us_per_ack, 1),
            num(s.server_syscalls_per_delivery, 2),
            s.delivery_latency_ms.p99,
            num(ratio, 2),
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.server.as_str()) {
            names.push(&r.server);
        }
    }
    for name in names {
        let cores: Vec<f64> =
            runs.iter().filter(|r| r.server == name).filter_map(|r| r.summary.server_usage.map(|u| u.cpu_cores)).collect();
        if let [full, half] = cores[..]
            && full > 0.0
        {
            out.push_str(&format!("{name}: CPU at half the rate is {:.0} % of the CPU at the full rate\n", 100.0 * half / full));
        }
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Scenario::Compare { load, multiplex, with_bridge } = &args.scenario {
        return compare(&args.target, load, *multiplex, *with_bridge).await;
    }
    if let Scenario::Idle { sessions, sockets, settle, workers } = &args.scenario
        && *workers > 1
    {
        return idle_spread(&args, *sessions, *sockets, *settle, *workers as usize).await;
    }
    let (target, probe, server) = start(&args.target, 1).await?;
    let outcome = scenario(&args, &target, probe).await;
    stop(server).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from(["legalchat-load", "run", "--users", "10", "--daemon-arg=--fsync=never"]).unwrap();
        assert!(matches!(&a.scenario, Scenario::Run { load } if load.users == 10 && load.group_size == 10));
        assert_eq!(a.target.daemon_args, ["--fsync=never"]);
        let a = Args::try_parse_from(["legalchat-load", "compare", "--server-cpus", "0", "--rate", "5000"]).unwrap();
        assert!(matches!(&a.scenario, Scenario::Compare { load, multiplex: 50, with_bridge: false } if load.rate == 5000.0));
        assert!(Args::try_parse_from(["legalchat-load", "compare", "--multiplex", "1"]).is_err(), "multiplexing is two or more");
        assert!(Args::try_parse_from(["legalchat-load"]).is_err(), "a scenario is required");
        assert!(Args::try_parse_from(["legalchat-load", "seed", "--peer", "--server", "127.0.0.1:1"]).is_err());
        let a = Args::try_parse_from(["legalchat-load", "seed", "--server", "127.0.0.1:1", "--ca", "c.pem", "--secret", "s"]).unwrap();
        assert!(matches!(&a.scenario, Scenario::Seed { load } if load.users == 1_000 && load.rate == 10_000.0 && load.duration == 60.0));
        let a = Args::try_parse_from(["legalchat-load", "fanout", "--group-size", "100", "--peer"]).unwrap();
        assert!(
            a.target.peer && matches!(&a.scenario, Scenario::Fanout { load, ramp } if load.group_size == 100 && ramp.max_p99_ms == 50.0)
        );
        let a = Args::try_parse_from(["legalchat-load", "idle", "--sessions", "1000"]).unwrap();
        assert!(matches!(a.scenario, Scenario::Idle { sessions: 1_000, workers: 1, .. }));
        let a = Args::try_parse_from(["legalchat-load", "idle", "--bridge", "--workers", "3", "--sessions", "51000"]).unwrap();
        assert!(a.target.bridge && matches!(a.scenario, Scenario::Idle { sessions: 51_000, workers: 3, .. }));
        assert!(Args::try_parse_from(["legalchat-load", "idle", "--workers", "9"]).is_err(), "at most 8 workers");
        assert!(
            Args::try_parse_from(["legalchat-load", "hold", "--sessions", "5", "--bridge-addr", "127.0.0.1:2"]).is_err(),
            "a bridge needs its daemon"
        );
        let a = Args::try_parse_from([
            "legalchat-load",
            "--server",
            "127.0.0.1:1",
            "--ca",
            "c.pem",
            "--bridge-addr",
            "127.0.0.1:2",
            "hold",
            "--sessions",
            "5",
        ])
        .unwrap();
        assert!(a.target.bridge_addr.is_some() && matches!(a.scenario, Scenario::Hold { sessions: 5, sockets: 16 }));
    }
}
