//! The bytes written to one file and not yet synced: disjoint runs of bytes by offset.
//!
//! Appends, the common case (a write-ahead log), extend the last run in place, so a log
//! written a few bytes at a time costs its length once, not its length squared.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included};

/// Disjoint, non-adjacent runs of written bytes, keyed by their first offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PendingWrites {
    runs: BTreeMap<u64, Vec<u8>>,
}

fn end_of(start: u64, run: &[u8]) -> u64 {
    start + run.len() as u64
}

/// `n` as an index into a run; runs live in memory, so their offsets fit.
fn index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl PendingWrites {
    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.runs.values().map(|r| r.len() as u64).sum()
    }

    /// The runs, in offset order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.runs.iter().map(|(s, r)| (*s, r.as_slice()))
    }

    /// Records `data` written at `offset`, over whatever was pending there.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // A run starting at or before `offset` that reaches it is extended in place.
        let left = self.runs.range(..=offset).next_back().filter(|(s, r)| end_of(**s, r) >= offset).map(|(s, _)| *s);
        let (start, mut merged) = match left {
            Some(s) => {
                let mut run = self.runs.remove(&s).unwrap_or_default();
                let tail = if end_of(s, &run) > end { run[index(end - s)..].to_vec() } else { Vec::new() };
                run.truncate(index(offset - s));
                run.extend_from_slice(data);
                run.extend_from_slice(&tail);
                (s, run)
            }
            None => (offset, data.to_vec()),
        };
        // Runs starting inside the write, or right after it, are absorbed.
        let covered: Vec<u64> = self.runs.range((Excluded(start), Included(end))).map(|(s, _)| *s).collect();
        for s in covered {
            if let Some(run) = self.runs.remove(&s)
                && end_of(s, &run) > end
            {
                merged.extend_from_slice(&run[index(end - s)..]);
            }
        }
        self.runs.insert(start, merged);
    }

    /// Forgets everything at or beyond `len` (the file was cut to `len` bytes).
    pub fn truncate(&mut self, len: u64) {
        self.runs.retain(|s, _| *s < len);
        if let Some((s, run)) = self.runs.range_mut(..len).next_back()
            && end_of(*s, run) > len
        {
            run.truncate(index(len - *s));
        }
    }

    /// Copies what is pending in `[offset, offset + buf.len())` over `buf`.
    pub fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (s, run) in self.runs.range(..end).rev() {
            let run_end = end_of(*s, run);
            if run_end <= offset {
                break;
            }
            let from = (*s).max(offset);
            let to = run_end.min(end);
            buf[index(from - offset)..index(to - offset)].copy_from_slice(&run[index(from - s)..index(to - s)]);
        }
    }

    /// Drops everything (it was synced, or lost).
    pub fn clear(&mut self) {
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes of `fill` seen through the pending writes.
    fn view(p: &PendingWrites, len: usize, fill: u8) -> Vec<u8> {
        let mut buf = vec![fill; len];
        p.overlay(0, &mut buf);
        buf
    }

    #[test]
    fn writes_overlay_in_order_and_merge() {
        let mut p = PendingWrites::default();
        p.write(2, b"abc");
        p.write(8, b"xy");
        assert_eq!(view(&p, 12, b'.'), b"..abc...xy..");
        assert_eq!(p.runs().count(), 2);
        // Bridging the gap merges all three.
        p.write(4, b"QRST");
        assert_eq!(view(&p, 12, b'.'), b"..abQRSTxy..");
        assert_eq!(p.runs().collect::<Vec<_>>(), [(2, &b"abQRSTxy"[..])]);
        // A write inside a run keeps both ends.
        p.write(3, b"-");
        assert_eq!(view(&p, 12, b'.'), b"..a-QRSTxy..");
        // Adjacent appends extend the run.
        p.write(10, b"12");
        p.write(12, b"3");
        assert_eq!(p.runs().collect::<Vec<_>>(), [(2, &b"a-QRSTxy123"[..])]);
        assert_eq!(p.bytes(), 11);
    }

    #[test]
    fn a_write_covering_several_runs_replaces_them() {
        let mut p = PendingWrites::default();
        p.write(1, b"a");
        p.write(3, b"b");
        p.write(5, b"cdef");
        p.write(0, b"0123456");
        assert_eq!(view(&p, 10, b'.'), b"0123456ef.");
        assert_eq!(p.runs().count(), 1);
    }

    #[test]
    fn truncation_cuts_runs() {
        let mut p = PendingWrites::default();
        p.write(0, b"hello");
        p.write(10, b"world");
        p.truncate(3);
        assert_eq!(p.runs().collect::<Vec<_>>(), [(0, &b"hel"[..])]);
        p.truncate(0);
        assert!(p.is_empty());
    }

    #[test]
    fn overlay_of_a_window() {
        let mut p = PendingWrites::default();
        p.write(4, b"abcdef");
        let mut buf = [b'.'; 4];
        p.overlay(6, &mut buf);
        assert_eq!(&buf, b"cdef");
        let mut buf = [b'.'; 4];
        p.overlay(2, &mut buf);
        assert_eq!(&buf, b"..ab");
        let mut buf = [b'.'; 3];
        p.overlay(20, &mut buf);
        assert_eq!(&buf, b"...");
    }

    /// Random writes and truncations against a plain byte vector.
    #[test]
    fn agrees_with_a_flat_file() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut p = PendingWrites::default();
            // `None`: never written (reads as the durable content, here '.').
            let mut flat: Vec<Option<u8>> = vec![None; 64];
            for step in 0..30 {
                if next(6) == 0 {
                    let len = next(64);
                    p.truncate(len);
                    for b in flat.iter_mut().skip(index(len)) {
                        *b = None;
                    }
                } else {
                    let off = next(56);
                    let len = 1 + next(8);
                    let data: Vec<u8> = (0..len).map(|i| b'a' + u8::try_from((step + i) % 26).unwrap()).collect();
                    p.write(off, &data);
                    for (i, b) in data.iter().enumerate() {
                        flat[index(off) + i] = Some(*b);
                    }
                }
                let expected: Vec<u8> = flat.iter().map(|b| b.unwrap_or(b'.')).collect();
                assert_eq!(view(&p, 64, b'.'), expected);
                let runs: Vec<(u64, &[u8])> = p.runs().collect();
                assert!(runs.windows(2).all(|w| end_of(w[0].0, w[0].1) < w[1].0), "runs disjoint and not adjacent: {runs:?}");
            }
        }
    }
}
