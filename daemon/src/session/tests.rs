//! The session driver's own logic: the send/event answer path and session ids.

use legalchat_protocol::pb::server_frame::Event;

use super::*;

fn decode(frame: &Bytes) -> Event {
    let server: pb::ServerFrame = codec::decode_exact(frame, 1 << 20).expect("a whole frame");
    server.event.expect("an event")
}

fn ack_to(out: &outbound::Sender, kick: &Arc<Kick>, inflight: &Arc<Semaphore>) -> AckTo {
    let session = inflight.clone().try_acquire_owned().expect("a free permit");
    let user = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a free permit");
    AckTo {
        out: out.clone(),
        kick: kick.clone(),
        request_id: 7,
        started: Instant::now(),
        permit: Some(super::InFlight { _session: session, _user: user }),
    }
}

#[tokio::test]
async fn a_send_is_answered_on_the_stream_and_lets_its_permit_go() {
    let (out, mut rx) = outbound::channel(4);
    let (kick, inflight) = (Arc::new(Kick::default()), Arc::new(Semaphore::new(1)));

    let accepted = pb::MessageAccepted { seq: 3, ..Default::default() };
    ack_to(&out, &kick, &inflight).answer(Ok(accepted.clone()));
    let mut got = Vec::new();
    assert_eq!(rx.recv_many(&mut got, 8).await, outbound::Taken::Frames(1));
    let Event::Ack(ack) = decode(&got[0]) else { panic!("not an ack") };
    assert_eq!((ack.request_id, ack.result), (7, Some(pb::ack::Result::MessageAccepted(accepted))));
    assert_eq!(inflight.available_permits(), 1, "the permit is back");

    ack_to(&out, &kick, &inflight).answer(Err(RequestError::forbidden("not yours")));
    got.clear();
    rx.recv_many(&mut got, 8).await;
    let Event::Error(e) = decode(&got[0]) else { panic!("not an error") };
    assert_eq!((e.request_id, e.code, e.message.as_str()), (7, ErrorCode::Forbidden as i32, "not yours"));

    // The shard went away with the send unanswered: the caller hears why all the same.
    drop(ack_to(&out, &kick, &inflight));
    got.clear();
    rx.recv_many(&mut got, 8).await;
    let Event::Error(e) = decode(&got[0]) else { panic!("not an error") };
    assert_eq!((e.request_id, e.code), (7, ErrorCode::Unavailable as i32));
    assert_eq!(inflight.available_permits(), 1);
}

#[tokio::test]
async fn an_answer_that_finds_the_queue_full_ends_the_session_as_a_slow_consumer() {
    let (out, _rx) = outbound::channel(1);
    let (kick, inflight) = (Arc::new(Kick::default()), Arc::new(Semaphore::new(1)));
    out.try_send(Bytes::from_static(b"unread")).expect("room for one");
    ack_to(&out, &kick, &inflight).answer(Ok(pb::MessageAccepted::default()));
    let (code, _) = tokio::time::timeout(Duration::from_secs(5), kick.kicked()).await.expect("kicked");
    assert_eq!(code, ErrorCode::Overloaded);
    assert_eq!(inflight.available_permits(), 1, "the permit is back even so");
}

#[test]
fn session_ids_are_sixteen_hex_digits_with_the_process_prefix() {
    let ids = SessionIds::with_prefix(0x0123_4567);
    let shown = format!("{:016x}", ids.next());
    assert_eq!(shown, "0123456700000001");
    assert_eq!(shown.len(), 16);
}
