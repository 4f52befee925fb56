//! `legalchat`: the LegalChat command-line client.
//!
//! A thin shell over [`legalchat_sdk`]: parse arguments, run one command, print lines a
//! human can read (or, with `--json`, one JSON object per line for scripts). Errors go to
//! stderr as `legalchat: <what happened>` with exit status 1.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use legalchat_sdk::{
    Client, ClientConfig, ConnectionState, ConversationUpdate, Event, HistoryCursor, NewConversation, Sent, TransportPolicy, pb,
};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// Messages shown by `tail` and `chat` before live ones.
const BACKLOG: u32 = 20;

#[derive(Debug, Parser)]
#[command(name = "legalchat", version, about = "LegalChat command-line client")]
struct Cli {
    /// Server address, HOST:PORT.
    #[arg(long, global = true, env = "LEGALCHAT_SERVER", default_value = "127.0.0.1:7443")]
    server: String,
    /// PEM file with the certificate(s) to trust: the firm's CA, or the server's own
    /// self-signed certificate.
    #[arg(long, global = true, env = "LEGALCHAT_CA", default_value = "./legalchat-data/tls/cert.pem")]
    ca: PathBuf,
    /// Name the server's certificate must carry [default: the host of --server when it is
    /// a name, else localhost].
    #[arg(long, global = true, env = "LEGALCHAT_SERVER_NAME")]
    server_name: Option<String>,
    /// Bearer token (JWT). Prefer the environment variable: arguments are visible to
    /// other users of this machine.
    #[arg(long, global = true, env = "LEGALCHAT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Transport: QUIC, falling back to TLS over TCP when QUIC does not answer (a network
    /// that blocks UDP), or only one of them.
    #[arg(long, global = true, env = "LEGALCHAT_TRANSPORT", value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
    /// The server's TLS-over-TCP address, HOST:PORT [default: the host and port of
    /// --server].
    #[arg(long, global = true, env = "LEGALCHAT_TCP_SERVER")]
    tcp_server: Option<String>,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show who the token belongs to.
    Whoami,
    /// List your conversations, most recently active first.
    List {
        /// How many, 1..=500.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Create a conversation (for private ones, returns the existing one if any).
    Create {
        /// Kind of conversation.
        #[arg(long, value_enum)]
        kind: Kind,
        /// Display title (required except for private conversations).
        #[arg(long)]
        title: Option<String>,
        /// Other participants, comma-separated user ids (private: exactly one).
        #[arg(long, value_delimiter = ',', required = true)]
        with: Vec<String>,
        /// Legal case id (case conversations only, and required there).
        #[arg(long)]
        case_id: Option<String>,
        /// Longer description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Upload a file and send it as a message (with an optional caption), showing
    /// progress; an upload cut off by a dropped connection resumes by itself.
    Attach {
        /// Conversation id.
        conv: String,
        /// The file (PDF, Office document, PNG/JPEG/GIF/WebP image or plain text; at most
        /// the server's limit, 50 MiB by default).
        path: PathBuf,
        /// The name others see [default: the file's name].
        #[arg(long)]
        name: Option<String>,
        /// A caption sent with it.
        #[arg(long)]
        text: Option<String>,
    },
    /// Upload a file without sending it; prints its file id (attach it to a message
    /// within a day, or it is removed).
    Upload {
        /// Conversation id.
        conv: String,
        /// The file.
        path: PathBuf,
        /// The name others see [default: the file's name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Download an attachment, check its SHA-256, and save it; a partial download
    /// (`<output>.part`) is resumed.
    Download {
        /// Conversation id.
        conv: String,
        /// The attachment's file id (shown with the message, or by `history --json`).
        file_id: String,
        /// Where to save it [default: its name, in the current directory].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// End every live session of a user now and refuse their older tokens (global admins).
    Revoke {
        /// The user.
        user: String,
    },
    /// Deactivate a user: their sessions end and they cannot sign in (global admins).
    Deactivate {
        /// The user.
        user: String,
    },
    /// Reactivate a deactivated user (global admins).
    Activate {
        /// The user.
        user: String,
    },
    /// Send a message; the words are joined with spaces.
    Send {
        /// Conversation id.
        conv: String,
        /// The message text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print a page of a conversation's history, oldest first.
    History {
        /// Conversation id.
        conv: String,
        /// Only messages before this seq (scroll back).
        #[arg(long, conflicts_with = "after")]
        before: Option<u64>,
        /// Only messages after this seq (catch up).
        #[arg(long)]
        after: Option<u64>,
        /// Page size, 1..=100.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print the last messages of a conversation, then new ones as they arrive, with
    /// typing, presence and receipts; survives reconnects (Ctrl-C ends).
    Tail {
        /// Conversation id.
        conv: String,
    },
    /// Interactive chat: each line typed is sent, incoming messages are printed. Ctrl-D
    /// or Ctrl-C ends.
    Chat {
        /// Conversation id.
        conv: String,
    },
    /// Mark a conversation as read up to (and including) a message.
    Read {
        /// Conversation id.
        conv: String,
        /// The newest seq read.
        seq: u64,
    },
    /// Show every participant's delivery and read position in a conversation.
    Receipts {
        /// Conversation id.
        conv: String,
    },
    /// Show whether users are online (users you share no conversation with are left out).
    Presence {
        /// User ids.
        #[arg(required = true, num_args = 1..)]
        users: Vec<String>,
    },
    /// Measure the round trip to the server.
    Ping,
    /// Reply to a message (a thread); the words are joined with spaces.
    Reply {
        /// Conversation id.
        conv: String,
        /// The seq of the message replied to.
        seq: u64,
        /// The reply text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Replace the text of one of your messages.
    Edit {
        /// Conversation id.
        conv: String,
        /// The message's seq.
        seq: u64,
        /// The new text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Delete a message (yours; others' as a conversation admin or moderator).
    Delete {
        /// Conversation id.
        conv: String,
        /// The message's seq.
        seq: u64,
    },
    /// React to a message with one emoji (`--remove` takes your reaction back).
    React {
        /// Conversation id.
        conv: String,
        /// The message's seq.
        seq: u64,
        /// The emoji, e.g. 👍.
        emoji: String,
        /// Remove the reaction instead.
        #[arg(long)]
        remove: bool,
    },
    /// Pin a message (`--unpin` unpins it).
    Pin {
        /// Conversation id.
        conv: String,
        /// The message's seq.
        seq: u64,
        /// Unpin instead.
        #[arg(long)]
        unpin: bool,
    },
    /// List a conversation's pinned messages.
    Pins {
        /// Conversation id.
        conv: String,
    },
    /// Print the replies to a message.
    Thread {
        /// Conversation id.
        conv: String,
        /// The message whose replies to print.
        seq: u64,
        /// Only replies after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Page size, 1..=100.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Change a conversation's title, description or settings.
    Settings {
        /// Conversation id.
        conv: String,
        /// New title.
        #[arg(long)]
        title: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Push notifications on (`true`) or muted (`false`: only mentions are pushed).
        #[arg(long)]
        notifications: Option<bool>,
        /// Days to keep messages (0: the firm's policy).
        #[arg(long)]
        retention_days: Option<u32>,
        /// Mark as needing extra encryption (`true`/`false`).
        #[arg(long)]
        encryption: Option<bool>,
    },
    /// Give a participant another conversation role.
    Role {
        /// Conversation id.
        conv: String,
        /// The participant.
        user: String,
        /// The new role.
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Print every version of a message: the audit trail (global admins only).
    Audit {
        /// Conversation id.
        conv: String,
        /// The message's seq.
        seq: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Member,
    Moderator,
    Admin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Group,
    Case,
    Support,
    Private,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("legalchat: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `legalchat history ... | head` closing the pipe early is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("legalchat: {}", sanitize_line(&explain(&e)));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// The error message, with a hint for the mistakes people actually make.
fn explain(e: &anyhow::Error) -> String {
    match e.downcast_ref::<legalchat_sdk::Error>() {
        Some(legalchat_sdk::Error::Unauthorized(reason)) => {
            format!("the server refused the token ({reason}); get a new one, e.g. `legalchatd token --user ID --role advocate`")
        }
        Some(legalchat_sdk::Error::Tls(_)) => {
            format!("{e:#} (check that --ca is the server's certificate or CA and --server-name matches it)")
        }
        _ => format!("{e:#}"),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = connect(&cli).await?;
    let out = Output { json: cli.json };
    let result = run_command(&client, &out, cli.command).await;
    client.close().await;
    result
}

/// `--transport`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    /// QUIC, with TLS over TCP when QUIC does not answer.
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

async fn resolve(what: &str, server: &str) -> anyhow::Result<std::net::SocketAddr> {
    tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("cannot resolve {what} {server:?} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("{what} {server:?} resolves to nothing"))
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let token = cli.token.clone().filter(|t| !t.is_empty()).ok_or_else(|| anyhow!("no token: set LEGALCHAT_TOKEN (or pass --token)"))?;
    let addr = resolve("server address", &cli.server).await?;
    let server_name = cli.server_name.clone().unwrap_or_else(|| default_server_name(&cli.server));
    let policy = match cli.transport {
        TransportArg::Auto => TransportPolicy::Auto,
        TransportArg::Quic => TransportPolicy::QuicOnly,
        TransportArg::Tcp => TransportPolicy::TcpOnly,
    };
    let mut config = ClientConfig::new(addr, token)
        .with_ca_file(&cli.ca)?
        .with_server_name(server_name)
        .with_transport(policy)
        .with_client_info(format!("legalchat-cli/{}", env!("CARGO_PKG_VERSION")));
    if let Some(tcp) = &cli.tcp_server {
        config = config.with_tcp_addr(resolve("TCP server address", tcp).await?);
    }
    Ok(Client::connect(config).await?)
}

/// `localhost` for an IP address, the host itself for a name.
fn default_server_name(server: &str) -> String {
    let host = server.rsplit_once(':').map_or(server, |(host, _port)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() { "localhost".into() } else { host.into() }
}

async fn run_command(client: &Client, out: &Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Whoami => out.whoami(client)?,
        Command::List { limit } => {
            for conversation in client.list_conversations(limit).await? {
                out.conversation(&conversation, client.user_id())?;
            }
        }
        Command::Create { kind, title, with, case_id, description } => {
            let conversation = client.create_conversation(new_conversation(kind, title, with, case_id, description)?).await?;
            out.conversation(&conversation, client.user_id())?;
        }
        Command::Send { conv, text } => {
            let sent = client.send_text(&conv, &text.join(" ")).await?;
            out.sent(&conv, &sent)?;
        }
        Command::Revoke { user } => {
            client.revoke_sessions(&user).await?;
            out.text(&sanitize_line(&format!("revoked every session of {user}")))?;
        }
        Command::Deactivate { user } => {
            client.set_user_active(&user, false).await?;
            out.text(&sanitize_line(&format!("deactivated {user}")))?;
        }
        Command::Activate { user } => {
            client.set_user_active(&user, true).await?;
            out.text(&sanitize_line(&format!("reactivated {user}")))?;
        }
        Command::Attach { conv, path, name, text } => {
            let attachment = upload(client, out, &conv, &path, name.as_deref()).await?;
            let r#type = if attachment.mime_type.starts_with("image/") { pb::ContentType::Image } else { pb::ContentType::Document };
            let content = pb::MessageContent {
                text: text.unwrap_or_default(),
                r#type: r#type.into(),
                format: pb::TextFormat::Plain.into(),
                attachments: vec![pb::Attachment { file_id: attachment.file_id.clone(), ..Default::default() }],
            };
            let sent = client.send(&conv, &legalchat_sdk::new_client_message_id(), content).await?;
            out.sent(&conv, &sent)?;
        }
        Command::Upload { conv, path, name } => {
            let attachment = upload(client, out, &conv, &path, name.as_deref()).await?;
            if out.json {
                out.line(&json!({"type": "uploaded", "conversation_id": conv, "attachment": attachment_json(&attachment)}))?;
            } else {
                out.text(&sanitize_line(&format!("uploaded {}: file id {}", attachment_words(&attachment), attachment.file_id)))?;
            }
        }
        Command::Download { conv, file_id, output, force } => {
            let ticket = client.start_download(&conv, &file_id).await?;
            // The server's name is sanitized: a plain file name, never a path.
            let path = output.unwrap_or_else(|| PathBuf::from(&ticket.file_name));
            if path.exists() && !force {
                anyhow::bail!("{} exists; choose another --output, or --force to replace it", path.display());
            }
            let bar = progress_bar(out, ticket.size, "downloading");
            let mut show = |p: legalchat_sdk::Progress| bar.set_position(p.done);
            let done = client.download_file(&conv, &file_id, &path, &mut show).await;
            bar.finish_and_clear();
            let done = done?;
            if out.json {
                out.line(&json!({
                    "type": "downloaded",
                    "path": done.path,
                    "size": done.size,
                    "sha256": hex_string(&done.sha256),
                    "mime_type": done.mime_type,
                }))?;
            } else {
                out.text(&format!("saved {} ({}, {} bytes, SHA-256 checked)", done.path.display(), done.mime_type, done.size))?;
            }
        }
        Command::History { conv, before, after, limit } => {
            let cursor = match (before, after) {
                (Some(seq), _) => HistoryCursor::Before(seq),
                (None, Some(seq)) => HistoryCursor::After(seq),
                (None, None) => HistoryCursor::Latest,
            };
            let page = client.history(&conv, cursor, limit).await?;
            for message in &page.messages {
                out.message(message)?;
            }
            if page.has_more && !out.json {
                eprintln!("(more messages; page with --before/--after)");
            }
        }
        Command::Tail { conv } => follow(client, out, &conv, false).await?,
        Command::Chat { conv } => follow(client, out, &conv, true).await?,
        Command::Read { conv, seq } => {
            client.mark_read(&conv, seq).await?;
            if out.json {
                out.line(&json!({"type": "read", "conversation_id": conv, "seq": seq}))?;
            } else {
                out.text(&format!("read up to #{seq}"))?;
            }
        }
        Command::Receipts { conv } => {
            let list = client.receipts(&conv).await?;
            for s in &list.states {
                if out.json {
                    out.line(&json!({
                        "type": "receipt_state",
                        "conversation_id": list.conversation_id,
                        "user_id": s.user_id,
                        "delivered_seq": s.delivered_seq,
                        "delivered_at_ms": s.delivered_at_ms,
                        "read_seq": s.read_seq,
                        "read_at_ms": s.read_at_ms,
                    }))?;
                } else {
                    out.text(&sanitize_line(&format!(
                        "{}: received up to #{} ({}), read up to #{} ({})",
                        s.user_id,
                        s.delivered_seq,
                        clock_time(s.delivered_at_ms),
                        s.read_seq,
                        clock_time(s.read_at_ms)
                    )))?;
                }
            }
        }
        Command::Presence { users } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            for p in client.presence(&users).await? {
                out.presence(&p)?;
            }
        }
        Command::Reply { conv, seq, text } => {
            let sent = client.reply(&conv, seq, &text.join(" ")).await?;
            out.sent(&conv, &sent)?;
        }
        Command::Edit { conv, seq, text } => {
            let sent = client.edit_text(&conv, seq, &text.join(" ")).await?;
            out.event_stored(&conv, "edit", &sent)?;
        }
        Command::Delete { conv, seq } => {
            let sent = client.delete(&conv, seq).await?;
            out.event_stored(&conv, "delete", &sent)?;
        }
        Command::React { conv, seq, emoji, remove } => {
            let sent = if remove { client.unreact(&conv, seq, &emoji).await? } else { client.react(&conv, seq, &emoji).await? };
            out.event_stored(&conv, "reaction", &sent)?;
        }
        Command::Pin { conv, seq, unpin } => {
            let sent = client.pin(&conv, seq, unpin).await?;
            out.event_stored(&conv, if unpin { "unpin" } else { "pin" }, &sent)?;
        }
        Command::Pins { conv } => {
            for message in &client.pins(&conv).await?.messages {
                out.message(message)?;
            }
        }
        Command::Thread { conv, seq, after, limit } => {
            let page = client.thread(&conv, seq, after, limit).await?;
            for message in &page.messages {
                out.message(message)?;
            }
            if page.has_more && !out.json {
                eprintln!("(more replies; page with --after)");
            }
        }
        Command::Settings { conv, title, description, notifications, retention_days, encryption } => {
            let mut update = ConversationUpdate::new();
            update.title = title;
            update.description = description;
            update.notifications = notifications;
            update.retention_days = retention_days;
            update.encryption = encryption;
            let conversation = client.update_conversation(&conv, update).await?;
            out.conversation(&conversation, client.user_id())?;
        }
        Command::Role { conv, user, role } => {
            let role = match role {
                RoleArg::Member => pb::ParticipantRole::Member,
                RoleArg::Moderator => pb::ParticipantRole::Moderator,
                RoleArg::Admin => pb::ParticipantRole::AdminRole,
            };
            let conversation = client.set_participant_role(&conv, &user, role).await?;
            out.conversation(&conversation, client.user_id())?;
        }
        Command::Audit { conv, seq } => {
            let audit = client.audit(&conv, seq).await?;
            for v in &audit.versions {
                let text = v.content.as_ref().map_or("", |c| c.text.as_str());
                if out.json {
                    out.line(&json!({
                        "type": "version",
                        "conversation_id": audit.conversation_id,
                        "message_seq": audit.message_seq,
                        "seq": v.seq,
                        "action": lower_name(v.action().as_str_name()),
                        "actor_id": v.actor_id,
                        "timestamp_ms": v.timestamp_ms,
                        "time": iso_time(v.timestamp_ms),
                        "text": text,
                    }))?;
                } else {
                    let line = format!(
                        "#{} {} {} by {}: {}",
                        v.seq,
                        clock_time(v.timestamp_ms),
                        lower_name(v.action().as_str_name()),
                        v.actor_id,
                        sanitize_text(text).replace('\n', "\n    ")
                    );
                    out.text(&sanitize_line(&line))?;
                }
            }
        }
        Command::Ping => {
            let rtt = client.ping().await?;
            if out.json {
                out.line(&json!({"type": "pong", "rtt_us": u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)}))?;
            } else {
                out.text(&format!("pong in {:.1} ms", rtt.as_secs_f64() * 1000.0))?;
            }
        }
    }
    Ok(())
}

fn new_conversation(
    kind: Kind,
    title: Option<String>,
    with: Vec<String>,
    case_id: Option<String>,
    description: Option<String>,
) -> anyhow::Result<NewConversation> {
    let with: Vec<String> = with.into_iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    if case_id.is_some() && !matches!(kind, Kind::Case) {
        bail!("--case-id is only for --kind case");
    }
    let title_for = |what: &str| title.clone().ok_or_else(|| anyhow!("--title is required for {what} conversations"));
    let new = match kind {
        Kind::Private => {
            let [other] = <[String; 1]>::try_from(with)
                .map_err(|with| anyhow!("a private conversation takes exactly one --with user, got {}", with.len()))?;
            let mut new = NewConversation::private(other);
            new.title = title.clone().unwrap_or_default();
            new
        }
        Kind::Group => NewConversation::group(title_for("group")?, with),
        Kind::Support => NewConversation::support(title_for("support")?, with),
        Kind::Case => {
            let case_id = case_id.ok_or_else(|| anyhow!("--case-id is required for case conversations"))?;
            NewConversation::case(case_id, title_for("case")?, with)
        }
    };
    Ok(match description {
        Some(d) => new.with_description(d),
        None => new,
    })
}

/// `tail` and `chat`: the recent backlog, then live messages of one conversation, with
/// its typing, presence and receipt events. The SDK reconnects and catches up by itself;
/// state changes are reported on stderr.
async fn follow(client: &Client, out: &Output, conv: &str, interactive: bool) -> anyhow::Result<()> {
    let page = client.history(conv, HistoryCursor::Latest, BACKLOG).await?;
    for message in &page.messages {
        out.message(message)?;
    }
    // Messages that arrive as events while the backlog was fetched are in the page already.
    let mut seen = SeenSeqs::up_to(page.last_seq);
    // Typing and who is online arrive only for joined rooms.
    let room = client.join_room(conv).await?;
    out.room_users(&room, client.user_id())?;
    if interactive && !out.json {
        eprintln!("(connected as {}; type a message and press Enter, Ctrl-D to leave)", client.user_id());
    }
    let mut stdin = interactive.then(|| tokio::io::BufReader::new(tokio::io::stdin()).lines());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            event = client.next_event() => match event {
                Some(Event::Message(m)) if m.conversation_id == conv => {
                    if seen.insert(m.seq) {
                        out.message(&m)?;
                    }
                }
                Some(Event::Typing(t)) if t.conversation_id == conv && t.user_id != client.user_id() => out.typing(&t)?,
                Some(Event::Receipt(r)) if r.conversation_id == conv && r.user_id != client.user_id() => out.receipt(&r)?,
                Some(Event::RoomUsers(r)) if r.conversation_id == conv => out.room_users(&r, client.user_id())?,
                Some(Event::Presence(p)) if p.user_id != client.user_id() => out.presence(&p)?,
                Some(Event::State(state)) => out.state(&state, client.transport())?,
                Some(Event::Goodbye { code, reason }) => {
                    eprintln!("legalchat: the server is ending the session ({}): {}", code.as_str_name(), sanitize_line(&reason));
                }
                Some(Event::Closed { reason }) => bail!("session closed: {reason}"),
                None => bail!("session closed"),
                Some(_) => {}
            },
            line = next_line(&mut stdin) => match line? {
                None => return Ok(()),
                Some(line) if line.trim().is_empty() => {}
                // While reconnecting the message waits in the SDK's outbox.
                Some(line) => match client.send_text(conv, line.trim_end_matches('\r')).await {
                    Ok(sent) => {
                        if seen.insert(sent.seq) {
                            out.message(&own_message(client, conv, line.trim_end_matches('\r'), &sent))?;
                        }
                    }
                    // The client has ended; nothing more can be sent or received.
                    Err(e @ legalchat_sdk::Error::Closed(_)) => return Err(e.into()),
                    Err(e) => eprintln!("legalchat: not sent: {}", sanitize_line(&e.to_string())),
                },
            },
        }
    }
}

/// The next line of stdin, or never when not reading stdin.
async fn next_line(stdin: &mut Option<tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>>) -> io::Result<Option<String>> {
    match stdin {
        Some(lines) => lines.next_line().await,
        None => std::future::pending().await,
    }
}

/// The message as the server stored it, for printing our own sends (the SDK reports a
/// send through its result, not as an event).
fn own_message(client: &Client, conv: &str, text: &str, sent: &Sent) -> pb::Message {
    pb::Message {
        conversation_id: conv.to_owned(),
        seq: sent.seq,
        message_id: sent.message_id.clone(),
        client_message_id: String::new(),
        sender_id: client.user_id().to_owned(),
        content: Some(pb::MessageContent { text: text.to_owned(), ..Default::default() }),
        timestamp_ms: sent.timestamp_ms,
        state_seq: sent.seq,
        ..Default::default()
    }
}

/// Which seqs of one conversation were printed: everything up to a watermark, plus a
/// bounded set above it (messages may arrive out of order around our own sends).
#[derive(Debug)]
struct SeenSeqs {
    up_to: u64,
    above: BTreeSet<u64>,
}

impl SeenSeqs {
    /// Bound on remembered seqs above the watermark; beyond it the oldest gap is given up.
    const MAX_ABOVE: usize = 4_096;

    fn up_to(seq: u64) -> Self {
        Self { up_to: seq, above: BTreeSet::new() }
    }

    /// Records `seq`; false if it was seen before.
    fn insert(&mut self, seq: u64) -> bool {
        if seq <= self.up_to || !self.above.insert(seq) {
            return false;
        }
        while self.above.first() == Some(&(self.up_to + 1)) {
            self.above.pop_first();
            self.up_to += 1;
        }
        if self.above.len() > Self::MAX_ABOVE
            && let Some(lowest) = self.above.pop_first()
        {
            self.up_to = lowest;
        }
        true
    }
}

/// Where results go: human-readable lines, or JSON lines with `--json`.
#[derive(Debug)]
struct Output {
    json: bool,
}

impl Output {
    fn text(&self, line: &str) -> io::Result<()> {
        writeln!(io::stdout().lock(), "{line}")
    }

    fn line(&self, value: &Value) -> io::Result<()> {
        writeln!(io::stdout().lock(), "{value}")
    }

    fn whoami(&self, client: &Client) -> io::Result<()> {
        let session = client.session();
        if self.json {
            self.line(&json!({
                "type": "whoami",
                "user_id": session.user_id,
                "role": user_role_name(session.role),
                "session_id": session.session_id,
                "max_message_bytes": session.max_message_bytes,
                "transport": client.transport().map(|t| t.to_string()),
            }))
        } else {
            let transport = client.transport().map_or_else(|| "disconnected".to_owned(), |t| t.to_string());
            self.text(&sanitize_line(&format!(
                "{} ({}), session {}, over {transport}",
                session.user_id,
                user_role_name(session.role),
                session.session_id
            )))
        }
    }

    fn message(&self, m: &pb::Message) -> io::Result<()> {
        if self.json { self.line(&message_json(m)) } else { self.text(&message_line(m)) }
    }

    fn conversation(&self, c: &pb::Conversation, me: &str) -> io::Result<()> {
        if self.json {
            return self.line(&conversation_json(c));
        }
        self.text(&conversation_line(c, me))?;
        if let Some(last) = &c.last_message {
            self.text(&format!("    last: {}", message_line(last).replace('\n', "\n    ")))?;
        }
        Ok(())
    }

    fn typing(&self, t: &pb::TypingEvent) -> io::Result<()> {
        if self.json {
            return self.line(&json!({"type": "typing", "conversation_id": t.conversation_id, "user_id": t.user_id, "active": t.active}));
        }
        let what = if t.active { "is typing…" } else { "stopped typing" };
        self.text(&sanitize_line(&format!("· {} {what}", t.user_id)))
    }

    fn receipt(&self, r: &pb::ReceiptEvent) -> io::Result<()> {
        let kind = r.kind();
        if self.json {
            return self.line(&json!({
                "type": "receipt",
                "conversation_id": r.conversation_id,
                "user_id": r.user_id,
                "kind": lower_name(kind.as_str_name()),
                "seq": r.seq,
                "timestamp_ms": r.timestamp_ms,
                "time": iso_time(r.timestamp_ms),
            }));
        }
        self.text(&receipt_line(r))
    }

    fn presence(&self, p: &pb::Presence) -> io::Result<()> {
        if self.json {
            return self.line(&json!({"type": "presence", "user_id": p.user_id, "online": p.online, "last_seen_ms": p.last_seen_ms}));
        }
        self.text(&presence_line(p))
    }

    fn room_users(&self, r: &pb::RoomUsers, me: &str) -> io::Result<()> {
        if self.json {
            return self.line(&json!({"type": "room_users", "conversation_id": r.conversation_id, "online": r.online_user_ids}));
        }
        let others: Vec<&str> = r.online_user_ids.iter().map(String::as_str).filter(|u| *u != me).collect();
        let who = if others.is_empty() { "nobody else".to_owned() } else { others.join(", ") };
        self.text(&sanitize_line(&format!("· online here: {who}")))
    }

    /// Connection changes go to stderr: they are about this program, not the chat.
    fn state(&self, state: &ConnectionState, transport: Option<legalchat_sdk::Transport>) -> io::Result<()> {
        let transport = transport.filter(|_| state.is_connected());
        if self.json {
            let (name, detail) = match state {
                ConnectionState::Connected => ("connected", json!({})),
                ConnectionState::Disconnected { reason } => ("disconnected", json!({"reason": reason})),
                ConnectionState::Reconnecting { attempt, delay } => {
                    ("reconnecting", json!({"attempt": attempt, "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)}))
                }
                ConnectionState::Resumed { missed } => ("resumed", json!({"missed": missed})),
                ConnectionState::Closed { reason } => ("closed", json!({"reason": reason})),
                _ => ("other", json!({})),
            };
            let transport = transport.map(|t| t.to_string());
            return self.line(&json!({"type": "state", "state": name, "detail": detail, "transport": transport}));
        }
        match transport {
            Some(t) => eprintln!("legalchat: {} (over {t})", sanitize_line(&state.to_string())),
            None => eprintln!("legalchat: {}", sanitize_line(&state.to_string())),
        }
        Ok(())
    }

    /// `reaction stored as #13 at 10:31:09`, or `reaction: already in place (#13)` when
    /// it was (a reaction the user already had, or a retry the server had stored).
    fn event_stored(&self, conv: &str, what: &str, sent: &Sent) -> io::Result<()> {
        if self.json {
            return self.line(&json!({
                "type": "event_stored",
                "event": what,
                "conversation_id": conv,
                "seq": sent.seq,
                "timestamp_ms": sent.timestamp_ms,
                "time": iso_time(sent.timestamp_ms),
                "changed": !sent.duplicate,
            }));
        }
        if sent.duplicate {
            self.text(&format!("{what}: already in place (#{})", sent.seq))
        } else {
            self.text(&format!("{what} stored as #{} at {}", sent.seq, clock_time(sent.timestamp_ms)))
        }
    }

    fn sent(&self, conv: &str, sent: &Sent) -> io::Result<()> {
        if self.json {
            self.line(&json!({
                "type": "sent",
                "conversation_id": conv,
                "message_id": sent.message_id,
                "seq": sent.seq,
                "timestamp_ms": sent.timestamp_ms,
                "time": iso_time(sent.timestamp_ms),
                "duplicate": sent.duplicate,
            }))
        } else {
            let what = if sent.duplicate { "already stored" } else { "sent" };
            self.text(&sanitize_line(&format!("{what} #{} at {} (message {})", sent.seq, clock_time(sent.timestamp_ms), sent.message_id)))
        }
    }
}

/// `[#12 10:31:05] alice: hello`, continuation lines indented so that no message can
/// pass off a line of its text as another message. Events read as what they did:
/// `[#13 10:31:09] bob reacted 👍 to #12`; a message shows its state (edited, deleted,
/// reactions, pinned, the message it replies to).
fn message_line(m: &pb::Message) -> String {
    let head = format!("[#{} {}] {}", m.seq, clock_time(m.timestamp_ms), sanitize_line(&m.sender_id));
    if let Some(kind) = m.event.as_ref().and_then(|e| e.kind.as_ref()) {
        return sanitize_line(&format!("{head} {}", event_words(kind)));
    }
    if m.deleted_at_ms != 0 {
        return format!("{head}: (message deleted by {})", sanitize_line(&m.deleted_by));
    }
    let text = m.content.as_ref().map_or("", |c| c.text.as_str());
    let body = sanitize_text(text).replace('\n', "\n    ");
    let mut line = head;
    if m.reply_to_seq > 0 {
        line.push_str(&format!(" (reply to #{})", m.reply_to_seq));
    }
    line.push_str(": ");
    line.push_str(&body);
    let mut notes = Vec::new();
    if m.edited_at_ms != 0 {
        notes.push("edited".to_owned());
    }
    if m.pinned {
        notes.push("pinned".to_owned());
    }
    for r in &m.reactions {
        notes.push(format!("{} {}", sanitize_line(&r.emoji), r.user_ids.len()));
    }
    for a in m.content.iter().flat_map(|c| &c.attachments) {
        line.push_str(&format!("\n    📎 {}", sanitize_line(&format!("{} — file id {}", attachment_words(a), a.file_id))));
    }
    if !notes.is_empty() {
        line.push_str(&format!("  ({})", notes.join(", ")));
    }
    line
}

/// What an event did, in words.
fn event_words(kind: &pb::conversation_event::Kind) -> String {
    use pb::conversation_event::Kind;
    match kind {
        Kind::Edited(e) if e.redacted => format!("edited #{} (an earlier version)", e.target_seq),
        Kind::Edited(e) => {
            let text = e.content.as_ref().map_or("", |c| c.text.as_str());
            format!("edited #{}: {}", e.target_seq, sanitize_text(text).replace('\n', " "))
        }
        Kind::Deleted(d) => format!("deleted #{}", d.target_seq),
        Kind::Reaction(r) if r.added => format!("reacted {} to #{}", r.emoji, r.target_seq),
        Kind::Reaction(r) => format!("took back {} on #{}", r.emoji, r.target_seq),
        Kind::Pin(p) if p.pinned => format!("pinned #{}", p.target_seq),
        Kind::Pin(p) => format!("unpinned #{}", p.target_seq),
        Kind::ParticipantsAdded(a) => {
            format!("added {}", a.participants.iter().map(|p| p.user_id.as_str()).collect::<Vec<_>>().join(", "))
        }
        Kind::ParticipantRemoved(r) => format!("removed {}", r.user_id),
        Kind::RoleChanged(r) => format!("made {} {}", r.user_id, lower_name(r.role().as_str_name())),
        Kind::ConversationChanged(c) => {
            let notifications = c.settings.as_ref().is_none_or(|s| s.notifications);
            format!("changed the conversation: title {:?}, notifications {}", c.title, if notifications { "on" } else { "muted" })
        }
    }
}

/// `✓ bob received up to #12` / `✓✓ bob read up to #12`.
fn receipt_line(r: &pb::ReceiptEvent) -> String {
    let line = match r.kind() {
        pb::ReceiptKind::Read => format!("✓✓ {} read up to #{}", r.user_id, r.seq),
        _ => format!("✓ {} received up to #{}", r.user_id, r.seq),
    };
    sanitize_line(&line)
}

/// `· bob is online` / `· bob went offline (last seen 10:31:05)`.
fn presence_line(p: &pb::Presence) -> String {
    let line = if p.online {
        format!("· {} is online", p.user_id)
    } else if p.last_seen_ms > 0 {
        format!("· {} is offline (last seen {})", p.user_id, clock_time(p.last_seen_ms))
    } else {
        format!("· {} is offline", p.user_id)
    };
    sanitize_line(&line)
}

fn conversation_line(c: &pb::Conversation, me: &str) -> String {
    let others: Vec<&str> = c.participants.iter().map(|p| p.user_id.as_str()).filter(|u| *u != me).collect();
    let title = if c.title.is_empty() { format!("with {}", others.join(", ")) } else { c.title.clone() };
    let mut line = format!("{}  {}  {}", c.id, conversation_kind_name(c.r#type()), title);
    if !c.case_id.is_empty() {
        line.push_str(&format!("  [case {}]", c.case_id));
    }
    line.push_str(&format!("  ({} participants", c.participants.len()));
    if c.unread_count > 0 {
        line.push_str(&format!(", {} unread", c.unread_count));
    }
    line.push(')');
    sanitize_line(&line)
}

/// Uploads with a progress bar (on a terminal, and not with --json).
async fn upload(client: &Client, out: &Output, conv: &str, path: &std::path::Path, name: Option<&str>) -> anyhow::Result<pb::Attachment> {
    let size = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?.len();
    let bar = progress_bar(out, size, "uploading");
    let mut show = |p: legalchat_sdk::Progress| bar.set_position(p.done);
    let uploaded = client.upload_file(conv, path, name, &mut show).await;
    bar.finish_and_clear();
    Ok(uploaded?)
}

fn progress_bar(out: &Output, total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if out.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `contract.pdf (application/pdf, 1.2 MiB)`.
fn attachment_words(a: &pb::Attachment) -> String {
    #[allow(clippy::cast_precision_loss)]
    let size = if a.size >= 1 << 20 {
        format!("{:.1} MiB", a.size as f64 / f64::from(1u32 << 20))
    } else if a.size >= 1 << 10 {
        format!("{:.1} KiB", a.size as f64 / 1024.0)
    } else {
        format!("{} bytes", a.size)
    };
    let preview = if a.thumbnail.is_some() { ", preview" } else { "" };
    format!("{} ({}, {size}{preview})", a.name, a.mime_type)
}

fn attachment_json(a: &pb::Attachment) -> Value {
    json!({
        "file_id": a.file_id,
        "name": a.name,
        "mime_type": a.mime_type,
        "size": a.size,
        "sha256": hex_string(&a.sha256),
        "thumbnail": a.thumbnail.as_ref().map(|t| json!({"mime_type": t.mime_type, "width": t.width, "height": t.height, "bytes": t.data.len()})),
    })
}

fn message_json(m: &pb::Message) -> Value {
    let content = m.content.clone().unwrap_or_default();
    if let Some(kind) = m.event.as_ref().and_then(|e| e.kind.as_ref()) {
        return json!({
            "type": "event",
            "conversation_id": m.conversation_id,
            "seq": m.seq,
            "event_id": m.message_id,
            "actor_id": m.sender_id,
            "timestamp_ms": m.timestamp_ms,
            "time": iso_time(m.timestamp_ms),
            "event": event_words(kind),
        });
    }
    let reactions: Vec<Value> = m.reactions.iter().map(|r| json!({"emoji": r.emoji, "user_ids": r.user_ids})).collect();
    json!({
        "type": "message",
        "reply_to_seq": m.reply_to_seq,
        "mentions": m.mentions,
        "edited_at_ms": m.edited_at_ms,
        "deleted_at_ms": m.deleted_at_ms,
        "deleted_by": m.deleted_by,
        "reactions": reactions,
        "pinned": m.pinned,
        "conversation_id": m.conversation_id,
        "seq": m.seq,
        "message_id": m.message_id,
        "client_message_id": m.client_message_id,
        "sender_id": m.sender_id,
        "text": content.text,
        "content_type": lower_name(content.r#type().as_str_name()),
        "attachments": content.attachments.iter().map(attachment_json).collect::<Vec<_>>(),
        "format": lower_name(content.format().as_str_name()),
        "timestamp_ms": m.timestamp_ms,
        "time": iso_time(m.timestamp_ms),
    })
}

fn conversation_json(c: &pb::Conversation) -> Value {
    let participants: Vec<Value> = c
        .participants
        .iter()
        .map(|p| json!({"user_id": p.user_id, "role": participant_role_name(p.role()), "joined_at_ms": p.joined_at_ms}))
        .collect();
    json!({
        "type": "conversation",
        "id": c.id,
        "kind": conversation_kind_name(c.r#type()),
        "title": c.title,
        "description": c.description,
        "case_id": c.case_id,
        "participants": participants,
        "created_at_ms": c.created_at_ms,
        "updated_at_ms": c.updated_at_ms,
        "last_seq": c.last_seq,
        "unread_count": c.unread_count,
        "last_message": c.last_message.as_ref().map(message_json),
    })
}

fn lower_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn user_role_name(role: pb::UserRole) -> String {
    lower_name(role.as_str_name())
}

fn conversation_kind_name(kind: pb::ConversationType) -> String {
    lower_name(kind.as_str_name())
}

fn participant_role_name(role: pb::ParticipantRole) -> &'static str {
    match role {
        pb::ParticipantRole::Unspecified | pb::ParticipantRole::Member => "member",
        pb::ParticipantRole::Moderator => "moderator",
        pb::ParticipantRole::AdminRole => "admin",
    }
}

/// Replaces what a terminal would interpret rather than show: control characters (a
/// carriage return rewrites the line, an escape sequence recolours or retitles the
/// terminal) and bidirectional overrides (which reorder what the reader sees). Newlines
/// and tabs are kept.
fn sanitize_text(text: &str) -> String {
    text.chars().map(|c| if c == '\n' || c == '\t' || !is_deceptive(c) { c } else { '\u{FFFD}' }).collect()
}

/// [`sanitize_text`] for text that must stay on one line.
fn sanitize_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\n' {
                ' '
            } else if c != '\t' && is_deceptive(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn is_deceptive(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `HH:MM:SS` of a Unix time in milliseconds, UTC.
fn clock_time(ms: i64) -> String {
    legalchat_protocol::time::clock(ms)
}

/// RFC 3339 UTC time with milliseconds, e.g. `2024-05-01T10:31:05.123Z`.
fn iso_time(ms: i64) -> String {
    legalchat_protocol::time::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, sender: &str, text: &str, timestamp_ms: i64) -> pb::Message {
        pb::Message {
            conversation_id: "c".into(),
            seq,
            sender_id: sender.into(),
            content: Some(pb::MessageContent { text: text.into(), ..Default::default() }),
            timestamp_ms,
            ..Default::default()
        }
    }

    #[test]
    fn message_lines_match_the_documented_format() {
        // 2023-11-14T22:13:20Z
        let m = message(12, "alice", "hello", 1_700_000_000_000);
        assert_eq!(message_line(&m), "[#12 22:13:20] alice: hello");
    }

    #[test]
    fn multi_line_messages_cannot_fake_another_message() {
        let m = message(3, "mallory", "ok\n[#4 10:00:00] judge: approved\r", 0);
        assert_eq!(message_line(&m), "[#3 00:00:00] mallory: ok\n    [#4 10:00:00] judge: approved\u{FFFD}");
    }

    #[test]
    fn terminal_tricks_are_neutralised() {
        assert_eq!(sanitize_text("a\u{1b}[2Jb"), "a\u{FFFD}[2Jb");
        assert_eq!(sanitize_text("pay \u{202E}0001$"), "pay \u{FFFD}0001$");
        assert_eq!(sanitize_line("two\nlines"), "two lines");
        assert_eq!(sanitize_text("tab\tok"), "tab\tok");
    }

    #[test]
    fn json_messages_carry_every_field() {
        let v = message_json(&message(7, "bob", "hi", 1_700_000_000_000));
        assert_eq!(v["seq"], 7);
        assert_eq!(v["sender_id"], "bob");
        assert_eq!(v["text"], "hi");
        assert_eq!(v["content_type"], "content_type_unspecified");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn conversation_lines_name_the_other_side() {
        let c = pb::Conversation {
            id: "ab".repeat(16),
            r#type: pb::ConversationType::Private as i32,
            participants: vec![
                pb::Participant { user_id: "alice".into(), ..Default::default() },
                pb::Participant { user_id: "bob".into(), ..Default::default() },
            ],
            unread_count: 2,
            ..Default::default()
        };
        assert_eq!(conversation_line(&c, "alice"), format!("{}  private  with bob  (2 participants, 2 unread)", c.id));
    }

    #[test]
    fn seen_seqs_deduplicate_out_of_order_arrivals() {
        let mut seen = SeenSeqs::up_to(10);
        assert!(!seen.insert(10));
        assert!(seen.insert(12));
        assert!(seen.insert(11));
        assert!(!seen.insert(12));
        assert_eq!(seen.up_to, 12);
        assert!(seen.above.is_empty());
    }

    #[test]
    fn seen_seqs_stay_bounded() {
        let mut seen = SeenSeqs::up_to(0);
        for seq in 2..=(SeenSeqs::MAX_ABOVE as u64 + 10) {
            seen.insert(seq);
        }
        assert!(seen.above.len() <= SeenSeqs::MAX_ABOVE);
    }

    #[test]
    fn receipts_and_presence_read_naturally() {
        let r = pb::ReceiptEvent {
            conversation_id: "c".into(),
            user_id: "bob".into(),
            kind: pb::ReceiptKind::Read as i32,
            seq: 12,
            timestamp_ms: 0,
        };
        assert_eq!(receipt_line(&r), "✓✓ bob read up to #12");
        let r = pb::ReceiptEvent { kind: pb::ReceiptKind::Delivered as i32, ..r };
        assert_eq!(receipt_line(&r), "✓ bob received up to #12");
        let p = pb::Presence { user_id: "bob".into(), online: false, last_seen_ms: 1_700_000_000_000 };
        assert_eq!(presence_line(&p), "· bob is offline (last seen 22:13:20)");
        assert_eq!(presence_line(&pb::Presence { online: true, ..p }), "· bob is online");
        let sneaky = pb::Presence { user_id: "bob\u{1b}[2J".into(), online: true, last_seen_ms: 0 };
        assert_eq!(presence_line(&sneaky), "· bob\u{FFFD}[2J is online");
    }

    #[test]
    fn server_names_default_sensibly() {
        assert_eq!(default_server_name("127.0.0.1:7443"), "localhost");
        assert_eq!(default_server_name("[::1]:7443"), "localhost");
        assert_eq!(default_server_name("chat.firm.example:7443"), "chat.firm.example");
    }

    #[test]
    fn create_arguments_are_checked() {
        let private = new_conversation(Kind::Private, None, vec!["bob".into()], None, None).expect("valid");
        assert_eq!(private.kind, pb::ConversationType::Private);
        assert!(new_conversation(Kind::Private, None, vec!["bob".into(), "carol".into()], None, None).is_err());
        assert!(new_conversation(Kind::Group, None, vec!["bob".into()], None, None).is_err());
        assert!(new_conversation(Kind::Case, Some("Estate".into()), vec![], None, None).is_err());
        assert!(new_conversation(Kind::Group, Some("T".into()), vec![], Some("C-1".into()), None).is_err());
        let case =
            new_conversation(Kind::Case, Some("Estate".into()), vec!["bob".into()], Some("C-1".into()), Some("d".into())).expect("valid");
        assert_eq!((case.case_id.as_str(), case.description.as_str()), ("C-1", "d"));
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["legalchat", "--token", "t", "history", "abc", "--before", "5", "--limit", "10"]).expect("parses");
        assert!(matches!(cli.command, Command::History { before: Some(5), after: None, limit: 10, .. }));
        assert!(Cli::try_parse_from(["legalchat", "history", "abc", "--before", "5", "--after", "2"]).is_err());
        let cli = Cli::try_parse_from(["legalchat", "read", "abc", "12"]).expect("parses");
        assert!(matches!(cli.command, Command::Read { seq: 12, .. }));
        let cli = Cli::try_parse_from(["legalchat", "create", "--kind", "group", "--title", "T", "--with", "bob,carol"]).expect("parses");
        assert!(matches!(cli.command, Command::Create { ref with, .. } if with == &["bob", "carol"]));
        let cli = Cli::try_parse_from(["legalchat", "react", "abc", "3", "👍", "--remove"]).expect("parses");
        assert!(matches!(cli.command, Command::React { seq: 3, ref emoji, remove: true, .. } if emoji == "👍"));
        let cli = Cli::try_parse_from(["legalchat", "edit", "abc", "3", "new", "text"]).expect("parses");
        assert!(matches!(cli.command, Command::Edit { seq: 3, ref text, .. } if text == &["new", "text"]));
        let cli =
            Cli::try_parse_from(["legalchat", "settings", "abc", "--notifications", "false", "--retention-days", "30"]).expect("parses");
        assert!(matches!(cli.command, Command::Settings { notifications: Some(false), retention_days: Some(30), title: None, .. }));
        let cli = Cli::try_parse_from(["legalchat", "role", "abc", "bob", "moderator"]).expect("parses");
        assert!(matches!(cli.command, Command::Role { role: RoleArg::Moderator, .. }));
        assert!(Cli::try_parse_from(["legalchat", "role", "abc", "bob", "owner"]).is_err());
    }

    #[test]
    fn events_and_message_states_read_naturally() {
        use pb::conversation_event::Kind;
        let event = |seq: u64, sender: &str, kind: Kind| pb::Message {
            seq,
            sender_id: sender.into(),
            event: Some(pb::ConversationEvent { kind: Some(kind) }),
            ..message(seq, sender, "", 0)
        };
        let reaction = event(5, "bob", Kind::Reaction(pb::ReactionChanged { target_seq: 2, emoji: "👍".into(), added: true }));
        assert_eq!(message_line(&reaction), "[#5 00:00:00] bob reacted 👍 to #2");
        let edited = event(6, "alice", Kind::Edited(pb::MessageEdited { target_seq: 2, content: None, redacted: true }));
        assert_eq!(message_line(&edited), "[#6 00:00:00] alice edited #2 (an earlier version)");
        assert_eq!(message_json(&reaction)["type"], "event");

        let mut m = message(2, "alice", "see you", 0);
        m.edited_at_ms = 1;
        m.pinned = true;
        m.reply_to_seq = 1;
        m.reactions = vec![pb::Reaction { emoji: "👍".into(), user_ids: vec!["bob".into(), "carol".into()] }];
        assert_eq!(message_line(&m), "[#2 00:00:00] alice (reply to #1): see you  (edited, pinned, 👍 2)");
        m.deleted_at_ms = 3;
        m.deleted_by = "alice".into();
        m.content = None;
        assert_eq!(message_line(&m), "[#2 00:00:00] alice: (message deleted by alice)");
    }
}
