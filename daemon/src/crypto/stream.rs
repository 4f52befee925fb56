//! Attachments encrypted at rest in chunks, so that a 50 MB file is never whole in memory
//! and every chunk is bound to its place.
//!
//! ```text
//!  plaintext ─ CHUNK bytes ─┬─ CHUNK bytes ─┬─ … ─┬─ the rest (0..=CHUNK bytes)
//!                           ▼               ▼     ▼
//!  sealed:   [nonce ‖ ct ‖ tag] [nonce ‖ ct ‖ tag] … [nonce ‖ ct ‖ tag]      SEALED_CHUNK bytes each but the last
//!  AAD of chunk i: "legalchat/fil/v1" ‖ conversation ‖ file id ‖ i ‖ last?
//! ```
//!
//! The associated data binds each chunk to its conversation, its file, its position and
//! whether it is the last: chunks swapped, dropped, repeated or moved from another file
//! fail to open, and a file cut off at a chunk boundary is caught because its new final
//! chunk was not sealed as the last one. An empty file is one empty last chunk. Pure: the
//! caller moves the bytes.

use super::{CryptoError, DataKey, open, seal};

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes of a sealed full chunk: nonce, ciphertext, tag.
pub const SEALED_CHUNK: usize = CHUNK + super::NONCE_LEN + 16;
const FILE_AAD: &[u8] = b"legalchat/fil/v1";

fn file_aad(conversation: &[u8; 16], file: &[u8; 16], index: u64, last: bool) -> [u8; 16 + 16 + 16 + 8 + 1] {
    let mut aad = [0u8; 57];
    aad[..16].copy_from_slice(FILE_AAD);
    aad[16..32].copy_from_slice(conversation);
    aad[32..48].copy_from_slice(file);
    aad[48..56].copy_from_slice(&index.to_be_bytes());
    aad[56] = u8::from(last);
    aad
}

/// Chunks of a file of `size` bytes (an empty file is one empty chunk).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64).max(1)
}

/// Bytes a file of `size` bytes takes sealed.
pub fn sealed_len(size: u64) -> u64 {
    size + chunk_count(size) * (SEALED_CHUNK - CHUNK) as u64
}

impl DataKey {
    /// Seals chunk `index` of file `file` (whose chunks are known to end at `last`): for
    /// writers that know the size in advance and may start again at any chunk, such as a
    /// resumed upload.
    pub fn seal_file_chunk(&self, conversation: &[u8; 16], file: &[u8; 16], index: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        seal(&self.cipher, &file_aad(conversation, file, index, last), plain)
    }

    /// Opens chunk `index` of file `file`; `last` says whether the file ends with it.
    pub fn open_file_chunk(
        &self,
        conversation: &[u8; 16],
        file: &[u8; 16],
        index: u64,
        last: bool,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if (!last && sealed.len() != SEALED_CHUNK) || sealed.len() > SEALED_CHUNK {
            return Err(CryptoError::Authentication);
        }
        open(&self.cipher, &file_aad(conversation, file, index, last), sealed)
    }
}

/// Seals a file chunk by chunk: feed it the plaintext in pieces of any size, take the
/// sealed chunks as they fill, and [`finish`](Self::finish) with the last one.
#[derive(Debug)]
pub struct FileSealer {
    key: DataKey,
    conversation: [u8; 16],
    file: [u8; 16],
    index: u64,
    pending: Vec<u8>,
}

impl FileSealer {
    /// A sealer for file `file` of `conversation`.
    pub fn new(key: DataKey, conversation: [u8; 16], file: [u8; 16]) -> Self {
        Self { key, conversation, file, index: 0, pending: Vec::with_capacity(CHUNK) }
    }

    /// Takes `bytes`; returns the chunks they completed, sealed, in order. At most one
    /// chunk of plaintext is held.
    pub fn update(&mut self, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut sealed = Vec::new();
        while !bytes.is_empty() {
            let take = (CHUNK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // A full chunk is sealed only once more bytes prove it is not the last.
            if self.pending.len() == CHUNK && !bytes.is_empty() {
                sealed.push(self.seal(false));
            }
        }
        sealed
    }

    /// Seals what is left as the last chunk.
    pub fn finish(mut self) -> Vec<u8> {
        self.seal(true)
    }

    fn seal(&mut self, last: bool) -> Vec<u8> {
        let out = self.key.seal_file_chunk(&self.conversation, &self.file, self.index, last, &self.pending);
        self.pending.clear();
        self.index += 1;
        out
    }
}

/// Opens a sealed file chunk by chunk, in order, checking that nothing is missing,
/// swapped or added.
#[derive(Debug)]
pub struct FileOpener {
    key: DataKey,
    conversation: [u8; 16],
    file: [u8; 16],
    index: u64,
    done: bool,
}

impl FileOpener {
    /// An opener for file `file` of `conversation`.
    pub fn new(key: DataKey, conversation: [u8; 16], file: [u8; 16]) -> Self {
        Self { key, conversation, file, index: 0, done: false }
    }

    /// Opens the next sealed chunk; `last` says whether the stored file ends with it.
    /// Every chunk but the last is [`SEALED_CHUNK`] bytes.
    pub fn open(&mut self, sealed: &[u8], last: bool) -> Result<Vec<u8>, CryptoError> {
        if self.done {
            return Err(CryptoError::Authentication);
        }
        let plain = self.key.open_file_chunk(&self.conversation, &self.file, self.index, last, sealed)?;
        self.index += 1;
        self.done = last;
        Ok(plain)
    }

    /// Whether the last chunk has been opened: a file whose stored bytes ran out before
    /// that is truncated.
    pub fn is_complete(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::super::MasterKey;
    use super::*;

    const CONV: [u8; 16] = [1; 16];
    const FILE: [u8; 16] = [2; 16];

    fn key() -> DataKey {
        MasterKey::from_text(&MasterKey::generate_text()).unwrap().new_data_key(&CONV).0
    }

    fn sealed_file(key: &DataKey, plaintext: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut sealer = FileSealer::new(key.clone(), CONV, FILE);
        let mut chunks = Vec::new();
        for part in plaintext.chunks(piece.max(1)) {
            chunks.extend(sealer.update(part));
        }
        chunks.push(sealer.finish());
        chunks
    }

    fn open_all(key: &DataKey, chunks: &[Vec<u8>]) -> Result<Vec<u8>, CryptoError> {
        let mut opener = FileOpener::new(key.clone(), CONV, FILE);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            out.extend(opener.open(c, i + 1 == chunks.len())?);
        }
        if !opener.is_complete() {
            return Err(CryptoError::Authentication);
        }
        Ok(out)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
    }

    #[test]
    fn files_of_every_shape_come_back_whole() {
        let key = key();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + CHUNK / 2] {
            for piece in [1000, CHUNK, 7 * CHUNK] {
                let plain = sample(len);
                let chunks = sealed_file(&key, &plain, piece);
                assert_eq!(chunks.len(), len.div_ceil(CHUNK).max(1), "{len} bytes in pieces of {piece}");
                assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() == SEALED_CHUNK));
                assert_eq!(open_all(&key, &chunks).unwrap(), plain, "{len} bytes in pieces of {piece}");
            }
        }
    }

    #[test]
    fn no_plaintext_is_stored() {
        let key = key();
        let plain = b"PRIVILEGED AND CONFIDENTIAL ".repeat(5_000);
        for chunk in sealed_file(&key, &plain, 4096) {
            assert!(!chunk.windows(12).any(|w| w == b"PRIVILEGED A"));
        }
    }

    #[test]
    fn swapped_dropped_repeated_or_foreign_chunks_fail() {
        let key = key();
        let chunks = sealed_file(&key, &sample(3 * CHUNK + 10), CHUNK);
        assert_eq!(chunks.len(), 4);
        let mut swapped = chunks.clone();
        swapped.swap(0, 1);
        assert!(open_all(&key, &swapped).is_err());
        // Cut off at a chunk boundary: the new final chunk was not sealed as the last.
        assert!(open_all(&key, &chunks[..3]).is_err());
        // Cut inside the last chunk.
        let mut cut = chunks.clone();
        let shorter = cut[3].len() - 1;
        cut[3].truncate(shorter);
        assert!(open_all(&key, &cut).is_err());
        // A chunk repeated, or one more appended after the last.
        let mut repeated = chunks.clone();
        repeated.insert(1, chunks[0].clone());
        assert!(open_all(&key, &repeated).is_err());
        let mut opener = FileOpener::new(key.clone(), CONV, FILE);
        for (i, c) in chunks.iter().enumerate() {
            opener.open(c, i == 3).unwrap();
        }
        assert!(opener.open(&chunks[3], true).is_err(), "nothing after the last chunk");
        // A chunk of another file, or of another conversation.
        let mut other = FileOpener::new(key.clone(), CONV, [9; 16]);
        assert!(other.open(&chunks[0], false).is_err());
        let mut other = FileOpener::new(key.clone(), [7; 16], FILE);
        assert!(other.open(&chunks[0], false).is_err());
        // Another key.
        assert!(open_all(&self::key(), &chunks).is_err());
    }
}
