use std::path::Path;

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
        let db = Database::create(path).map_err(StorageError::from_display)?;
        Self::init(db)
    }

    /// Opens a database on a caller-supplied storage backend (used by crash tests).
    pub fn with_backend(backend: impl redb::StorageBackend) -> Result<Self, StorageError> {
        let db = Database::builder()
            .create_with_backend(backend)
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
    let start: &[u8] = after.unwrap_or(prefix);
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
