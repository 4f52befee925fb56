//! Arbitrary bytes as the body of a session frame, a `ClientFrame`, through everything the
//! daemon checks before it acts on a request: `requests::plan` (every request of an
//! authenticated session, for two callers and two server shapes), then the checks that run
//! outside the plan: an upload's and a download's (`files::check_upload`,
//! `files::check_download`) and a Web Push endpoint's host (`push::check_host`).
//!
//! What must hold for any input: no panic; a refusal names the field at fault
//! (`field: reason`), except the three refusals of a whole frame; whatever is accepted is
//! routed to the shard that owns its conversation and passes the protocol's rules again.
#![no_main]

use legalchat_daemon::auth::{Identity, Role};
use legalchat_daemon::config::DEFAULT_PUSH_HOSTS;
use legalchat_daemon::files::{self, DEFAULT_MAX_FILE_SIZE};
use legalchat_daemon::policy::RequestError;
use legalchat_daemon::requests::{self, AppendEntry, Context, Gather, Plan, catch_up};
use legalchat_daemon::{ids, push};
use legalchat_protocol::pb::{self, ErrorCode, client_frame::Request};
use legalchat_protocol::validate;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Refusals of a whole frame rather than of one of its fields.
const FRAME_REFUSALS: [&str; 3] = [
    "the frame carries no request (unknown to this server?)",
    "this session is already authenticated",
    "Reauthenticate is answered by the session",
];

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = pb::ClientFrame::decode(data) else { return };
    let advocate = Identity { user_id: "alice".into(), role: Role::Advocate, name: None };
    let client = Identity { user_id: "c.lient@firm.example".into(), role: Role::Client, name: Some("C".into()) };
    let shapes = [
        Context {
            caller: &advocate,
            session: 1,
            shards: 1,
            max_message_size: validate::DEFAULT_MAX_MESSAGE_BYTES,
            now_ms: 1_700_000_000_000,
        },
        Context { caller: &client, session: 2, shards: 7, max_message_size: 16, now_ms: 0 },
    ];
    for cx in &shapes {
        check(&frame, requests::plan(frame.clone(), cx), cx);
    }
});

fn check(frame: &pb::ClientFrame, plan: Plan, cx: &Context<'_>) {
    // The conversation a request names, when it names one: what it must be routed by.
    let owner = conversation_of(frame.request.as_ref())
        .and_then(|c| validate::parse_id("conversation_id", c).ok())
        .map(|id| (id, ids::shard_of(&id, cx.shards)));
    match plan {
        Plan::Refuse(e) => {
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
            if !FRAME_REFUSALS.contains(&e.message.as_str()) {
                names_a_field(&e);
            }
        }
        Plan::Pong(p) => assert!(matches!(&frame.request, Some(Request::Ping(ping)) if ping.nonce == p.nonce)),
        Plan::Typing(signal) => {
            assert!(matches!(frame.request, Some(Request::Typing(_))));
            assert_eq!(signal.map(|(id, _)| id), owner.map(|(id, _)| id));
        }
        Plan::Shard(routed) => {
            assert!(routed.shard < cx.shards);
            if let Some((_, shard)) = owner {
                assert_eq!(routed.shard, shard, "routed to a shard that does not own the conversation");
            }
        }
        Plan::Append(append) => {
            assert_eq!(Some((append.conversation, append.shard)), owner, "an append goes to its conversation's shard");
            match &append.entry {
                AppendEntry::Message { client_message_id, content, .. } => {
                    assert_eq!(validate::client_message_id(client_message_id), Ok(()));
                    assert_eq!(validate::message_content(Some(content), cx.max_message_size), Ok(()));
                }
                AppendEntry::Event { client_event_id, .. } => assert_eq!(validate::client_event_id(client_event_id), Ok(())),
            }
        }
        Plan::JoinRoom(join) => assert_eq!(Some((join.conversation, join.shard)), owner),
        Plan::LeaveRoom(id) => assert_eq!(Some(id), owner.map(|(id, _)| id)),
        Plan::Gather(gather) => check_gather(gather),
        _ => {}
    }
}

/// What a gathering runs with has passed the rules; the checks it makes first name fields.
fn check_gather(gather: Gather) {
    match gather {
        Gather::List(l) => assert!((1..=validate::MAX_LIST_LIMIT).contains(&l.limit)),
        Gather::CatchUp(c) => assert!((1..=catch_up::MAX_MESSAGES as usize).contains(&c.max_messages)),
        Gather::Presence(p) => assert_eq!(validate::participant_ids("user_ids", &p.user_ids), Ok(())),
        Gather::RegisterPush(r) => {
            let allowed: Vec<String> = DEFAULT_PUSH_HOSTS.iter().map(|h| (*h).to_owned()).collect();
            if let Err(e) = push::check_host(&r.subscription.endpoint, &allowed) {
                assert!(matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::Forbidden), "{e:?}");
                assert!(e.message.starts_with("web_push.endpoint: "), "{e:?}");
            }
        }
        Gather::StartUpload(u) => {
            for max in [1, DEFAULT_MAX_FILE_SIZE] {
                match files::check_upload(&u, max) {
                    Ok(checked) => {
                        assert!((1..=max).contains(&u.size));
                        assert!(!checked.name.is_empty() && !checked.name.contains(['/', '\\']), "{:?}", checked.name);
                    }
                    Err(e) => names_a_field(&e),
                }
            }
        }
        Gather::StartDownload(d) => {
            if let Err(e) = files::check_download(&d) {
                names_a_field(&e);
            }
        }
        _ => {}
    }
}

/// `field: reason`, the field spelled as in the `.proto` (snake case, dotted for nesting).
fn names_a_field(e: &RequestError) {
    let named = e.message.split_once(": ").is_some_and(|(field, reason)| {
        !field.is_empty()
            && !reason.is_empty()
            && field.split('.').all(|part| {
                part.starts_with(|c: char| c.is_ascii_lowercase())
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
    });
    assert!(named, "names no field: {:?}", e.message);
}

fn conversation_of(request: Option<&Request>) -> Option<&str> {
    Some(match request? {
        Request::GetConversation(r) => &r.conversation_id,
        Request::AddParticipants(r) => &r.conversation_id,
        Request::RemoveParticipant(r) => &r.conversation_id,
        Request::UpdateConversation(r) => &r.conversation_id,
        Request::SetParticipantRole(r) => &r.conversation_id,
        Request::SendMessage(r) => &r.conversation_id,
        Request::EditMessage(r) => &r.conversation_id,
        Request::DeleteMessage(r) => &r.conversation_id,
        Request::React(r) => &r.conversation_id,
        Request::PinMessage(r) => &r.conversation_id,
        Request::GetHistory(r) => &r.conversation_id,
        Request::GetThread(r) => &r.conversation_id,
        Request::ListPins(r) => &r.conversation_id,
        Request::GetMessageAudit(r) => &r.conversation_id,
        Request::MarkRead(r) => &r.conversation_id,
        Request::MarkDelivered(r) => &r.conversation_id,
        Request::GetReceipts(r) => &r.conversation_id,
        Request::JoinRoom(r) => &r.conversation_id,
        Request::LeaveRoom(r) => &r.conversation_id,
        Request::Typing(r) => &r.conversation_id,
        _ => return None,
    })
}
