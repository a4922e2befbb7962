//! `strongbox_cmk` (resource and data source): a customer master key.

use strongbox_client::ErrorCode;
use strongbox_schemas as api;

use super::{changed, default_if_unset, string, unknown_if_null};
use crate::core::{
    Attr, Ctx, DataSource, Diag, Diags, Model, ObjExt, PlanReq, PlanResp, Resource, TfSchema,
    api_diag, created_then_failed, null_object, str_map,
};
use crate::value::{Number, Type, Value};

/// The secrets the caller may list that use key `key_id`, by name: those that name it (by
/// id, or by an alias that points at it) and those with a version sealed under it.
async fn secrets_under(ctx: &Ctx, key_id: &str) -> Result<Vec<String>, String> {
    let c = ctx.client().map_err(|d| {
        d.first()
            .map(|d| format!("{}: {}", d.summary, d.detail))
            .unwrap_or_else(|| "the provider is not configured".to_string())
    })?;
    let secrets = c
        .list_secrets_using_key(key_id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(secrets.secrets.into_iter().map(|s| s.name).collect())
}

/// The resource type.
pub struct CmkResource;

/// The server's period of automatic rotation when none is set.
const DEFAULT_ROTATION_INTERVAL: &str = "365d";
/// The data source type.
pub struct CmkDataSource;

fn schema() -> TfSchema {
    static SCHEMA: std::sync::OnceLock<TfSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema).clone()
}

fn build_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(api::Key),
        schemars::schema_for!(api::CreateKeyRequest),
        schemars::schema_for!(api::ScheduleKeyDeletionRequest),
    ]);
    TfSchema {
        version: 0,
        description: "A customer master key (AES-256) that protects secrets. Destroying it schedules the destruction of its material.".into(),
        attrs: vec![
            m.optional("description"),
            m.optional_computed("key_spec").describe("Only `AES_256` (the default); forces replacement."),
            Attr::optional_computed("enabled", Type::Bool).describe("Whether the key can be used (default true)."),
            m.optional_computed("automatic_rotation").describe("Rotate the material on a schedule (default false)."),
            m.optional_computed("rotation_interval").describe("Period of automatic rotation, 7d–730d (default `365d`)."),
            m.optional_computed("pending_window_in_days").describe("Days between destroy and the destruction of the material, 7–366 (default 30)."),
            m.optional("tags"),
            Attr::computed("id", string()).describe("The key id."),
            m.computed("arn"),
            m.computed("state"),
            m.computed("primary_key_version"),
            m.computed("creation_date"),
        ],
    }
}

fn to_state(k: &api::Key, prior: &Value) -> Value {
    let mut v = null_object(&schema());
    v.set("id", Value::string(&k.key_id));
    v.set("arn", Value::string(&k.arn));
    v.set(
        "description",
        super::keep_null_if_empty(prior, "description", &k.description),
    );
    v.set("key_spec", Value::string("AES_256"));
    v.set("enabled", Value::Bool(k.state == api::KeyState::Enabled));
    v.set("automatic_rotation", Value::Bool(k.automatic_rotation));
    v.set("rotation_interval", {
        let effective = k
            .rotation_interval
            .clone()
            .unwrap_or_else(|| api::Interval::from_seconds(365 * 86_400));
        match prior.str_attr("rotation_interval") {
            Some(p) if api::Interval::parse(p).ok().as_ref() == Some(&effective) => {
                Value::string(p)
            }
            _ => Value::string(effective.as_str()),
        }
    });
    v.set(
        "pending_window_in_days",
        prior.attr("pending_window_in_days").clone(),
    );
    if v.attr("pending_window_in_days").is_null() {
        v.set(
            "pending_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
    }
    v.set(
        "tags",
        super::keep_null_if_empty_map(prior, "tags", &k.tags),
    );
    v.set("state", Value::string(format!("{:?}", k.state)));
    v.set(
        "primary_key_version",
        Value::Number(Number::from_u64(u64::from(k.primary_key_version))),
    );
    v.set("creation_date", Value::string(k.creation_date.to_string()));
    v
}

fn interval(v: &Value) -> Result<Option<api::Interval>, Diags> {
    v.str_attr("rotation_interval")
        .map(|s| {
            api::Interval::parse(s).map_err(|e| {
                vec![
                    Diag::error("Invalid rotation_interval", e.to_string()).at("rotation_interval"),
                ]
            })
        })
        .transpose()
}

async fn read_key(ctx: &Ctx, id: &str, prior: &Value) -> Result<Value, Diags> {
    let c = ctx.client()?;
    match c.describe_key(id).await {
        Ok(k) if k.state == api::KeyState::PendingDeletion => Ok(Value::Null),
        Ok(k) => Ok(to_state(&k, prior)),
        Err(e) if e.code() == Some(ErrorCode::KeyNotFound) => Ok(Value::Null),
        Err(e) => Err(vec![api_diag("Reading the key failed", None, &e)]),
    }
}

#[async_trait::async_trait]
impl Resource for CmkResource {
    fn name(&self) -> &'static str {
        "strongbox_cmk"
    }

    fn schema(&self) -> TfSchema {
        schema()
    }

    fn validate(&self, config: &Value, _: crate::core::ClientCaps) -> Diags {
        let mut d = Vec::new();
        if let Some(k) = config.str_attr("key_spec")
            && k != "AES_256"
        {
            d.push(
                Diag::error(
                    "Invalid key_spec",
                    format!("{k}: only AES_256 is supported"),
                )
                .at("key_spec"),
            );
        }
        if let Err(e) = interval(config) {
            d.extend(e);
        }
        let window = config.attr("pending_window_in_days");
        if window.is_wholly_known()
            && !window.is_null()
            && config.int_attr("pending_window_in_days").is_none()
        {
            d.push(
                Diag::error(
                    "Invalid pending_window_in_days",
                    "must be a whole number of days between 7 and 366",
                )
                .at("pending_window_in_days"),
            );
        }
        if let Some(n) = config.int_attr("pending_window_in_days")
            && !(7..=366).contains(&n)
        {
            d.push(
                Diag::error(
                    "Invalid pending_window_in_days",
                    "must be between 7 and 366",
                )
                .at("pending_window_in_days"),
            );
        }
        d
    }

    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        let (prior, config) = (req.prior, req.config);
        let mut p = req.proposed.clone();
        default_if_unset(&mut p, config, "key_spec", Value::string("AES_256"));
        default_if_unset(&mut p, config, "enabled", Value::Bool(true));
        default_if_unset(&mut p, config, "automatic_rotation", Value::Bool(false));
        default_if_unset(
            &mut p,
            config,
            "pending_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
        default_if_unset(
            &mut p,
            config,
            "rotation_interval",
            Value::string(DEFAULT_ROTATION_INTERVAL),
        );
        if prior.is_null() {
            unknown_if_null(
                &mut p,
                &["id", "arn", "state", "primary_key_version", "creation_date"],
            );
            return Ok(PlanResp {
                planned: p,
                requires_replace: Vec::new(),
                diags: Vec::new(),
            });
        }
        // rotation_interval compared by meaning; unset means the default, so a period
        // the server holds as other text (`8760h`, after an import) stays.
        let wanted = config.str_attr("rotation_interval").or(config
            .attr("rotation_interval")
            .is_null()
            .then_some(DEFAULT_ROTATION_INTERVAL));
        if let (Some(a), Some(b)) = (prior.str_attr("rotation_interval"), wanted)
            && super::same_interval(a, b)
        {
            p.set("rotation_interval", Value::string(a));
        }
        if changed(prior, &p, "enabled") {
            p.set("state", Value::unknown());
        }
        // The key may be rotated between this plan and its apply: by the server (with
        // automatic rotation on, or as the apply changes the interval) or by anyone with
        // the right (`strongbox key rotate`), so the version the apply reads back is not
        // known now. Only when something is to change: an empty plan stays empty.
        if p != *prior {
            p.set("primary_key_version", Value::unknown());
        }
        let requires_replace = if changed(prior, &p, "key_spec") {
            vec!["key_spec"]
        } else {
            Vec::new()
        };
        Ok(PlanResp {
            planned: p,
            requires_replace,
            diags: Vec::new(),
        })
    }

    /// Names the secrets that use this key (they name it, by id or alias, or keep
    /// versions sealed under it): once the key's material is destroyed at the end of its
    /// window, their versions under it can never be read again, also after a restore.
    async fn plan_destroy(&self, ctx: &Ctx, prior: &Value) -> Diags {
        let Some(id) = prior.str_attr("id") else {
            return Vec::new();
        };
        match secrets_under(ctx, id).await {
            Ok(names) if names.is_empty() => Vec::new(),
            Ok(names) => {
                let days = prior.int_attr("pending_window_in_days").unwrap_or(30);
                let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
                let more = names.len().saturating_sub(shown.len());
                vec![Diag::warning(
                    format!("Secrets still use key {id}"),
                    format!(
                        "{n} secret(s) use this key (they name it, by id or alias, or have \
                         versions sealed under it): {list}{rest}. Destroying it schedules its \
                         deletion in {days} days; after that its material is destroyed and \
                         their versions under it can never be read again, also after a \
                         restore (this holds for secrets this plan deletes too). To keep \
                         them, move them to another key first: set their encryption_key_id \
                         to another key's id, which seals their versions with a stage again \
                         under it (versions without a stage stay under this key, and so do \
                         the versions of a secret whose alias was moved to another key \
                         until its encryption_key_id changes). Or cancel the deletion \
                         within the window (POST /v1/keys/{id}/cancel-deletion).",
                        n = names.len(),
                        list = shown.join(", "),
                        rest = if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        },
                    ),
                )]
            }
            // Only a warning: a plan is not refused because it could not be given.
            Err(e) => vec![Diag::warning(
                format!("Could not check which secrets use key {id}"),
                e.to_string(),
            )],
        }
    }

    async fn apply(
        &self,
        ctx: &Ctx,
        prior: &Value,
        planned: &Value,
        _config: &Value,
    ) -> Result<Value, Diags> {
        let c = ctx.client()?;
        if planned.is_null() {
            let id = prior.str_attr("id").unwrap_or_default();
            let days = prior
                .int_attr("pending_window_in_days")
                .and_then(|d| u32::try_from(d).ok());
            return match c.schedule_key_deletion(id, days).await {
                Ok(_) => Ok(Value::Null),
                Err(e) if e.code() == Some(ErrorCode::KeyNotFound) => Ok(Value::Null),
                // Already scheduled (outside Terraform) with another window: it is being
                // deleted, which is what destroy asks.
                Err(e)
                    if e.code() == Some(ErrorCode::InvalidState)
                        && c.describe_key(id)
                            .await
                            .is_ok_and(|k| k.state == api::KeyState::PendingDeletion) =>
                {
                    Ok(Value::Null)
                }
                Err(e) => Err(vec![api_diag(
                    "Scheduling the key deletion failed",
                    None,
                    &e,
                )]),
            };
        }
        let created = prior.is_null();
        let id = if created {
            let req = api::CreateKeyRequest {
                description: planned.str_attr("description").map(str::to_string),
                key_spec: api::KeySpec::Aes256,
                tags: planned.map_attr("tags"),
                automatic_rotation: planned.bool_attr("automatic_rotation").unwrap_or(false),
                rotation_interval: interval(planned)?,
            };
            c.create_key(&req)
                .await
                .map_err(|e| vec![api_diag("Creating the key failed", None, &e)])?
                .key_id
        } else {
            let id = prior.str_attr("id").unwrap_or_default().to_string();
            let patch = api::UpdateKeyRequest {
                description: changed(prior, planned, "description").then(|| {
                    planned
                        .str_attr("description")
                        .unwrap_or_default()
                        .to_string()
                }),
                tags: changed(prior, planned, "tags")
                    .then(|| planned.map_attr("tags").unwrap_or_default()),
                automatic_rotation: changed(prior, planned, "automatic_rotation")
                    .then(|| planned.bool_attr("automatic_rotation").unwrap_or(false)),
                rotation_interval: if changed(prior, planned, "rotation_interval") {
                    interval(planned)?
                } else {
                    None
                },
            };
            if patch.description.is_some()
                || patch.tags.is_some()
                || patch.automatic_rotation.is_some()
                || patch.rotation_interval.is_some()
            {
                c.update_key(&id, &patch)
                    .await
                    .map_err(|e| vec![api_diag("Updating the key failed", None, &e)])?;
            }
            id
        };
        match settle_key(ctx, &id, planned).await {
            // Created, then a later step failed: Terraform keeps the key, tainted.
            Err(d) if created => Err(created_then_failed(
                d,
                read_key(ctx, &id, planned).await,
                planned,
                &id,
            )),
            r => r,
        }
    }

    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        read_key(ctx, state.str_attr("id").unwrap_or_default(), state).await
    }

    async fn import(&self, ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        // The default key is the server's: it can be neither disabled nor deleted, so
        // Terraform could never destroy it. Named by its id or by any alias; when it
        // cannot be told whether the key is the default one, the import is refused.
        let c = ctx.client()?;
        let key = c
            .describe_key(id)
            .await
            .map_err(|e| vec![api_diag("Reading the key failed", None, &e)])?;
        let default = match c.get_alias(strongbox_schemas::DEFAULT_KEY_ALIAS).await {
            Ok(a) => Some(a.key_id),
            // No secret has named no key yet: there is no default key.
            Err(e) if e.code() == Some(ErrorCode::AliasNotFound) => None,
            Err(e) => {
                return Err(vec![api_diag(
                    "Telling whether the key is the server's default key failed (an import needs kms:DescribeAlias on alias/strongbox/default)",
                    None,
                    &e,
                )]);
            }
        };
        if default.as_deref() == Some(key.key_id.as_str()) {
            return Err(vec![Diag::error(
                "Cannot import the default key",
                format!(
                    "{id} is the server's default key ({}): it seals the secrets that name no key and can be neither disabled nor deleted, so it cannot be managed with Terraform",
                    strongbox_schemas::DEFAULT_KEY_ALIAS
                ),
            )]);
        }
        let mut v = null_object(&schema());
        v.set("id", Value::string(id));
        v.set(
            "pending_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
        Ok(v)
    }
}

/// The steps of an apply after the key exists: its state (enabled or not), then the key
/// read back.
async fn settle_key(ctx: &Ctx, id: &str, planned: &Value) -> Result<Value, Diags> {
    let c = ctx.client()?;
    let want_enabled = planned.bool_attr("enabled").unwrap_or(true);
    let k = c
        .describe_key(id)
        .await
        .map_err(|e| vec![api_diag("Reading the key failed", None, &e)])?;
    if want_enabled != (k.state == api::KeyState::Enabled) {
        let r = if want_enabled {
            c.enable_key(id).await
        } else {
            c.disable_key(id).await
        };
        r.map_err(|e| {
            vec![api_diag(
                "Changing the key state failed",
                Some("enabled"),
                &e,
            )]
        })?;
    }
    let state = read_key(ctx, id, planned).await?;
    if state.is_null() {
        return Err(vec![Diag::error(
            "Key vanished",
            format!("{id} was not found right after it was written"),
        )]);
    }
    Ok(state)
}

#[async_trait::async_trait]
impl DataSource for CmkDataSource {
    fn name(&self) -> &'static str {
        "strongbox_cmk"
    }

    fn schema(&self) -> TfSchema {
        let m = Model::of(&[schemars::schema_for!(api::Key)]);
        TfSchema {
            version: 0,
            description: "Looks up a CMK by id or alias.".into(),
            attrs: vec![
                m.required("key_id").describe("Key id or `alias/NAME`."),
                Attr::computed("id", string()).describe("The key id."),
                m.computed("arn"),
                m.computed("description"),
                m.computed("state"),
                Attr::computed("enabled", Type::Bool)
                    .describe("Whether the key state is `Enabled`."),
                m.computed("primary_key_version"),
                m.computed("automatic_rotation"),
                m.computed("creation_date"),
                m.computed("tags"),
            ],
        }
    }

    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags> {
        let c = ctx.client()?;
        let key_ref = config.str_attr("key_id").unwrap_or_default();
        let k = c
            .describe_key(key_ref)
            .await
            .map_err(|e| vec![api_diag("Reading the key failed", Some("key_id"), &e)])?;
        let mut v = null_object(&self.schema());
        v.set("key_id", Value::string(key_ref));
        v.set("id", Value::string(&k.key_id));
        v.set("arn", Value::string(&k.arn));
        v.set("description", Value::string(&k.description));
        v.set("state", Value::string(format!("{:?}", k.state)));
        v.set("enabled", Value::Bool(k.state == api::KeyState::Enabled));
        v.set(
            "primary_key_version",
            Value::Number(Number::from_u64(u64::from(k.primary_key_version))),
        );
        v.set("automatic_rotation", Value::Bool(k.automatic_rotation));
        v.set("creation_date", Value::string(k.creation_date.to_string()));
        v.set("tags", str_map(&k.tags));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PlanReq;

    fn key(auto: bool, description: &str) -> Value {
        let mut v = null_object(&schema());
        for (a, x) in [
            ("id", "k1"),
            ("arn", "strongbox:kms:key/k1"),
            ("state", "Enabled"),
            ("key_spec", "AES_256"),
            ("rotation_interval", "365d"),
            ("creation_date", "2026-01-01T00:00:00Z"),
            ("description", description),
        ] {
            v.set(a, Value::string(x));
        }
        v.set("enabled", Value::Bool(true));
        v.set("automatic_rotation", Value::Bool(auto));
        v.set(
            "pending_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
        v.set("primary_key_version", Value::Number(Number::from_i64(1)));
        v
    }

    async fn plan(prior: &Value, config: &Value) -> Value {
        CmkResource
            .plan(
                &Ctx::default(),
                PlanReq {
                    prior,
                    proposed: config,
                    config,
                },
            )
            .await
            .unwrap()
            .planned
    }

    /// A key may be rotated between plan and apply (by the server while automatic
    /// rotation is on, or by hand whatever the setting): an update leaves the version
    /// unknown, and an empty plan stays empty.
    #[tokio::test]
    async fn a_keys_version_is_unknown_in_an_update() {
        let prior = key(true, "a");
        assert_eq!(plan(&prior, &prior).await, prior);
        let p = plan(&prior, &key(true, "b")).await;
        assert!(p.attr("primary_key_version").is_unknown());
        let still = key(false, "a");
        assert_eq!(plan(&still, &still).await, still);
        let p = plan(&still, &key(false, "b")).await;
        assert!(p.attr("primary_key_version").is_unknown());
        // Turned on by a value known only at apply: the version may change then too.
        let mut later = key(false, "a");
        later.set("automatic_rotation", Value::unknown());
        let p = plan(&still, &later).await;
        assert!(p.attr("primary_key_version").is_unknown());
    }

    #[test]
    fn a_fractional_deletion_window_is_refused() {
        let mut config = key(false, "a");
        config.set(
            "pending_window_in_days",
            Value::Number(Number::parse("7.5").unwrap()),
        );
        let d = CmkResource.validate(&config, Default::default());
        assert!(
            d.iter()
                .any(|d| d.summary == "Invalid pending_window_in_days"),
            "{d:?}"
        );
    }
}
