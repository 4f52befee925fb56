use super::*;
use crate::pb;
use proptest::prelude::*;

fn send_frame(text: &str) -> pb::ClientFrame {
    pb::ClientFrame {
        request_id: 7,
        request: Some(pb::client_frame::Request::SendMessage(pb::SendMessage {
            conversation_id: "0".repeat(32),
            client_message_id: "m-1".into(),
            content: Some(pb::MessageContent { text: text.into(), ..Default::default() }),
            reply_to_seq: 0,
        })),
    }
}

#[test]
fn incomplete_is_not_an_error() {
    let bytes = encode(&send_frame("hi"));
    let d = FrameDecoder::default();
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(d.decode::<pb::ClientFrame>(&mut buf), Ok(None));
        assert_eq!(buf.len(), cut, "nothing consumed while incomplete");
    }
}

#[test]
fn oversize_rejected_from_the_prefix_alone() {
    let d = FrameDecoder::new(16);
    let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
    assert_eq!(d.decode::<pb::ClientFrame>(&mut buf), Err(DecodeError::TooLarge { len: 17, max: 16 }));
    let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
    assert!(matches!(d.decode::<pb::ClientFrame>(&mut huge), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn empty_and_malformed_frames_are_errors() {
    let d = FrameDecoder::default();
    let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert_eq!(d.decode::<pb::ClientFrame>(&mut empty), Err(DecodeError::Empty));
    // Field 1 declared as length-delimited with a length running past the end.
    let mut bad = BytesMut::from(&[0u8, 0, 0, 2, 0x0a, 0x05][..]);
    assert!(matches!(d.decode::<pb::ClientFrame>(&mut bad), Err(DecodeError::Malformed(_))));
}

#[test]
fn two_frames_in_one_buffer_decode_in_order() {
    let mut buf = BytesMut::new();
    encode_into(&send_frame("one"), &mut buf);
    encode_into(&send_frame("two"), &mut buf);
    let d = FrameDecoder::default();
    let a: pb::ClientFrame = d.decode(&mut buf).unwrap().unwrap();
    let b: pb::ClientFrame = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(a, send_frame("one"));
    assert_eq!(b, send_frame("two"));
    assert!(buf.is_empty());
}

#[test]
fn decode_exact_rejects_trailing_and_truncated() {
    let bytes = encode(&send_frame("x"));
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(decode_exact::<pb::ClientFrame>(&longer, 1024), Err(DecodeError::TrailingBytes(1)));
    assert!(matches!(decode_exact::<pb::ClientFrame>(&bytes[..bytes.len() - 1], 1024), Err(DecodeError::Truncated { .. })));
    assert_eq!(decode_exact::<pb::ClientFrame>(&bytes, 1024), Ok(send_frame("x")));
}

proptest! {
    #[test]
    fn round_trip(request_id in 1u64.., text in ".{1,2000}", cmid in "[a-zA-Z0-9_-]{1,64}") {
        let mut frame = send_frame(&text);
        frame.request_id = request_id;
        if let Some(pb::client_frame::Request::SendMessage(m)) = frame.request.as_mut() {
            m.client_message_id = cmid;
        }
        let bytes = encode(&frame);
        let mut buf = BytesMut::from(&bytes[..]);
        let got: pb::ClientFrame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(got, frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), max in 0usize..8192) {
        let d = FrameDecoder::new(max);
        let mut buf = BytesMut::from(&bytes[..]);
        // Drain as far as the bytes allow; every outcome is fine except a panic or a
        // frame longer than the maximum being accepted.
        loop {
            let before = buf.len();
            match d.decode::<pb::ClientFrame>(&mut buf) {
                Ok(Some(_)) => prop_assert!(before - buf.len() <= LENGTH_PREFIX_LEN + max),
                Ok(None) | Err(_) => break,
            }
        }
        let _ = decode_exact::<pb::ServerFrame>(&bytes, max);
    }

    #[test]
    fn server_frames_round_trip(seq in any::<u64>(), sender in "[a-z]{1,20}", text in ".{0,500}") {
        let frame = pb::ServerFrame {
            event: Some(pb::server_frame::Event::ReceiveMessage(pb::ReceiveMessage {
                message: Some(pb::Message { seq, sender_id: sender, content: Some(pb::MessageContent { text, ..Default::default() }), ..Default::default() }),
            })),
        };
        let bytes = encode(&frame);
        prop_assert_eq!(decode_exact::<pb::ServerFrame>(&bytes, DEFAULT_MAX_FRAME_LEN).unwrap(), frame);
    }
}

proptest! {
    /// The hand-made fan-out frame is exactly what prost makes of the same message, and
    /// decodes back to the tags and the event's frame.
    #[test]
    fn fanout_frames_are_prost_fanouts(tags in proptest::collection::vec(any::<u32>(), 0..FANOUT_MAX_TAGS), text in ".{0,300}") {
        let event = pb::ServerFrame {
            event: Some(pb::server_frame::Event::Typing(pb::TypingEvent { conversation_id: text, ..Default::default() })),
        };
        let frame = encode(&event);
        let made = encode_fanout(&tags, &frame);
        let expected = encode(&pb::Fanout { tags: tags.clone(), frame: frame[LENGTH_PREFIX_LEN..].to_vec() });
        prop_assert_eq!(&made, &expected);
        prop_assert!(made.len() <= frame.len() + FANOUT_OVERHEAD);
        let back: pb::Fanout = decode_exact(&made, made.len()).unwrap();
        prop_assert_eq!(back.tags, tags);
        prop_assert_eq!(decode_exact::<pb::ServerFrame>(&[&frame[..LENGTH_PREFIX_LEN], &back.frame[..]].concat(), frame.len()).unwrap(), event);
    }
}
