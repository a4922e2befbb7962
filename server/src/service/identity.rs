//! Who is calling: tokens to identities, with their attached statements compiled once
//! and cached until any principal, token or policy changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use strongbox_schemas::{
    self as api, ADMINISTRATOR_ACCESS, Decision, Effect, ErrorCode, PolicyDocument, Statement,
    evaluate,
};
use zeroize::Zeroizing;

use super::Service;
use super::records::{b64, load};
use crate::barrier;
use crate::error::{Error, Result};
use crate::storage::{Reader, Table};

/// Most identities kept in the cache; it is emptied when full.
const CACHE_MAX: usize = 10_000;

/// A stored principal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PrincipalRecord {
    pub(crate) name: String,
    /// Random, given at creation; empty in records written before ids existed, whose id
    /// is derived from the name and creation time ([`PrincipalRecord::id`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) principal_id: String,
    /// Which principal of this name it is: the first created under the name is 1, the
    /// next (after a delete) 2, and so on ([`super::principals::generations_of`]); 0 for
    /// records from before generations were counted, and for `root`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) generation: u64,
    pub(crate) description: String,
    pub(crate) policies: Vec<String>,
    pub(crate) creation_date: i64,
    pub(crate) update_date: i64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stored token: keyed by its SHA-256, which it also holds for a constant-time check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub(crate) token_id: String,
    pub(crate) principal: String,
    #[serde(with = "b64")]
    pub(crate) sha256: Vec<u8>,
    pub(crate) description: String,
    pub(crate) creation_date: i64,
    pub(crate) expires_at: Option<i64>,
}

/// A stored access policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccessPolicyRecord {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) document: PolicyDocument,
    pub(crate) creation_date: i64,
    pub(crate) update_date: i64,
}

/// A fresh bearer token: `sbx_` and 256 random bits, base64url.
pub fn new_token() -> Zeroizing<String> {
    Zeroizing::new(format!(
        "sbx_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(barrier::random_bytes32())
    ))
}

/// The built-in policy of this name, if there is one.
pub(crate) fn builtin_policy(name: &str) -> Option<PolicyDocument> {
    (name == ADMINISTRATOR_ACCESS).then(PolicyDocument::administrator)
}

/// The document of a policy: built in or stored.
pub(crate) fn policy_document(
    r: &(impl Reader + ?Sized),
    name: &str,
) -> Result<Option<PolicyDocument>> {
    if let Some(d) = builtin_policy(name) {
        return Ok(Some(d));
    }
    Ok(load::<AccessPolicyRecord>(r, Table::AccessPolicies, name.as_bytes())?.map(|p| p.document))
}

/// An authenticated caller: a principal, the token used, and the statements of every
/// policy attached to the principal when the token was checked.
#[derive(Debug)]
pub struct Identity {
    principal: String,
    /// The principal's id ([`PrincipalRecord::id`]); empty for [`Identity::with_statements`].
    principal_id: String,
    token_id: String,
    token_sha256: [u8; 32],
    expires_at: Option<i64>,
    statements: Vec<Statement>,
}

impl Identity {
    /// The principal's name.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The principal's id: another for a principal created again under the name.
    pub fn principal_id(&self) -> &str {
        &self.principal_id
    }

    /// The id of the token presented.
    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    /// How the attached policies decide `action` on `resource`.
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        evaluate(&self.statements, action, resource)
    }

    /// Whether the attached policies allow `action` on `resource`.
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        self.decide(action, resource).is_allowed()
    }

    /// Whether the attached policies allow `action` on every resource that starts with
    /// `prefix`: an `Allow` covers them all, and no `Deny` touches any of them (a
    /// `Deny` on one member refuses the whole set, as it would refuse that member).
    pub fn allows_everything_under(&self, action: &str, prefix: &str) -> bool {
        let on_action = |s: &&Statement| s.actions.iter().any(|a| a.matches(action));
        let denied = self
            .statements
            .iter()
            .filter(|s| s.effect == Effect::Deny)
            .filter(on_action)
            .any(|s| {
                s.resources
                    .iter()
                    .any(|r| r.matches_something_under(prefix))
            });
        let allowed = self
            .statements
            .iter()
            .filter(|s| s.effect == Effect::Allow)
            .filter(on_action)
            .any(|s| {
                s.resources
                    .iter()
                    .any(|r| r.matches_everything_under(prefix))
            });
        allowed && !denied
    }

    /// An identity with these statements, not backed by a token: for benchmarks and
    /// tests of evaluation cost.
    pub fn with_statements(principal: &str, statements: Vec<Statement>) -> Self {
        Self {
            principal: principal.to_string(),
            principal_id: String::new(),
            token_id: String::new(),
            token_sha256: [0; 32],
            expires_at: None,
            statements,
        }
    }
}

/// The identities cached for one generation, by token hash.
type Cached = (u64, HashMap<[u8; 32], Arc<Identity>>);

/// Identities by token hash. Entries belong to a generation; any change to principals,
/// tokens or policies starts a new one, which empties the cache for every later lookup.
#[derive(Default)]
pub(crate) struct IdentityCache {
    generation: AtomicU64,
    map: RwLock<Cached>,
}

impl IdentityCache {
    fn get(&self, hash: &[u8; 32]) -> Option<Arc<Identity>> {
        let g = self.generation.load(Ordering::Acquire);
        let m = self.map.read().ok()?;
        (m.0 == g).then(|| m.1.get(hash).cloned()).flatten()
    }

    /// Stores an identity read while the generation was `g`, unless it changed since.
    fn put(&self, g: u64, hash: [u8; 32], id: Arc<Identity>) {
        let Ok(mut m) = self.map.write() else {
            return;
        };
        if m.0 < g || m.1.len() >= CACHE_MAX {
            m.1.clear();
            m.0 = g;
        }
        if m.0 == g && self.generation.load(Ordering::Acquire) == g {
            m.1.insert(hash, id);
        }
    }

    /// Called after every committed (or failed) change to principals, tokens or
    /// policies, before the change is acknowledged: no later request sees the old state.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

fn unauthenticated(why: &str) -> Error {
    Error::new(ErrorCode::Unauthenticated, why)
}

impl Service {
    /// The identity a bearer token stands for. Tokens are looked up by their SHA-256
    /// and the stored hash compared in constant time; expiry is checked on every call.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Identity>> {
        let hash = barrier::sha256(token.as_bytes());
        let id = match self.inner.identities.get(&hash) {
            Some(id) => id,
            None => {
                let g = self.inner.identities.generation.load(Ordering::Acquire);
                let id = Arc::new(self.load_identity(&hash)?);
                self.inner.identities.put(g, hash, id.clone());
                id
            }
        };
        if !barrier::digest_eq(&id.token_sha256, &hash) {
            return Err(unauthenticated("the token is not valid"));
        }
        if id.expires_at.is_some_and(|e| e <= self.now()) {
            return Err(unauthenticated("the token has expired"));
        }
        Ok(id)
    }

    fn load_identity(&self, hash: &[u8; 32]) -> Result<Identity> {
        let snap = self.store().snapshot()?;
        let r = &*snap;
        let tok: TokenRecord = load(r, Table::Tokens, hash)?
            .ok_or_else(|| unauthenticated("the token is not valid"))?;
        let stored: [u8; 32] = tok
            .sha256
            .as_slice()
            .try_into()
            .map_err(|_| Error::internal("token record with a malformed hash"))?;
        if !barrier::digest_eq(&stored, hash) {
            return Err(unauthenticated("the token is not valid"));
        }
        let p: PrincipalRecord = load(r, Table::Principals, tok.principal.as_bytes())?
            .ok_or_else(|| unauthenticated("the token's principal no longer exists"))?;
        let mut statements = Vec::new();
        for name in &p.policies {
            // A policy is never deleted while attached; a missing one grants nothing.
            if let Some(doc) = policy_document(r, name)? {
                statements.extend(doc.statements().iter().cloned());
            }
        }
        Ok(Identity {
            principal_id: p.id(),
            principal: p.name,
            token_id: tok.token_id,
            token_sha256: stored,
            expires_at: tok.expires_at,
            statements,
        })
    }
}

impl PrincipalRecord {
    /// A fresh principal id: `p-` and 128 random bits in hex.
    pub(crate) fn new_id() -> String {
        format!("p-{}", hex::encode(&barrier::random_bytes32()[..16]))
    }

    /// This principal's id. A record from before ids existed gets one derived from its
    /// name and creation time, stable for its life and different for a principal
    /// created again under the name in another second.
    pub(crate) fn id(&self) -> String {
        if !self.principal_id.is_empty() {
            return self.principal_id.clone();
        }
        let mut seed = b"strongbox principal id\0".to_vec();
        seed.extend_from_slice(self.name.as_bytes());
        seed.push(0);
        seed.extend_from_slice(&self.creation_date.to_be_bytes());
        format!("p-{}", hex::encode(&barrier::sha256(&seed)[..16]))
    }

    pub(crate) fn to_api(&self) -> api::Principal {
        api::Principal {
            name: self.name.clone(),
            principal_id: self.id(),
            arn: format!("strongbox:ram:principal/{}", self.name),
            description: self.description.clone(),
            policies: self.policies.clone(),
            builtin: self.name == api::ROOT_PRINCIPAL,
            creation_date: api::Timestamp::from_unix(self.creation_date),
            update_date: api::Timestamp::from_unix(self.update_date),
        }
    }
}

impl TokenRecord {
    pub(crate) fn to_api(&self, now: i64) -> api::TokenInfo {
        api::TokenInfo {
            token_id: self.token_id.clone(),
            principal: self.principal.clone(),
            description: self.description.clone(),
            creation_date: api::Timestamp::from_unix(self.creation_date),
            expires_at: self.expires_at.map(api::Timestamp::from_unix),
            expired: self.expires_at.is_some_and(|e| e <= now),
        }
    }
}

impl AccessPolicyRecord {
    pub(crate) fn to_api(&self) -> api::Policy {
        api::Policy {
            name: self.name.clone(),
            arn: format!("strongbox:ram:policy/{}", self.name),
            description: self.description.clone(),
            document: Some(self.document.clone()),
            builtin: false,
            creation_date: api::Timestamp::from_unix(self.creation_date),
            update_date: api::Timestamp::from_unix(self.update_date),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::records::{decode, encode};

    /// Records from before principal ids have an id derived from name and creation
    /// time: stable, and another for the name created again; new records keep theirs.
    #[test]
    fn a_principal_record_without_an_id_gets_a_stable_derived_one() {
        let old = br#"{"name":"app","description":"","policies":[],"creation_date":100,"update_date":100}"#;
        let rec: PrincipalRecord = decode(old).unwrap();
        assert!(rec.principal_id.is_empty());
        let id = rec.id();
        assert!(id.starts_with("p-") && id.len() == 34, "{id}");
        assert_eq!(decode::<PrincipalRecord>(old).unwrap().id(), id);
        assert_eq!(rec.to_api().principal_id, id);
        // Written back unchanged, it still has no stored id (and so the same one).
        let again: PrincipalRecord = decode(&encode(&rec)).unwrap();
        assert!(again.principal_id.is_empty());
        assert_eq!(again.id(), id);
        let later = PrincipalRecord {
            creation_date: 101,
            ..rec.clone()
        };
        assert_ne!(later.id(), id);
        let other = PrincipalRecord {
            name: "app2".into(),
            ..rec.clone()
        };
        assert_ne!(other.id(), id);

        let new = PrincipalRecord {
            principal_id: PrincipalRecord::new_id(),
            ..rec
        };
        assert_ne!(new.id(), id);
        assert_ne!(new.id(), PrincipalRecord::new_id());
        let kept: PrincipalRecord = decode(&encode(&new)).unwrap();
        assert_eq!(kept.id(), new.id());
    }
}
