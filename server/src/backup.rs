//! Backups: every table of one consistent snapshot, in one file whose MAC only the root key
//! of the database it came from makes or checks (docs/design/storage.md, "Backups").
//!
//! ```text
//! "SBBK1"
//! entry*:  table u8 (Table::index) | key len u32 | key | value len u32 | value
//! 0xFF | entry count u64 | HMAC-SHA256(backup MAC key, every byte before it)
//! ```
//!
//! Integers are big-endian. The values are stored as the database holds them: secret
//! values sealed under their CMKs, CMK material wrapped by the root key, tokens as
//! hashes. A backup is as sensitive as the data dir, and useless without the root key.

use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::barrier::{BackupMac, Barrier, RootKey};
use crate::storage::{Backend, Mutation, Reader, RedbBackend, Table};

/// The first bytes of a backup file.
pub const MAGIC: &[u8; 5] = b"SBBK1";
const END: u8 = 0xFF;
const MAC_LEN: usize = 32;
/// Entries read from the snapshot at a time.
const PAGE: usize = 512;
/// Bytes handed to the sink at a time.
const CHUNK: usize = 256 << 10;
/// Mutations committed at a time by a restore.
const BATCH_BYTES: usize = 1 << 20;

/// Writes a backup of `snapshot` to `sink`, in chunks; returns the number of entries.
/// `sink` returning an error (the client went away) stops it.
pub fn write(
    snapshot: &dyn Reader,
    mut mac: BackupMac,
    sink: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let mut buf = Vec::with_capacity(CHUNK + 64);
    buf.extend_from_slice(MAGIC);
    let mut count = 0u64;
    let mut flush = |buf: &mut Vec<u8>, mac: &mut BackupMac| -> std::io::Result<()> {
        mac.update(buf);
        sink(std::mem::take(buf))
    };
    for table in Table::ALL {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = snapshot.scan(table, b"", after.as_deref(), PAGE)?;
            let full = page.len() == PAGE;
            for (k, v) in page {
                buf.push(table_byte(table));
                put_bytes(&mut buf, &k)?;
                put_bytes(&mut buf, &v)?;
                count += 1;
                after = Some(k);
                if buf.len() >= CHUNK {
                    flush(&mut buf, &mut mac).context("sending the backup")?;
                }
            }
            if !full {
                break;
            }
        }
    }
    buf.push(END);
    buf.extend_from_slice(&count.to_be_bytes());
    mac.update(&buf);
    buf.extend_from_slice(&mac.finish());
    sink(buf).context("sending the backup")?;
    Ok(count)
}

fn table_byte(table: Table) -> u8 {
    // Fourteen tables: their permanent numbers fit a byte, below `END`.
    u8::try_from(table.index()).unwrap_or(END)
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> anyhow::Result<()> {
    let len = u32::try_from(bytes.len()).context("an entry of over 4 GiB")?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// One entry: its table, key and value.
type Entry = (Table, Vec<u8>, Vec<u8>);

/// Reads the entries of a backup in order, checking its framing (not its MAC).
struct Entries<R> {
    r: R,
    count: u64,
    done: Option<u64>,
}

impl<R: Read> Entries<R> {
    fn new(mut r: R) -> anyhow::Result<Self> {
        let mut magic = [0u8; 5];
        r.read_exact(&mut magic)
            .context("not a Strongbox backup (too short)")?;
        if &magic != MAGIC {
            bail!("not a Strongbox backup (it does not start with {MAGIC:?})");
        }
        Ok(Self {
            r,
            count: 0,
            done: None,
        })
    }

    /// The next entry, or `None` after the last (the end marker and count checked).
    fn next_entry(&mut self) -> anyhow::Result<Option<Entry>> {
        if self.done.is_some() {
            return Ok(None);
        }
        let mut t = [0u8; 1];
        self.r.read_exact(&mut t).context(TRUNCATED)?;
        if t[0] == END {
            let mut n = [0u8; 8];
            self.r.read_exact(&mut n).context(TRUNCATED)?;
            if u64::from_be_bytes(n) != self.count {
                bail!("the backup is damaged: its entry count does not match its entries");
            }
            self.done = Some(self.count);
            return Ok(None);
        }
        let table = Table::ALL
            .into_iter()
            .find(|tb| table_byte(*tb) == t[0])
            .with_context(|| format!("the backup is damaged: unknown table {}", t[0]))?;
        let key = self.bytes()?;
        let value = self.bytes()?;
        self.count += 1;
        Ok(Some((table, key, value)))
    }

    fn bytes(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut n = [0u8; 4];
        self.r.read_exact(&mut n).context(TRUNCATED)?;
        let len = u32::from_be_bytes(n) as usize;
        let mut v = Vec::new();
        (&mut self.r)
            .take(len as u64)
            .read_to_end(&mut v)
            .context(TRUNCATED)?;
        if v.len() != len {
            bail!(TRUNCATED);
        }
        Ok(v)
    }
}

const TRUNCATED: &str = "the backup is truncated or damaged";

/// A reader that feeds the backup MAC, when there is one, with every byte it reads.
struct MacReader<R> {
    r: R,
    mac: Option<BackupMac>,
}

impl<R: Read> Read for MacReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        if let Some(mac) = &mut self.mac {
            mac.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Reads the backup at `path` through to its end in one pass, handing each entry to
/// `each` and checking its framing; returns the entry count and, given a `barrier`,
/// whether the MAC at its end is that root key's over the very bytes read.
fn read_through(
    path: &Path,
    barrier: Option<&Barrier>,
    each: &mut dyn FnMut(Entry) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, bool)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut entries = Entries::new(MacReader {
        r: BufReader::new(file),
        mac: barrier.map(Barrier::backup_mac),
    })?;
    while let Some(entry) = entries.next_entry()? {
        each(entry)?;
    }
    let MacReader { mut r, mac } = entries.r;
    let mut tag = [0u8; MAC_LEN];
    r.read_exact(&mut tag).context(TRUNCATED)?;
    let mut rest = [0u8; 1];
    if r.read(&mut rest)? != 0 {
        bail!("the backup is damaged: bytes after its end");
    }
    Ok((entries.count, mac.is_some_and(|m| m.verify(&tag))))
}

/// Checks that the backup file at `path` is complete (its framing, not its MAC, which
/// needs the root key); returns its entry count.
pub fn check_complete(path: &Path) -> anyhow::Result<u64> {
    Ok(read_through(path, None, &mut |_| Ok(()))?.0)
}

/// Refuses a backup that is incomplete, or whose MAC is not that of `root_key` (another
/// database's key, or a file changed since it was taken). A first look, before anything
/// is made: [`load`] checks the MAC again over the bytes it writes.
fn verify(path: &Path, root_key: &RootKey) -> anyhow::Result<()> {
    let (_, mac_ok) = read_through(path, Some(&Barrier::new(root_key)), &mut |_| Ok(()))?;
    if !mac_ok {
        bail!(
            "refusing to restore {}: its MAC does not match: it was taken from a database with another root key, or it was changed since",
            path.display()
        );
    }
    Ok(())
}

/// Writes the entries of the backup at `path` to `backend` (an empty database), with
/// one read of the file whose bytes are both written and MACed: an error when the MAC
/// at its end is not `barrier`'s, and the caller then throws the database away.
fn load(path: &Path, backend: &dyn Backend, barrier: &Barrier) -> anyhow::Result<u64> {
    let mut batch: Vec<Mutation> = Vec::new();
    let mut bytes = 0usize;
    let (count, mac_ok) = read_through(path, Some(barrier), &mut |(table, key, value)| {
        bytes += key.len() + value.len();
        batch.push(Mutation::Put(table, key, value));
        if bytes >= BATCH_BYTES {
            backend.commit(&batch)?;
            batch.clear();
            bytes = 0;
        }
        Ok(())
    })?;
    backend.commit(&batch)?;
    if !mac_ok {
        bail!(
            "refusing to restore {}: it changed while it was read",
            path.display()
        );
    }
    backend.checkpoint()?;
    Ok(count)
}

/// A restored database under its temporary name, not yet the data dir's: a failure
/// from here on removes it (and the directories the restore made).
struct Staged {
    temp: std::path::PathBuf,
    db: std::path::PathBuf,
    made_dirs: Vec<std::path::PathBuf>,
    entries: u64,
}

impl Staged {
    /// Removes the temporary database and its journal, and the directories made.
    fn discard(&self) {
        let _ = std::fs::remove_file(&self.temp);
        let _ = std::fs::remove_file(crate::storage::journal_path(&self.temp));
        crate::server::remove_made_dirs(&self.made_dirs);
    }

    /// Gives the database its name, never over one that appeared meanwhile, and syncs
    /// the data dir; on failure nothing is kept.
    fn name(self) -> anyhow::Result<u64> {
        if let Err(e) = crate::server::name_new_file(&self.temp, &self.db) {
            self.discard();
            return Err(anyhow::Error::new(e).context(format!(
                "naming the restored database {} (nothing was kept)",
                self.db.display()
            )));
        }
        let _ = std::fs::remove_file(crate::storage::journal_path(&self.temp));
        if let Err(e) = crate::storage::sync_parent_dir(&self.db) {
            // The name might not survive a power loss: a restore reported done must be.
            let _ = std::fs::remove_file(&self.db);
            crate::server::remove_made_dirs(&self.made_dirs);
            return Err(anyhow::Error::new(e).context(format!(
                "syncing the data dir {} after naming the restored database (nothing was kept)",
                self.db
                    .parent()
                    .map_or_else(String::new, |p| p.display().to_string())
            )));
        }
        Ok(self.entries)
    }
}

/// Loads the backup at `path` into a new database under a temporary name in `data_dir`
/// (which must hold none), refused before anything is made unless the backup is
/// complete and its MAC is that of `root_key`; answers it with its backend, open.
fn stage(
    data_dir: &Path,
    path: &Path,
    root_key: &RootKey,
) -> anyhow::Result<(Staged, RedbBackend)> {
    let db = crate::server::db_path(data_dir);
    if crate::server::holds_db(data_dir)? {
        bail!("{} already holds a Strongbox database", data_dir.display());
    }
    verify(path, root_key)?;
    let made_dirs = crate::server::make_private_dir(data_dir)?;
    let mut name = db.as_os_str().to_owned();
    name.push(format!(
        ".restoring-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut staged = Staged {
        temp: std::path::PathBuf::from(name),
        db,
        made_dirs,
        entries: 0,
    };
    if let Err(e) = crate::server::claim_db_file(&staged.temp) {
        crate::server::remove_made_dirs(&staged.made_dirs);
        return Err(anyhow::Error::new(e).context(format!("creating {}", staged.temp.display())));
    }
    let barrier = Barrier::new(root_key);
    let loaded = RedbBackend::open(&staged.temp)
        .map_err(anyhow::Error::from)
        .and_then(|backend| Ok((load(path, &backend, &barrier)?, backend)));
    match loaded {
        Ok((n, backend)) => {
            staged.entries = n;
            Ok((staged, backend))
        }
        Err(e) => {
            staged.discard();
            Err(e)
        }
    }
}

/// Restores the backup at `path` into `data_dir` without recording it or opening it as
/// the server would: what the unit tests compare entry for entry with the original.
#[cfg(test)]
fn restore_into(data_dir: &Path, path: &Path, root_key: &RootKey) -> anyhow::Result<u64> {
    let (staged, backend) = stage(data_dir, path, root_key)?;
    if let Err(e) = crate::server::vet(&backend, root_key) {
        drop(backend);
        staged.discard();
        return Err(e.context("the restored database would not open"));
    }
    drop(backend);
    staged.name()
}

/// Restores the backup at `path` into a new database in `data_dir` (which must hold
/// none), refused before anything is made unless the backup is complete and its MAC is
/// that of `root_key`. The database is built under a temporary name, opened there as
/// the server opens it (its format, its audit trail), and the restore recorded in its
/// audit trail (`sys:Restore`, by the root key's holder). With `revoke_tokens`, every
/// principal's token is then revoked and the root token replaced (the backup holds
/// tokens revoked since it was taken): the new root token is returned, and shown only
/// once. Only then does the database take its name. So a restore is either done,
/// recorded and its tokens revoked, or leaves no database (at most a `*.restoring-*`
/// file after a kill) and can be run again.
pub async fn restore_and_record(
    data_dir: &Path,
    path: &Path,
    root_key: &RootKey,
    revoke_tokens: bool,
) -> anyhow::Result<Restored> {
    let (staged, backend) = stage(data_dir, path, root_key)?;
    let opened = async {
        let u = crate::server::unseal(
            std::sync::Arc::new(backend),
            root_key,
            std::sync::Arc::new(crate::clock::SystemClock),
            crate::service::ServiceConfig::default(),
        )
        .context("the restored database would not open")?;
        crate::server::record_restore(&u).await?;
        let revoked = if revoke_tokens {
            Some(crate::server::revoke_all_tokens(&u, "strongbox restore --revoke-tokens").await?)
        } else {
            None
        };
        u.service.store().close().await?;
        anyhow::Ok(revoked)
    }
    .await;
    let revoked = match opened {
        Ok(r) => r,
        Err(e) => {
            staged.discard();
            return Err(e.context(format!(
                "the restored database could not be opened and its restore recorded; nothing was kept in {}",
                data_dir.display()
            )));
        }
    };
    // Test-only: the process killed in the last instant before the database is named,
    // its restore recorded and its tokens revoked.
    #[cfg(feature = "failpoints")]
    if std::env::var_os("STRONGBOX_FAILPOINT_RESTORE_ABORT").is_some() {
        tracing::error!("failpoint: aborting the process");
        std::process::abort();
    }
    let entries = staged.name()?;
    Ok(Restored { entries, revoked })
}

/// What [`restore_and_record`] did.
pub struct Restored {
    /// Entries restored.
    pub entries: u64,
    /// With `revoke_tokens`: how many tokens were revoked, and the new root token.
    pub revoked: Option<(usize, zeroize::Zeroizing<String>)>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;
    use crate::storage::MemoryBackend;

    /// An initialised store with a few more entries in several tables, its backup's
    /// bytes, and how many entries it holds.
    fn backup_of_a_store(root: &RootKey) -> (MemoryBackend, Vec<u8>, u64) {
        let store = MemoryBackend::new();
        crate::server::initialize(&store, root).unwrap();
        let mut m = Vec::new();
        for (t, n) in [(Table::Meta, 3), (Table::Secrets, 700), (Table::Aliases, 5)] {
            for i in 0..n {
                m.push(Mutation::Put(
                    t,
                    format!("k{i:04}").into_bytes(),
                    vec![u8::try_from(i % 251).unwrap(); i % 17],
                ));
            }
        }
        store.commit(&m).unwrap();
        let (bytes, n) = backup_of(&store, root);
        assert_eq!(n, every_entry(&*store.snapshot().unwrap()).len() as u64);
        assert!(n > 708);
        (store, bytes, n)
    }

    fn backup_of(store: &MemoryBackend, root: &RootKey) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let snap = store.snapshot().unwrap();
        let n = write(&*snap, Barrier::new(root).backup_mac(), &mut |c| {
            out.extend_from_slice(&c);
            Ok(())
        })
        .unwrap();
        (out, n)
    }

    fn every_entry(r: &dyn Reader) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        for t in Table::ALL {
            for (k, v) in r.scan(t, b"", None, usize::MAX).unwrap() {
                all.push((t, k, v));
            }
        }
        all
    }

    #[test]
    fn a_backup_restores_every_entry_and_refuses_every_damage() {
        let root = RootKey::random();
        let (store, bytes, entries) = backup_of_a_store(&root);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(check_complete(&file).unwrap(), entries);

        // Cut off (all through, and at each of the last 64 bytes), one byte more, a wrong count, an unknown table: refused,
        // and nothing is made.
        let target = dir.path().join("data");
        let cuts = (0..bytes.len())
            .step_by(13)
            .chain(bytes.len() - 64..bytes.len());
        let mut damaged: Vec<Vec<u8>> = cuts.map(|n| bytes[..n].to_vec()).collect();
        damaged.push([bytes.as_slice(), b"x"].concat());
        let end = bytes.len() - MAC_LEN - 9;
        assert_eq!(bytes[end], END);
        let mut count = bytes.clone();
        count[end + 8] ^= 1;
        damaged.push(count);
        let mut table = bytes.clone();
        table[MAGIC.len()] = 40;
        damaged.push(table);
        for (i, d) in damaged.iter().enumerate() {
            std::fs::write(&file, d).unwrap();
            assert!(restore_into(&target, &file, &root).is_err(), "variant {i}");
            assert!(!target.exists(), "variant {i}");
        }

        // Whole: every entry comes back.
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(restore_into(&target, &file, &root).unwrap(), entries);
        let restored = RedbBackend::open(&crate::server::db_path(&target)).unwrap();
        let want = every_entry(&*store.snapshot().unwrap());
        assert_eq!(every_entry(&*restored.snapshot().unwrap()), want);
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("restoring"))
            .collect();
        assert!(names.is_empty(), "no temporary file is left: {names:?}");
    }

    /// A backup this release could not open (a newer release's format) is refused after
    /// it was read, before it takes the database's name: nothing is left in the data dir
    /// (which the restore made, so it goes too), and a later restore of a good backup
    /// there works.
    #[test]
    fn a_backup_this_release_cannot_open_leaves_no_database() {
        let root = RootKey::random();
        let (store, _, _) = backup_of_a_store(&root);
        store
            .commit(&[Mutation::Put(
                Table::Meta,
                crate::server::META_FORMAT.to_vec(),
                b"5".to_vec(),
            )])
            .unwrap();
        let (newer, _) = backup_of(&store, &root);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b");
        std::fs::write(&file, &newer).unwrap();
        let target = dir.path().join("data");
        let e = restore_into(&target, &file, &root).unwrap_err();
        assert!(format!("{e:#}").contains("format"), "{e:#}");
        assert!(!target.exists());
        // Into a data dir that was there: it stays, empty.
        std::fs::create_dir(&target).unwrap();
        assert!(restore_into(&target, &file, &root).is_err());
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
        let (_, good, entries) = backup_of_a_store(&root);
        std::fs::write(&file, &good).unwrap();
        assert_eq!(restore_into(&target, &file, &root).unwrap(), entries);
    }
}
