//! Rotation-policy records. Executing rotations is the rotation engine's job.

use std::collections::BTreeMap;

use strongbox_schemas::{self as api, ErrorCode, RotationStrategy};

use super::Service;
use super::authz::{Actor, WEBHOOK_SENDS_WHY, WEBHOOK_SIGNS_WHY};
use super::records::{PolicyRecord, SecretRecord, decode, encode, list_page, load, refuse_in_use};
use crate::error::{Error, Result, interval_in};
use crate::storage::{Reader, Table, composite};

const INTERVAL_MIN: u64 = 6 * 3_600;
const INTERVAL_MAX: u64 = 365 * 86_400;
const DEFAULT_WINDOW_SECS: u64 = 3_600;

fn not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::RotationPolicyNotFound,
        format!("rotation policy {name} not found"),
    )
}

/// Rotation policy names follow the rule of access policy names.
fn validate_name(name: &str) -> Result<()> {
    strongbox_schemas::validate_policy_name("name", name).map_err(Error::from)
}

/// The settings of a generated password (`service::rotation::PasswordRules`).
const PASSWORD_RULES: &[&str] = &[
    "length",
    "exclude_characters",
    "exclude_lowercase",
    "exclude_uppercase",
    "exclude_numbers",
    "exclude_punctuation",
    "require_each_included_type",
];

/// The size of each setting given now (`stored`: the policy's settings before an update,
/// whose values sent back unchanged are not checked again): 8 KiB, 64 KiB for a CA
/// bundle; every other setting is a word, a number or a list.
fn check_setting_sizes(
    settings: &BTreeMap<String, String>,
    stored: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    for (k, v) in settings {
        let longest = if k == "ca_cert" { 64 * 1024 } else { 8 * 1024 };
        if v.len() > longest && stored.and_then(|s| s.get(k)) != Some(v) {
            return Err(Error::invalid(
                &format!("settings.{k}"),
                format!("at most {longest} bytes"),
            ));
        }
    }
    Ok(())
}

/// Settings each strategy understands, checked so that typos fail at create time.
fn validate_settings(
    strategy: RotationStrategy,
    settings: &BTreeMap<String, String>,
) -> Result<()> {
    let known: Vec<&str> = match strategy {
        RotationStrategy::Random => [PASSWORD_RULES, &["json_field"]].concat(),
        RotationStrategy::Webhook => vec!["url", "signing_secret", "timeout", "ca_cert"],
        // The password rules of `random` (docs/design/database-rotation.md), and
        // `password_length`, the name these policies took for `length` before (stored
        // policies keep it, and must stay updatable).
        RotationStrategy::Postgresql | RotationStrategy::Mysql => {
            [PASSWORD_RULES, &["password_length"]].concat()
        }
        RotationStrategy::AccessKey => vec!["principals"],
        RotationStrategy::SshKey => [&["key_type", "rsa_bits"], PASSWORD_RULES].concat(),
    };
    for k in settings.keys() {
        if !known.contains(&k.as_str()) {
            return Err(Error::invalid(
                &format!("settings.{k}"),
                format!(
                    "not a setting of strategy {strategy:?}; known: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    super::rotation::validate_strategy_settings(strategy, settings)
}

/// The rights a policy's rotations will use with the server's authority: an
/// `access_key` policy needs the caller's token rights on every entry of its
/// `principals` setting (a `prefix*` entry as the literal resource `principal/prefix*`);
/// a `webhook` one the right to read the secret its `signing_secret` names.
fn check_delegation(
    who: &Actor,
    strategy: RotationStrategy,
    settings: &BTreeMap<String, String>,
) -> Result<()> {
    match strategy {
        RotationStrategy::AccessKey => {
            for p in super::rotation::principals_setting(settings)? {
                who.require_token_authority(
                    &p,
                    "an access_key policy's rotations issue and revoke tokens of the principals it names",
                )?;
            }
            Ok(())
        }
        RotationStrategy::Webhook => match settings.get("signing_secret") {
            Some(signing) => who.require_read(signing, WEBHOOK_SIGNS_WHY),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A `webhook` policy sends the next value of every secret attached to it to its url:
/// an update leaving one needs the right to read each of them.
fn check_attached_secrets(t: &(impl Reader + ?Sized), who: &Actor, p: &PolicyRecord) -> Result<()> {
    if p.strategy != RotationStrategy::Webhook || who.is_trusted() {
        return Ok(());
    }
    let prefix = composite(&p.name, "");
    for (k, _) in t.scan(Table::PolicySecrets, &prefix, None, usize::MAX)? {
        who.require_read_attached(
            &String::from_utf8_lossy(&k[prefix.len()..]),
            &p.name,
            WEBHOOK_SENDS_WHY,
        )?;
    }
    Ok(())
}

/// `RotationInProgress` if a secret attached to policy `name` has an unfinished rotation:
/// persisted (its pending version made), or running in this server (`running`; its
/// *create* step may be under way, before anything is persisted).
fn refuse_if_rotating(
    t: &(impl Reader + ?Sized),
    name: &str,
    running: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let prefix = composite(name, "");
    for (k, _) in t.scan(Table::PolicySecrets, &prefix, None, usize::MAX)? {
        let secret = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let Some(rec) = load::<SecretRecord>(t, Table::Secrets, secret.as_bytes())? else {
            continue;
        };
        let persisted = rec
            .rotation
            .in_progress
            .as_ref()
            .is_some_and(|r| rec.version_has(&r.version_id, api::STAGE_PENDING));
        if persisted || running(&secret) {
            return Err(Error::new(
                ErrorCode::RotationInProgress,
                format!(
                    "a secret attached to rotation-policy/{name} has an unfinished, running or queued rotation: the policy's strategy and settings cannot change until it ends; try again then"
                ),
            ));
        }
    }
    Ok(())
}

fn validate_window(window: &api::Interval, interval: &api::Interval) -> Result<()> {
    interval_in("window", window, 60, interval.seconds())
}

impl Service {
    /// Creates a rotation policy; an `access_key` one needs the caller's token rights
    /// on the principals it names, a `webhook` one the right to read its signing secret.
    pub async fn create_rotation_policy(
        &self,
        req: api::CreateRotationPolicyRequest,
        who: &Actor,
    ) -> Result<api::RotationPolicy> {
        validate_name(&req.name)?;
        interval_in("interval", &req.interval, INTERVAL_MIN, INTERVAL_MAX)?;
        let window = req
            .window
            .unwrap_or_else(|| api::Interval::from_seconds(DEFAULT_WINDOW_SECS));
        validate_window(&window, &req.interval)?;
        let settings = req.settings.unwrap_or_default();
        check_setting_sizes(&settings, None)?;
        validate_settings(req.strategy, &settings)?;
        super::rotation::check_legacy_length(&settings)?;
        check_delegation(who, req.strategy, &settings)?;
        let now = self.now();
        let rec = PolicyRecord {
            name: req.name,
            interval: req.interval,
            window,
            strategy: req.strategy,
            settings,
            enabled: req.enabled.unwrap_or(true),
            creation_date: now,
            update_date: now,
        };
        self.write(move |t| {
            if t.get(Table::RotationPolicies, rec.name.as_bytes())?
                .is_some()
            {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("rotation policy {} already exists", rec.name),
                ));
            }
            t.put(Table::RotationPolicies, rec.name.as_bytes(), encode(&rec));
            Ok(rec.to_api())
        })
        .await
    }

    /// One policy.
    pub fn describe_rotation_policy(&self, name: &str) -> Result<api::RotationPolicy> {
        load::<PolicyRecord>(self.store(), Table::RotationPolicies, name.as_bytes())?
            .map(|p| p.to_api())
            .ok_or_else(|| not_found(name))
    }

    /// Policies in name order whose names pass `visible`, a page at a time.
    pub fn list_rotation_policies(
        &self,
        limit: usize,
        page_token: Option<&str>,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<api::ListRotationPoliciesResponse> {
        let (rotation_policies, next_page_token) = list_page(
            self.store(),
            Table::RotationPolicies,
            limit,
            page_token,
            |_, v| {
                let p = decode::<PolicyRecord>(v)?;
                Ok(visible(&p.name).then(|| (p.name.clone(), p.to_api())))
            },
        )?;
        Ok(api::ListRotationPoliciesResponse {
            rotation_policies,
            next_page_token,
        })
    }

    /// Changes a policy; absent fields stay. Any change that leaves an `access_key`
    /// policy needs the caller's token rights on the principals it names; one that
    /// leaves a `webhook` policy the right to read its signing secret and every secret
    /// attached to it.
    pub async fn update_rotation_policy(
        &self,
        name: &str,
        req: api::UpdateRotationPolicyRequest,
        who: &Actor,
    ) -> Result<api::RotationPolicy> {
        let (name, now, who, this) = (name.to_string(), self.now(), who.clone(), self.clone());
        self.write(move |t| {
            let mut p: PolicyRecord = load(t, Table::RotationPolicies, name.as_bytes())?
                .ok_or_else(|| not_found(&name))?;
            let before = (
                p.strategy,
                p.settings.clone(),
                p.interval.clone(),
                p.window.clone(),
            );
            if let Some(i) = req.interval {
                interval_in("interval", &i, INTERVAL_MIN, INTERVAL_MAX)?;
                p.interval = i;
            }
            if let Some(w) = req.window {
                p.window = w;
            }
            validate_window(&p.window, &p.interval)?;
            if let Some(s) = req.strategy {
                p.strategy = s;
            }
            if let Some(s) = req.settings {
                // A value given now is checked strictly; a stored one sent back unchanged
                // (Terraform sends every setting with any update) as it always was.
                if s.get("password_length") != p.settings.get("password_length") {
                    super::rotation::check_legacy_length(&s)?;
                }
                check_setting_sizes(&s, Some(&p.settings))?;
                p.settings = s;
            }
            validate_settings(p.strategy, &p.settings)?;
            // The delegated rights are about where values go, whose tokens are issued and
            // how long credentials live: an update that only turns the policy on or off
            // gives the caller nothing new, and must stay possible, e.g. to switch off a
            // compromised webhook.
            if (p.strategy, &p.settings, &p.interval, &p.window)
                != (before.0, &before.1, &before.2, &before.3)
            {
                check_delegation(&who, p.strategy, &p.settings)?;
                check_attached_secrets(t, &who, &p)?;
            }
            // An unfinished rotation resumes under its policy: a strategy or settings
            // changed under it (a database's `set` followed by another strategy's `test`,
            // a webhook's steps sent to another URL) would finish it wrongly. Checked
            // after the caller's rights, and without naming the secret, which the caller
            // may not be allowed to see.
            if (p.strategy, &p.settings) != (before.0, &before.1) {
                refuse_if_rotating(t, &p.name, &|s| this.is_rotating(s))?;
            }
            if let Some(e) = req.enabled {
                p.enabled = e;
            }
            p.update_date = now;
            t.put(Table::RotationPolicies, name.as_bytes(), encode(&p));
            super::rotation::reindex_policy_secrets(t, &p)?;
            Ok(p.to_api())
        })
        .await
    }

    /// Deletes a policy no secret uses.
    pub async fn delete_rotation_policy(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |t| {
            if t.get(Table::RotationPolicies, name.as_bytes())?.is_none() {
                return Err(not_found(&name));
            }
            refuse_in_use(
                t,
                Table::PolicySecrets,
                &name,
                ErrorCode::RotationPolicyInUse,
                &format!("rotation policy {name}"),
                "secret",
            )?;
            t.delete(Table::RotationPolicies, name.as_bytes());
            Ok(())
        })
        .await
    }
}
