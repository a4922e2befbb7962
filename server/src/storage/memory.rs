use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{Backend, Entries, Mutation, Reader, StorageError, Table};

/// A backend kept in memory; for tests. Commits are atomic but, of course, not durable.
#[derive(Default)]
pub struct MemoryBackend {
    tables: RwLock<Rows>,
}

type Rows = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> StorageError {
    StorageError("memory backend lock poisoned".into())
}

impl Backend for MemoryBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let t = self.tables.read().map_err(|_| poisoned())?;
        Ok(t.get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let t = self.tables.read().map_err(|_| poisoned())?;
        let start = (
            table,
            after
                .filter(|a| *a > prefix)
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| prefix.to_vec()),
        );
        Ok(t.range(start..)
            .filter(|((_, k), _)| Some(k.as_slice()) != after)
            .take_while(|((tb, k), _)| *tb == table && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError> {
        let rows = self.tables.read().map_err(|_| poisoned())?.clone();
        Ok(Box::new(MemorySnapshot(rows)))
    }

    fn commit(&self, mutations: &[Mutation]) -> Result<(), StorageError> {
        let mut t = self.tables.write().map_err(|_| poisoned())?;
        for m in mutations {
            match m {
                Mutation::Put(tb, k, v) => {
                    t.insert((*tb, k.clone()), v.clone());
                }
                Mutation::Delete(tb, k) => {
                    t.remove(&(*tb, k.clone()));
                }
            }
        }
        Ok(())
    }
}

struct MemorySnapshot(Rows);

impl Reader for MemorySnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let start = (
            table,
            after
                .filter(|a| *a > prefix)
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| prefix.to_vec()),
        );
        Ok(self
            .0
            .range(start..)
            .filter(|((_, k), _)| Some(k.as_slice()) != after)
            .take_while(|((tb, k), _)| *tb == table && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
