//! The commit journal beside the redb file.
//!
//! A durable redb commit writes some ten pages scattered over the file (leaf, branches,
//! the table tree, the freed tree, the header) and syncs them: about ten block requests,
//! each costing CPU in a VM, and a wait for the slowest. A journaled commit instead
//! appends one entry holding the batch's mutations to this small file, which is written
//! in place, and syncs it: one or two block requests. The batch then lives in memory
//! (see `redb_backend`) until a checkpoint writes many batches into redb with one durable
//! commit. The file has two halves: entries go to one half while the batches of the
//! other are being checkpointed, and a half is written again only after its checkpoint
//! is durable. Opening a database replays the entries its last durable commit does not
//! hold.
//!
//! Entry layout (big-endian integers), written back to back from the start of a half:
//!
//! ```text
//! "SBJ1" | seq u64 | len u32 | payload (len bytes) | SHA-256(id ‖ "SBJ1" ‖ seq ‖ len ‖ payload)
//! payload = count u32, then per mutation:
//!           1 | table u8 | key len u32 | key | value len u32 | value    (put)
//!           2 | table u8 | key len u32 | key                            (delete)
//! ```
//!
//! `id` is 16 random bytes kept in the database, new for each session (so a journal
//! never replays into another database, nor a later session's entries into a copy of
//! this one), and `seq` counts journaled commits; the database records, in each
//! checkpoint, the `seq` of the last entry it holds. Replay looks for the half that
//! starts with the entry after that number, takes the entries that follow on from it
//! without a gap, and goes on at the start of the other half. It stops at the first
//! entry that is torn, foreign or stale (an entry from before the last checkpoint of its
//! half has a smaller `seq`). An entry is acknowledged only after its sync, and the next
//! one is written only after that, so replay finds every acknowledged commit, and at
//! most one more: the one whose sync was under way (unanswered) at the crash.

use sha2::{Digest as _, Sha256};

use super::{Mutation, StorageError, Table};

const MAGIC: [u8; 4] = *b"SBJ1";
const HEAD: usize = 4 + 8 + 4;
const DIGEST: usize = 32;

/// The bytes of one half of the journal. A batch whose entry does not fit in an empty
/// half is committed durably to the database instead.
pub(super) const CAPACITY: u64 = 4 << 20;
/// Space is written with zeros ahead of the entries in steps of this much, so that an
/// entry's sync rewrites blocks in place instead of allocating them.
const FILL_STEP: u64 = 256 << 10;

/// Identifies one database's journal.
pub(super) type JournalId = [u8; 16];

/// The open journal file.
pub(super) struct Journal {
    file: Box<dyn redb::StorageBackend>,
    id: JournalId,
    /// The half entries go to now (0 or 1).
    half: u64,
    /// Where the next entry goes, from the start of the half.
    offset: u64,
    /// Bytes of the file written (zeros or entries).
    filled: u64,
}

impl Journal {
    pub(super) fn new(file: Box<dyn redb::StorageBackend>, id: JournalId) -> std::io::Result<Self> {
        let filled = file.len()?;
        Ok(Self {
            file,
            id,
            half: 0,
            offset: 0,
            filled,
        })
    }

    /// Binds the entries written from now on to `id` (a new session's).
    pub(super) fn set_id(&mut self, id: JournalId) {
        self.id = id;
    }

    /// Whether an entry with this payload fits in the half after the ones written to it.
    pub(super) fn fits(&self, payload: &[u8]) -> bool {
        self.offset + entry_len(payload) <= CAPACITY
    }

    /// Whether an entry with this payload fits in an empty half.
    pub(super) fn ever_fits(payload: &[u8]) -> bool {
        entry_len(payload) <= CAPACITY
    }

    /// Writes entry `seq` and syncs it. On an error the entry may or may not be on disk.
    pub(super) fn append(&mut self, seq: u64, payload: &[u8]) -> std::io::Result<()> {
        let entry = encode_entry(&self.id, seq, payload);
        let base = self.half * CAPACITY;
        let end = base + self.offset + entry.len() as u64;
        if end > self.filled {
            let half_end = base + CAPACITY;
            let upto = end
                .div_ceil(FILL_STEP)
                .saturating_mul(FILL_STEP)
                .min(half_end.max(end));
            let zeros = vec![0u8; usize::try_from(upto - self.filled).unwrap_or(0)];
            self.file.write(self.filled, &zeros)?;
            self.filled = upto;
        }
        self.file.write(base + self.offset, &entry)?;
        self.file.sync_data(false)?;
        self.offset = end - base;
        Ok(())
    }

    /// Entries go to the start of the other half from now on: its entries must all be
    /// in the database.
    pub(super) fn switch(&mut self) {
        self.half ^= 1;
        self.offset = 0;
    }

    /// Entries go to the start of this half again: every entry so far must be in the
    /// database.
    pub(super) fn restart(&mut self) {
        self.offset = 0;
    }

    /// The entries after `durable_seq` that continue it without a gap, each with its
    /// mutations.
    pub(super) fn read_after(
        &self,
        durable_seq: u64,
    ) -> Result<Vec<(u64, Vec<Mutation>)>, StorageError> {
        let len = usize::try_from(self.filled.min(2 * CAPACITY)).unwrap_or(0);
        let bytes = self
            .file
            .read(0, len)
            .map_err(|e| StorageError(format!("reading the commit journal: {e}")))?;
        let half = |h: usize| {
            let start = (h * CAPACITY as usize).min(bytes.len());
            let end = ((h + 1) * CAPACITY as usize).min(bytes.len());
            &bytes[start..end]
        };
        let mut out = Vec::new();
        let mut want = durable_seq.saturating_add(1);
        // At most two runs (one per half); a third would be a half read twice.
        for _ in 0..2 {
            let Some(h) = (0..2)
                .find(|&h| decode_entry(&self.id, half(h)).is_some_and(|(seq, ..)| seq == want))
            else {
                break;
            };
            let b = half(h);
            let mut at = 0usize;
            while let Some((seq, payload, len)) = decode_entry(&self.id, &b[at..]) {
                if seq != want {
                    break;
                }
                out.push((
                    seq,
                    decode_payload(payload)
                        .map_err(|e| StorageError(format!("commit journal entry {seq}: {e}")))?,
                ));
                at += len;
                want += 1;
            }
        }
        // Where the run ends, the next entry is at the start of a half or nowhere
        // (unsynced, or never written). An intact entry numbered past it means one in
        // between is damaged, and the acknowledged commits from it on would be lost
        // (and written over by the next commits): refused, keeping the file as it is.
        let later = (0..2).find_map(|h| {
            let b = half(h);
            b.windows(MAGIC.len())
                .enumerate()
                .filter(|(_, w)| *w == MAGIC)
                .find_map(|(at, _)| decode_entry(&self.id, &b[at..]).filter(|e| e.0 > want))
        });
        if let Some((seq, ..)) = later {
            return Err(StorageError(format!(
                "the commit journal is damaged: its entry {want} cannot be read while entry \
                 {seq} after it can, so the acknowledged commits from {want} on would be \
                 lost. Restore the journal from a copy; to open the database without those \
                 commits, move the journal aside and create an empty file of its name"
            )));
        }
        Ok(out)
    }
}

fn entry_len(payload: &[u8]) -> u64 {
    (HEAD + payload.len() + DIGEST) as u64
}

fn digest(id: &JournalId, head: &[u8], payload: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(id);
    h.update(head);
    h.update(payload);
    h.finalize().into()
}

fn encode_entry(id: &JournalId, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(HEAD + payload.len() + DIGEST);
    e.extend_from_slice(&MAGIC);
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    let d = digest(id, &e, payload);
    e.extend_from_slice(payload);
    e.extend_from_slice(&d);
    e
}

/// `(seq, payload, entry length)` of a whole, intact entry of this journal at the start
/// of `b`; `None` for zeros, a torn write, another journal's entry or the end.
fn decode_entry<'a>(id: &JournalId, b: &'a [u8]) -> Option<(u64, &'a [u8], usize)> {
    let head = b.get(..HEAD)?;
    if head[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_be_bytes(head[4..12].try_into().ok()?);
    let len = u32::from_be_bytes(head[12..16].try_into().ok()?) as usize;
    let payload = b.get(HEAD..HEAD.checked_add(len)?)?;
    let stored = b.get(HEAD + len..HEAD + len + DIGEST)?;
    let want = digest(id, head, payload);
    // Not secret: a checksum against torn writes and foreign files.
    (stored == want.as_slice()).then_some((seq, payload, HEAD + len + DIGEST))
}

/// The payload of an entry: the batch's mutations.
pub(super) fn encode_payload(mutations: &[Mutation]) -> Vec<u8> {
    let size: usize = mutations
        .iter()
        .map(|m| match m {
            Mutation::Put(_, k, v) => 10 + k.len() + v.len(),
            Mutation::Delete(_, k) => 6 + k.len(),
        })
        .sum();
    let mut p = Vec::with_capacity(4 + size);
    p.extend_from_slice(&(mutations.len() as u32).to_be_bytes());
    for m in mutations {
        let (op, table, key, value) = match m {
            Mutation::Put(t, k, v) => (1u8, *t, k, Some(v)),
            Mutation::Delete(t, k) => (2u8, *t, k, None),
        };
        p.push(op);
        p.push(table_index(table));
        p.extend_from_slice(&(key.len() as u32).to_be_bytes());
        p.extend_from_slice(key);
        if let Some(v) = value {
            p.extend_from_slice(&(v.len() as u32).to_be_bytes());
            p.extend_from_slice(v);
        }
    }
    p
}

fn table_index(table: Table) -> u8 {
    u8::try_from(table.index()).unwrap_or(u8::MAX)
}

fn decode_payload(p: &[u8]) -> Result<Vec<Mutation>, String> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if self.0.len() < n {
                return Err("truncated".into());
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Ok(a)
        }
        fn u32(&mut self) -> Result<usize, String> {
            let b = self.take(4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        fn u8(&mut self) -> Result<u8, String> {
            Ok(self.take(1)?[0])
        }
    }
    let mut c = Cursor(p);
    let count = c.u32()?;
    let mut out = Vec::with_capacity(count.min(p.len()));
    for _ in 0..count {
        let op = c.u8()?;
        let t = c.u8()?;
        let table = *Table::ALL
            .get(usize::from(t))
            .ok_or_else(|| format!("unknown table {t}"))?;
        let klen = c.u32()?;
        let key = c.take(klen)?.to_vec();
        out.push(match op {
            1 => {
                let vlen = c.u32()?;
                Mutation::Put(table, key, c.take(vlen)?.to_vec())
            }
            2 => Mutation::Delete(table, key),
            _ => return Err(format!("unknown operation {op}")),
        });
    }
    if !c.0.is_empty() {
        return Err("bytes after the last mutation".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemFile as Mem;

    fn batch(n: u8) -> Vec<Mutation> {
        vec![
            Mutation::Put(Table::Audit, vec![n], vec![n; 40]),
            Mutation::Delete(Table::Secrets, vec![b'x', n]),
            Mutation::Put(Table::RotationSchedule, vec![], vec![]),
        ]
    }

    fn journal(mem: &Mem, id: JournalId) -> Journal {
        Journal::new(Box::new(mem.clone()), id).unwrap()
    }

    #[test]
    fn entries_read_back_in_order_from_the_last_durable_one() {
        let mem = Mem::default();
        let mut j = journal(&mem, [7; 16]);
        for seq in 1..=5u8 {
            j.append(u64::from(seq), &encode_payload(&batch(seq)))
                .unwrap();
        }
        let again = journal(&mem, [7; 16]);
        let got = again.read_after(0).unwrap();
        assert_eq!(got.len(), 5);
        for (i, (seq, m)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(m, &batch(i as u8 + 1));
        }
        // A journal that does not go on from the database's last checkpoint at the
        // start of a half (entry 4 is not there, entry 5 is after it) is refused.
        let e = again.read_after(3).expect_err("refused");
        assert!(e.0.contains("entry 4 cannot be read while entry 5"), "{e}");
        // The file was filled ahead with zeros, so appends rewrite in place.
        assert_eq!(mem.0.lock().unwrap().len() as u64, FILL_STEP);
    }

    #[test]
    fn a_torn_foreign_or_stale_entry_ends_the_replay() {
        let mem = Mem::default();
        let mut j = journal(&mem, [1; 16]);
        for seq in 1..=4u8 {
            j.append(u64::from(seq), &encode_payload(&batch(seq)))
                .unwrap();
        }
        // Another database's journal: nothing of it.
        assert!(journal(&mem, [2; 16]).read_after(0).unwrap().is_empty());
        // A checkpoint after entry 4, then entry 5 written over the start: entries 2..4
        // behind it are stale and end the run.
        j.restart();
        j.append(5, &encode_payload(&batch(5))).unwrap();
        let got = journal(&mem, [1; 16]).read_after(4).unwrap();
        assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5]);
        // Entry 6 torn (one byte of it never reached the disk): only 5 replays.
        let at = j.offset;
        j.append(6, &encode_payload(&batch(6))).unwrap();
        mem.0.lock().unwrap()[at as usize + HEAD + 3] ^= 0x40;
        let got = journal(&mem, [1; 16]).read_after(4).unwrap();
        assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn a_damaged_entry_before_intact_ones_is_refused() {
        let mem = Mem::default();
        let mut j = journal(&mem, [3; 16]);
        let mut starts = Vec::new();
        for seq in 1..=3u8 {
            starts.push(j.offset as usize);
            j.append(u64::from(seq), &encode_payload(&batch(seq)))
                .unwrap();
        }
        // Entry 2 rotted on the disk: 3, acknowledged after it, would be lost.
        mem.0.lock().unwrap()[starts[1] + HEAD + 3] ^= 0x40;
        let e = journal(&mem, [3; 16]).read_after(0).expect_err("refused");
        assert!(e.0.contains("entry 2 cannot be read while entry 3"), "{e}");
        // The last entry torn (its sync never finished): the ones before it replay.
        mem.0.lock().unwrap()[starts[1] + HEAD + 3] ^= 0x40;
        mem.0.lock().unwrap()[starts[2] + HEAD + 3] ^= 0x40;
        let got = journal(&mem, [3; 16]).read_after(0).unwrap();
        assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn replay_goes_on_in_the_other_half() {
        let mem = Mem::default();
        let mut j = journal(&mem, [4; 16]);
        for seq in 1..=3u8 {
            j.append(u64::from(seq), &encode_payload(&batch(seq)))
                .unwrap();
        }
        j.switch();
        for seq in 4..=5u8 {
            j.append(u64::from(seq), &encode_payload(&batch(seq)))
                .unwrap();
        }
        let seqs = |after| {
            journal(&mem, [4; 16])
                .read_after(after)
                .unwrap()
                .iter()
                .map(|e| e.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(0), vec![1, 2, 3, 4, 5]);
        assert_eq!(seqs(3), vec![4, 5], "the second half alone");
        assert_eq!(seqs(5), Vec::<u64>::new());
        // The first half written again once its entries are checkpointed.
        j.switch();
        j.append(6, &encode_payload(&batch(6))).unwrap();
        assert_eq!(seqs(5), vec![6]);
        assert_eq!(seqs(3), vec![4, 5, 6]);
        assert!(
            journal(&mem, [4; 16]).read_after(0).is_err(),
            "entry 1 was overwritten, and entries after it are there"
        );
    }

    #[test]
    fn tables_keep_their_numbers() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
        // Pinned: journals written by earlier versions name tables by these numbers.
        assert_eq!(
            Table::ALL.map(|t| t.name()),
            [
                "meta",
                "keys",
                "aliases",
                "secrets",
                "secret_versions",
                "rotation_policies",
                "policy_secrets",
                "principals",
                "tokens",
                "principal_tokens",
                "access_policies",
                "policy_principals",
                "audit",
                "rotation_schedule",
            ]
        );
    }

    #[test]
    fn a_batch_that_does_not_fit_is_refused_before_it_is_written() {
        let mem = Mem::default();
        let j = journal(&mem, [3; 16]);
        let big = vec![Mutation::Put(
            Table::Audit,
            vec![1],
            vec![0; CAPACITY as usize],
        )];
        assert!(!j.fits(&encode_payload(&big)));
        assert!(!Journal::ever_fits(&encode_payload(&big)));
        assert!(j.fits(&encode_payload(&batch(1))));
    }

    #[test]
    fn payloads_round_trip_and_damaged_ones_are_named() {
        let m = batch(9);
        assert_eq!(decode_payload(&encode_payload(&m)).unwrap(), m);
        let mut p = encode_payload(&m);
        p[5] = 200;
        assert_eq!(decode_payload(&p).unwrap_err(), "unknown table 200");
        let p = encode_payload(&m);
        assert_eq!(decode_payload(&p[..p.len() - 1]).unwrap_err(), "truncated");
    }
}
