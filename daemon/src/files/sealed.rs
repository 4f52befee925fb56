//! A sealed file read as if it were plain: `Read + Seek` over its chunks, opening one at a
//! time (so at most one chunk of plaintext is held), for the malware scan and previews.

use std::io::{Read, Seek, SeekFrom};

use crate::crypto::DataKey;
use crate::crypto::stream::{CHUNK, SEALED_CHUNK, chunk_count, sealed_len};

/// Reads the plaintext of a sealed file.
pub(super) struct SealedReader {
    file: std::fs::File,
    key: DataKey,
    conversation: [u8; 16],
    id: [u8; 16],
    size: u64,
    pos: u64,
    /// The chunk in `plain`, if any.
    loaded: Option<u64>,
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedReader").field("size", &self.size).field("pos", &self.pos).finish()
    }
}

fn as_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl SealedReader {
    /// The file at `path`, `size` plaintext bytes, sealed as file `id` of `conversation`.
    pub(super) fn open(path: &std::path::Path, key: DataKey, conversation: [u8; 16], id: [u8; 16], size: u64) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let stored = file.metadata()?.len();
        if stored != sealed_len(size) {
            return Err(std::io::Error::other(format!("holds {stored} bytes where {} were expected", sealed_len(size))));
        }
        Ok(Self { file, key, conversation, id, size, pos: 0, loaded: None, plain: Vec::new(), sealed: vec![0; SEALED_CHUNK] })
    }

    fn load(&mut self, index: u64) -> std::io::Result<()> {
        if self.loaded == Some(index) {
            return Ok(());
        }
        let count = chunk_count(self.size);
        let last = index + 1 == count;
        let len = if last { as_usize(sealed_len(self.size) - index * SEALED_CHUNK as u64) } else { SEALED_CHUNK };
        self.file.seek(SeekFrom::Start(index * SEALED_CHUNK as u64))?;
        self.file.read_exact(&mut self.sealed[..len])?;
        self.plain = self
            .key
            .open_file_chunk(&self.conversation, &self.id, index, last, &self.sealed[..len])
            .map_err(|_| std::io::Error::other(format!("chunk {index} does not open: the stored file is damaged")))?;
        self.loaded = Some(index);
        Ok(())
    }
}

impl Read for SealedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let index = self.pos / CHUNK as u64;
        self.load(index)?;
        let offset = as_usize(self.pos - index * CHUNK as u64);
        let n = (self.plain.len() - offset).min(buf.len());
        buf[..n].copy_from_slice(&self.plain[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SealedReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn reads_and_seeks_like_the_plaintext_and_refuses_damage() {
        let key = MasterKey::from_text(&MasterKey::generate_text()).unwrap().new_data_key(&[1; 16]).0;
        let plain: Vec<u8> = (0..3 * CHUNK + 123).map(|i| u8::try_from(i % 253).unwrap()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let count = chunk_count(plain.len() as u64);
        let mut sealed = Vec::new();
        for (i, c) in plain.chunks(CHUNK).enumerate() {
            sealed.extend(key.seal_file_chunk(&[1; 16], &[2; 16], i as u64, i as u64 + 1 == count, c));
        }
        std::fs::write(&path, &sealed).unwrap();
        let mut r = SealedReader::open(&path, key.clone(), [1; 16], [2; 16], plain.len() as u64).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, plain);
        r.seek(SeekFrom::Start(CHUNK as u64 - 3)).unwrap();
        let mut six = [0u8; 6];
        r.read_exact(&mut six).unwrap();
        assert_eq!(six, plain[CHUNK - 3..CHUNK + 3]);
        r.seek(SeekFrom::End(-2)).unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, plain[plain.len() - 2..]);

        sealed[SEALED_CHUNK + 40] ^= 1;
        std::fs::write(&path, &sealed).unwrap();
        let mut r = SealedReader::open(&path, key, [1; 16], [2; 16], plain.len() as u64).unwrap();
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("chunk 1 does not open"), "{err}");
    }
}
