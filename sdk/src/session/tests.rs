use super::*;
use pb::server_frame::Event as E;

fn frame(event: E) -> pb::ServerFrame {
    pb::ServerFrame { event: Some(event) }
}

fn authenticated(request_id: u64) -> pb::ServerFrame {
    frame(E::Ack(pb::Ack {
        request_id,
        result: Some(pb::ack::Result::Authenticated(pb::Authenticated {
            user_id: "alice".into(),
            role: pb::UserRole::Advocate as i32,
            session_id: "s-1".into(),
            max_frame_size: 65_536,
            max_message_bytes: 10_240,
            server_time_ms: 1_700_000_000_000,
            display_name: String::new(),
            ..Default::default()
        })),
    }))
}

fn pong(request_id: u64) -> pb::ServerFrame {
    frame(E::Ack(pb::Ack { request_id, result: Some(pb::ack::Result::Pong(pb::Pong { nonce: 1, server_time_ms: 0 })) }))
}

#[test]
fn authentication_success_fills_the_session() {
    let info = authentication_outcome(authenticated(1), 1).expect("a verdict").expect("accepted");
    assert_eq!(info.user_id, "alice");
    assert_eq!(info.role, pb::UserRole::Advocate);
    assert_eq!(info.session_id, "s-1");
    assert_eq!(info.max_message_bytes, 10_240);
}

#[test]
fn authentication_limits_default_when_not_announced() {
    let mut f = authenticated(1);
    if let Some(E::Ack(pb::Ack { result: Some(pb::ack::Result::Authenticated(a)), .. })) = &mut f.event {
        a.max_frame_size = 0;
        a.max_message_bytes = 0;
    }
    let info = authentication_outcome(f, 1).expect("a verdict").expect("accepted");
    assert_eq!(info.max_frame_size, DEFAULT_MAX_FRAME_LEN);
    assert_eq!(info.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
}

#[test]
fn authentication_refusals_are_unauthorized() {
    let refused = frame(E::Unauthorized(pb::Unauthorized { reason: "token expired".into() }));
    assert!(matches!(authentication_outcome(refused, 1), Some(Err(Error::Unauthorized(r))) if r == "token expired"));
    let error = frame(E::Error(pb::Error {
        request_id: 1,
        code: pb::ErrorCode::Unauthorized as i32,
        message: "bad signature".into(),
        ..Default::default()
    }));
    assert!(matches!(authentication_outcome(error, 1), Some(Err(Error::Unauthorized(r))) if r == "bad signature"));
}

#[test]
fn authentication_rejects_other_answers() {
    assert!(matches!(authentication_outcome(pong(1), 1), Some(Err(Error::Protocol(_)))));
    assert!(matches!(authentication_outcome(authenticated(7), 1), Some(Err(Error::Protocol(_)))));
    let early_event = frame(E::ReceiveMessage(pb::ReceiveMessage { message: Some(pb::Message::default()) }));
    assert!(matches!(authentication_outcome(early_event, 1), Some(Err(Error::Protocol(_)))));
    let goodbye = frame(E::Goodbye(pb::Goodbye { code: pb::ErrorCode::Unavailable as i32, reason: "shutdown".into() }));
    let err = authentication_outcome(goodbye, 1).expect("a verdict").unwrap_err();
    assert_eq!(err.code(), Some(pb::ErrorCode::Unavailable));
}

#[test]
fn authentication_ignores_unknown_frames() {
    assert!(authentication_outcome(pb::ServerFrame { event: None }, 1).is_none());
}

#[test]
fn acks_and_errors_route_to_their_request() {
    match route(pong(5)) {
        Routed::Reply { request_id: 5, reply: Ok(pb::ack::Result::Pong(_)) } => {}
        other => panic!("unexpected {other:?}"),
    }
    let error = frame(E::Error(pb::Error {
        request_id: 6,
        code: pb::ErrorCode::NotFound as i32,
        message: "no such conversation".into(),
        ..Default::default()
    }));
    match route(error) {
        Routed::Reply { request_id: 6, reply: Err(e) } => assert_eq!(e.code(), Some(pb::ErrorCode::NotFound)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_ack_without_a_known_result_fails_its_request() {
    let f = frame(E::Ack(pb::Ack { request_id: 9, result: None }));
    assert!(matches!(route(f), Routed::Reply { request_id: 9, reply: Err(Error::Protocol(_)) }));
}

#[test]
fn session_level_errors_end_the_session() {
    let error = frame(E::Error(pb::Error {
        request_id: 0,
        code: pb::ErrorCode::FrameTooLarge as i32,
        message: "frame of 70000 bytes".into(),
        ..Default::default()
    }));
    match route(error) {
        Routed::SessionError(reason) => assert!(reason.contains("FRAME_TOO_LARGE"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    let refused = frame(E::Unauthorized(pb::Unauthorized { reason: "token revoked".into() }));
    assert!(matches!(route(refused), Routed::SessionError(r) if r.contains("token revoked")));
}

#[test]
fn events_go_to_the_application() {
    let message = pb::Message { conversation_id: "c".into(), seq: 3, ..Default::default() };
    let f = frame(E::ReceiveMessage(pb::ReceiveMessage { message: Some(message.clone()) }));
    assert!(matches!(route(f), Routed::Event(Event::Message(m)) if m == message));
    let f = frame(E::ConversationUpdated(pb::ConversationUpdated { conversation: Some(pb::Conversation::default()) }));
    assert!(matches!(route(f), Routed::Event(Event::ConversationUpdated(_))));
    let f = frame(E::Goodbye(pb::Goodbye { code: pb::ErrorCode::Overloaded as i32, reason: "too slow".into() }));
    assert!(matches!(
        route(f),
        Routed::Event(Event::Goodbye { code: pb::ErrorCode::Overloaded, reason }) if reason == "too slow"
    ));
}

#[test]
fn empty_and_unknown_frames_are_ignored() {
    assert!(matches!(route(pb::ServerFrame { event: None }), Routed::Ignore(_)));
    let f = frame(E::ReceiveMessage(pb::ReceiveMessage { message: None }));
    assert!(matches!(route(f), Routed::Ignore(_)));
    assert!(matches!(route(pong(0)), Routed::Ignore(_)));
}

#[test]
fn pending_requests_get_their_own_answer() {
    let mut pending = PendingRequests::default();
    let mut a = pending.register(2).expect("open");
    let mut b = pending.register(3).expect("open");
    assert!(matches!(pending.complete(3, Err(Error::Timeout)), Completed::Answered));
    assert!(matches!(b.try_recv(), Ok(Err(Error::Timeout))));
    assert!(a.try_recv().is_err(), "request 2 has no answer yet");
    assert_eq!(pending.len(), 1);
}

#[test]
fn answers_to_sends_go_back_to_the_outbox() {
    let mut pending = PendingRequests::default();
    pending.register_send(5, 42).expect("open");
    match pending.complete(5, Err(Error::Timeout)) {
        Completed::Send { entry: 42, reply } => assert!(matches!(*reply, Err(Error::Timeout))),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn late_answers_find_nobody() {
    let mut pending = PendingRequests::default();
    let _rx = pending.register(2).expect("open");
    pending.forget(2);
    assert!(matches!(pending.complete(2, Err(Error::Timeout)), Completed::Nobody));
    assert!(matches!(pending.complete(99, Err(Error::Timeout)), Completed::Nobody));
    assert_eq!(pending.len(), 0);
}

#[test]
fn a_lost_connection_fails_waiting_and_later_requests_as_disconnected() {
    let mut pending = PendingRequests::default();
    let mut rx = pending.register(2).expect("open");
    pending.register_send(3, 1).expect("open");
    pending.close("the server said goodbye", false);
    pending.close("a later, less precise reason", true);
    assert!(matches!(rx.try_recv(), Ok(Err(Error::Disconnected(r))) if r == "the server said goodbye"));
    assert!(matches!(pending.register(4), Err(Error::Disconnected(r)) if r == "the server said goodbye"));
    assert!(pending.register_send(5, 2).is_err());
    assert_eq!(pending.closed_reason(), Some("the server said goodbye"));
    assert_eq!(pending.len(), 0, "outbox sends are let go too");
}

#[test]
fn an_ended_client_fails_requests_as_closed() {
    let mut pending = PendingRequests::default();
    let mut rx = pending.register(2).expect("open");
    pending.close("client closed the session", true);
    assert!(matches!(rx.try_recv(), Ok(Err(Error::Closed(_)))));
    assert!(matches!(pending.register(3), Err(Error::Closed(_))));
}

#[test]
fn wrong_answer_kinds_name_the_request() {
    let err = answer::history(pb::ack::Result::Pong(pb::Pong::default())).unwrap_err();
    assert_eq!(err.to_string(), "protocol violation by the server: GetHistory was answered with Pong instead of HistoryPage");
    assert!(answer::pong(pb::ack::Result::Pong(pb::Pong::default())).is_ok());
    assert!(answer::conversation("GetConversation", pb::ack::Result::Conversation(Default::default())).is_ok());
    assert!(answer::conversations(pb::ack::Result::Conversations(Default::default())).is_ok());
    assert!(answer::message_accepted(pb::ack::Result::History(Default::default())).is_err());
    assert!(answer::done("MarkRead", pb::ack::Result::Done(pb::Done {})).is_ok());
    let err = answer::done("MarkRead", pb::ack::Result::Pong(Default::default())).unwrap_err();
    assert!(err.to_string().contains("MarkRead was answered with Pong instead of Done"), "{err}");
    assert!(answer::room_users(pb::ack::Result::RoomUsers(Default::default())).is_ok());
    assert!(answer::presence(pb::ack::Result::Presence(Default::default())).is_ok());
    assert!(answer::catch_up(pb::ack::Result::CatchUp(Default::default())).is_ok());
    assert!(answer::receipts(pb::ack::Result::Receipts(Default::default())).is_ok());
    assert!(answer::catch_up(pb::ack::Result::Done(pb::Done {})).is_err());
}
