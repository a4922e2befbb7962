//! Domain services: keys, secrets, rotation policies, principals, tokens, access
//! policies and the audit trail. They speak in domain types and
//! [`Error`](crate::Error) codes; only the HTTP edge knows about status codes.

mod access_policies;
mod audit;
mod authz;
mod crypto;
mod identity;
mod keys;
mod policies;
mod principals;
mod records;
mod rotation;
mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::barrier::Barrier;
use crate::clock::Clock;
use crate::storage::Store;

pub use audit::{
    AuditEntry, AuditQuery, AuditSlot, check_audit_head, genesis_head, genesis_head_if_never_used,
};
pub use authz::{Actor, DELEGATED_ACTIONS, TOKEN_ACTIONS, require};
pub use identity::{Identity, new_token};
pub(crate) use principals::root_mutations;
pub use records::Principal;
pub use rotation::{EgressPolicy, PasswordRules, RotationConfig};
#[cfg(any(test, feature = "failpoints"))]
pub use rotation::{database_conformance, strategy_conformance};
pub use secrets::{ListSecretsQuery, ListVisibility};

/// Limits and defaults of the services.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Versions kept per secret; unlabelled ones beyond this are pruned oldest first.
    pub max_versions: usize,
    /// Largest secret value, in bytes.
    pub max_value_bytes: usize,
    /// The rotation engine's limits.
    pub rotation: RotationConfig,
    /// Seconds of audit records a prune always keeps (`older_than` may not be less).
    pub audit_min_retention_secs: u64,
    /// Most audit records one prune deletes (one commit).
    pub audit_prune_batch: usize,
    /// Audit records older than this are pruned by the background tick (`None`: kept
    /// until a prune is asked for). At least `audit_min_retention_secs`.
    pub audit_retention_secs: Option<u64>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_versions: 10,
            max_value_bytes: strongbox_schemas::MAX_SECRET_VALUE_BYTES,
            rotation: RotationConfig::default(),
            audit_min_retention_secs: 30 * 86_400,
            audit_prune_batch: 10_000,
            audit_retention_secs: None,
        }
    }
}

/// Bytes of decoded secret records kept for reads (some thousands of secrets).
const DECODED_SECRETS_BUDGET: u64 = 16 * 1024 * 1024;
/// Bytes of decoded key records kept for reads.
const DECODED_KEYS_BUDGET: u64 = 2 * 1024 * 1024;

/// The claim of the backup being taken (see [`Service::claim_backup`]).
pub struct BackupClaim(Arc<Inner>);

impl Drop for BackupClaim {
    fn drop(&mut self) {
        self.0
            .backup_running
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The services over one unsealed store. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    barrier: Barrier,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
    /// Unwrapped CMK material by (key id, version), with the wrapped bytes it came from;
    /// wiped when dropped. Boxed: when the map grows it moves pointers, and no copy of
    /// the material is left behind in the memory it frees.
    materials: RwLock<HashMap<(String, u32), Box<keys::CachedMaterial>>>,
    /// Secret and key records as reads decoded them (metadata only).
    decoded_secrets: records::Decoded<records::SecretRecord>,
    decoded_keys: records::Decoded<records::KeyRecord>,
    /// Authenticated identities by token hash.
    identities: identity::IdentityCache,
    /// Audit trail state.
    audit: audit::AuditState,
    /// Running rotations and the scheduler's bound.
    rotation: rotation::EngineState,
    /// Whether a backup is being taken (one at a time: each holds a snapshot open).
    backup_running: std::sync::atomic::AtomicBool,
}

impl Service {
    /// Services over an unsealed store.
    pub fn new(
        store: Store,
        barrier: Barrier,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        let engine = rotation::EngineState::new(&config.rotation);
        Self {
            inner: Arc::new(Inner {
                rotation: engine,
                store,
                barrier,
                clock,
                config,
                materials: RwLock::default(),
                decoded_secrets: records::Decoded::new(DECODED_SECRETS_BUDGET),
                decoded_keys: records::Decoded::new(DECODED_KEYS_BUDGET),
                identities: Default::default(),
                audit: Default::default(),
                backup_running: Default::default(),
            }),
        }
    }

    /// Now, from the injected clock.
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// A backup of the whole database from one snapshot (see [`crate::backup`]), handed
    /// to `sink` in chunks; returns the number of entries.
    pub fn backup(
        &self,
        sink: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    ) -> anyhow::Result<u64> {
        let snapshot = self.store().snapshot()?;
        crate::backup::write(&*snapshot, self.inner.barrier.backup_mac(), sink)
    }

    /// Claims the one backup that may run at a time: `None` while another runs. The
    /// claim ends when the returned guard is dropped.
    pub fn claim_backup(&self) -> Option<BackupClaim> {
        use std::sync::atomic::Ordering;
        self.inner
            .backup_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BackupClaim(self.inner.clone()))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The barrier (the root key's purpose keys).
    pub(crate) fn barrier(&self) -> &Barrier {
        &self.inner.barrier
    }

    /// Runs every due background job once, as the schedule index says: secret
    /// rotations (including interrupted ones), key rotations, destruction of keys whose
    /// deletion is due, purges of secrets whose recovery window has passed; and, with a
    /// retention configured, prunes the audit trail. Waits for the rotations it starts.
    pub async fn tick(&self) -> crate::Result<TickReport> {
        self.tick_with(true).await
    }

    /// [`tick`](Self::tick) that does not wait for the rotations it starts (the server's
    /// background ticker): they run on, each under its step timeouts, while the next
    /// ticks go on with purges, key jobs and other rotations.
    pub async fn tick_in_background(&self) -> crate::Result<TickReport> {
        self.tick_with(false).await
    }

    async fn tick_with(&self, wait: bool) -> crate::Result<TickReport> {
        let due = self.run_due_jobs(wait).await;
        // The retention runs whether or not the other jobs could (a record that does
        // not decode must not keep the trail from being pruned).
        let pruned_audit_records = self.prune_past_retention().await;
        let due = due?;
        Ok(TickReport {
            started_rotations: due.started_rotations,
            destroyed_keys: due.destroyed_keys,
            rotated_keys: due.rotated_keys,
            purged_secrets: due.purged_secrets,
            rotated_secrets: due.rotated_secrets,
            failed_rotations: due.failed_rotations,
            pruned_audit_records,
        })
    }
}

/// What one background tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Secret rotations started (or resumed).
    pub started_rotations: usize,
    /// Keys whose material was destroyed.
    pub destroyed_keys: usize,
    /// Keys rotated automatically.
    pub rotated_keys: usize,
    /// Secrets purged after their recovery window.
    pub purged_secrets: usize,
    /// Secret rotations that finished.
    pub rotated_secrets: usize,
    /// Secret rotations that failed.
    pub failed_rotations: usize,
    /// Audit records pruned past the configured retention.
    pub pruned_audit_records: u64,
}
