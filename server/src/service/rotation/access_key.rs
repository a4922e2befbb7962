//! The `access_key` strategy: tokens of a Strongbox principal, for applications that
//! call Strongbox itself and read their own token from a secret.
//!
//! The secret's value is `{"PrincipalName", "PrincipalId", "TokenId", "Token"}` (the
//! first value may hold only `PrincipalName`). The steps:
//!
//! - *create* makes the new token (256 random bits, like every token) and an id derived
//!   from the secret and the version id; nothing outside the pending value exists yet,
//!   so a *create* lost in a crash leaves no stray token behind. The pending value
//!   records the id of the principal that has the name, if the current value stands
//!   for it ([`bound_to`]: by its `PrincipalId`, or without one by the principal the
//!   name stood for when its version was written).
//! - *set* registers the token for the principal through the access write path, which
//!   empties the identity cache before it returns (idempotent: the token id is fixed
//!   per version, a repeated *set* replaces the same record), after the same check in
//!   the same write: a principal deleted and created again under the name (perhaps by
//!   someone else) is another principal, and gets no token until a value naming it
//!   anew is put.
//! - *test* authenticates the token through the same identity lookup every API request
//!   uses, and checks it stands for the principal.
//! - *finish* revokes the token behind the version that is `ACSPrevious` before the
//!   swap (two versions old after it), and any other token this secret's rotations
//!   issued that is neither the current nor the new one (e.g. left by a failed
//!   rotation). The token an application holds therefore stays valid for a full cycle.
//!   It only ever revokes tokens this secret's rotation issued: ids it derives itself
//!   from the secret and a version id, keyed by the root key
//!   ([`Barrier::rotation_token_id`]; [`legacy_token_id`] for tokens issued before). A `TokenId` written into a
//!   value by a caller, or a token whose description merely looks like the marker, is
//!   left alone (a token made by hand for the first value is revoked by hand).
//!
//! Settings: `principals` (required), a comma-separated list of the principals this
//! policy may issue tokens for: exact names or prefixes ending in `*`. The built-in
//! `root` principal is never rotated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strongbox_schemas::{ErrorCode, ROOT_PRINCIPAL, STAGE_CURRENT, STAGE_PREVIOUS, SecretType};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::strategy::{StepContext, Strategy};
use crate::barrier::{self, Barrier};
use crate::error::{Error, Result};
use crate::service::Service;
use crate::service::identity::{PrincipalRecord, TokenRecord, new_token};
use crate::service::principals::{
    delete_token_of, generations_of, load_principal, make_room_for_token, put_token,
};
use crate::service::records::{NamedPrincipal, VersionMeta};
use crate::storage::Reader;

/// The value of an `AccessKey` secret. Wiped when dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct AccessKeyValue {
    #[serde(rename = "PrincipalName")]
    principal_name: String,
    #[serde(
        rename = "PrincipalId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    principal_id: Option<String>,
    #[serde(rename = "TokenId", default, skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
    #[serde(rename = "Token", default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn failed(step: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::RotationFailed,
        format!("access_key {step}: {why}"),
    )
}

/// How a failure names the principal a value names. A failure is kept as the secret's
/// `last_rotation_error`, which callers that may describe the secret but not read its
/// value see: they are not told which principal the value names.
const THE_PRINCIPAL: &str = "the value names";

/// A write of a step that failed, without the name of the value's principal (which a
/// `PrincipalNotFound` message carries).
fn write_failed(step: &str, e: Error) -> Error {
    if e.code == ErrorCode::PrincipalNotFound {
        failed(
            step,
            format!("the principal {THE_PRINCIPAL} does not exist (PrincipalNotFound)"),
        )
    } else {
        failed(step, format!("{}: {}", e.code, e.message))
    }
}

/// Whether principal `p`, which has the name now, is the one a value stands for: the one
/// its `PrincipalId` records; for a value without one (a first value, a version moved
/// back to), the one the name stood for when its version (`written`) was written. A
/// value written while no principal had the name binds to the next one created under
/// it (by generation, not the one there is at a rotation, which may be a later one),
/// unless `moving` (a stage move must not make it the value others rotate from); one the
/// engine wrote for nobody ([`engine_binding`]) binds none. A version written before
/// bindings were kept is matched by age: a principal created in or after the second it
/// was written is refused. Otherwise the name was taken by a principal created since,
/// perhaps by someone else; why, if not.
fn bound_to(
    p: &PrincipalRecord,
    id: Option<&str>,
    written: Option<&VersionMeta>,
    moving: bool,
) -> Result<(), String> {
    let again = || {
        format!(
            "the principal {THE_PRINCIPAL} is not the one the value was written for: it was deleted and created again since; put the value again (without PrincipalId) to issue tokens to the principal that now has the name"
        )
    };
    let same = |id: &str| if id == p.id() { Ok(()) } else { Err(again()) };
    match (id, written.and_then(|w| w.principal_at_write.as_ref())) {
        (Some(id), _) => same(id),
        (None, Some(NamedPrincipal::Id(id))) => same(id),
        (None, Some(NamedPrincipal::Absent { .. })) if moving => Err(again()),
        (None, Some(NamedPrincipal::Absent { next })) if p.generation == *next => Ok(()),
        (None, Some(NamedPrincipal::Absent { .. })) => Err(again()),
        (None, Some(NamedPrincipal::Nobody)) => Err(format!(
            "the value was written by a rotation of another strategy, which vouches for no principal, for the principal {THE_PRINCIPAL}; put the value again to issue tokens to it"
        )),
        (None, None) => match written {
            Some(w) if p.creation_date >= w.created => Err(again()),
            _ => Ok(()),
        },
    }
}

/// What a version the rotation engine writes without `PrincipalId` (another strategy's
/// value) stands for: the engine vouches for nobody. If the value names the principal
/// the value it rotated from (`from`: its version and value) names, that value's
/// `PrincipalId` or recorded binding; for a `from` written before bindings were
/// recorded, the principal that has the name if it was created before `from` was
/// written. Otherwise none.
pub(crate) fn engine_binding(
    r: &(impl Reader + ?Sized),
    value: &[u8],
    from: Option<(&VersionMeta, &[u8])>,
) -> Result<NamedPrincipal> {
    let (Some(name), Some((meta, from_value))) = (principal_named(value), from) else {
        return Ok(NamedPrincipal::Nobody);
    };
    let Some(from_value) = AccessKeyValue::read(from_value) else {
        return Ok(NamedPrincipal::Nobody);
    };
    if from_value.principal_name != name {
        return Ok(NamedPrincipal::Nobody);
    }
    if let Some(id) = &from_value.principal_id {
        return Ok(NamedPrincipal::Id(id.clone()));
    }
    match (&meta.principal_at_write, load_principal(r, &name)) {
        (Some(b), _) => Ok(b.clone()),
        (None, Ok(p)) if p.creation_date < meta.created => Ok(NamedPrincipal::Id(p.id())),
        (None, Err(e)) if e.code != ErrorCode::PrincipalNotFound => Err(e),
        (None, _) => Ok(NamedPrincipal::Nobody),
    }
}

/// Whether an `AccessKey` value records a `PrincipalId`.
pub(crate) fn records_principal_id(value: &[u8]) -> bool {
    AccessKeyValue::read(value).is_some_and(|v| v.principal_id.is_some())
}

/// Which principal an `AccessKey` value's `PrincipalName` stands for as its version is
/// written (`None` for a value that names none).
pub(crate) fn principal_at_write(
    r: &(impl Reader + ?Sized),
    value: &[u8],
) -> Result<Option<NamedPrincipal>> {
    let Some(name) = principal_named(value) else {
        return Ok(None);
    };
    match load_principal(r, &name) {
        Ok(p) => Ok(Some(NamedPrincipal::Id(p.id()))),
        Err(e) if e.code == ErrorCode::PrincipalNotFound => Ok(Some(NamedPrincipal::Absent {
            next: generations_of(r, &name)? + 1,
        })),
        Err(e) => Err(e),
    }
}

impl AccessKeyValue {
    /// A value as the strategy reads it, for checks that only need to know whether it is
    /// one (`None` for a value the strategy cannot use).
    fn read(v: &[u8]) -> Option<Self> {
        serde_json::from_slice(v).ok()
    }

    /// Parses a value; errors never quote it.
    fn parse(step: &str, which: &str, v: &[u8]) -> Result<Self> {
        serde_json::from_slice(v).map_err(|_| {
            failed(
                step,
                format!(
                    "the {which} value is not a JSON object with a PrincipalName (and TokenId, Token)"
                ),
            )
        })
    }

    fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(
            serde_json::to_vec(self).map_err(Error::internal)?,
        ))
    }
}

/// The principals a policy may issue tokens for.
#[derive(Debug, Clone)]
struct Allowed(Vec<String>);

impl Allowed {
    fn parse(settings: &BTreeMap<String, String>) -> Result<Self> {
        const FIELD: &str = "settings.principals";
        let raw = settings.get("principals").map(String::as_str).unwrap_or("");
        let list: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        if list.is_empty() {
            return Err(Error::invalid(
                FIELD,
                "name the principals this policy may issue tokens for (comma-separated names or prefixes ending in *)",
            ));
        }
        for p in &list {
            let name = p.strip_suffix('*').unwrap_or(p);
            if name.contains('*') {
                return Err(Error::invalid(FIELD, "* may only end a prefix"));
            }
            if p == ROOT_PRINCIPAL || p == "*" {
                return Err(Error::invalid(
                    FIELD,
                    "the built-in root principal (or every principal) cannot be rotated",
                ));
            }
        }
        Ok(Self(list))
    }

    fn allows(&self, principal: &str) -> bool {
        principal != ROOT_PRINCIPAL
            && self.0.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => principal.starts_with(prefix),
                None => p == principal,
            })
    }
}

/// Checks `access_key` settings (policy create and update).
pub(crate) fn validate_settings(settings: &BTreeMap<String, String>) -> Result<()> {
    Allowed::parse(settings).map(|_| ())
}

/// The entries of a valid `principals` setting (names, or prefixes ending in `*`).
pub(crate) fn principals_setting(settings: &BTreeMap<String, String>) -> Result<Vec<String>> {
    Allowed::parse(settings).map(|a| a.0)
}

/// Whether `ACSCurrent` may move from `current` to `value` without
/// handing out another principal's tokens: both name the same principal, and `value`
/// (of version `written`) stands for the principal that has the name now ([`bound_to`]).
pub(crate) fn same_principal(
    r: &(impl Reader + ?Sized),
    current: &[u8],
    value: &[u8],
    written: Option<&VersionMeta>,
) -> bool {
    let (Some(cur), Some(to)) = (AccessKeyValue::read(current), AccessKeyValue::read(value)) else {
        return false;
    };
    cur.principal_name == to.principal_name
        && load_principal(r, &to.principal_name)
            .is_ok_and(|p| bound_to(&p, to.principal_id.as_deref(), written, true).is_ok())
}

/// The principal an `AccessKey` value names, read exactly as the strategy reads it:
/// `None` for a value the strategy cannot use (it then issues nothing).
pub(crate) fn principal_named(value: &[u8]) -> Option<String> {
    AccessKeyValue::read(value).map(|v| v.principal_name.clone())
}

/// The id releases before 2026-12-08 gave the token of version `version_id` of
/// `secret`: an unkeyed hash, which let anyone who may list a principal's tokens test
/// guesses of the secret's name. Such tokens, still in use, are recognised as the
/// rotation's until a rotation revokes them; new ones get [`Barrier::rotation_token_id`].
fn legacy_token_id(secret: &str, version_id: &str) -> String {
    let h = barrier::sha256(format!("access_key\0{secret}\0{version_id}").as_bytes());
    format!("tok_{}", hex::encode(&h[..12]))
}

/// Whether `id` is the id a rotation of `secret` gives (or gave) the token of its
/// version `version_id`.
fn is_rotation_token_id(barrier: &Barrier, id: &str, secret: &str, version_id: &str) -> bool {
    id == barrier.rotation_token_id(secret, version_id) || id == legacy_token_id(secret, version_id)
}

/// The description of the token a secret's rotation issues for a version (how
/// *finish* finds tokens left by failed rotations).
fn marker(secret: &str, version_id: &str) -> String {
    format!("{MARKER_PREFIX}{secret}, version {version_id}")
}

/// How a rotation token's description begins.
const MARKER_PREFIX: &str = "Issued by the rotation of secret ";

/// The secret whose rotation issued `token`, if one did: its description names the
/// secret and a version, and its id is the one derived from them (a description anyone
/// wrote is not taken for one).
pub(crate) fn rotation_secret_of<'t>(barrier: &Barrier, token: &'t TokenRecord) -> Option<&'t str> {
    // Secret names hold no blanks, so the first ", version " ends the name.
    let (secret, version) = token
        .description
        .strip_prefix(MARKER_PREFIX)?
        .split_once(", version ")?;
    is_rotation_token_id(barrier, &token.token_id, secret, version).then_some(secret)
}

/// What a caller that may not describe the secret a rotation token's description names
/// is shown instead.
pub(crate) const MARKER_HIDDEN: &str = "Issued by the rotation of a secret";

/// Whether `token` was issued by a rotation of `secret`: its description names a
/// version and its id is the one derived from that version (anyone may write such a
/// description on a token, but nobody chooses a token's id).
fn issued_by_rotation(barrier: &Barrier, secret: &str, token: &TokenRecord) -> bool {
    rotation_secret_of(barrier, token) == Some(secret)
}

/// Revokes every token the rotations of `rec` issued, when the secret leaves for good
/// (purged after its recovery window, or deleted with `force_delete_without_recovery`):
/// nothing could rotate, find or revoke them by the secret any more, and nobody can
/// read them from it. Tokens made by hand are left alone. Runs in the write that
/// removes the secret; the caller empties the identity cache after it commits.
/// Scans the token table (deleting an `AccessKey` secret is rare); the values need not
/// be readable (their CMK may be disabled or gone).
pub(crate) fn revoke_rotation_tokens(
    t: &mut crate::storage::Txn<'_>,
    barrier: &Barrier,
    rec: &crate::service::records::SecretRecord,
) -> Result<usize> {
    if rec.secret_type != SecretType::AccessKey {
        return Ok(0);
    }
    let issued = rotation_tokens(&*t, barrier, &rec.name)?;
    for (principal, token_id) in &issued {
        delete_token_of(t, principal, token_id)?;
    }
    Ok(issued.len())
}

/// `(principal, token id)` of every token the rotations of secret `name` issued.
pub(crate) fn rotation_tokens(
    r: &(impl crate::storage::Reader + ?Sized),
    barrier: &Barrier,
    name: &str,
) -> Result<Vec<(String, String)>> {
    let mut issued = Vec::new();
    for (_, v) in r.scan(crate::storage::Table::Tokens, &[], None, usize::MAX)? {
        if let Ok(tok) = crate::service::records::decode::<TokenRecord>(&v)
            && issued_by_rotation(barrier, name, &tok)
        {
            issued.push((tok.principal.clone(), tok.token_id.clone()));
        }
    }
    Ok(issued)
}

/// The `access_key` strategy, bound to the service whose principals it rotates.
pub(crate) struct AccessKeyStrategy {
    service: Service,
    allowed: Allowed,
}

impl AccessKeyStrategy {
    pub(crate) fn new(service: Service, settings: &BTreeMap<String, String>) -> Result<Self> {
        Ok(Self {
            service,
            allowed: Allowed::parse(settings)?,
        })
    }

    fn pending(&self, step: &str, cx: &StepContext<'_>) -> Result<AccessKeyValue> {
        let v = cx.pending.ok_or_else(|| failed(step, "no pending value"))?;
        let v = AccessKeyValue::parse(step, "pending", v)?;
        if v.token.is_none() || v.token_id.is_none() {
            return Err(failed(step, "the pending value has no TokenId or Token"));
        }
        self.check_principal(step, &v.principal_name)?;
        Ok(v)
    }

    /// The id the pending value binds to: the principal's that has the name, if the
    /// current value (of version `written`) stands for it ([`bound_to`]).
    fn principal_id(
        &self,
        current: &AccessKeyValue,
        written: Option<&VersionMeta>,
    ) -> Result<String> {
        let p = load_principal(self.service.store(), &current.principal_name)
            .map_err(|e| write_failed("create", e))?;
        bound_to(&p, current.principal_id.as_deref(), written, false)
            .map_err(|why| failed("create", why))?;
        Ok(p.id())
    }

    fn check_principal(&self, step: &str, principal: &str) -> Result<()> {
        if self.allowed.allows(principal) {
            Ok(())
        } else {
            Err(failed(
                step,
                format!(
                    "the policy's principals setting does not allow issuing tokens for the principal {}",
                    THE_PRINCIPAL
                ),
            ))
        }
    }

    /// The version id and value of a stage, if the secret has a version there holding
    /// a token value.
    fn stage_value(&self, name: &str, stage: &str) -> Result<Option<(String, AccessKeyValue)>> {
        match self.service.get_secret_value(name, None, Some(stage)) {
            Ok(v) => {
                let data = Zeroizing::new(v.secret_data.into_bytes());
                // A value of another shape (e.g. from before the secret held a token)
                // names no token to keep or revoke.
                Ok(AccessKeyValue::parse("finish", stage, &data)
                    .ok()
                    .map(|value| (v.version_id, value)))
            }
            Err(e) if e.code == ErrorCode::VersionNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Strategy for AccessKeyStrategy {
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>> {
        let kind = self.service.describe_secret(cx.secret_name)?.secret_type;
        if kind != SecretType::AccessKey {
            return Err(failed(
                "create",
                format!("the strategy rotates secrets of secret_type AccessKey, not {kind:?}"),
            ));
        }
        let current = cx
            .current
            .ok_or_else(|| failed("create", "no current value"))?;
        let current = AccessKeyValue::parse("create", "current", current)?;
        self.check_principal("create", &current.principal_name)?;
        let principal_id = self.principal_id(&current, cx.written)?;
        let token = new_token();
        AccessKeyValue {
            principal_name: current.principal_name.clone(),
            principal_id: Some(principal_id),
            token_id: Some(
                self.service
                    .barrier()
                    .rotation_token_id(cx.secret_name, cx.version_id),
            ),
            token: Some(token.to_string()),
        }
        .to_bytes()
    }

    async fn set(&self, cx: &StepContext<'_>) -> Result<()> {
        let v = self.pending("set", cx)?;
        let (Some(token), Some(token_id)) = (&v.token, &v.token_id) else {
            return Err(failed("set", "the pending value has no TokenId or Token"));
        };
        let rec = TokenRecord {
            token_id: token_id.clone(),
            principal: v.principal_name.clone(),
            sha256: barrier::sha256(token.as_bytes()).to_vec(),
            description: marker(cx.secret_name, cx.version_id),
            creation_date: self.service.now(),
            expires_at: None,
        };
        let (secret, principal_id, written) = (
            cx.secret_name.to_string(),
            v.principal_id.clone(),
            cx.written.cloned(),
        );
        self.service
            .write_access(move |t| {
                // Only while the secret is live: one deleted meanwhile (its tokens
                // revoked in that write) gets no new token.
                crate::service::secrets::load_live_secret(t, &secret)?;
                let p = load_principal(t, &rec.principal)?;
                bound_to(&p, principal_id.as_deref(), written.as_ref(), false)
                    .map_err(|why| Error::new(ErrorCode::InvalidState, why))?;
                // A repeated set replaces the record this version made.
                delete_token_of(t, &rec.principal, &rec.token_id)?;
                make_room_for_token(t, &rec.principal, rec.creation_date)?;
                put_token(t, &rec);
                Ok(())
            })
            .await
            .map_err(|e| write_failed("set", e))
    }

    async fn test(&self, cx: &StepContext<'_>) -> Result<()> {
        let v = self.pending("test", cx)?;
        let token = v.token.as_deref().unwrap_or_default();
        let id = self.service.authenticate(token).map_err(|e| {
            failed(
                "test",
                format!("the new token does not authenticate ({})", e.code),
            )
        })?;
        if id.principal() != v.principal_name || Some(id.token_id()) != v.token_id.as_deref() {
            return Err(failed(
                "test",
                format!(
                    "the new token authenticates as another identity than the principal {}",
                    THE_PRINCIPAL
                ),
            ));
        }
        Ok(())
    }

    async fn finish(&self, cx: &StepContext<'_>) -> Result<()> {
        let pending = self.pending("finish", cx)?;
        let current = self.stage_value(cx.secret_name, STAGE_CURRENT)?;
        let previous = self.stage_value(cx.secret_name, STAGE_PREVIOUS)?;
        // The tokens that stay: the new one and the one applications hold now.
        let keep: Vec<(String, String)> = [Some(&pending), current.as_ref().map(|c| &c.1)]
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v.principal_name.clone(), v.token_id.clone()?)))
            .collect();
        let mut revoke: Vec<(String, String)> = Vec::new();
        // The previous version's token, only if this secret's rotation issued it for
        // that version (never an id a caller wrote into a value). Its id proves that,
        // so it goes also when the policy no longer lists its principal.
        if let Some((version_id, p)) = &previous
            && let Some(id) = &p.token_id
            && is_rotation_token_id(self.service.barrier(), id, cx.secret_name, version_id)
        {
            revoke.push((p.principal_name.clone(), id.clone()));
        }
        // Tokens this secret's rotations issued and no stage keeps, whichever principal
        // they are for (from a rotation that failed after set, or for a principal the
        // secret named before).
        revoke.extend(rotation_tokens(
            self.service.store(),
            self.service.barrier(),
            cx.secret_name,
        )?);
        // Kept by token id: a value's PrincipalName may not be its token's owner.
        revoke.retain(|r| !keep.iter().any(|k| k.1 == r.1));
        revoke.sort();
        revoke.dedup();
        if revoke.is_empty() {
            return Ok(());
        }
        self.service
            .write_access(move |t| {
                for (principal, token_id) in &revoke {
                    // Gone already (a repeated finish): nothing to do.
                    delete_token_of(t, principal, token_id)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| write_failed("finish", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::records::encode;
    use crate::storage::{Backend as _, MemoryBackend, Mutation, Table};

    /// A version written at `created` (seconds) that recorded `at_write`.
    fn version(at_write: Option<NamedPrincipal>, created: i64) -> VersionMeta {
        VersionMeta {
            version_id: "v".into(),
            stages: Vec::new(),
            created,
            created_by: "principal/root".into(),
            created_by_id: None,
            principal_at_write: at_write,
            data_type: strongbox_schemas::SecretDataType::Text,
            mac: Vec::new(),
            key_id: None,
            rotated_from: None,
        }
    }

    /// A version the rotation engine writes without PrincipalId vouches for nobody: it
    /// keeps the binding of the value it rotated from when it names the same principal,
    /// and stands for none when it names another or the binding is unknown.
    #[test]
    fn an_engine_written_value_keeps_the_binding_of_the_value_it_rotated_from() {
        let store = MemoryBackend::new();
        let holder = PrincipalRecord {
            name: "app".into(),
            principal_id: "p-holder".into(),
            generation: 2,
            description: String::new(),
            policies: Vec::new(),
            creation_date: 100,
            update_date: 100,
        };
        store
            .commit(&[Mutation::Put(
                Table::Principals,
                b"app".to_vec(),
                encode(&holder),
            )])
            .unwrap();
        let snap = store.snapshot().unwrap();
        let from = version;
        let bind = |value: &str, meta: &VersionMeta, from_value: &str| {
            engine_binding(
                &*snap,
                value.as_bytes(),
                Some((meta, from_value.as_bytes())),
            )
            .unwrap()
        };
        let app = r#"{"PrincipalName":"app","Note":"x"}"#;
        let old = NamedPrincipal::Id("p-old".into());
        // Written for a principal since replaced: still for that one, not the holder.
        assert_eq!(
            bind(
                app,
                &from(Some(old.clone()), 50),
                r#"{"PrincipalName":"app"}"#
            ),
            old
        );
        // The value it rotated from records an id: that one.
        assert_eq!(
            bind(
                app,
                &from(None, 50),
                r#"{"PrincipalName":"app","PrincipalId":"p-x"}"#
            ),
            NamedPrincipal::Id("p-x".into())
        );
        // Another name (a random PrincipalName), no value to rotate from, or an unknown
        // binding whose principal is not older than the value: nobody.
        let other = r#"{"PrincipalName":"zq81","Note":"x"}"#;
        let of_holder = from(Some(NamedPrincipal::Id("p-holder".into())), 150);
        assert_eq!(
            bind(other, &of_holder, r#"{"PrincipalName":"app"}"#),
            NamedPrincipal::Nobody
        );
        assert_eq!(
            engine_binding(&*snap, app.as_bytes(), None).unwrap(),
            NamedPrincipal::Nobody
        );
        assert_eq!(
            bind(app, &from(None, 100), r#"{"PrincipalName":"app"}"#),
            NamedPrincipal::Nobody
        );
        // A value from before bindings were kept binds to the holder only if the holder
        // was created before it was written (at 100, before 101; not before 100).
        assert_eq!(
            bind(app, &from(None, 101), r#"{"PrincipalName":"app"}"#),
            NamedPrincipal::Id("p-holder".into())
        );
        // Nobody binds no principal, and the refusal says why.
        let why = bound_to(
            &holder,
            None,
            Some(&version(Some(NamedPrincipal::Nobody), 200)),
            false,
        );
        assert!(why.is_err_and(|m| m.contains("another strategy") && !m.contains("app")));
        assert!(
            bound_to(
                &holder,
                None,
                Some(&from(Some(NamedPrincipal::Nobody), 200)),
                false
            )
            .is_err()
        );
    }

    /// Which principal a value without `PrincipalId` stands for, by what its version
    /// recorded when written.
    #[test]
    fn a_value_binds_to_the_principal_its_version_was_written_for() {
        let p = |id: &str, created: i64| PrincipalRecord {
            name: "app".into(),
            principal_id: id.into(),
            generation: 1,
            description: String::new(),
            policies: Vec::new(),
            creation_date: created,
            update_date: created,
        };
        let (old, new) = (p("p-old", 100), p("p-new", 100));
        let written_for_old = version(Some(NamedPrincipal::Id("p-old".into())), 100);
        for moving in [false, true] {
            // A PrincipalId decides, whatever the version says.
            assert!(bound_to(&old, Some("p-old"), Some(&written_for_old), moving).is_ok());
            assert!(bound_to(&new, Some("p-old"), None, moving).is_err());
            // Without one, the principal the name stood for when written (same second).
            assert!(bound_to(&old, None, Some(&written_for_old), moving).is_ok());
            assert!(bound_to(&new, None, Some(&written_for_old), moving).is_err());
        }
        // Written while no principal had the name: the next one created under it (here
        // the first), not a later one, and not by a move.
        let early = version(Some(NamedPrincipal::Absent { next: 1 }), 50);
        assert!(bound_to(&new, None, Some(&early), false).is_ok());
        assert!(bound_to(&new, None, Some(&early), true).is_err());
        let second = PrincipalRecord {
            generation: 2,
            ..p("p-second", 100)
        };
        assert!(bound_to(&second, None, Some(&early), false).is_err());
        // A version from before this was kept: a principal created in or after its second
        // is refused.
        assert!(bound_to(&p("p-x", 99), None, Some(&version(None, 100)), true).is_ok());
        assert!(bound_to(&p("p-x", 100), None, Some(&version(None, 100)), false).is_err());
        assert!(bound_to(&p("p-x", 101), None, Some(&version(None, 100)), false).is_err());
    }

    #[test]
    fn principals_setting_is_required_and_never_root() {
        let s = |v: &str| -> BTreeMap<String, String> {
            [("principals".to_string(), v.to_string())].into()
        };
        for bad in ["", " , ", "root", "app,root", "*", "a*b"] {
            let e = validate_settings(&s(bad)).unwrap_err();
            assert!(e.message.contains("settings.principals"), "{bad}: {e}");
        }
        assert!(validate_settings(&BTreeMap::new()).is_err());
        let a = Allowed::parse(&s("app, ci-*")).unwrap();
        assert!(a.allows("app"));
        assert!(a.allows("ci-runner"));
        assert!(!a.allows("apps"));
        assert!(!a.allows("root"));
        let any_prefix = Allowed::parse(&s("r*")).unwrap();
        assert!(!any_prefix.allows("root"));
    }

    #[test]
    fn token_ids_are_fixed_per_version_keyed_and_look_like_tokens() {
        let b = Barrier::new(&crate::barrier::RootKey::random());
        let a = b.rotation_token_id("app/key", "v1");
        assert_eq!(a, b.rotation_token_id("app/key", "v1"));
        assert_ne!(a, b.rotation_token_id("app/key", "v2"));
        assert_ne!(a, b.rotation_token_id("app/other", "v1"));
        // The boundary between name and version is fixed by the name's length.
        assert_ne!(
            b.rotation_token_id("app/k", "ey1"),
            b.rotation_token_id("app/key", "1")
        );
        assert!(a.starts_with("tok_") && a.len() == 4 + 24);
        // Keyed: another root key gives another id, and neither is the unkeyed hash
        // that anyone could compute from a guess.
        let other = Barrier::new(&crate::barrier::RootKey::random());
        assert_ne!(a, other.rotation_token_id("app/key", "v1"));
        assert_ne!(a, legacy_token_id("app/key", "v1"));
    }

    #[test]
    fn only_tokens_with_the_derived_id_count_as_issued_by_the_rotation() {
        let tok = |id: &str, description: String| TokenRecord {
            token_id: id.into(),
            principal: "app".into(),
            sha256: vec![0; 32],
            description,
            creation_date: 0,
            expires_at: None,
        };
        let b = Barrier::new(&crate::barrier::RootKey::random());
        let own = b.rotation_token_id("app/key", "v1");
        let legacy = legacy_token_id("app/key", "v1");
        let issued = |secret: &str, t: &TokenRecord| issued_by_rotation(&b, secret, t);
        assert!(issued("app/key", &tok(&own, marker("app/key", "v1"))));
        assert!(
            issued("app/key", &tok(&legacy, marker("app/key", "v1"))),
            "a token an earlier release issued"
        );
        assert!(!issued(
            "app/key",
            &tok("tok_0123", marker("app/key", "v1"))
        ));
        assert!(!issued("app/key", &tok(&own, marker("app/key", "v2"))));
        assert!(!issued("app/other", &tok(&own, marker("app/key", "v1"))));
        let another_key = Barrier::new(&crate::barrier::RootKey::random());
        assert!(!issued_by_rotation(
            &another_key,
            "app/key",
            &tok(&own, marker("app/key", "v1"))
        ));
    }

    #[test]
    fn bad_values_are_not_quoted() {
        let Err(e) = AccessKeyValue::parse("create", "current", b"sbx_secret-token") else {
            panic!("not JSON, yet parsed");
        };
        assert!(!e.message.contains("sbx_secret"));
        assert_eq!(e.code, ErrorCode::RotationFailed);
    }
}
