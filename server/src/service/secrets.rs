//! Secrets: envelope-encrypted versions with stages.

use std::collections::BTreeMap;

use base64::Engine as _;
use strongbox_schemas::{
    self as api, ErrorCode, STAGE_CURRENT, STAGE_PREVIOUS, SecretDataType, SecretType,
    validate_secret_name, validate_version_id,
};
use zeroize::Zeroizing;

use super::Service;
use super::authz::{Actor, USE_KEY, WEBHOOK_SENDS_WHY};
use super::keys::{
    check_through_alias, check_usable, check_usable_as, resolve_key, resolve_key_to_seal,
};
use super::records::{
    KeyRecord, KeyStateRec, NamedPrincipal, PolicyRecord, Principal, SecretRecord, SharedRecord,
    VersionMeta, collect_after, decode, decode_page_token, encode, load, page, secret_arn,
    validate_description, validate_extended_config, validate_tags,
};
use super::rotation::{
    engine_binding, principal_at_write, principal_named, records_principal_id, reindex_secret,
    same_principal,
};
use crate::barrier::{self, SealedHeader, SecretBinding};
use crate::error::{Error, Result};
use crate::storage::{Reader, Table, Txn, composite};

/// Parameters of `GET /v1/secrets`.
#[derive(Debug, Clone, Default)]
pub struct ListSecretsQuery {
    /// Page size, 1–100.
    pub limit: usize,
    /// From a previous page.
    pub page_token: Option<String>,
    /// Only names starting with this.
    pub name_prefix: Option<String>,
    /// Only secrets carrying all these tags.
    pub tags: BTreeMap<String, String>,
    /// Only secrets that use this key (see `uses_key`).
    pub key_id: Option<String>,
}

/// What a listing may show of the caller's resources.
pub struct ListVisibility<'a> {
    /// Whether the caller may describe the secret with this name.
    pub secret: &'a dyn Fn(&str) -> bool,
    /// Whether the caller may describe this alias (`alias/NAME`).
    pub alias: &'a dyn Fn(&str) -> bool,
}

fn secret_not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::SecretNotFound,
        format!("secret {name} not found"),
    )
}

fn pending_deletion(name: &str) -> Error {
    Error::new(
        ErrorCode::SecretPendingDeletion,
        format!(
            "secret {name} is scheduled for deletion; restore it (POST /v1/secrets/{{name}}/restore) to use it"
        ),
    )
}

pub(super) fn load_secret(r: &(impl Reader + ?Sized), name: &str) -> Result<SecretRecord> {
    load(r, Table::Secrets, name.as_bytes())?.ok_or_else(|| secret_not_found(name))
}

pub(super) fn load_live_secret(r: &(impl Reader + ?Sized), name: &str) -> Result<SecretRecord> {
    let s = load_secret(r, name)?;
    if s.planned_delete_time.is_some() {
        return Err(pending_deletion(name));
    }
    Ok(s)
}

/// Decodes `secret_data` to bytes and checks its size.
fn decode_data(data: &str, ty: SecretDataType, max: usize) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = match ty {
        SecretDataType::Text => Zeroizing::new(data.as_bytes().to_vec()),
        SecretDataType::Binary => Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| {
                    Error::invalid(
                        "secret_data",
                        "must be standard base64 when secret_data_type is binary",
                    )
                })?,
        ),
    };
    if bytes.len() > max {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!("secret_data: at most {max} bytes"),
        ));
    }
    if bytes.is_empty() {
        return Err(Error::invalid("secret_data", "must not be empty"));
    }
    Ok(bytes)
}

/// Puts `stage` on version `to`, taking it from any other version. Moving `ACSCurrent`
/// makes the version that had it `ACSPrevious`. A version `to` the secret does not have
/// is refused (`VersionNotFound`) with nothing changed: a stage is never taken from one
/// version to be given to none.
pub(super) fn move_stage(rec: &mut SecretRecord, stage: &str, to: &str) -> Result<()> {
    if !rec.versions.iter().any(|v| v.version_id == to) {
        return Err(Error::new(
            ErrorCode::VersionNotFound,
            format!("secret {} has no version {to}", rec.name),
        ));
    }
    if stage == STAGE_CURRENT {
        let old = rec
            .version_with_stage(STAGE_CURRENT)
            .map(|v| v.version_id.clone());
        if let Some(old) = old.filter(|o| o != to) {
            for v in &mut rec.versions {
                v.stages.retain(|s| s != STAGE_PREVIOUS);
                if v.version_id == old {
                    v.stages.retain(|s| s != STAGE_CURRENT);
                    v.stages.push(STAGE_PREVIOUS.into());
                }
            }
        }
    }
    for v in &mut rec.versions {
        if v.version_id == to {
            if !v.has(stage) {
                v.stages.push(stage.into());
            }
        } else {
            v.stages.retain(|s| s != stage);
        }
    }
    Ok(())
}

/// The id of the key version `v` of secret `name` is sealed under: as recorded, or for a
/// version recorded before that was kept, from its stored ciphertext's header (`None`
/// when it has none).
fn sealing_key(r: &(impl Reader + ?Sized), name: &str, v: &VersionMeta) -> Result<Option<String>> {
    if let Some(k) = &v.key_id {
        return Ok(Some(k.clone()));
    }
    match r.get(Table::SecretVersions, &composite(name, &v.version_id))? {
        Some(ct) => Ok(Some(barrier::sealed_header(&ct)?.key_id)),
        None => Ok(None),
    }
}

/// The versions of `rec`, newest first. Each names the key it is sealed under when the
/// caller may describe that key (`key_visible`), or when it is the key the secret names
/// by id: an alias's target is not shown to a caller that may not see it.
pub(crate) fn versions_to_api(
    r: &(impl Reader + ?Sized),
    rec: &SecretRecord,
    key_visible: &dyn Fn(&str) -> bool,
) -> Result<Vec<api::SecretVersion>> {
    rec.versions
        .iter()
        .rev()
        .map(|v| {
            let key = sealing_key(r, &rec.name, v)?
                .filter(|k| *k == rec.encryption_key_id || key_visible(k));
            Ok(v.to_api(key))
        })
        .collect()
}

/// Whether `rec` uses key `key_id`: it names the key, by id or by an alias that points at
/// it now (counted only when `alias_visible` says the caller may see that alias), or one
/// of its versions is sealed under it.
fn uses_key(
    r: &(impl Reader + ?Sized),
    rec: &SecretRecord,
    key_id: &str,
    alias_visible: &dyn Fn(&str) -> bool,
) -> Result<bool> {
    if rec.encryption_key_id == key_id {
        return Ok(true);
    }
    if rec.encryption_key_id.starts_with("alias/")
        && alias_visible(&rec.encryption_key_id)
        && r.get(Table::Aliases, rec.encryption_key_id.as_bytes())?
            .is_some_and(|k| k == key_id.as_bytes())
    {
        return Ok(true);
    }
    for v in &rec.versions {
        if sealing_key(r, &rec.name, v)?.as_deref() == Some(key_id) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How an error calls `key`, which `key_ref` named: by its id when named by it, else as
/// the key the alias points at (whose id the caller may not be allowed to describe).
fn key_called(key_ref: &str, key: &KeyRecord) -> String {
    if key_ref == key.key_id {
        format!("key {}", key.key_id)
    } else {
        format!("the key {key_ref} points at")
    }
}

/// How an error calls the key that seals version `version_id` of secret `name`: by its
/// id for a caller that may describe it, else without it.
fn sealing_key_called(who: &Actor, key_id: &str, name: &str, version_id: &str) -> String {
    let shown =
        matches!(who, Actor::Caller(id) if id.allows("kms:DescribeKey", &format!("key/{key_id}")));
    if shown {
        format!("key {key_id}, which seals version {version_id} of secret {name},")
    } else {
        format!("the key that seals version {version_id} of secret {name}")
    }
}

/// Who opens a version whose errors nobody is shown, or which the server keeps: the
/// key is not named.
const UNNAMED: &Actor = &Actor::Trusted(Principal::Rotation);

/// The key a new version of `rec` is sealed under. A secret that names its key by an
/// alias which went with its destroyed key (destroying a key deletes its aliases) is
/// told `KeyDeleted`, as its reads are, not `AliasNotFound`.
pub(super) fn key_to_seal(r: &(impl Reader + ?Sized), rec: &SecretRecord) -> Result<KeyRecord> {
    resolve_key_to_seal(r, &rec.encryption_key_id).map_err(|e| {
        if e.code != ErrorCode::AliasNotFound {
            return e;
        }
        let destroyed = rec
            .version_with_stage(STAGE_CURRENT)
            .and_then(|v| {
                r.get(Table::SecretVersions, &composite(&rec.name, &v.version_id))
                    .ok()
                    .flatten()
            })
            .and_then(|ct| barrier::sealed_header(&ct).ok())
            .filter(|h| {
                matches!(
                    load::<KeyRecord>(r, Table::Keys, h.key_id.as_bytes()),
                    Ok(Some(k)) if k.state == KeyStateRec::Destroyed
                )
            });
        match destroyed {
            Some(_) => Error::new(
                ErrorCode::KeyDeleted,
                format!(
                    "the key {alias} named has been deleted and its material destroyed: \
                     the secret's versions under it cannot be read again; point {alias} at \
                     another key to give the secret new values, or delete the secret",
                    alias = rec.encryption_key_id
                ),
            ),
            None => e,
        }
    })
}

/// Most distinct stage labels on one secret's versions (AWS Secrets Manager's limit):
/// labelled versions are never pruned, so this bounds how many a secret keeps.
pub(super) const MAX_STAGE_LABELS: usize = 20;

/// How many distinct stage labels a secret's versions carry.
fn label_count(rec: &SecretRecord) -> usize {
    rec.versions
        .iter()
        .flat_map(|v| v.stages.iter().map(String::as_str))
        .collect::<std::collections::BTreeSet<&str>>()
        .len()
}

/// Refuses a change that adds a label past [`MAX_STAGE_LABELS`] to a secret that
/// carried `before`. (A rotation may make one more: its `ACSPending`, then the
/// `ACSPrevious` it leaves; moving or removing the labels there are stays possible.)
fn check_label_count(rec: &SecretRecord, before: usize, field: &str) -> Result<()> {
    let now = label_count(rec);
    if now > MAX_STAGE_LABELS && now > before {
        return Err(Error::invalid(
            field,
            format!(
                "a secret's versions carry at most {MAX_STAGE_LABELS} distinct stage labels \
                 (ACSCurrent, ACSPrevious and ACSPending count); this would make {now} on \
                 secret {}: remove a custom label first",
                rec.name
            ),
        ));
    }
    Ok(())
}

/// Drops unlabelled versions, oldest first, until at most `max` remain.
pub(super) fn prune(t: &mut Txn<'_>, rec: &mut SecretRecord, max: usize) {
    while rec.versions.len() > max {
        let Some(i) = rec.versions.iter().position(|v| v.stages.is_empty()) else {
            break;
        };
        let v = rec.versions.remove(i);
        t.delete(Table::SecretVersions, &composite(&rec.name, &v.version_id));
    }
}

fn policy_of(r: &(impl Reader + ?Sized), rec: &SecretRecord) -> Result<Option<PolicyRecord>> {
    match &rec.rotation_policy {
        Some(p) => load(r, Table::RotationPolicies, p.as_bytes()),
        None => Ok(None),
    }
}

/// Why attaching a rotation policy needs the right to describe it.
const ATTACH_WHY: &str = "a secret is attached only to a rotation policy its caller may see";

/// Why attaching a rotation policy needs the right to rotate the secret.
const ATTACH_ROTATES_WHY: &str =
    "a rotation policy attached to a secret replaces its value on the policy's schedule";

/// Checks that secret `secret` may be attached to rotation policy `name`: `who` may
/// describe the policy (checked first, so that a caller who may not learns neither
/// whether it exists nor what it does from the answer) and rotate the secret (the
/// policy will replace its value, as `kms:RotateSecret` does: AWS asks for that right
/// to turn rotation on), the policy exists and, if it is a `webhook` one (which sends
/// the secret's next value to its url), `who` may read the secret.
fn check_attach(r: &(impl Reader + ?Sized), who: &Actor, name: &str, secret: &str) -> Result<()> {
    who.require(
        "kms:DescribeRotationPolicy",
        &format!("rotation-policy/{name}"),
        ATTACH_WHY,
    )?;
    who.require(
        "kms:RotateSecret",
        &format!("secret/{secret}"),
        ATTACH_ROTATES_WHY,
    )?;
    let policy: PolicyRecord =
        load(r, Table::RotationPolicies, name.as_bytes())?.ok_or_else(|| {
            Error::new(
                ErrorCode::RotationPolicyNotFound,
                format!("rotation_policy: rotation policy {name} not found"),
            )
        })?;
    if policy.strategy == api::RotationStrategy::Webhook {
        who.require_read(secret, WEBHOOK_SENDS_WHY)?;
    }
    Ok(())
}

/// Why the principal an `AccessKey` value names needs the caller's token rights.
const ACCESS_KEY_WHY: &str =
    "an AccessKey secret's rotation issues and revokes tokens of the principal its value names";

/// Checks that `who` may have the rotation issue and revoke tokens of the principal an
/// `AccessKey` value names. A value the strategy cannot read names nobody (rotating
/// it fails without issuing anything), so it needs nothing.
fn check_access_key_value(who: &Actor, value: &[u8]) -> Result<()> {
    match principal_named(value) {
        Some(p) => who.require_token_authority(&p, ACCESS_KEY_WHY),
        None => Ok(()),
    }
}

/// [`check_access_key_value`] for a value stored in secret `name`: a caller who may
/// not read it is not told which principal it names.
fn check_stored_access_key_value(who: &Actor, name: &str, value: &[u8]) -> Result<()> {
    match principal_named(value) {
        Some(p) => who.require_token_authority_named_by(&p, name, ACCESS_KEY_WHY),
        None => Ok(()),
    }
}

/// Why deleting an `AccessKey` secret needs the caller's token rights.
const ACCESS_KEY_DELETE_WHY: &str = "deleting an AccessKey secret revokes the tokens its rotations issued to the principal its value names";

/// Why an `Rds` secret's `extended_config` needs the caller's right to read the admin
/// secret it names.
const RDS_ADMIN_WHY: &str = "an Rds secret's rotation logs in with the admin secret its extended_config names, at the Host it names";

/// Checks that `who` may read the admin secret an `Rds` secret's `extended_config`
/// names (`AdminSecret`): the rotation reads it with the server's authority and sends
/// it to `Host`. A config without a readable `AdminSecret` was refused by validation.
fn check_rds_admin(
    who: &Actor,
    extended_config: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<()> {
    match extended_config
        .and_then(|c| c.get("AdminSecret"))
        .and_then(|v| v.as_str())
    {
        Some(admin) => who.require_read(admin, RDS_ADMIN_WHY),
        None => Ok(()),
    }
}

/// A new version's value and identity, ready to seal.
pub(super) struct NewVersion {
    pub(super) version_id: String,
    pub(super) data: Zeroizing<Vec<u8>>,
    pub(super) data_type: SecretDataType,
    pub(super) created_by: String,
    pub(super) created_by_id: Option<String>,
}

impl Service {
    /// What a new value of a typed secret must satisfy (create and put-value, inside
    /// the write, against the state it changes): an `Rds` value is an account that is
    /// not the admin's; an `AccessKey` value needs the caller's token rights on the
    /// principal it names.
    fn check_typed_value(
        &self,
        r: &(impl Reader + ?Sized),
        who: &Actor,
        secret_type: SecretType,
        value: &[u8],
        extended_config: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<()> {
        match secret_type {
            SecretType::Rds => {
                super::rotation::validate_rds_value(value)?;
                self.check_rds_not_admin(r, value, extended_config)
            }
            SecretType::AccessKey => check_access_key_value(who, value),
            _ => Ok(()),
        }
    }

    /// Refuses an `Rds` value naming the admin account of the admin secret
    /// `extended_config` names. An admin secret that cannot be read now is checked
    /// again by the rotation, which refuses the admin account too.
    fn check_rds_not_admin(
        &self,
        r: &(impl Reader + ?Sized),
        value: &[u8],
        extended_config: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<()> {
        let Some(admin) = extended_config
            .and_then(|c| c.get("AdminSecret"))
            .and_then(|v| v.as_str())
        else {
            return Ok(());
        };
        let Ok(rec) = load_live_secret(r, admin) else {
            return Ok(());
        };
        let Some(current) = rec.version_with_stage(STAGE_CURRENT) else {
            return Ok(());
        };
        match self.open_version(r, admin, &current.version_id, UNNAMED) {
            Ok(admin_value) => super::rotation::check_rds_not_admin(value, &admin_value),
            Err(_) => Ok(()),
        }
    }

    /// A new value of an `Rds` secret that names an account none of its versions names
    /// changes which account the rotation resets, with the admin's rights, and hands
    /// to the secret's readers: it needs the right to read the admin secret, as naming
    /// the admin secret does (create, update). The same account with a new password,
    /// or an account the secret held before, needs nothing more.
    fn check_rds_account_kept(
        &self,
        r: &(impl Reader + ?Sized),
        who: &Actor,
        rec: &SecretRecord,
        value: &[u8],
    ) -> Result<()> {
        let Some(account) = super::rotation::rds_account_name(value) else {
            return Ok(());
        };
        let held = rec.versions.iter().any(|v| {
            self.open_version(r, &rec.name, &v.version_id, UNNAMED)
                .ok()
                .and_then(|old| super::rotation::rds_account_name(&old))
                .is_some_and(|old| old == account)
        });
        if held {
            return Ok(());
        }
        check_rds_admin(who, rec.extended_config.as_ref())
    }

    /// Seals `data` as version `version_id` of secret `name` under the primary version of
    /// `key`, replacing any earlier ciphertext of that version.
    fn put_sealed(
        &self,
        t: &mut Txn<'_>,
        name: &str,
        version_id: &str,
        key: &KeyRecord,
        data: &[u8],
    ) -> Result<()> {
        check_usable(key)?;
        let material = self.material(key, key.primary_version)?;
        let binding = SecretBinding { name, version_id };
        let header = SealedHeader {
            key_id: key.key_id.clone(),
            key_version: key.primary_version,
        };
        let ct = barrier::seal_secret(&material, &header, binding, data)?;
        t.put(Table::SecretVersions, &composite(name, version_id), ct);
        Ok(())
    }

    /// What a new version of an `AccessKey` secret stands for (`None` for other secrets):
    /// the principal its value names as it is written, unless the rotation engine writes
    /// it without `PrincipalId`, which binds it as the value it rotated from is bound.
    fn binding_of_new_version(
        &self,
        t: &mut Txn<'_>,
        rec: &SecretRecord,
        v: &NewVersion,
    ) -> Result<Option<NamedPrincipal>> {
        if rec.secret_type != SecretType::AccessKey {
            return Ok(None);
        }
        if v.created_by != Principal::Rotation.label() || records_principal_id(&v.data) {
            return principal_at_write(t, &v.data);
        }
        let from = rec.version_with_stage(STAGE_CURRENT);
        let from_value = from
            .map(|f| self.open_version(t, &rec.name, &f.version_id, UNNAMED))
            .transpose()?;
        engine_binding(
            t,
            &v.data,
            from.zip(from_value.as_deref().map(Vec::as_slice)),
        )
        .map(Some)
    }

    pub(super) fn seal_version(
        &self,
        t: &mut Txn<'_>,
        rec: &SecretRecord,
        key: &KeyRecord,
        v: &NewVersion,
    ) -> Result<VersionMeta> {
        // By the name the secret gives the key (an alias, perhaps), not the id the caller
        // may not be allowed to describe.
        check_usable_as(key, || key_called(&rec.encryption_key_id, key))?;
        self.put_sealed(t, &rec.name, &v.version_id, key, &v.data)?;
        let binding = SecretBinding {
            name: &rec.name,
            version_id: &v.version_id,
        };
        Ok(VersionMeta {
            version_id: v.version_id.clone(),
            stages: Vec::new(),
            created: self.now(),
            created_by: v.created_by.clone(),
            created_by_id: v.created_by_id.clone(),
            principal_at_write: self.binding_of_new_version(t, rec, v)?,
            data_type: v.data_type,
            mac: self.inner.barrier.value_mac(binding, &v.data).to_vec(),
            key_id: Some(key.key_id.clone()),
            rotated_from: None,
        })
    }

    /// Creates a secret with its first version as `ACSCurrent`. An `AccessKey` secret
    /// needs the caller's token rights on the principal its value names; an `Rds`
    /// secret `kms:GetSecretValue` on the admin secret its `extended_config` names; a
    /// secret with a `webhook` rotation policy `kms:GetSecretValue` on itself.
    pub async fn create_secret(
        &self,
        req: api::CreateSecretRequest,
        who: &Actor,
    ) -> Result<api::Secret> {
        validate_secret_name("name", &req.name)?;
        let data = decode_data(
            &req.secret_data,
            req.secret_data_type,
            self.inner.config.max_value_bytes,
        )?;
        let version_id = match req.version_id {
            Some(v) => {
                validate_version_id("version_id", &v)?;
                v
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let description = req.description.unwrap_or_default();
        validate_description(&description)?;
        let tags = req.tags.unwrap_or_default();
        validate_tags(&tags)?;
        validate_extended_config(req.extended_config.as_ref())?;
        if let Some(p) = &req.rotation_policy
            && p.is_empty()
        {
            return Err(Error::invalid(
                "rotation_policy",
                "must name a rotation policy",
            ));
        }
        if req.secret_type == api::SecretType::Rds {
            super::rotation::validate_rds(req.extended_config.as_ref())?;
            check_rds_admin(who, req.extended_config.as_ref())?;
        }
        let nv = NewVersion {
            version_id,
            data,
            data_type: req.secret_data_type,
            created_by: who.principal().label(),
            created_by_id: who.principal_id(),
        };
        let (this, now, who) = (self.clone(), self.now(), who.clone());
        self.write(move |t| {
            if let Some(existing) = load::<SecretRecord>(t, Table::Secrets, req.name.as_bytes())? {
                return Err(if existing.planned_delete_time.is_some() {
                    pending_deletion(&req.name)
                } else {
                    Error::new(
                        ErrorCode::AlreadyExists,
                        format!("secret {} already exists", req.name),
                    )
                });
            }
            this.check_typed_value(
                t,
                &who,
                req.secret_type,
                &nv.data,
                req.extended_config.as_ref(),
            )?;
            let key = match &req.encryption_key_id {
                Some(r) if !r.is_empty() => {
                    who.require_key_use(r)?;
                    let key = this.or_default_key(t, r, now, resolve_key_to_seal)?;
                    check_through_alias(&who, USE_KEY, r, &key)?;
                    key
                }
                _ => this.default_key(t, now)?,
            };
            if let Some(p) = &req.rotation_policy {
                check_attach(t, &who, p, &req.name)?;
                t.put(Table::PolicySecrets, &composite(p, &req.name), Vec::new());
            }
            let mut rec = SecretRecord {
                name: req.name.clone(),
                description,
                tags,
                encryption_key_id: req
                    .encryption_key_id
                    .filter(|r| !r.is_empty())
                    .unwrap_or(key.key_id.clone()),
                secret_type: req.secret_type,
                extended_config: req.extended_config,
                rotation_policy: req.rotation_policy,
                creation_date: now,
                update_date: now,
                planned_delete_time: None,
                recovery_window_days: None,
                last_rotation_date: None,
                versions: Vec::new(),
                rotation: Default::default(),
                incarnation: rand::random(),
            };
            let mut meta = this.seal_version(t, &rec, &key, &nv)?;
            meta.stages.push(STAGE_CURRENT.into());
            rec.versions.push(meta);
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, rec.name.as_bytes(), encode(&rec));
            Ok(rec.to_api(policy_of(t, &rec)?.as_ref()))
        })
        .await
    }

    /// Refuses to change `what` while a rotation of the secret is unfinished: persisted
    /// (its version still `ACSPending`) or running or queued in this process. The
    /// rotation works from the secret as it was when it began (its current value, its
    /// target), and its finish makes its own version `ACSCurrent`: a value put meanwhile
    /// would be replaced, and a target changed meanwhile would get the wrong steps.
    pub(crate) fn refuse_while_rotating(
        &self,
        rec: &SecretRecord,
        name: &str,
        what: &str,
    ) -> Result<()> {
        if let Some(r) = &rec.rotation.in_progress
            && rec.version_has(&r.version_id, api::STAGE_PENDING)
        {
            return Err(Error::new(
                ErrorCode::RotationInProgress,
                format!(
                    "secret {name} has an unfinished rotation (version {}): {what} cannot change until it ends; to abandon it, take ACSPending off that version",
                    r.version_id
                ),
            ));
        }
        if self.is_rotating(name) {
            return Err(Error::new(
                ErrorCode::RotationInProgress,
                format!(
                    "a rotation of secret {name} is running or queued: {what} cannot change until it ends; try again then"
                ),
            ));
        }
        Ok(())
    }

    /// ACSPending is about to leave the version of a persisted rotation for `to` (a
    /// version id, or "" when it is removed): that abandons the rotation, unless it is
    /// running (its step may be applying the value right now; the label stays until it
    /// ends). The caller reindexes the secret.
    fn release_pending(&self, rec: &mut SecretRecord, name: &str, to: &str) -> Result<()> {
        let Some(p) = &rec.rotation.in_progress else {
            return Ok(());
        };
        if p.version_id == to || !rec.version_has(&p.version_id, api::STAGE_PENDING) {
            return Ok(());
        }
        if self.is_rotating(name) {
            return Err(Error::new(
                ErrorCode::RotationInProgress,
                format!(
                    "a rotation of secret {name} is running: ACSPending stays on its version \
                     until it ends"
                ),
            ));
        }
        rec.rotation.in_progress = None;
        Ok(())
    }

    /// The plaintext of a version, read through `r` (a snapshot or a write). An error
    /// about the key that seals it names the key's id only to a caller `who` may
    /// describe it: not to others, nor in what the server keeps (a rotation's
    /// `last_rotation_error`, shown to whoever may describe the secret).
    fn open_version(
        &self,
        r: &(impl Reader + ?Sized),
        name: &str,
        version_id: &str,
        who: &Actor,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let ct = r
            .get(Table::SecretVersions, &composite(name, version_id))?
            .ok_or_else(|| Error::internal(format!("version blob missing for {name}")))?;
        let header = barrier::sealed_header(&ct)?;
        let key = self
            .inner
            .decoded_keys
            .load(r, Table::Keys, header.key_id.as_bytes())?
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::KeyDeleted,
                    format!(
                        "{} no longer exists",
                        sealing_key_called(who, &header.key_id, name, version_id)
                    ),
                )
            })?;
        check_usable_as(&key, || {
            sealing_key_called(who, &key.key_id, name, version_id)
        })?;
        let material = self.material(&key, header.key_version)?;
        Ok(barrier::open_secret(
            &material,
            SecretBinding { name, version_id },
            &ct,
        )?)
    }

    /// A live secret's record, shared with earlier reads and writes of the same stored
    /// bytes ([`super::records::Decoded`]).
    fn live_secret(
        &self,
        r: &(impl Reader + ?Sized),
        name: &str,
    ) -> Result<SharedRecord<SecretRecord>> {
        let rec = self
            .inner
            .decoded_secrets
            .load(r, Table::Secrets, name.as_bytes())?
            .ok_or_else(|| secret_not_found(name))?;
        if rec.planned_delete_time.is_some() {
            return Err(pending_deletion(name));
        }
        Ok(rec)
    }

    /// A secret's metadata; also while it is scheduled for deletion.
    pub fn describe_secret(&self, name: &str) -> Result<api::Secret> {
        let rec = load_secret(self.store(), name)?;
        Ok(rec.to_api(policy_of(self.store(), &rec)?.as_ref()))
    }

    /// The plaintext of one version: by id, by stage, or `ACSCurrent`, for the server
    /// itself (an error does not name the key that seals it).
    pub fn get_secret_value(
        &self,
        name: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<api::SecretValue> {
        self.get_secret_value_as(name, version_id, stage, UNNAMED)
    }

    /// [`get_secret_value`](Self::get_secret_value) for `who`: an error names the key
    /// that seals the version only if `who` may describe it.
    pub fn get_secret_value_as(
        &self,
        name: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
        who: &Actor,
    ) -> Result<api::SecretValue> {
        // One snapshot: the record, the sealed version and the key state agree.
        let snap = self.store().snapshot()?;
        let store = &*snap;
        let rec = self.live_secret(store, name)?;
        let meta = match (version_id, stage) {
            (Some(id), stage) => rec
                .versions
                .iter()
                .find(|v| v.version_id == id && stage.is_none_or(|s| v.has(s))),
            (None, stage) => rec.version_with_stage(stage.unwrap_or(STAGE_CURRENT)),
        }
        .ok_or_else(|| {
            Error::new(
                ErrorCode::VersionNotFound,
                format!("secret {name} has no such version or stage"),
            )
        })?;
        let pt = self.open_version(store, name, &meta.version_id, who)?;
        let secret_data = match meta.data_type {
            SecretDataType::Text => String::from_utf8(pt.to_vec())
                .map_err(|_| Error::internal("stored text is not UTF-8"))?,
            SecretDataType::Binary => {
                base64::engine::general_purpose::STANDARD.encode(pt.as_slice())
            }
        };
        Ok(api::SecretValue {
            name: name.to_string(),
            version_id: meta.version_id.clone(),
            version_stages: meta.stages.clone(),
            secret_data,
            secret_data_type: meta.data_type,
            creation_date: api::Timestamp::from_unix(meta.created),
        })
    }

    /// Adds a version. Same `version_id` and same data is a no-op; different data is
    /// `VersionConflict`. Without `version_stages` the new version becomes `ACSCurrent`.
    /// A value of an `AccessKey` secret needs the caller's token rights on the principal
    /// it names.
    pub async fn put_secret_value(
        &self,
        name: &str,
        req: api::PutSecretValueRequest,
        who: &Actor,
    ) -> Result<api::SecretVersionRef> {
        let data = decode_data(
            &req.secret_data,
            req.secret_data_type,
            self.inner.config.max_value_bytes,
        )?;
        let version_id = match req.version_id {
            Some(v) => {
                validate_version_id("version_id", &v)?;
                v
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let stages = req
            .version_stages
            .unwrap_or_else(|| vec![STAGE_CURRENT.into()]);
        for s in &stages {
            api::validate_version_stage("version_stages", s)?;
        }
        if stages.len() > MAX_STAGE_LABELS {
            return Err(Error::invalid(
                "version_stages",
                format!("at most {MAX_STAGE_LABELS} labels"),
            ));
        }
        let nv = NewVersion {
            version_id,
            data,
            data_type: req.secret_data_type,
            created_by: who.principal().label(),
            created_by_id: who.principal_id(),
        };
        let (this, name, now, who) = (self.clone(), name.to_string(), self.now(), who.clone());
        self.write(move |t| {
            // A copy to change.
            let mut rec = SecretRecord::clone(&*this.live_secret(t, &name)?);
            // A repeat first, before the checks of the value: their answers (an account
            // the secret holds or not) would tell a caller that may not read the secret
            // something of a value it guessed.
            if let Some(existing) = rec.versions.iter().find(|v| v.version_id == nv.version_id) {
                let mac = this.inner.barrier.value_mac(
                    SecretBinding {
                        name: &name,
                        version_id: &nv.version_id,
                    },
                    &nv.data,
                );
                // A repeat only for a caller that made the version or may read it: to a
                // caller that may write but not read, "same data" would confirm a guess
                // of the value. A principal created again under the maker's name is
                // another principal (its id differs).
                let made_it = existing.created_by == nv.created_by
                    && (existing.created_by_id.is_none()
                        || existing.created_by_id == nv.created_by_id);
                let may_know =
                    made_it || who.allows("kms:GetSecretValue", &format!("secret/{name}"));
                if may_know
                    && crate::barrier::digest_eq(
                        &mac,
                        existing.mac.as_slice().try_into().unwrap_or(&[0; 32]),
                    )
                    && existing.data_type == nv.data_type
                {
                    return Ok(api::SecretVersionRef {
                        arn: secret_arn(&name),
                        name,
                        version_id: existing.version_id.clone(),
                        version_stages: existing.stages.clone(),
                    });
                }
                return Err(Error::new(
                    ErrorCode::VersionConflict,
                    format!(
                        "version {} of secret {name} exists{}",
                        nv.version_id,
                        if may_know { " with different data" } else { "" }
                    ),
                ));
            }
            // Whether the value's account is one the secret holds, from the versions as
            // they are before this put; a refusal is answered last (below).
            let account_kept = (rec.secret_type == SecretType::Rds)
                .then(|| this.check_rds_account_kept(t, &who, &rec, &nv.data));
            if stages.iter().any(|s| s == STAGE_CURRENT) {
                this.refuse_while_rotating(&rec, &name, "ACSCurrent")?;
            }
            let key = key_to_seal(t, &rec)?;
            let meta = this.seal_version(t, &rec, &key, &nv)?;
            if stages.iter().any(|s| s == api::STAGE_PENDING) {
                this.release_pending(&mut rec, &name, &nv.version_id)?;
            }
            let labels = label_count(&rec);
            rec.versions.push(meta);
            for s in &stages {
                move_stage(&mut rec, s, &nv.version_id)?;
            }
            check_label_count(&rec, labels, "version_stages")?;
            rec.update_date = now;
            prune(t, &mut rec, this.inner.config.max_versions);
            if !rec.versions.iter().any(|v| v.version_id == nv.version_id) {
                return Err(Error::invalid(
                    "version_stages",
                    format!(
                        "an unlabelled version would be pruned at once: secret {name} keeps \
                         {} versions and all the others are labelled",
                        this.inner.config.max_versions
                    ),
                ));
            }
            // A value naming an account the secret does not hold is refused last, after the
            // repeat (answered above) and every check of the request itself (labels,
            // pruning): a refusal for another reason only when the account is held would
            // tell a caller who may not read the secret that its guess is right, and write
            // nothing. The value's own checks come after it: one names the admin account.
            account_kept.transpose()?;
            this.check_typed_value(
                t,
                &who,
                rec.secret_type,
                &nv.data,
                rec.extended_config.as_ref(),
            )?;
            // A rotation whose ACSPending moved to this version was abandoned: the
            // schedule goes back to the policy's dates.
            reindex_secret(t, &mut rec)?;
            let bytes = encode(&rec);
            t.put(Table::Secrets, name.as_bytes(), bytes.clone());
            let stages_now = rec
                .versions
                .iter()
                .find(|v| v.version_id == nv.version_id)
                .map(|v| v.stages.clone())
                .unwrap_or_default();
            this.inner
                .decoded_secrets
                .remember(name.as_bytes(), bytes, rec);
            Ok(api::SecretVersionRef {
                arn: secret_arn(&name),
                name,
                version_id: nv.version_id,
                version_stages: stages_now,
            })
        })
        .await
    }

    /// All kept versions, newest first.
    /// The versions of a secret, each with the key it is sealed under.
    pub fn list_secret_versions(&self, name: &str) -> Result<api::ListSecretVersionsResponse> {
        self.list_secret_versions_shown(name, &|_| true)
    }

    /// The versions of a secret for a caller: `key_visible` says whether it may see
    /// which key a version is sealed under (see [`versions_to_api`]).
    pub fn list_secret_versions_shown(
        &self,
        name: &str,
        key_visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListSecretVersionsResponse> {
        let rec = load_secret(self.store(), name)?;
        Ok(api::ListSecretVersionsResponse {
            versions: versions_to_api(self.store(), &rec, key_visible)?,
        })
    }

    /// Moves or removes a stage label.
    /// Moving `ACSCurrent` of an `AccessKey` secret needs the caller's token rights on
    /// the principal the target version names, as putting that value would: the next
    /// rotation makes a token for the principal `ACSCurrent` names.
    pub async fn update_secret_stage(
        &self,
        name: &str,
        req: api::UpdateSecretStageRequest,
        who: &Actor,
    ) -> Result<api::ListSecretVersionsResponse> {
        api::validate_version_stage("version_stage", &req.version_stage)?;
        let fixed = req.version_stage == STAGE_CURRENT || req.version_stage == STAGE_PREVIOUS;
        if req.move_to_version.is_none() {
            if req.remove_from_version.is_none() {
                return Err(Error::invalid(
                    "move_to_version",
                    "give move_to_version, remove_from_version or both",
                ));
            }
            if fixed {
                return Err(Error::invalid(
                    "move_to_version",
                    format!("{} can only be moved, not removed", req.version_stage),
                ));
            }
        }
        let (this, name, now, who) = (self.clone(), name.to_string(), self.now(), who.clone());
        self.write(move |t| {
            let mut rec = load_live_secret(t, &name)?;
            let exists = |id: &str| rec.versions.iter().any(|v| v.version_id == id);
            for (field, id) in [
                ("move_to_version", &req.move_to_version),
                ("remove_from_version", &req.remove_from_version),
            ] {
                if let Some(id) = id
                    && !exists(id)
                {
                    return Err(Error::new(
                        ErrorCode::VersionNotFound,
                        format!("{field}: secret {name} has no version {id}"),
                    ));
                }
            }
            if let Some(from) = &req.remove_from_version {
                let holds = rec
                    .versions
                    .iter()
                    .any(|v| &v.version_id == from && v.has(&req.version_stage));
                if !holds {
                    return Err(Error::invalid(
                        "remove_from_version",
                        format!("version {from} does not hold {}", req.version_stage),
                    ));
                }
            }
            if req.version_stage == STAGE_CURRENT {
                this.refuse_while_rotating(&rec, &name, "ACSCurrent")?;
                // Versions without a label stay sealed under the key they were made with
                // when the secret's key changes (as in AWS): one whose key is disabled or
                // gone would leave the secret without a readable current value.
                if let Some(to) = &req.move_to_version {
                    let value = this.open_version(t, &name, to, &who).map_err(|e| {
                        Error::new(
                            e.code,
                            format!(
                                "ACSCurrent cannot move to version {to}: it cannot be opened now ({})",
                                e.message
                            ),
                        )
                    })?;
                    // A move between versions of the same principal (a rollback to
                    // ACSPrevious) hands out no other principal's tokens; a version
                    // written for a principal of the name deleted since is another's.
                    if rec.secret_type == SecretType::AccessKey {
                        let written = rec.versions.iter().find(|v| v.version_id == *to);
                        let same = rec
                            .version_with_stage(STAGE_CURRENT)
                            .and_then(|c| this.open_version(t, &name, &c.version_id, UNNAMED).ok())
                            .is_some_and(|cur| same_principal(t, &cur, &value, written));
                        if !same {
                            check_stored_access_key_value(&who, &name, &value)?;
                        }
                    }
                }
            }
            if req.version_stage == api::STAGE_PENDING {
                let taken_off = match (&req.move_to_version, &rec.rotation.in_progress) {
                    (Some(to), _) => Some(to.as_str()),
                    (None, Some(p))
                        if req.remove_from_version.as_deref() == Some(&p.version_id) =>
                    {
                        Some("")
                    }
                    (None, _) => None,
                };
                if let Some(to) = taken_off {
                    this.release_pending(&mut rec, &name, to)?;
                }
            }
            let labels = label_count(&rec);
            match &req.move_to_version {
                Some(to) => move_stage(&mut rec, &req.version_stage, to)?,
                None => {
                    for v in &mut rec.versions {
                        v.stages.retain(|s| s != &req.version_stage);
                    }
                }
            }
            check_label_count(&rec, labels, "version_stage")?;
            rec.update_date = now;
            prune(t, &mut rec, this.inner.config.max_versions);
            // ACSPending taken off a rotation's version abandons it: the schedule goes
            // back to the policy's dates.
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            Ok(api::ListSecretVersionsResponse {
                versions: versions_to_api(t, &rec, &|k| {
                    who.allows("kms:DescribeKey", &format!("key/{k}"))
                })?,
            })
        })
        .await
    }

    /// Secrets in name order, filtered by prefix, tags, key and what the caller may see,
    /// a page at a time.
    pub fn list_secrets(
        &self,
        q: &ListSecretsQuery,
        visible: &ListVisibility<'_>,
    ) -> Result<api::ListSecretsResponse> {
        if !(1..=100).contains(&q.limit) {
            return Err(Error::invalid("limit", "must be between 1 and 100"));
        }
        let prefix = q.name_prefix.clone().unwrap_or_default();
        let after = decode_page_token(q.page_token.as_deref())?;
        let items = collect_after(
            self.store(),
            Table::Secrets,
            prefix.as_bytes(),
            after.as_deref(),
            q.limit + 1,
            |_, v| {
                let rec: SecretRecord = decode(v)?;
                if !(q.tags.iter().all(|(tk, tv)| rec.tags.get(tk) == Some(tv))
                    && (visible.secret)(&rec.name))
                {
                    return Ok(None);
                }
                if let Some(k) = &q.key_id
                    && !uses_key(self.store(), &rec, k, visible.alias)?
                {
                    return Ok(None);
                }
                let secret = rec.to_api(policy_of(self.store(), &rec)?.as_ref());
                Ok(Some((rec.name, secret)))
            },
        )?;
        let (secrets, next_page_token) = page(items, q.limit);
        Ok(api::ListSecretsResponse {
            secrets,
            next_page_token,
        })
    }

    /// Changes metadata: description, tags, key for future versions, rotation policy,
    /// extended configuration. Any change of an `AccessKey` secret needs the caller's
    /// token rights on the principal its current value names; a change of
    /// `extended_config` needs `kms:GetSecretValue` on the secret (the rotation sends
    /// the current value where it points), and for an `Rds` secret on the admin secret
    /// it names; attaching a `webhook` rotation policy `kms:GetSecretValue` on the
    /// secret (the rotation sends its next value to the policy's url).
    pub async fn update_secret(
        &self,
        name: &str,
        req: api::UpdateSecretRequest,
        who: &Actor,
    ) -> Result<api::Secret> {
        if let Some(d) = &req.description {
            validate_description(d)?;
        }
        if let Some(tags) = &req.tags {
            validate_tags(tags)?;
        }
        validate_extended_config(req.extended_config.as_ref())?;
        // Detaching the rotation policy, and nothing else, is allowed while the secret
        // waits out its recovery window: otherwise the policy could not be deleted until
        // the window ends (a restored secret then has no rotation policy).
        let detach_only = req.rotation_policy.as_deref() == Some("")
            && req.description.is_none()
            && req.tags.is_none()
            && req.encryption_key_id.is_none()
            && req.extended_config.is_none();
        let (this, name, now, who) = (self.clone(), name.to_string(), self.now(), who.clone());
        self.write(move |t| {
            let mut rec = if detach_only {
                load_secret(t, &name)?
            } else {
                load_live_secret(t, &name)?
            };
            if rec.secret_type == SecretType::AccessKey
                && !who.is_trusted()
                && let Some(current) = rec.version_with_stage(STAGE_CURRENT)
            {
                match this.open_version(t, &name, &current.version_id, UNNAMED) {
                    Ok(value) => check_stored_access_key_value(&who, &name, &value)?,
                    // Unreadable now (e.g. its key is disabled), the value may name any
                    // principal once it is readable again.
                    Err(_) => who.require_token_authority("*", ACCESS_KEY_WHY)?,
                }
            }
            if let Some(c) = &req.extended_config
                && rec.extended_config.as_ref() != Some(c)
            {
                // Each step finds its target (database, host) from it.
                this.refuse_while_rotating(&rec, &name, "its extended_config")?;
                who.require_read(
                    &name,
                    "the rotation sends the secret's current value where extended_config points",
                )?;
            }
            if req.encryption_key_id.as_deref() == Some("") {
                // (At create, empty means the default key; here it would read as a key
                // named "", refused as a forbidden or missing key.)
                return Err(Error::invalid(
                    "encryption_key_id",
                    "must name a key (a key id or alias/NAME); leave it out to keep the secret's key",
                ));
            }
            if let Some(k) = req
                .encryption_key_id
                .filter(|k| *k != rec.encryption_key_id)
            {
                who.require_key_use(&k)?;
                let key = this.or_default_key(t, &k, this.now(), resolve_key)?;
                check_through_alias(&who, USE_KEY, &k, &key)?;
                // By the name the caller gave, not an alias's key id it may not describe.
                check_usable_as(&key, || key_called(&k, &key))?;
                // As in AWS: the versions in use are sealed again under the new key, so
                // that the old one can be disabled or deleted without losing them. Under
                // a key disabled or pending deletion the change is refused (it says why):
                // the versions can still be saved, by enabling the key or cancelling its
                // deletion first. One under a destroyed key is lost whatever happens: it
                // stays under that key, so that the secret can still move to another key
                // and take new values.
                for i in 0..rec.versions.len() {
                    if rec.versions[i].stages.is_empty() {
                        continue;
                    }
                    let id = rec.versions[i].version_id.clone();
                    let data = match this.open_version(t, &name, &id, &who) {
                        Ok(data) => data,
                        Err(e) if e.code == ErrorCode::KeyDeleted => continue,
                        Err(e) => return Err(e),
                    };
                    this.put_sealed(t, &name, &id, &key, &data)?;
                    rec.versions[i].key_id = Some(key.key_id.clone());
                }
                rec.encryption_key_id = k;
            }
            if let Some(p) = req.rotation_policy {
                let new = (!p.is_empty()).then_some(p);
                if new != rec.rotation_policy {
                    // An unfinished rotation is resumed with the policy that began it; a
                    // secret left without it (a database password set, not yet made
                    // current) could never finish nor be retried.
                    this.refuse_while_rotating(&rec, &name, "its rotation policy")?;
                    if let Some(p) = &new {
                        check_attach(t, &who, p, &name)?;
                        t.put(Table::PolicySecrets, &composite(p, &name), Vec::new());
                    }
                    if let Some(old) = &rec.rotation_policy {
                        t.delete(Table::PolicySecrets, &composite(old, &name));
                    }
                    rec.rotation_policy = new;
                }
            }
            if let Some(d) = req.description {
                rec.description = d;
            }
            if let Some(tags) = req.tags {
                rec.tags = tags;
            }
            if let Some(c) = req.extended_config {
                if rec.secret_type == api::SecretType::Rds {
                    super::rotation::validate_rds(Some(&c))?;
                    if rec.extended_config.as_ref() != Some(&c) {
                        check_rds_admin(&who, Some(&c))?;
                        if let Some(current) = rec.version_with_stage(STAGE_CURRENT)
                            && let Ok(value) =
                                this.open_version(t, &name, &current.version_id, UNNAMED)
                        {
                            this.check_rds_not_admin(t, &value, Some(&c))?;
                        }
                    }
                }
                rec.extended_config = Some(c);
            }
            rec.update_date = now;
            reindex_secret(t, &mut rec)?;
            t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            Ok(rec.to_api(policy_of(t, &rec)?.as_ref()))
        })
        .await
    }

    /// Schedules deletion after a recovery window of 7–30 days (default 30), or deletes
    /// at once with `force`.
    /// Deleting an `AccessKey` secret (now or after its window) revokes the tokens its
    /// rotations issued, so it needs the caller's token rights on the principal its
    /// value names (on `principal/*` when the value cannot be read now).
    pub async fn delete_secret(
        &self,
        name: &str,
        recovery_window_in_days: Option<u32>,
        force: bool,
        who: &Actor,
    ) -> Result<api::DeleteSecretResponse> {
        if force && recovery_window_in_days.is_some() {
            return Err(Error::invalid(
                "force_delete_without_recovery",
                "cannot be combined with recovery_window_in_days",
            ));
        }
        let days = recovery_window_in_days.unwrap_or(30);
        if !(7..=30).contains(&days) {
            return Err(Error::invalid(
                "recovery_window_in_days",
                "must be between 7 and 30",
            ));
        }
        let (this, name, now, who) = (self.clone(), name.to_string(), self.now(), who.clone());
        // Through the access write path: a forced delete revokes the tokens the
        // secret's rotations issued, and cached identities must go with them.
        self.write_access(move |t| {
            let mut rec = load_secret(t, &name)?;
            if rec.secret_type == SecretType::AccessKey {
                // The principal the value names, and every principal holding a token
                // the secret's rotations issued (the deletion revokes those).
                let current = rec
                    .version_with_stage(STAGE_CURRENT)
                    .and_then(|v| this.open_version(t, &name, &v.version_id, UNNAMED).ok())
                    .and_then(|v| principal_named(&v))
                    .unwrap_or_else(|| "*".into());
                let mut principals: Vec<String> =
                    super::rotation::rotation_tokens(t, &this.inner.barrier, &name)?
                        .into_iter()
                        .map(|(p, _)| p)
                        .collect();
                principals.push(current);
                principals.sort();
                principals.dedup();
                for p in &principals {
                    who.require_token_authority_named_by(p, &name, ACCESS_KEY_DELETE_WHY)?;
                }
            }
            if force {
                super::rotation::revoke_rotation_tokens(t, &this.inner.barrier, &rec)?;
                remove_secret(t, &rec);
                return Ok(api::DeleteSecretResponse {
                    name,
                    planned_delete_time: None,
                });
            }
            // Asking again is answered as before; another window is refused, not
            // silently ignored (as for a key's deletion): restore, then delete again.
            if let (Some(planned), Some(asked), Some(window)) = (
                rec.planned_delete_time,
                recovery_window_in_days,
                rec.recovery_window_days,
            ) && asked != window
            {
                return Err(Error::new(
                    ErrorCode::InvalidState,
                    format!(
                        "secret {name} is already scheduled for deletion at {} with a recovery window of {window} days; restore it to delete it with another",
                        api::Timestamp::from_unix(planned)
                    ),
                ));
            }
            if rec.planned_delete_time.is_none() {
                rec.planned_delete_time = Some(now + i64::from(days) * 86_400);
                rec.recovery_window_days = Some(days);
                rec.update_date = now;
                reindex_secret(t, &mut rec)?;
                t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            }
            Ok(api::DeleteSecretResponse {
                name,
                planned_delete_time: rec.planned_delete_time.map(api::Timestamp::from_unix),
            })
        })
        .await
    }

    /// Cancels a scheduled deletion.
    pub async fn restore_secret(&self, name: &str) -> Result<api::Secret> {
        let (name, now) = (name.to_string(), self.now());
        self.write(move |t| {
            let mut rec = load_secret(t, &name)?;
            if rec.planned_delete_time.take().is_some() {
                rec.recovery_window_days = None;
                rec.update_date = now;
                reindex_secret(t, &mut rec)?;
                t.put(Table::Secrets, name.as_bytes(), encode(&rec));
            }
            Ok(rec.to_api(policy_of(t, &rec)?.as_ref()))
        })
        .await
    }
}

pub(super) fn remove_secret(t: &mut Txn<'_>, rec: &SecretRecord) {
    super::rotation::unindex_secret(t, rec);
    for v in &rec.versions {
        t.delete(Table::SecretVersions, &composite(&rec.name, &v.version_id));
    }
    if let Some(p) = &rec.rotation_policy {
        t.delete(Table::PolicySecrets, &composite(p, &rec.name));
    }
    t.delete(Table::Secrets, rec.name.as_bytes());
}
