//! A redb storage backend that reads a file and never writes it: what redb writes is
//! kept in memory and read back from there. Opening a database through it does
//! everything an open does (redb's repair after a crash, the replay of the commit
//! journal) without changing a byte on disk, so that the root key can be checked
//! against the store as it would be after the open, before the real open writes.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Writes are kept in blocks of this many bytes.
const BLOCK: u64 = 4096;

/// The file, seen through the writes made to it since it was opened.
#[derive(Debug)]
pub(super) struct Unwritten<B> {
    file: B,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The length, as the writes and `set_len` calls made it.
    len: u64,
    /// How much of the file still shows through: its length when opened, or less where
    /// `set_len` cut it shorter since (space added again afterwards reads as zeros).
    shows: u64,
    /// Blocks written to (each `BLOCK` bytes), by index.
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl<B: redb::StorageBackend> Unwritten<B> {
    pub(super) fn new(file: B) -> std::io::Result<Self> {
        let len = file.len()?;
        Ok(Self {
            file,
            state: Mutex::new(State {
                len,
                shows: len,
                blocks: BTreeMap::new(),
            }),
        })
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("a thread panicked while using the in-memory writes")
}

impl<B: redb::StorageBackend> Unwritten<B> {
    /// The file's bytes in `[at, at + out.len())` that still show through, over `out`
    /// (zeros beyond them).
    fn read_file(&self, shows: u64, at: u64, out: &mut [u8]) -> std::io::Result<()> {
        let end = (at + out.len() as u64).min(shows);
        if at < end {
            let n = usize::try_from(end - at).map_err(std::io::Error::other)?;
            let bytes = self.file.read(at, n)?;
            out[..n].copy_from_slice(&bytes);
        }
        Ok(())
    }
}

impl<B: redb::StorageBackend> redb::StorageBackend for Unwritten<B> {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state.lock().map_err(|_| poisoned())?.len)
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let s = self.state.lock().map_err(|_| poisoned())?;
        let end = offset.saturating_add(len as u64);
        if end > s.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        let mut out = vec![0u8; len];
        self.read_file(s.shows, offset, &mut out)?;
        if len > 0 {
            for (&i, block) in s.blocks.range(offset / BLOCK..=(end - 1) / BLOCK) {
                let start = i * BLOCK;
                let (from, to) = (start.max(offset), (start + BLOCK).min(end));
                let (src, dst) = ((from - start) as usize, (from - offset) as usize);
                let n = (to - from) as usize;
                out[dst..dst + n].copy_from_slice(&block[src..src + n]);
            }
        }
        Ok(out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        if len < s.len {
            s.shows = s.shows.min(len);
            // Blocks wholly past the end go; the one the end falls in keeps zeros past it.
            s.blocks.split_off(&len.div_ceil(BLOCK));
            if let Some(block) = s.blocks.get_mut(&(len / BLOCK)) {
                block[(len % BLOCK) as usize..].fill(0);
            }
        }
        s.len = len;
        Ok(())
    }

    fn sync_data(&self, _: bool) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        let end = offset.saturating_add(data.len() as u64);
        let mut at = offset;
        while at < end {
            let i = at / BLOCK;
            let start = i * BLOCK;
            if !s.blocks.contains_key(&i) {
                let mut block = vec![0u8; BLOCK as usize];
                // Up to the current end only: space a write adds past it reads as zeros.
                let known = (start + BLOCK).min(s.len).saturating_sub(start) as usize;
                self.read_file(s.shows, start, &mut block[..known])?;
                s.blocks.insert(i, block);
            }
            let to = (start + BLOCK).min(end);
            let block = s.blocks.get_mut(&i).ok_or_else(poisoned)?;
            let (src, dst) = ((at - offset) as usize, (at - start) as usize);
            let n = (to - at) as usize;
            block[dst..dst + n].copy_from_slice(&data[src..src + n]);
            at = to;
        }
        s.len = s.len.max(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::StorageBackend as _;

    use super::*;

    type Plain = crate::storage::MemFile;

    /// The same writes, cuts and reads on a plain file and on an `Unwritten` view of a
    /// copy of it read the same bytes, and the copy is never changed.
    #[test]
    fn reads_as_a_written_file_would_and_leaves_the_file_alone() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..40 {
            let first: Vec<u8> = (0..3 * BLOCK + 100 + round * 37)
                .map(|i| (i % 251) as u8 + 1)
                .collect();
            let model = Plain::with(first.clone());
            let under = Plain::with(first.clone());
            let view = Unwritten::new(under).unwrap();
            for _ in 0..200 {
                let len = model.len().unwrap();
                match next(5) {
                    0 | 1 => {
                        let at = next(len + 2 * BLOCK);
                        let data: Vec<u8> =
                            (0..next(2 * BLOCK) + 1).map(|_| next(255) as u8).collect();
                        model.write(at, &data).unwrap();
                        view.write(at, &data).unwrap();
                    }
                    2 => {
                        let to = next(len + 3 * BLOCK);
                        model.set_len(to).unwrap();
                        view.set_len(to).unwrap();
                    }
                    _ => {
                        let at = next(len + 1);
                        let n = next(len - at + 1) as usize;
                        assert_eq!(view.read(at, n).unwrap(), model.read(at, n).unwrap());
                        assert!(view.read(len, 1).is_err(), "a read past the end fails");
                    }
                }
                assert_eq!(view.len().unwrap(), model.len().unwrap());
            }
            let len = model.len().unwrap();
            assert_eq!(
                view.read(0, len as usize).unwrap(),
                model.read(0, len as usize).unwrap()
            );
            assert_eq!(*view.file.0.lock().unwrap(), first, "the file is unchanged");
        }
    }
}
