//! Domain services: keys, secrets, rotation policies, principals, tokens, access
//! policies and the audit trail. They speak in domain types and
//! [`Error`](crate::Error) codes; only the HTTP edge knows about status codes.

mod access_policies;
mod audit;
mod identity;
mod keys;
mod policies;
mod principals;
mod records;
mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::barrier::{Barrier, CmkMaterial};
use crate::clock::Clock;
use crate::storage::Store;

pub use audit::{AuditEntry, AuditQuery, AuditSlot};
pub use identity::{Identity, new_token};
pub(crate) use principals::root_mutations;
pub use records::Principal;
pub use secrets::ListSecretsQuery;

/// Limits and defaults of the services.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Versions kept per secret; unlabelled ones beyond this are pruned oldest first.
    pub max_versions: usize,
    /// Largest secret value, in bytes.
    pub max_value_bytes: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_versions: 10,
            max_value_bytes: strongbox_schemas::MAX_SECRET_VALUE_BYTES,
        }
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
    /// Unwrapped CMK material by (key id, version); wiped when dropped.
    materials: RwLock<HashMap<(String, u32), CmkMaterial>>,
    /// Authenticated identities by token hash.
    identities: identity::IdentityCache,
    /// Audit trail state.
    audit: audit::AuditState,
}

impl Service {
    /// Services over an unsealed store.
    pub fn new(
        store: Store,
        barrier: Barrier,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                barrier,
                clock,
                config,
                materials: RwLock::default(),
                identities: Default::default(),
                audit: Default::default(),
            }),
        }
    }

    /// Now, from the injected clock.
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs every due background job once: finishes key deletions, rotates keys whose
    /// automatic rotation is due, purges secrets whose recovery window has passed.
    pub async fn tick(&self) -> crate::Result<TickReport> {
        let destroyed_keys = self.finish_due_key_deletions().await?;
        let rotated_keys = self.rotate_due_keys().await?;
        let purged_secrets = self.purge_due_secrets().await?;
        Ok(TickReport {
            destroyed_keys,
            rotated_keys,
            purged_secrets,
        })
    }
}

/// What one background tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Keys whose material was destroyed.
    pub destroyed_keys: usize,
    /// Keys rotated automatically.
    pub rotated_keys: usize,
    /// Secrets purged after their recovery window.
    pub purged_secrets: usize,
}
