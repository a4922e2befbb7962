//! Storage: ordered byte tables below the barrier. Everything stored here is either
//! public metadata or ciphertext; this layer never sees a plaintext secret value.
//!
//! [`Backend`] is the small trait a storage engine implements (redb is the embedded
//! default, [`MemoryBackend`] serves tests). [`Store`] adds group commit on top: write
//! jobs are queued to one writer thread, which runs every queued job against an overlay,
//! commits them together with one durable sync, and only then answers each caller.

mod group;
mod journal;
mod memory;
mod packed;
mod redb_backend;
mod unwritten;

pub use group::{NotRun, Store, StoreStats, ThenResult, Txn};
pub use memory::MemoryBackend;
pub use redb_backend::{RedbBackend, journal_path, sync_parent_dir};

/// A file in memory, for tests of what reads and writes files.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct MemFile(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl MemFile {
    pub(crate) fn with(bytes: Vec<u8>) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(bytes)))
    }
}

#[cfg(test)]
impl redb::StorageBackend for MemFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let v = self.0.lock().unwrap();
        let o = offset as usize;
        v.get(o..o + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self, _: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut v = self.0.lock().unwrap();
        let end = offset as usize + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// The tables Strongbox keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Server-wide records: key check, default key id, root token hash.
    Meta,
    /// CMK records by key id (wrapped material inside).
    Keys,
    /// Alias name → key id.
    Aliases,
    /// Secret metadata by name.
    Secrets,
    /// Secret version ciphertext by `name \0 version_id`.
    SecretVersions,
    /// Rotation policy records by name.
    RotationPolicies,
    /// Index `policy \0 secret` of secrets attached to a rotation policy.
    PolicySecrets,
    /// Principal records by name.
    Principals,
    /// Tokens by the SHA-256 of the token (never the token itself).
    Tokens,
    /// Index `principal \0 token_id` → token hash.
    PrincipalTokens,
    /// Access policy records by name.
    AccessPolicies,
    /// Index `policy \0 principal` of principals an access policy is attached to.
    PolicyPrincipals,
    /// The audit trail: `u64` big-endian sequence number → MAC and record.
    Audit,
    /// The scheduler's index: `u64` big-endian due time ‖ job (`secret/NAME`,
    /// `key/ID`, `purge/NAME`) → empty. Ordered by due time, so a tick reads only what
    /// is due.
    RotationSchedule,
}

impl Table {
    /// Every table, for backends that create them up front.
    pub const ALL: [Table; 14] = [
        Table::Meta,
        Table::Keys,
        Table::Aliases,
        Table::Secrets,
        Table::SecretVersions,
        Table::RotationPolicies,
        Table::PolicySecrets,
        Table::Principals,
        Table::Tokens,
        Table::PrincipalTokens,
        Table::AccessPolicies,
        Table::PolicyPrincipals,
        Table::Audit,
        Table::RotationSchedule,
    ];

    /// The table's permanent number (its place in [`Table::ALL`]). The commit journal
    /// stores it, so a table keeps its number for good: new tables take new numbers.
    pub fn index(self) -> usize {
        match self {
            Table::Meta => 0,
            Table::Keys => 1,
            Table::Aliases => 2,
            Table::Secrets => 3,
            Table::SecretVersions => 4,
            Table::RotationPolicies => 5,
            Table::PolicySecrets => 6,
            Table::Principals => 7,
            Table::Tokens => 8,
            Table::PrincipalTokens => 9,
            Table::AccessPolicies => 10,
            Table::PolicyPrincipals => 11,
            Table::Audit => 12,
            Table::RotationSchedule => 13,
        }
    }

    /// Stable on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Keys => "keys",
            Table::Aliases => "aliases",
            Table::Secrets => "secrets",
            Table::SecretVersions => "secret_versions",
            Table::RotationPolicies => "rotation_policies",
            Table::PolicySecrets => "policy_secrets",
            Table::Principals => "principals",
            Table::Tokens => "tokens",
            Table::PrincipalTokens => "principal_tokens",
            Table::AccessPolicies => "access_policies",
            Table::PolicyPrincipals => "policy_principals",
            Table::Audit => "audit",
            Table::RotationSchedule => "rotation_schedule",
        }
    }
}

/// One change in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Insert or replace.
    Put(Table, Vec<u8>, Vec<u8>),
    /// Remove (absent keys are fine).
    Delete(Table, Vec<u8>),
}

/// A failure of the storage engine.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

impl StorageError {
    pub(crate) fn from_display(e: impl std::fmt::Display) -> Self {
        StorageError(e.to_string())
    }
}

/// Key-value pairs from a scan.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// An ordered key-value engine with durable atomic commits.
pub trait Backend: Send + Sync + 'static {
    /// The value at `key`, from the latest commit.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Up to `limit` entries whose key starts with `prefix` and is greater than `after`
    /// (when given), in key order.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError>;
    /// Applies all mutations atomically; when this returns `Ok` they are durable.
    fn commit(&self, mutations: &[Mutation]) -> Result<(), StorageError>;
    /// A consistent view of the latest commit, for reads that need several lookups.
    fn snapshot(&self) -> Result<Box<dyn Reader + '_>, StorageError>;
    /// Makes the commits so far durable in the main store, so that nothing needs
    /// replaying at the next open (a backend with a commit journal; others need not).
    fn checkpoint(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Read access shared by the committed store and a write job's view.
pub trait Reader {
    /// Value at `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Entries under `prefix` after `after`, at most `limit`, in key order.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError>;
}

/// A newer layer's entries (`None`: deleted) laid over a scan of an older store: the
/// first `limit` live entries in key order. `scan_below(want)` scans the older store;
/// each layer entry hides at most one of its entries, so `limit` plus the layer's size
/// always suffice.
pub(crate) fn scan_over(
    layer: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    limit: usize,
    scan_below: impl FnOnce(usize) -> Result<Entries, StorageError>,
) -> Result<Entries, StorageError> {
    if layer.is_empty() {
        return scan_below(limit);
    }
    let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
        scan_below(limit.saturating_add(layer.len()))?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
    merged.extend(layer);
    Ok(merged
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .take(limit)
        .collect())
}

/// `a \0 b`: a composite key whose first part sorts as a prefix.
pub fn composite(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

#[cfg(test)]
mod conformance;
