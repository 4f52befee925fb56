//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes of protobuf.
//!
//! Decoding is two steps, as in mini-redis: [`FrameDecoder::check`] looks only at the
//! prefix (cheap, no allocation) and says whether a whole frame is buffered and whether
//! its length is acceptable; only then is the body parsed. A length over the maximum is
//! rejected before a single body byte is read or buffered, so a hostile peer cannot make
//! us allocate what it announces.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Default maximum frame body (64 KiB): a 10 KiB message plus ids and headroom.
/// Attachments never travel on the session stream, so nothing legitimate comes close.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Why a frame could not be decoded. The session that sent it must be closed: after a
/// bad frame the byte stream can no longer be trusted to be aligned on frame boundaries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The announced body length is above the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A zero-length frame; every valid frame has at least one field set.
    #[error("empty frame")]
    Empty,
    /// The body is not valid protobuf of the expected message type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// [`decode_exact`] was given bytes beyond the one frame it expects.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// [`decode_exact`] was given fewer bytes than the frame announces.
    #[error("truncated frame: {have} of {need} bytes")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the prefix announced.
        need: usize,
    },
}

/// Incremental decoder for a byte stream of frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Checks the buffered bytes without parsing: `Ok(Some(n))` when a whole frame of
    /// `n` bytes (prefix included) is buffered, `Ok(None)` when more bytes are needed,
    /// and an error when the announced length is unacceptable.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len > self.max_frame_len {
            return Err(DecodeError::TooLarge { len, max: self.max_frame_len });
        }
        let total = LENGTH_PREFIX_LEN + len;
        Ok((buf.len() >= total).then_some(total))
    }

    /// How many more bytes must arrive before [`FrameDecoder::decode`] can make progress,
    /// when that is known (i.e. the prefix is buffered). Readers use it to size reads.
    pub fn missing(&self, buf: &[u8]) -> usize {
        match buf.get(..LENGTH_PREFIX_LEN) {
            None => LENGTH_PREFIX_LEN - buf.len(),
            Some(p) => {
                let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
                (LENGTH_PREFIX_LEN + len.min(self.max_frame_len)).saturating_sub(buf.len())
            }
        }
    }

    /// Takes one frame off the front of `buf` and parses it as `M`.
    /// `Ok(None)` means "incomplete": nothing was consumed; read more and call again.
    pub fn decode<M: Message + Default>(&self, buf: &mut BytesMut) -> Result<Option<M>, DecodeError> {
        let Some(total) = self.check(buf)? else {
            return Ok(None);
        };
        let mut frame = buf.split_to(total);
        frame.advance(LENGTH_PREFIX_LEN);
        M::decode(frame.freeze()).map(Some).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// Decodes a buffer holding exactly one whole frame (prefix included); anything more or
/// less is an error. For datagrams and tests.
pub fn decode_exact<M: Message + Default>(buf: &[u8], max_frame_len: usize) -> Result<M, DecodeError> {
    let decoder = FrameDecoder::new(max_frame_len);
    match decoder.check(buf)? {
        None => {
            let need = match buf.get(..LENGTH_PREFIX_LEN) {
                Some(p) => LENGTH_PREFIX_LEN + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
                None => LENGTH_PREFIX_LEN,
            };
            Err(DecodeError::Truncated { have: buf.len(), need })
        }
        Some(total) if total < buf.len() => Err(DecodeError::TrailingBytes(buf.len() - total)),
        Some(_) => M::decode(&buf[LENGTH_PREFIX_LEN..]).map_err(|e| DecodeError::Malformed(e.to_string())),
    }
}

/// Encodes `msg` as one frame (prefix included). Encode once and clone the `Bytes` for
/// every recipient: clones share the allocation.
pub fn encode<M: Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_LEN + msg.encoded_len());
    encode_into(msg, &mut buf);
    buf.freeze()
}

/// Appends `msg` as one frame to `buf`.
pub fn encode_into<M: Message>(msg: &M, buf: &mut BytesMut) {
    let len = msg.encoded_len();
    buf.reserve(LENGTH_PREFIX_LEN + len);
    // Frames are bounded far below 4 GiB by every caller; saturate rather than wrap so an
    // impossible size is rejected by the peer instead of misframing the stream.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // `reserve` above guarantees capacity, so encoding cannot fail.
    let _ = msg.encode(buf);
}

/// Most session tags in one [`crate::pb::Fanout`]: a larger audience takes several.
pub const FANOUT_MAX_TAGS: usize = 512;

/// Bytes a [`crate::pb::Fanout`] frame may carry beyond its event's frame: the tags
/// ([`FANOUT_MAX_TAGS`] varints of at most 5 bytes) and the fields' keys and lengths.
pub const FANOUT_OVERHEAD: usize = FANOUT_MAX_TAGS * 5 + 16;

/// Encodes one [`crate::pb::Fanout`] frame (prefix included) carrying `frame`, an
/// encoded `ServerFrame` frame (its own prefix included, left out of the copy), to the
/// sessions `tags` (at most [`FANOUT_MAX_TAGS`]). The same bytes as encoding the message
/// with prost, without building it: the event is copied once, not cloned into a `Vec`.
pub fn encode_fanout(tags: &[u32], frame: &[u8]) -> Bytes {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let body = frame.get(LENGTH_PREFIX_LEN..).unwrap_or_default();
    let packed: usize = tags.iter().map(|&t| encoded_len_varint(u64::from(t))).sum();
    let mut len = 1 + encoded_len_varint(body.len() as u64) + body.len();
    if !tags.is_empty() {
        len += 1 + encoded_len_varint(packed as u64) + packed;
    }
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_LEN + len);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    if !tags.is_empty() {
        // Field 1 (tags), packed: wire type 2.
        buf.put_u8(0x0a);
        encode_varint(packed as u64, &mut buf);
        for &t in tags {
            encode_varint(u64::from(t), &mut buf);
        }
    }
    // Field 2 (frame), bytes.
    buf.put_u8(0x12);
    encode_varint(body.len() as u64, &mut buf);
    buf.put_slice(body);
    buf.freeze()
}

#[cfg(test)]
mod tests;
