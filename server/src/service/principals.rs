//! Principals and their tokens.

use std::collections::BTreeSet;

use strongbox_schemas::{
    self as api, ADMINISTRATOR_ACCESS, ErrorCode, ROOT_PRINCIPAL, validate_principal_name,
};
use zeroize::Zeroizing;

use super::Service;
use super::authz::{ATTACH_POLICY, Actor, DETACH_POLICY};
use super::identity::{PrincipalRecord, TokenRecord, new_token, policy_document};
use super::records::{decode, encode, list_page, load, validate_description};
use crate::barrier;
use crate::error::{Error, Result};
use crate::storage::{Mutation, Reader, Table, Txn, composite};

/// Most policies attached to one principal.
const MAX_POLICIES: usize = 32;
/// Most tokens one principal holds, as IAM and RAM cap a user's access keys: a
/// principal's tokens are listed whole, and each one is a record of its own.
const MAX_TOKENS: usize = 100;
/// Names the audit trail gives requests made by no principal.
const RESERVED_PRINCIPAL_NAMES: [&str; 2] = ["anonymous", "rotation"];
/// Token id of the root token printed by `init` (and by each `--dev` start).
pub(crate) const ROOT_TOKEN_ID: &str = "root";
const ROOT_DESCRIPTION: &str = "Built in: holds the token printed by strongbox init";

fn principal_not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::PrincipalNotFound,
        format!("principal {name} not found"),
    )
}

fn builtin(name: &str) -> Error {
    Error::new(
        ErrorCode::InvalidState,
        format!("principal {name} is built in and cannot be changed or deleted"),
    )
}

pub(super) fn load_principal(r: &(impl Reader + ?Sized), name: &str) -> Result<PrincipalRecord> {
    load(r, Table::Principals, name.as_bytes())?.ok_or_else(|| principal_not_found(name))
}

/// Checks a list of policy names: no repeats, at most 32, each one existing.
fn check_policies(r: &(impl Reader + ?Sized), policies: &[String]) -> Result<()> {
    if policies.len() > MAX_POLICIES {
        return Err(Error::invalid(
            "policies",
            format!("at most {MAX_POLICIES} policies"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in policies.iter().enumerate() {
        if !seen.insert(p) {
            return Err(Error::invalid(
                &format!("policies[{i}]"),
                format!("{p} is listed twice"),
            ));
        }
        if policy_document(r, p)?.is_none() {
            return Err(Error::new(
                ErrorCode::PolicyNotFound,
                format!("policies[{i}]: policy {p} not found"),
            ));
        }
    }
    Ok(())
}

/// `ram:AttachPolicy` on `policy/{name}` for every policy of `new` not in `old` (what a
/// caller needs to give a principal a policy), and `ram:DetachPolicy` on every policy of
/// `old` not in `new` (taking a policy off also takes off its `Deny` statements: a
/// principal allowed to update itself must not shed a guardrail an administrator put
/// on it). Checked before the policies are loaded, so the answer is the same whether
/// they exist or not.
fn check_attach(who: &Actor, old: &[String], new: &[String]) -> Result<()> {
    for p in new.iter().filter(|p| !old.contains(p)) {
        who.require(
            ATTACH_POLICY,
            &format!("policy/{p}"),
            "attaching a policy grants its rights to the principal",
        )?;
    }
    for p in old.iter().filter(|p| !new.contains(p)) {
        who.require(
            DETACH_POLICY,
            &format!("policy/{p}"),
            "detaching a policy takes off its Deny statements too",
        )?;
    }
    Ok(())
}

/// Rewrites the `policy \0 principal` index from `old` to `new`.
fn reindex(t: &mut Txn<'_>, principal: &str, old: &[String], new: &[String]) {
    for p in old {
        t.delete(Table::PolicyPrincipals, &composite(p, principal));
    }
    for p in new {
        t.put(
            Table::PolicyPrincipals,
            &composite(p, principal),
            Vec::new(),
        );
    }
}

pub(super) fn put_token(t: &mut Txn<'_>, rec: &TokenRecord) {
    t.put(Table::Tokens, &rec.sha256, encode(rec));
    t.put(
        Table::PrincipalTokens,
        &composite(&rec.principal, &rec.token_id),
        rec.sha256.clone(),
    );
}

/// Makes room for one more token of `principal` (in the write that puts it): below
/// [`MAX_TOKENS`] nothing is done; at it, the principal's expired tokens are deleted, and
/// if every one is still valid the new token is refused.
pub(super) fn make_room_for_token(t: &mut Txn<'_>, principal: &str, now: i64) -> Result<()> {
    let prefix = prefix_of(principal);
    if t.scan(Table::PrincipalTokens, &prefix, None, MAX_TOKENS)?
        .len()
        < MAX_TOKENS
    {
        return Ok(());
    }
    let mut valid = 0;
    for (k, hash) in t.scan(Table::PrincipalTokens, &prefix, None, usize::MAX)? {
        match load::<TokenRecord>(t, Table::Tokens, &hash)? {
            Some(rec) if rec.expires_at.is_none_or(|e| e > now) => valid += 1,
            _ => {
                t.delete(Table::Tokens, &hash);
                t.delete(Table::PrincipalTokens, &k);
            }
        }
    }
    if valid >= MAX_TOKENS {
        return Err(Error::new(
            ErrorCode::InvalidState,
            format!(
                "principal {principal} holds {valid} tokens that have not expired, the most one principal may hold is {MAX_TOKENS}; revoke one first"
            ),
        ));
    }
    Ok(())
}

pub(super) fn delete_token_of(t: &mut Txn<'_>, principal: &str, token_id: &str) -> Result<bool> {
    let idx = composite(principal, token_id);
    let Some(hash) = t.get(Table::PrincipalTokens, &idx)? else {
        return Ok(false);
    };
    t.delete(Table::Tokens, &hash);
    t.delete(Table::PrincipalTokens, &idx);
    Ok(true)
}

fn generation_key(name: &str) -> Vec<u8> {
    composite("principal_generation", name)
}

/// How many principals were ever created under `name` (kept when they are deleted).
pub(super) fn generations_of(r: &(impl Reader + ?Sized), name: &str) -> Result<u64> {
    Ok(r.get(Table::Meta, &generation_key(name))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

fn prefix_of(name: &str) -> Vec<u8> {
    let mut p = name.as_bytes().to_vec();
    p.push(0);
    p
}

/// Writes the `root` principal with `AdministratorAccess` and its token, replacing any
/// earlier root token. Used by `init`, by the dev server and to upgrade old databases.
pub(crate) fn write_root(t: &mut Txn<'_>, token_sha256: [u8; 32], now: i64) -> Result<()> {
    if t.get(Table::Principals, ROOT_PRINCIPAL.as_bytes())?
        .is_none()
    {
        let rec = PrincipalRecord {
            name: ROOT_PRINCIPAL.into(),
            principal_id: PrincipalRecord::new_id(),
            generation: 0,
            description: ROOT_DESCRIPTION.into(),
            policies: vec![ADMINISTRATOR_ACCESS.into()],
            creation_date: now,
            update_date: now,
        };
        t.put(Table::Principals, ROOT_PRINCIPAL.as_bytes(), encode(&rec));
        reindex(t, ROOT_PRINCIPAL, &[], &rec.policies);
    }
    delete_token_of(t, ROOT_PRINCIPAL, ROOT_TOKEN_ID)?;
    put_token(t, &root_token(token_sha256, now));
    Ok(())
}

fn root_token(token_sha256: [u8; 32], now: i64) -> TokenRecord {
    TokenRecord {
        token_id: ROOT_TOKEN_ID.into(),
        principal: ROOT_PRINCIPAL.into(),
        sha256: token_sha256.to_vec(),
        description: "The root token".into(),
        creation_date: now,
        expires_at: None,
    }
}

/// The records of a fresh `root` principal and its token, for a store being initialised
/// or upgraded (no root principal yet).
pub(crate) fn root_mutations(token_sha256: [u8; 32], now: i64) -> Vec<Mutation> {
    let p = PrincipalRecord {
        name: ROOT_PRINCIPAL.into(),
        principal_id: PrincipalRecord::new_id(),
        generation: 0,
        description: ROOT_DESCRIPTION.into(),
        policies: vec![ADMINISTRATOR_ACCESS.into()],
        creation_date: now,
        update_date: now,
    };
    let tok = root_token(token_sha256, now);
    vec![
        Mutation::Put(
            Table::Principals,
            ROOT_PRINCIPAL.as_bytes().to_vec(),
            encode(&p),
        ),
        Mutation::Put(
            Table::PolicyPrincipals,
            composite(ADMINISTRATOR_ACCESS, ROOT_PRINCIPAL),
            Vec::new(),
        ),
        Mutation::Put(Table::Tokens, tok.sha256.clone(), encode(&tok)),
        Mutation::Put(
            Table::PrincipalTokens,
            composite(ROOT_PRINCIPAL, ROOT_TOKEN_ID),
            tok.sha256,
        ),
    ]
}

impl Service {
    /// Runs a change to principals, tokens or policies; whatever its outcome, cached
    /// identities are dropped before it is acknowledged. The write and the
    /// invalidation run in a task of their own, so that a request dropped once its job
    /// is queued (client gone, HTTP/2 reset) cannot commit a revocation and skip the
    /// invalidation.
    pub(crate) async fn write_access<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let this = self.clone();
        super::audit::spawn_in_request(async move {
            let r = this.write(f).await;
            this.inner.identities.invalidate();
            r
        })
        .await
        .map_err(Error::internal)?
    }

    /// Creates a principal; each policy attached needs `ram:AttachPolicy` on it.
    pub async fn create_principal(
        &self,
        req: api::CreatePrincipalRequest,
        who: &Actor,
    ) -> Result<api::Principal> {
        validate_principal_name("name", &req.name)?;
        // The audit trail names unauthenticated requests `anonymous` and the rotation
        // engine `rotation`: a principal of either name would pass for them there.
        if RESERVED_PRINCIPAL_NAMES.contains(&req.name.as_str()) {
            return Err(Error::invalid(
                "name",
                format!(
                    "{} is reserved: the audit trail uses it for requests without a principal",
                    req.name
                ),
            ));
        }
        let description = req.description.unwrap_or_default();
        validate_description(&description)?;
        let policies = req.policies.unwrap_or_default();
        let (now, who) = (self.now(), who.clone());
        self.write_access(move |t| {
            if t.get(Table::Principals, req.name.as_bytes())?.is_some() {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("principal {} already exists", req.name),
                ));
            }
            check_attach(&who, &[], &policies)?;
            check_policies(t, &policies)?;
            let generation = generations_of(t, &req.name)? + 1;
            t.put(
                Table::Meta,
                &generation_key(&req.name),
                generation.to_be_bytes().to_vec(),
            );
            let rec = PrincipalRecord {
                name: req.name,
                principal_id: PrincipalRecord::new_id(),
                generation,
                description,
                policies,
                creation_date: now,
                update_date: now,
            };
            reindex(t, &rec.name, &[], &rec.policies);
            t.put(Table::Principals, rec.name.as_bytes(), encode(&rec));
            Ok(rec.to_api())
        })
        .await
    }

    /// One principal.
    pub fn describe_principal(&self, name: &str) -> Result<api::Principal> {
        Ok(load_principal(self.store(), name)?.to_api())
    }

    /// Principals in name order whose names pass `visible`, a page at a time.
    pub fn list_principals(
        &self,
        limit: usize,
        page_token: Option<&str>,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListPrincipalsResponse> {
        let (principals, next_page_token) = list_page(
            self.store(),
            Table::Principals,
            limit,
            page_token,
            |_, v| {
                let p: PrincipalRecord = decode(v)?;
                Ok(visible(&p.name).then(|| (p.name.clone(), p.to_api())))
            },
        )?;
        Ok(api::ListPrincipalsResponse {
            principals,
            next_page_token,
        })
    }

    /// Changes a principal's description or policies; takes effect on its next request.
    /// Each policy added needs `ram:AttachPolicy` on it.
    pub async fn update_principal(
        &self,
        name: &str,
        req: api::UpdatePrincipalRequest,
        who: &Actor,
    ) -> Result<api::Principal> {
        if let Some(d) = &req.description {
            validate_description(d)?;
        }
        let (name, now, who) = (name.to_string(), self.now(), who.clone());
        self.write_access(move |t| {
            let mut p = load_principal(t, &name)?;
            if name == ROOT_PRINCIPAL {
                return Err(builtin(&name));
            }
            if let Some(policies) = req.policies {
                check_attach(&who, &p.policies, &policies)?;
                check_policies(t, &policies)?;
                reindex(t, &name, &p.policies, &policies);
                p.policies = policies;
            }
            if let Some(d) = req.description {
                p.description = d;
            }
            p.update_date = now;
            t.put(Table::Principals, name.as_bytes(), encode(&p));
            Ok(p.to_api())
        })
        .await
    }

    /// Deletes a principal and revokes all its tokens.
    pub async fn delete_principal(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write_access(move |t| {
            let p = load_principal(t, &name)?;
            if name == ROOT_PRINCIPAL {
                return Err(builtin(&name));
            }
            for (k, hash) in t.scan(Table::PrincipalTokens, &prefix_of(&name), None, usize::MAX)? {
                t.delete(Table::Tokens, &hash);
                t.delete(Table::PrincipalTokens, &k);
            }
            reindex(t, &name, &p.policies, &[]);
            t.delete(Table::Principals, name.as_bytes());
            Ok(())
        })
        .await
    }

    /// Creates a token for a principal; its value is returned only here.
    pub async fn create_token(
        &self,
        principal: &str,
        req: api::CreateTokenRequest,
    ) -> Result<api::CreatedToken> {
        // Root has the one token init made, replaced only with the root key: a right to
        // make tokens for principals is not a way to root.
        if principal == ROOT_PRINCIPAL {
            return Err(Error::new(
                ErrorCode::InvalidState,
                "principal root has one token, made by strongbox init and replaced only with the root key (strongbox reset-root-token); give another principal AdministratorAccess instead",
            ));
        }
        let now = self.now();
        if let Some(e) = req.expires_at
            && e.unix() <= now
        {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let description = req.description.unwrap_or_default();
        validate_description(&description)?;
        let token = new_token();
        let rec = TokenRecord {
            token_id: format!("tok_{:024x}", rand::random::<u128>() >> 32),
            principal: principal.to_string(),
            sha256: barrier::sha256(token.as_bytes()).to_vec(),
            description,
            creation_date: now,
            expires_at: req.expires_at.map(|e| e.unix()),
        };
        let info = self
            .write_access(move |t| {
                load_principal(t, &rec.principal)?;
                make_room_for_token(t, &rec.principal, now)?;
                put_token(t, &rec);
                Ok(rec)
            })
            .await?;
        Ok(api::CreatedToken {
            token_id: info.token_id,
            token: token.to_string(),
            principal: info.principal,
            expires_at: info.expires_at.map(api::Timestamp::from_unix),
            creation_date: api::Timestamp::from_unix(info.creation_date),
        })
    }

    /// A principal's tokens (metadata only), by id, for a caller: a token the rotation of
    /// a secret issued names that secret in its description only if `secret_visible`
    /// says the caller may describe it.
    pub fn list_tokens_shown(
        &self,
        principal: &str,
        secret_visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListTokensResponse> {
        let snap = self.store().snapshot()?;
        load_principal(&*snap, principal)?;
        let now = self.now();
        let mut tokens = Vec::new();
        for (_, hash) in snap.scan(
            Table::PrincipalTokens,
            &prefix_of(principal),
            None,
            usize::MAX,
        )? {
            if let Some(t) = load::<TokenRecord>(&*snap, Table::Tokens, &hash)? {
                let mut shown = t.to_api(now);
                if super::rotation::rotation_secret_of(&self.inner.barrier, &t)
                    .is_some_and(|secret| !secret_visible(secret))
                {
                    shown.description = super::rotation::MARKER_HIDDEN.to_string();
                }
                tokens.push(shown);
            }
        }
        Ok(api::ListTokensResponse { tokens })
    }

    /// Revokes a token: no request after this returns is served with it. Root's token
    /// is revoked only by root itself (as Vault advises once other administrators
    /// exist; `strongbox reset-root-token` makes a new one with the root key): a right
    /// to revoke principals' tokens is no way to lock the root token out.
    pub async fn delete_token(&self, principal: &str, token_id: &str, by: &str) -> Result<()> {
        if principal == ROOT_PRINCIPAL && by != ROOT_PRINCIPAL {
            return Err(Error::new(
                ErrorCode::InvalidState,
                "the root token is revoked only by root itself (strongbox reset-root-token makes a new one with the root key)",
            ));
        }
        let (principal, token_id) = (principal.to_string(), token_id.to_string());
        self.write_access(move |t| {
            load_principal(t, &principal)?;
            if !delete_token_of(t, &principal, &token_id)? {
                return Err(Error::new(
                    ErrorCode::TokenNotFound,
                    format!("principal {principal} has no token {token_id}"),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Revokes every token of every principal and replaces the root token (after a
    /// restore, whose database holds tokens revoked since its backup was taken).
    /// Returns how many tokens were revoked and the new root token.
    pub async fn revoke_all_tokens(&self) -> Result<(usize, Zeroizing<String>)> {
        let token = new_token();
        let hash = barrier::sha256(token.as_bytes());
        let now = self.now();
        let revoked = self
            .write_access(move |t| {
                let all = t.scan(Table::PrincipalTokens, b"", None, usize::MAX)?;
                for (idx, hash) in &all {
                    t.delete(Table::Tokens, hash);
                    t.delete(Table::PrincipalTokens, idx);
                }
                write_root(t, hash, now)?;
                Ok(all.len())
            })
            .await?;
        Ok((revoked, token))
    }

    /// Replaces the root token (the dev server prints a fresh one at each start).
    pub async fn reset_root_token(&self) -> Result<Zeroizing<String>> {
        let token = new_token();
        let hash = barrier::sha256(token.as_bytes());
        let now = self.now();
        self.write_access(move |t| write_root(t, hash, now)).await?;
        Ok(token)
    }
}
