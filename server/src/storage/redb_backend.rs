use std::path::Path;

use redb::backends::FileBackend;
use redb::{Database, ReadTransaction, TableDefinition};

use super::{Backend, Entries, Mutation, Reader, StorageError, Table};

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// The embedded default: one redb file. Every commit uses immediate durability
/// (data and metadata synced before `commit` returns).
pub struct RedbBackend {
    db: Database,
}

impl RedbBackend {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StorageError::from_display)?;
        let file = FileBackend::new(file).map_err(StorageError::from_display)?;
        Self::with_backend(file)
    }

    /// Opens a database on a caller-supplied storage backend, through the same layer
    /// as [`open`](Self::open) (crash tests use a backend that keeps only synced bytes).
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, StorageError> {
        let db = Database::builder()
            .create_with_backend(PrefilledFile(backend))
            .map_err(StorageError::from_display)?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StorageError> {
        // Nothing is written at open: a table comes into being with its first write,
        // and until then reads find it empty. (A store opened with a wrong root key,
        // or one refused at unseal, must be left exactly as it was.)
        Ok(Self { db })
    }
}

impl Backend for RedbBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let rtx = self.db.begin_read().map_err(StorageError::from_display)?;
        tx_get(&rtx, table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let rtx = self.db.begin_read().map_err(StorageError::from_display)?;
        tx_scan(&rtx, table, prefix, after, limit)
    }

    fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError> {
        let rtx = self.db.begin_read().map_err(StorageError::from_display)?;
        Ok(Box::new(RedbSnapshot(rtx)))
    }

    fn commit(&self, mutations: &[Mutation]) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(StorageError::from_display)?;
        let table_of = |m: &Mutation| match m {
            Mutation::Put(t, ..) | Mutation::Delete(t, _) => *t,
        };
        // Each table is opened once per run of its mutations (the writer hands them over
        // sorted by table): opening and closing a table costs a table-tree update.
        for run in mutations.chunk_by(|a, b| table_of(a) == table_of(b)) {
            let Some(first) = run.first() else { continue };
            let mut t = tx
                .open_table(def(table_of(first)))
                .map_err(StorageError::from_display)?;
            for m in run {
                match m {
                    Mutation::Put(_, k, v) => {
                        t.insert(k.as_slice(), v.as_slice())
                            .map_err(StorageError::from_display)?;
                    }
                    Mutation::Delete(_, k) => {
                        t.remove(k.as_slice()).map_err(StorageError::from_display)?;
                    }
                }
            }
        }
        // Durability::Immediate is redb's default: commit returns after fsync.
        tx.commit().map_err(StorageError::from_display)
    }
}

/// Most bytes of one growth of the file written with zeros. redb grows a file by
/// doubling it (up to 4 GiB at a time); past this much the rest of a growth stays
/// sparse. The filling holds redb's state lock, so new reads and the commit wait for it:
/// 32 MiB and a sync, once per growth.
const PREFILL_MAX: u64 = 32 * 1024 * 1024;

/// A redb storage backend, except that space redb adds to the file is written with
/// zeros and synced at once, as PostgreSQL fills a new WAL segment. On a sparse file,
/// each commit that writes a page no commit wrote before makes the file system allocate
/// a block, and `fdatasync` then also writes the inode and the allocation maps and
/// waits for them (measured under load: one commit in three or so). With the space
/// written beforehand a commit syncs its own pages only. Zeros are what redb reads from
/// a never-written page anyway, and redb writes nothing into new space before `set_len`
/// returns, so this changes no byte redb sees.
#[derive(Debug)]
struct PrefilledFile<B>(B);

impl<B: redb::StorageBackend> redb::StorageBackend for PrefilledFile<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.0.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let old = self.0.len()?;
        self.0.set_len(len)?;
        let end = len.min(old.saturating_add(PREFILL_MAX));
        if end <= old {
            return Ok(());
        }
        const CHUNK: u64 = 1024 * 1024;
        let zeros = vec![0u8; CHUNK as usize];
        let mut at = old;
        while at < end {
            let n = (end - at).min(CHUNK);
            // Best effort: space left unfilled (a full disk) is merely sparse, and the
            // data redb still has to write may fit where the zeros did not.
            if let Err(e) = self.0.write(at, &zeros[..n as usize]) {
                tracing::warn!(error = %e, "could not fill new database space with zeros; it stays sparse");
                return Ok(());
            }
            at += n;
        }
        // Not best effort: a failed sync may be about pages redb wrote before, and the
        // error is reported once, so it must reach redb.
        self.0.sync_data(false)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        self.0.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

struct RedbSnapshot(ReadTransaction);

impl Reader for RedbSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        tx_get(&self.0, table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        tx_scan(&self.0, table, prefix, after, limit)
    }
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The table, or `None` when no write has created it yet (read as empty).
fn open_read(rtx: &ReadTransaction, table: Table) -> Result<Option<ReadTable>, StorageError> {
    match rtx.open_table(def(table)) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StorageError::from_display(e)),
    }
}

fn tx_get(
    rtx: &ReadTransaction,
    table: Table,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(t) = open_read(rtx, table)? else {
        return Ok(None);
    };
    let v = t.get(key).map_err(StorageError::from_display)?;
    Ok(v.map(|g| g.value().to_vec()))
}

fn tx_scan(
    rtx: &ReadTransaction,
    table: Table,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Entries, StorageError> {
    let Some(t) = open_read(rtx, table)? else {
        return Ok(Vec::new());
    };
    // After `after`, but never before the prefix (a page token from another listing
    // may sort before it).
    let start: &[u8] = after.filter(|a| *a > prefix).unwrap_or(prefix);
    let mut out = Vec::new();
    for item in t.range(start..).map_err(StorageError::from_display)? {
        let (k, v) = item.map_err(StorageError::from_display)?;
        let k = k.value();
        if Some(k) == after {
            continue;
        }
        if !k.starts_with(prefix) || out.len() >= limit {
            break;
        }
        out.push((k.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}
