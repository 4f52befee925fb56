//! `legalchat-load`: an open-loop load generator for `legalchatd` (see `benches/README.md`
//! and [`legalchat_benches::load`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use legalchat_benches::daemon_process::{DaemonConfig, DaemonProcess};
use legalchat_benches::load::{self, LoadOptions, Target};

/// Open-loop load generator for legalchatd: N users in groups of F, M messages/s in total.
#[derive(Debug, Parser)]
#[command(name = "legalchat-load", version)]
struct Args {
    /// QUIC address of a running daemon (with --ca and --secret).
    #[arg(long, required_unless_present = "spawn", conflicts_with = "spawn")]
    server: Option<SocketAddr>,
    /// PEM file of the certificate to trust (a --dev daemon's DATA_DIR/tls/cert.pem).
    #[arg(long, requires = "server")]
    ca: Option<PathBuf>,
    /// The daemon's HS256 secret; tokens are minted with it.
    #[arg(long, env = "LEGALCHAT_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Start a daemon (--dev, temporary data dir, loopback) for this run and stop it after.
    #[arg(long)]
    spawn: bool,
    /// The daemon binary for --spawn [default: `legalchatd` next to this executable].
    #[arg(long)]
    daemon_bin: Option<PathBuf>,
    /// Extra argument for the spawned daemon (repeatable), e.g. --daemon-arg=--fsync=never.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    #[command(flatten)]
    load: LoadOptions,
    /// Also print a one-line JSON summary (the last line of output).
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.load.validate()?;

    let mut daemon = None;
    let target = if args.spawn {
        let bin = match &args.daemon_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?.with_file_name("legalchatd"),
        };
        let d = DaemonProcess::start(DaemonConfig::new(bin).args(args.daemon_args.clone())).await?;
        eprintln!("spawned legalchatd: quic={} ops={} dir={}", d.quic_addr(), d.ops_addr(), d.root_dir().display());
        let target = Target { server: d.quic_addr(), ca_pem: d.ca_cert_pem()?, secret: d.jwt_secret().to_owned() };
        daemon = Some(d);
        target
    } else {
        let server = args.server.context("--server is required without --spawn")?;
        let ca = args.ca.as_ref().context("--ca is required with --server")?;
        let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let secret = args.secret.clone().context("--secret (or LEGALCHAT_JWT_SECRET) is required with --server")?;
        Target { server, ca_pem, secret }
    };

    let outcome = load::run(&args.load, &target).await;

    if let Some(mut d) = daemon
        && let Err(e) = d.stop().await
    {
        eprintln!("warning: stopping the spawned daemon: {e:#}");
    }
    let summary = outcome?;
    print!("{}", summary.report());
    if args.json {
        println!("{}", summary.json());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a = Args::try_parse_from(["legalchat-load", "--spawn", "--users", "10", "--daemon-arg=--fsync=never"]).unwrap();
        assert!(a.spawn && a.load.users == 10 && a.load.group_size == 10);
        assert_eq!(a.daemon_args, ["--fsync=never"]);
        assert!(Args::try_parse_from(["legalchat-load"]).is_err());
        assert!(Args::try_parse_from(["legalchat-load", "--spawn", "--server", "127.0.0.1:1"]).is_err());
        let a = Args::try_parse_from(["legalchat-load", "--server", "127.0.0.1:1", "--ca", "c.pem", "--secret", "s"]).unwrap();
        assert_eq!(a.load.rate, 1000.0);
    }
}
