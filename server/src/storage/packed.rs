//! Packed tables in redb: runs of consecutive entries stored as one redb value, keyed
//! by the run's last key.
//!
//! The audit trail gets one entry per request, appended in key order, and is read in
//! ranges. One B-tree insert per record was most of the cost of checkpointing read
//! traffic; a run of up to [`RUN_ENTRIES`] records costs one insert. Above this module
//! the table reads as before: `get` and `scan` return single entries, and a commit may
//! put or delete any key (a run is rewritten when one of its entries changes).
//!
//! Runs never overlap: every entry of a run sorts after the previous run's last key, so
//! the run that holds (or would hold) a key is the first whose key is not below it.
//! Run value layout, entries back to back in key order (big-endian lengths):
//!
//! ```text
//! key len u32 | key | value len u32 | value
//! ```
//!
//! A database written before a table was packed has its entries one per key under the
//! table's own name; reads use that table as long as it is there, and the first write
//! to the table moves its entries into runs and drops it, in the same transaction.

use std::collections::BTreeMap;

use redb::{ReadableTable as _, TableDefinition, TableHandle as _, WriteTransaction};

use super::{Entries, StorageError, Table};

/// Most entries in one run.
pub(super) const RUN_ENTRIES: usize = if cfg!(test) { 4 } else { 64 };
/// A run takes no further entry once it holds this many bytes.
const RUN_BYTES: usize = 32 << 10;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The redb table of a packed [`Table`]'s runs; `None` for a table kept one entry per key.
pub(super) fn runs_of(table: Table) -> Option<Def> {
    match table {
        Table::Audit => Some(TableDefinition::new("audit_runs")),
        _ => None,
    }
}

fn plain(table: Table) -> Def {
    TableDefinition::new(table.name())
}

fn malformed() -> StorageError {
    StorageError("a packed run in the database is malformed".into())
}

fn take<'a>(v: &mut &'a [u8]) -> Result<&'a [u8], StorageError> {
    let (len, rest) = v.split_first_chunk::<4>().ok_or_else(malformed)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| malformed())?;
    if rest.len() < len {
        return Err(malformed());
    }
    let (field, rest) = rest.split_at(len);
    *v = rest;
    Ok(field)
}

/// A run's entries: key and value, in key order.
pub(super) type Run<'a> = Vec<(&'a [u8], &'a [u8])>;

/// The entries of a run, in key order.
pub(super) fn unpack(mut v: &[u8]) -> Result<Run<'_>, StorageError> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let k = take(&mut v)?;
        let val = take(&mut v)?;
        out.push((k, val));
    }
    Ok(out)
}

fn pack<'a>(entries: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        for field in [k, v] {
            // Keys and values are far below 4 GiB (a request body is at most 640 KiB).
            out.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

/// Writes `entries` (in key order, all after the last run) as new runs.
fn put_runs(
    t: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    entries: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), StorageError> {
    let mut run: Vec<(&Vec<u8>, &Vec<u8>)> = Vec::with_capacity(RUN_ENTRIES);
    let mut bytes = 0usize;
    let mut flush = |run: &mut Vec<(&Vec<u8>, &Vec<u8>)>| -> Result<(), StorageError> {
        if let Some((last, _)) = run.last() {
            t.insert(last.as_slice(), pack(run.iter().copied()).as_slice())
                .map_err(StorageError::from_display)?;
        }
        run.clear();
        Ok(())
    };
    for (k, v) in entries {
        run.push((k, v));
        bytes += k.len() + v.len() + 8;
        if run.len() >= RUN_ENTRIES || bytes >= RUN_BYTES {
            flush(&mut run)?;
            bytes = 0;
        }
    }
    flush(&mut run)
}

/// Applies `changes` (each key's newest value, `None`: deleted) to the runs of `table`.
pub(super) fn write(
    tx: &WriteTransaction,
    table: Table,
    runs: Def,
    changes: BTreeMap<&[u8], Option<&[u8]>>,
) -> Result<(), StorageError> {
    let mut legacy = BTreeMap::new();
    let has_legacy = tx
        .list_tables()
        .map_err(StorageError::from_display)?
        .any(|h| h.name() == table.name());
    if has_legacy {
        let old = tx
            .open_table(plain(table))
            .map_err(StorageError::from_display)?;
        for item in old.iter().map_err(StorageError::from_display)? {
            let (k, v) = item.map_err(StorageError::from_display)?;
            legacy.insert(k.value().to_vec(), v.value().to_vec());
        }
        drop(old);
        tx.delete_table(plain(table))
            .map_err(StorageError::from_display)?;
        tracing::info!(
            table = table.name(),
            entries = legacy.len(),
            "moved the table's entries into packed runs"
        );
    }
    let mut t = tx.open_table(runs).map_err(StorageError::from_display)?;
    put_runs(&mut t, &legacy)?;
    let mut changes = changes.into_iter().peekable();
    while let Some(&(first, _)) = changes.peek() {
        // The first run whose last key is not below the change: the one that holds it.
        let holder = t
            .range::<&[u8]>(first..)
            .map_err(StorageError::from_display)?
            .next()
            .transpose()
            .map_err(StorageError::from_display)?
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        match holder {
            Some((last, run)) => {
                entries.extend(
                    unpack(&run)?
                        .into_iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec())),
                );
                while let Some((k, v)) = changes.next_if(|(k, _)| *k <= last.as_slice()) {
                    match v {
                        Some(v) => entries.insert(k.to_vec(), v.to_vec()),
                        None => entries.remove(k),
                    };
                }
                t.remove(last.as_slice())
                    .map_err(StorageError::from_display)?;
            }
            // Past every run: the rest is appended, the last run first filled up.
            None => {
                let tail = t
                    .last()
                    .map_err(StorageError::from_display)?
                    .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
                if let Some((last, run)) = tail {
                    let held = unpack(&run)?;
                    if held.len() < RUN_ENTRIES && run.len() < RUN_BYTES {
                        entries.extend(held.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
                        t.remove(last.as_slice())
                            .map_err(StorageError::from_display)?;
                    }
                }
                for (k, v) in changes.by_ref() {
                    if let Some(v) = v {
                        entries.insert(k.to_vec(), v.to_vec());
                    }
                }
            }
        }
        put_runs(&mut t, &entries)?;
    }
    Ok(())
}

/// How a table of a read transaction is stored.
pub(super) enum Opened {
    Plain(super::redb_backend::ReadTable),
    Runs(super::redb_backend::ReadTable),
}

/// Opens `table` in `rtx`: its runs, or (a database from before it was packed) its
/// entries one per key; `None` when neither exists yet.
pub(super) fn open_read(
    rtx: &redb::ReadTransaction,
    table: Table,
) -> Result<Option<Opened>, StorageError> {
    let open = |def: Def| match rtx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StorageError::from_display(e)),
    };
    if let Some(runs) = runs_of(table)
        && let Some(t) = open(runs)?
    {
        return Ok(Some(Opened::Runs(t)));
    }
    Ok(open(plain(table))?.map(Opened::Plain))
}

impl Opened {
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self {
            Opened::Plain(t) => Ok(t
                .get(key)
                .map_err(StorageError::from_display)?
                .map(|g| g.value().to_vec())),
            Opened::Runs(t) => {
                let Some(item) = t
                    .range::<&[u8]>(key..)
                    .map_err(StorageError::from_display)?
                    .next()
                else {
                    return Ok(None);
                };
                let (_, run) = item.map_err(StorageError::from_display)?;
                Ok(unpack(run.value())?
                    .into_iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_vec()))
            }
        }
    }

    /// Up to `limit` entries under `prefix` after `after`, in key order.
    pub(super) fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        // After `after`, but never before the prefix (a page token from another listing
        // may sort before it).
        let start: &[u8] = after.filter(|a| *a > prefix).unwrap_or(prefix);
        let mut out = Vec::new();
        // `true` when the scan is over.
        let mut add = |k: &[u8], v: &[u8]| {
            if k < start || Some(k) == after {
                return false;
            }
            if !k.starts_with(prefix) || out.len() >= limit {
                return true;
            }
            out.push((k.to_vec(), v.to_vec()));
            false
        };
        let (Opened::Plain(t) | Opened::Runs(t)) = self;
        'scan: for item in t.range(start..).map_err(StorageError::from_display)? {
            let (k, v) = item.map_err(StorageError::from_display)?;
            match self {
                Opened::Plain(_) => {
                    if add(k.value(), v.value()) {
                        break;
                    }
                }
                Opened::Runs(_) => {
                    for (k, v) in unpack(v.value())? {
                        if add(k, v) {
                            break 'scan;
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
