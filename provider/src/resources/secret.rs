//! `strongbox_secret`: a secret, its current value and its metadata.

use strongbox_client::{DeleteSecretOptions, ErrorCode};
use strongbox_schemas as api;

use super::{
    changed, default_if_unset, keep_null_if_empty, keep_null_if_empty_map, string, unknown_if_null,
};
use crate::core::{
    Attr, ClientCaps, Ctx, Diag, Diags, Model, ObjExt, PlanReq, PlanResp, Resource, TfSchema,
    api_diag, created_then_failed, null_object, opt_str,
};
use crate::value::{Number, Type, Value};

/// The resource type.
pub struct SecretResource;

const STAGE_CURRENT: &str = "ACSCurrent";
const STAGE_PREVIOUS: &str = "ACSPrevious";
/// `created_by` of versions made by the rotation engine.
const ROTATION_PRINCIPAL: &str = "rotation";
/// Ends an import id that adopts a secret for write-only management: `NAME:write_only`.
const WRITE_ONLY_IMPORT: &str = ":write_only";

fn schema() -> TfSchema {
    static SCHEMA: std::sync::OnceLock<TfSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema).clone()
}

fn build_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(api::CreateSecretRequest),
        schemars::schema_for!(api::Secret),
        schemars::schema_for!(api::SecretVersion),
        schemars::schema_for!(api::DeleteSecretParams),
    ]);
    TfSchema {
        version: 0,
        description: "A secret in Strongbox: its value (the `ACSCurrent` version) and metadata. A value written by the secret's rotation policy is not drift.".into(),
        attrs: vec![
            m.required("name").describe("Secret name (forces replacement). May contain `/`."),
            m.optional("secret_data").sensitive().describe("The value (base64 when `secret_data_type` is `binary`). Stored in state; use `secret_data_wo` to keep it out."),
            Attr::optional("secret_data_wo", string()).sensitive().write_only().describe("Write-only value (Terraform ≥ 1.11): never stored in plan or state. Change `secret_data_wo_version` to write a new value."),
            Attr::optional("secret_data_wo_version", Type::Number).describe("Bump to write `secret_data_wo` again."),
            m.optional_computed("secret_data_type").describe("`text` (default) or `binary`. Changing it writes a new version."),
            m.optional_computed("version_id").describe("Id of the version Terraform writes; generated when unset."),
            m.optional_computed("version_stages").describe("Stages of that version; must include `ACSCurrent` (default `[\"ACSCurrent\"]`)."),
            m.optional("description"),
            m.optional_computed("encryption_key_id").describe("CMK id or `alias/NAME`, kept exactly as written. Unset, a new secret gets the default key (`alias/strongbox/default`); taking it out of the configuration later keeps the key the secret has (write `alias/strongbox/default` to go back to the default key). Changing it is an update in place: the server seals the versions in use (those with a stage) again under the new key, so the old key can then be disabled or deleted."),
            m.optional_computed("secret_type").describe("`Generic` (default), `Rds`, `AccessKey` or `Ssh` (forces replacement; under the same name that needs `force_delete_without_recovery = true` applied first)."),
            m.optional("extended_config").describe("Type-specific settings as a JSON object string; compared by meaning."),
            m.optional("rotation_policy").describe("Name of the rotation policy attached to this secret."),
            m.optional_computed("recovery_window_in_days").describe("Days the secret can be restored after `terraform destroy` (7–30, default 30)."),
            m.optional_computed("force_delete_without_recovery").describe("Delete at once on destroy, with no recovery window (default false)."),
            m.optional("tags"),
            Attr::computed("id", string()).describe("The secret name."),
            m.computed("arn"),
            m.computed("creation_date"),
            m.computed("planned_delete_time"),
            m.computed("last_rotation_date"),
            m.computed("next_rotation_date"),
        ],
    }
}

fn json_equal(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn ts(t: Option<api::Timestamp>) -> Value {
    opt_str(t.map(|t| t.to_string()))
}

fn parse_extended(v: &Value) -> Result<Option<serde_json::Map<String, serde_json::Value>>, Diags> {
    match v.str_attr("extended_config") {
        None => Ok(None),
        Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
            _ => Err(vec![
                Diag::error(
                    "Invalid extended_config",
                    "must be a JSON object, e.g. jsonencode({Host = \"db\"})",
                )
                .at("extended_config"),
            ]),
        },
    }
}

fn data_type(v: &Value) -> api::SecretDataType {
    if v.str_attr("secret_data_type") == Some("binary") {
        api::SecretDataType::Binary
    } else {
        api::SecretDataType::Text
    }
}

/// `secret_data_type` as the state holds it.
fn data_type_value(t: api::SecretDataType) -> Value {
    Value::string(match t {
        api::SecretDataType::Binary => "binary",
        api::SecretDataType::Text => "text",
    })
}

fn secret_type(v: &Value) -> Result<api::SecretType, Diags> {
    match v.str_attr("secret_type").unwrap_or("Generic") {
        "Generic" => Ok(api::SecretType::Generic),
        "Rds" => Ok(api::SecretType::Rds),
        "AccessKey" => Ok(api::SecretType::AccessKey),
        "Ssh" => Ok(api::SecretType::Ssh),
        other => Err(vec![
            Diag::error(
                "Invalid secret_type",
                format!("{other}: expected Generic, Rds, AccessKey or Ssh"),
            )
            .at("secret_type"),
        ]),
    }
}

fn type_name(t: api::SecretType) -> &'static str {
    match t {
        api::SecretType::Generic => "Generic",
        api::SecretType::Rds => "Rds",
        api::SecretType::AccessKey => "AccessKey",
        api::SecretType::Ssh => "Ssh",
    }
}

/// Whether a state is managed write-only: its value is never read into it.
fn write_only_state(state: &Value) -> bool {
    state.attr("secret_data").is_null()
        && (!state.attr("secret_data_wo_version").is_null() || adopted_write_only(state))
}

/// A state from a `NAME:write_only` import: the version it names is the one Terraform
/// adopted, and no `secret_data_wo_version` is recorded yet. The first apply with a
/// write-only configuration records its version and writes nothing (so an import never
/// changes the secret); bumping the version afterwards writes, as usual.
fn adopted_write_only(state: &Value) -> bool {
    state.attr("secret_data").is_null()
        && state.attr("secret_data_wo_version").is_null()
        && state.str_attr("version_id").is_some()
}

/// Whether going from `prior` to `planned` writes the value: a different `secret_data`
/// or `secret_data_type`, or a new `secret_data_wo_version` (except the first one
/// recorded after a write-only import).
fn data_changes(prior: &Value, planned: &Value) -> bool {
    let adopting = adopted_write_only(prior) && planned.attr("secret_data").is_null();
    changed(prior, planned, "secret_data")
        || (changed(prior, planned, "secret_data_wo_version") && !adopting)
        || changed(prior, planned, "secret_data_type")
}

/// The value to write: `secret_data`, or the write-only `secret_data_wo` (config only).
fn data_to_write<'a>(config: &'a Value, planned: &'a Value) -> Option<&'a str> {
    planned
        .str_attr("secret_data")
        .or_else(|| config.str_attr("secret_data_wo"))
}

fn pending_deletion_help(name: &str) -> String {
    format!(
        "Secret {name} is scheduled for deletion (after an earlier destroy or a delete outside Terraform), so its name cannot be used yet. \
         Either restore it (POST /v1/secrets/{name}/restore, then `terraform import`), or purge it at once \
         (DELETE /v1/secrets/{name}?force_delete_without_recovery=true) and apply again. \
         To skip the recovery window on future destroys, set force_delete_without_recovery = true."
    )
}

#[async_trait::async_trait]
impl Resource for SecretResource {
    fn name(&self) -> &'static str {
        "strongbox_secret"
    }

    fn schema(&self) -> TfSchema {
        schema()
    }

    fn validate(&self, config: &Value, caps: ClientCaps) -> Diags {
        let mut d = Vec::new();
        let data = config.attr("secret_data");
        let wo = config.attr("secret_data_wo");
        if !wo.is_null() && !caps.write_only_attributes_allowed {
            d.push(Diag::error(
                "Write-only attributes need Terraform 1.11 or later",
                "This Terraform would store secret_data_wo in plan and state. Use secret_data, or upgrade Terraform.",
            ).at("secret_data_wo"));
        }
        if !data.is_null() && !wo.is_null() {
            d.push(
                Diag::error(
                    "Conflicting values",
                    "set secret_data or secret_data_wo, not both",
                )
                .at("secret_data_wo"),
            );
        }
        if data.is_null() && wo.is_null() {
            d.push(
                Diag::error(
                    "Missing value",
                    "set secret_data (or secret_data_wo on Terraform ≥ 1.11)",
                )
                .at("secret_data"),
            );
        }
        if !wo.is_null() && config.attr("secret_data_wo_version").is_null() {
            d.push(
                Diag::error(
                    "Missing secret_data_wo_version",
                    "write-only values need a version to know when to write them",
                )
                .at("secret_data_wo_version"),
            );
        }
        // The server takes "" as "the default key" and answers with that key's id, which
        // Terraform would call an inconsistent result (and the next update would send "").
        if config.str_attr("encryption_key_id") == Some("") {
            d.push(
                Diag::error(
                    "Invalid encryption_key_id",
                    "give a key id or alias/NAME (alias/strongbox/default for the default key), or leave encryption_key_id out (null)",
                )
                .at("encryption_key_id"),
            );
        }
        // The server takes "" as "no policy" and answers null, which Terraform would call
        // an inconsistent result on every apply.
        if config.str_attr("rotation_policy") == Some("") {
            d.push(
                Diag::error(
                    "Invalid rotation_policy",
                    "give a rotation policy's name, or leave rotation_policy out (null) for none",
                )
                .at("rotation_policy"),
            );
        }
        if let Some(n) = config.str_attr("name")
            && let Err(e) = api::validate_secret_name("name", n)
        {
            d.push(Diag::error("Invalid name", e.to_string()).at("name"));
        }
        if let Some(t) = config.str_attr("secret_data_type")
            && t != "text"
            && t != "binary"
        {
            d.push(
                Diag::error(
                    "Invalid secret_data_type",
                    format!("{t}: expected text or binary"),
                )
                .at("secret_data_type"),
            );
        }
        if let Err(e) = secret_type(config) {
            d.extend(e);
        }
        if let Err(e) = parse_extended(config) {
            d.extend(e);
        }
        let window = config.attr("recovery_window_in_days");
        if window.is_wholly_known()
            && !window.is_null()
            && config.int_attr("recovery_window_in_days").is_none()
        {
            d.push(
                Diag::error(
                    "Invalid recovery_window_in_days",
                    "must be a whole number of days between 7 and 30",
                )
                .at("recovery_window_in_days"),
            );
        }
        if let Value::List(stages) = config.attr("version_stages") {
            let mut seen = std::collections::BTreeSet::new();
            for s in stages.iter().filter_map(Value::as_str) {
                if let Err(e) = api::validate_version_stage("version_stages", s) {
                    d.push(
                        Diag::error("Invalid version_stages", e.to_string()).at("version_stages"),
                    );
                }
                // ACSPrevious and ACSPending are the server's: it moves them as values
                // change (and refuses to take ACSPrevious off), so a plan that lists
                // them could not be kept.
                if s == STAGE_PREVIOUS || s == api::STAGE_PENDING {
                    d.push(
                        Diag::error(
                            "Invalid version_stages",
                            format!(
                                "{s} is moved by the server as the value changes (rotation); list ACSCurrent and labels of your own"
                            ),
                        )
                        .at("version_stages"),
                    );
                }
                // The server keeps a stage once, so a repeat would come back as a
                // shorter list than planned.
                if !seen.insert(s) {
                    d.push(
                        Diag::error(
                            "Invalid version_stages",
                            format!("{s} is listed more than once"),
                        )
                        .at("version_stages"),
                    );
                }
            }
        }
        if let Some(n) = config.int_attr("recovery_window_in_days")
            && !(7..=30).contains(&n)
        {
            d.push(
                Diag::error(
                    "Invalid recovery_window_in_days",
                    "must be between 7 and 30",
                )
                .at("recovery_window_in_days"),
            );
        }
        if let Value::List(stages) = config.attr("version_stages")
            && stages.iter().all(|s| s.is_wholly_known())
            && !stages.iter().any(|s| s.as_str() == Some(STAGE_CURRENT))
        {
            d.push(
                Diag::error(
                    "Invalid version_stages",
                    "must include ACSCurrent: Terraform manages the current value",
                )
                .at("version_stages"),
            );
        }
        d
    }

    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        let (prior, config) = (req.prior, req.config);
        let mut p = req.proposed.clone();
        p.set("secret_data_wo", Value::Null);
        default_if_unset(&mut p, config, "secret_data_type", Value::string("text"));
        default_if_unset(&mut p, config, "secret_type", Value::string("Generic"));
        default_if_unset(
            &mut p,
            config,
            "recovery_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
        default_if_unset(
            &mut p,
            config,
            "force_delete_without_recovery",
            Value::Bool(false),
        );
        default_if_unset(
            &mut p,
            config,
            "version_stages",
            Value::List(vec![Value::string(STAGE_CURRENT)]),
        );
        if prior.is_null() {
            unknown_if_null(
                &mut p,
                &[
                    "id",
                    "arn",
                    "creation_date",
                    "version_id",
                    "encryption_key_id",
                ],
            );
            p.set("planned_delete_time", Value::Null);
            p.set("last_rotation_date", Value::Null);
            p.set(
                "next_rotation_date",
                if config.attr("rotation_policy").is_null() {
                    Value::Null
                } else {
                    Value::unknown()
                },
            );
            return Ok(PlanResp {
                planned: p,
                requires_replace: Vec::new(),
                diags: Vec::new(),
            });
        }
        // extended_config: same meaning as before → keep the prior text (no perpetual diff).
        if let (Some(a), Some(b)) = (
            prior.str_attr("extended_config"),
            config.str_attr("extended_config"),
        ) && json_equal(a, b)
        {
            p.set("extended_config", prior.attr("extended_config").clone());
        }
        let data_changed = data_changes(prior, &p);
        // Whether the data changed is known only when the values are: an unknown value
        // (from another resource) may turn out the same, so a pinned version_id is not
        // refused for it (the server refuses a version_id reused with other data).
        let data_known = ["secret_data", "secret_data_wo_version", "secret_data_type"]
            .iter()
            .all(|a| !p.attr(a).is_unknown());
        if data_changed {
            if config.attr("version_id").is_null() {
                p.set("version_id", Value::unknown());
            } else if data_known && !changed(prior, config, "version_id") {
                return Err(vec![Diag::error(
                    "version_id must change with the value",
                    "The value changed but version_id did not: a version's data never changes. Set a new version_id, or remove version_id to have one generated.",
                )
                .at("version_id")]);
            }
        }
        if changed(prior, &p, "rotation_policy") {
            p.set(
                "next_rotation_date",
                if p.attr("rotation_policy").is_null() {
                    Value::Null
                } else {
                    Value::unknown()
                },
            );
        }
        let mut requires_replace = Vec::new();
        for a in ["name", "secret_type"] {
            if changed(prior, &p, a) {
                requires_replace.push(a);
            }
        }
        // Also while secret_type is unknown: Terraform then plans the replacement anyway.
        if requires_replace == ["secret_type"]
            && !prior
                .bool_attr("force_delete_without_recovery")
                .unwrap_or(false)
        {
            // Destroy-then-create under the same name: the recovery window would keep the
            // old secret scheduled for deletion and refuse the new one, leaving neither.
            return Err(vec![Diag::error(
                "secret_type cannot change under a recovery window",
                "Changing secret_type replaces the secret under the same name. With a recovery window the old secret stays scheduled for deletion and its name cannot be used again, so the new one could not be created. \
                 Set force_delete_without_recovery = true and apply that first, then change secret_type; or give the secret a new name.",
            )
            .at("secret_type")]);
        }
        if p != *prior
            && (!p.attr("rotation_policy").is_null() || !prior.attr("rotation_policy").is_null())
        {
            // The server computes these from the policy (which may change in the same
            // run) and from rotations that may land between plan and apply.
            for a in ["next_rotation_date", "last_rotation_date"] {
                if !p.attr(a).is_unknown() {
                    p.set(a, Value::unknown());
                }
            }
        }
        if !requires_replace.is_empty() {
            // The new object gets new computed values.
            for a in [
                "id",
                "arn",
                "creation_date",
                "version_id",
                "next_rotation_date",
                "last_rotation_date",
            ] {
                if config.attr(a).is_null() {
                    p.set(a, Value::unknown());
                }
            }
        }
        Ok(PlanResp {
            planned: p,
            requires_replace,
            diags: Vec::new(),
        })
    }

    async fn apply(
        &self,
        ctx: &Ctx,
        prior: &Value,
        planned: &Value,
        config: &Value,
    ) -> Result<Value, Diags> {
        let c = ctx.client()?;
        if planned.is_null() {
            let name = prior.str_attr("name").unwrap_or_default();
            let force = prior
                .bool_attr("force_delete_without_recovery")
                .unwrap_or(false);
            let days = if force {
                None
            } else {
                prior
                    .int_attr("recovery_window_in_days")
                    .and_then(|d| u32::try_from(d).ok())
            };
            if prior.str_attr("rotation_policy").is_some() && !force {
                // A secret waiting out its recovery window must not keep its rotation
                // policy from being destroyed in the same run: detach it first.
                let detach = api::UpdateSecretRequest {
                    rotation_policy: Some(String::new()),
                    ..Default::default()
                };
                match c.update_secret(name, &detach).await {
                    Ok(_) => {}
                    // Gone, or deleted outside Terraform and waiting out its window
                    // (which a refresh would also have read as gone).
                    Err(e)
                        if matches!(
                            e.code(),
                            Some(ErrorCode::SecretNotFound | ErrorCode::SecretPendingDeletion)
                        ) =>
                    {
                        return Ok(Value::Null);
                    }
                    Err(e) => {
                        return Err(vec![api_diag(
                            "Detaching the rotation policy failed",
                            None,
                            &e,
                        )]);
                    }
                }
            }
            match c
                .delete_secret(
                    name,
                    DeleteSecretOptions {
                        recovery_window_in_days: days,
                        force_delete_without_recovery: force,
                    },
                )
                .await
            {
                Ok(_) => return Ok(Value::Null),
                Err(e) if e.code() == Some(ErrorCode::SecretNotFound) => return Ok(Value::Null),
                // Already waiting out another recovery window (deleted outside
                // Terraform, which a refresh reads as gone): as good as done.
                Err(e)
                    if e.code() == Some(ErrorCode::InvalidState)
                        && c.describe_secret(name)
                            .await
                            .is_ok_and(|s| s.planned_delete_time.is_some()) =>
                {
                    return Ok(Value::Null);
                }
                Err(e) => return Err(vec![api_diag("Deleting the secret failed", None, &e)]),
            }
        }
        let name = planned.str_attr("name").unwrap_or_default().to_string();
        let data = data_to_write(config, planned).map(str::to_string);
        let version_id = planned.str_attr("version_id").map(str::to_string);
        let stages: Vec<String> = match planned.attr("version_stages") {
            Value::List(l) => l
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec![STAGE_CURRENT.into()],
        };
        if prior.is_null() {
            let req = api::CreateSecretRequest {
                name: name.clone(),
                secret_data: data.clone().unwrap_or_default(),
                secret_data_type: data_type(planned),
                version_id: version_id.clone(),
                encryption_key_id: planned.str_attr("encryption_key_id").map(str::to_string),
                description: planned.str_attr("description").map(str::to_string),
                tags: planned.map_attr("tags"),
                secret_type: secret_type(planned)?,
                extended_config: parse_extended(planned)?,
                rotation_policy: planned.str_attr("rotation_policy").map(str::to_string),
            };
            let created = c.create_secret(&req).await.map_err(|e| {
                if e.code() == Some(ErrorCode::SecretPendingDeletion) {
                    vec![
                        Diag::error(
                            "SecretPendingDeletion: the name is pending deletion",
                            pending_deletion_help(&name),
                        )
                        .at("name"),
                    ]
                } else {
                    vec![api_diag("Creating the secret failed", Some("name"), &e)]
                }
            })?;
            let settled = async {
                set_stages(
                    &c,
                    &name,
                    &created.version_id,
                    &[STAGE_CURRENT.to_string()],
                    &stages,
                )
                .await?;
                read_written(ctx, planned, &name).await
            }
            .await;
            return match settled {
                Ok(state) => Ok(state),
                // Created, then a later step failed: Terraform keeps the secret, tainted.
                Err(d) => {
                    let read_back = read_state(ctx, planned).await;
                    let mut fallback = planned.clone();
                    fallback.set("version_id", Value::string(&created.version_id));
                    let mut d = created_then_failed(d, read_back, &fallback, &name);
                    // A secret's name is its id: the replacement of the tainted secret
                    // purges it at once, or the name would stay pending deletion for
                    // the recovery window and the new secret could not be created.
                    if let Some(state) = d.first_mut().and_then(|d| d.partial_state.as_deref_mut())
                    {
                        state.set("force_delete_without_recovery", Value::Bool(true));
                    }
                    d.push(Diag::warning(
                        "The secret was created but not fully set up",
                        format!("{name} stays in the state, tainted, with force_delete_without_recovery = true: the next apply replaces it and purges this one at once, so that its name is free for the new one"),
                    ));
                    Err(d)
                }
            };
        } else {
            let patch = api::UpdateSecretRequest {
                description: changed(prior, planned, "description").then(|| {
                    planned
                        .str_attr("description")
                        .unwrap_or_default()
                        .to_string()
                }),
                tags: changed(prior, planned, "tags")
                    .then(|| planned.map_attr("tags").unwrap_or_default()),
                encryption_key_id: changed(prior, planned, "encryption_key_id")
                    .then(|| planned.str_attr("encryption_key_id").map(str::to_string))
                    .flatten(),
                rotation_policy: changed(prior, planned, "rotation_policy").then(|| {
                    planned
                        .str_attr("rotation_policy")
                        .unwrap_or_default()
                        .to_string()
                }),
                extended_config: if changed(prior, planned, "extended_config") {
                    Some(parse_extended(planned)?.unwrap_or_default())
                } else {
                    None
                },
            };
            if patch.description.is_some()
                || patch.encryption_key_id.is_some()
                || patch.tags.is_some()
                || patch.rotation_policy.is_some()
                || patch.extended_config.is_some()
            {
                c.update_secret(&name, &patch)
                    .await
                    .map_err(|e| vec![api_diag("Updating the secret failed", None, &e)])?;
            }
            let value_changed =
                data_changes(prior, planned) || changed(prior, planned, "version_id");
            if value_changed && let Some(data) = data {
                let r = api::PutSecretValueRequest {
                    secret_data: data,
                    secret_data_type: data_type(planned),
                    version_id: version_id.clone(),
                    version_stages: Some(stages.clone()),
                };
                let put = c.put_secret_value(&name, &r).await.map_err(|e| {
                    vec![api_diag(
                        "Writing the value failed",
                        Some("secret_data"),
                        &e,
                    )]
                })?;
                // A pinned version that already existed (drift back to it) gets exactly
                // the planned stages again.
                set_stages(&c, &name, &put.version_id, &put.version_stages, &stages).await?;
            } else if changed(prior, planned, "version_stages") {
                // Only the labels changed. They go on the version Terraform wrote, unless
                // the rotation engine made a newer current version: then on that one, so
                // that the rotation stands; the value is not written again.
                let s = c
                    .describe_secret(&name)
                    .await
                    .map_err(|e| vec![api_diag("Reading the secret failed", None, &e)])?;
                let versions = c
                    .list_secret_versions(&name)
                    .await
                    .map_err(|e| vec![api_diag("Reading versions failed", None, &e)])?
                    .versions;
                let rotated = rotated_since(&versions, &s.version_id, version_id.as_deref());
                let target = match version_id.as_deref() {
                    Some(id) if !rotated => id,
                    _ => s.version_id.as_str(),
                };
                match versions.iter().find(|v| v.version_id == target) {
                    Some(v) => set_stages(&c, &name, target, &v.version_stages, &stages).await?,
                    // Terraform's version was pruned (many writes outside Terraform since):
                    // it is written again, when the configuration has the value.
                    None => {
                        let data = data.ok_or_else(|| {
                            vec![Diag::error(
                                "The version Terraform wrote is gone",
                                format!("{name}: version {target} no longer exists and the configuration has no value to write again"),
                            )]
                        })?;
                        let r = api::PutSecretValueRequest {
                            secret_data: data,
                            secret_data_type: data_type(planned),
                            version_id: Some(target.to_string()),
                            version_stages: Some(stages.clone()),
                        };
                        c.put_secret_value(&name, &r).await.map_err(|e| {
                            vec![api_diag(
                                "Writing the value failed",
                                Some("secret_data"),
                                &e,
                            )]
                        })?;
                    }
                }
            }
            release_labels(&c, &name, prior, &stages).await?;
        }
        read_written(ctx, planned, &name).await
    }

    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        read_state(ctx, state).await
    }

    async fn import(&self, ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        let (name, write_only) = match id.strip_suffix(WRITE_ONLY_IMPORT) {
            Some(name) => (name, true),
            None => (id, false),
        };
        let mut v = null_object(&schema());
        v.set("name", Value::string(name));
        v.set("id", Value::string(name));
        if write_only {
            // The current version, adopted: the read that follows then takes the
            // write-only path and never fetches the value into the state.
            match ctx.client()?.describe_secret(name).await {
                Ok(s) => v.set("version_id", Value::string(&s.version_id)),
                // The read that follows finds nothing, and Terraform says so.
                Err(e) if e.code() == Some(ErrorCode::SecretNotFound) => {}
                Err(e) => return Err(vec![api_diag("Reading the secret failed", None, &e)]),
            }
        }
        v.set(
            "recovery_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
        v.set("force_delete_without_recovery", Value::Bool(false));
        Ok(v)
    }
}

/// The secret read back after a write.
async fn read_written(ctx: &Ctx, planned: &Value, name: &str) -> Result<Value, Diags> {
    let state = read_state(ctx, planned).await?;
    if state.is_null() {
        return Err(vec![Diag::error(
            "Secret vanished",
            format!("{name} was not found right after it was written"),
        )]);
    }
    Ok(state)
}

/// Puts exactly the `want` labels on `version_id`, which now has `have`: missing ones are
/// moved to it, extra custom ones removed (`ACSCurrent` and `ACSPrevious` can only move,
/// so they are never removed).
async fn set_stages(
    c: &strongbox_client::Client,
    name: &str,
    version_id: &str,
    have: &[String],
    want: &[String],
) -> Result<(), Diags> {
    let moves = want
        .iter()
        .filter(|s| !have.contains(s))
        .map(|s| (s, Some(version_id.to_string()), None));
    let removals = have
        .iter()
        .filter(|s| !want.contains(s) && *s != STAGE_CURRENT && *s != STAGE_PREVIOUS)
        .map(|s| (s, None, Some(version_id.to_string())));
    for (stage, move_to_version, remove_from_version) in moves.chain(removals) {
        let r = api::UpdateSecretStageRequest {
            version_stage: stage.clone(),
            move_to_version,
            remove_from_version,
        };
        c.update_secret_stage(name, &r).await.map_err(|e| {
            vec![api_diag(
                "Setting version_stages failed",
                Some("version_stages"),
                &e,
            )]
        })?;
    }
    Ok(())
}

/// The server's stages, in the order the prior state listed them when they are the same set.
fn stages_in_prior_order(prior: &Value, server: &[String]) -> Value {
    if let Value::List(p) = prior.attr("version_stages") {
        let mut a: Vec<&str> = p.iter().filter_map(Value::as_str).collect();
        let mut b: Vec<&str> = server.iter().map(String::as_str).collect();
        a.sort_unstable();
        b.sort_unstable();
        if a == b && a.len() == p.len() {
            return prior.attr("version_stages").clone();
        }
    }
    Value::List(server.iter().map(Value::string).collect())
}

/// The labels of a rotated secret as the state records them, from the labels the prior
/// state `had` and the version Terraform wrote (`written`). The rotation engine moves
/// `ACSCurrent`, `ACSPrevious` and `ACSPending`, which the state keeps as Terraform wrote
/// them. Custom labels stay where they were put: on the version Terraform wrote, or on a
/// version the engine made (a label change after a rotation labels the rotated version).
/// A custom label the state had that none of those holds any more was changed by someone
/// else, and so was one that the written version, or a version the engine made after it,
/// holds and the state lacks: the plan shows both. (Labels on the engine's versions from
/// before Terraform wrote its version are not Terraform's.)
fn rotated_stages(had: &[Value], written: Option<&str>, versions: &[api::SecretVersion]) -> Value {
    // Newest first: the written version, and those before it in the list, are newer.
    // Once it was pruned (many rotations later) nothing tells which versions came after
    // it: none counts, so that a label someone put on an older rotated version is never
    // planned as Terraform's (an apply would take it off); a label added since is then
    // not shown as drift either.
    let at = versions
        .iter()
        .position(|v| Some(v.version_id.as_str()) == written);
    let newer = at.map_or(0, |i| i + 1);
    fn custom(v: &api::SecretVersion) -> impl Iterator<Item = &str> {
        v.version_stages
            .iter()
            .map(String::as_str)
            .filter(|s| !is_engine_stage(s))
    }
    let ours = |v: &&api::SecretVersion| {
        v.created_by == ROTATION_PRINCIPAL || Some(v.version_id.as_str()) == written
    };
    // A label the state had stays while the written version or one rotated after it
    // holds it (any rotated version, once the written one is gone).
    let kept: Vec<&str> = versions[..at.map_or(versions.len(), |i| i + 1)]
        .iter()
        .filter(ours)
        .flat_map(custom)
        .collect();
    let mut stages: Vec<Value> = had
        .iter()
        .filter(|s| {
            s.as_str()
                .is_some_and(|s| is_engine_stage(s) || kept.contains(&s))
        })
        .cloned()
        .collect();
    for s in versions[..newer].iter().filter(ours).flat_map(custom) {
        if !had.iter().any(|h| h.as_str() == Some(s)) {
            stages.push(Value::string(s));
        }
    }
    Value::List(stages)
}

/// Where the rotations that made a version started.
enum Base<'a> {
    /// The version a principal wrote that the chain of `rotated_from` leads to.
    Found(&'a api::SecretVersion),
    /// A version on the chain is no longer kept.
    Gone,
    /// A rotated version on the chain names no `rotated_from` (an older server).
    Unrecorded,
}

/// The version the rotations that made `current` started from (`current` itself when a
/// principal wrote it).
fn rotation_base<'a>(versions: &'a [api::SecretVersion], current: &str) -> Base<'a> {
    let find = |id: &str| versions.iter().find(|v| v.version_id == id);
    let Some(mut at) = find(current) else {
        return Base::Gone;
    };
    // Each step goes to an older version: at most one step a version.
    for _ in 0..=versions.len() {
        if at.created_by != ROTATION_PRINCIPAL {
            return Base::Found(at);
        }
        let Some(from) = at.rotated_from.as_deref() else {
            return Base::Unrecorded;
        };
        match find(from) {
            Some(v) => at = v,
            None => return Base::Gone,
        }
    }
    Base::Gone
}

/// Whether `current` was made by the rotation engine, in rotations that go back to the
/// version Terraform wrote (`written`): each rotated version names the one it replaced
/// (`rotated_from`), and the chain reaches `written` through rotated versions only. One
/// that reaches a version someone else wrote is that writer's change, which a rotation
/// then replaced: drift. Where the chain cannot be followed (a version on it pruned, or
/// made current by a server that did not record `rotated_from`), the rotation is taken
/// as not drift.
fn rotated_since(versions: &[api::SecretVersion], current: &str, written: Option<&str>) -> bool {
    let find = |id: &str| versions.iter().find(|v| v.version_id == id);
    let mut at = match find(current) {
        Some(v) if v.created_by == ROTATION_PRINCIPAL => v,
        _ => return false,
    };
    // Each step goes to an older version: at most one step a version.
    for _ in 0..versions.len() {
        let Some(from) = at.rotated_from.as_deref() else {
            return true;
        };
        if Some(from) == written {
            return true;
        }
        match find(from) {
            Some(v) if v.created_by == ROTATION_PRINCIPAL => at = v,
            Some(_) => return false,
            None => return true,
        }
    }
    true
}

/// A stage that rotation moves.
fn is_engine_stage(s: &str) -> bool {
    matches!(s, STAGE_CURRENT | STAGE_PREVIOUS | api::STAGE_PENDING)
}

/// Custom labels that the prior state had and the plan drops are taken off whichever
/// version holds them now (after a new value they are left on the old version, which
/// Terraform no longer tracks).
async fn release_labels(
    c: &strongbox_client::Client,
    name: &str,
    prior: &Value,
    want: &[String],
) -> Result<(), Diags> {
    let Value::List(had) = prior.attr("version_stages") else {
        return Ok(());
    };
    let released: Vec<&str> = had
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| *s != STAGE_CURRENT && *s != STAGE_PREVIOUS && !want.iter().any(|w| w == s))
        .collect();
    if released.is_empty() {
        return Ok(());
    }
    let versions = c
        .list_secret_versions(name)
        .await
        .map_err(|e| vec![api_diag("Reading versions failed", None, &e)])?
        .versions;
    for label in released {
        for v in versions
            .iter()
            .filter(|v| v.version_stages.iter().any(|s| s == label))
        {
            let r = api::UpdateSecretStageRequest {
                version_stage: label.to_string(),
                move_to_version: None,
                remove_from_version: Some(v.version_id.clone()),
            };
            c.update_secret_stage(name, &r).await.map_err(|e| {
                vec![api_diag(
                    "Removing a label failed",
                    Some("version_stages"),
                    &e,
                )]
            })?;
        }
    }
    Ok(())
}

/// `state` with the version Terraform knew (id, stages, value, type) taken from `prior`.
fn keep_prior_value(mut state: Value, prior: &Value) -> Value {
    for a in [
        "version_id",
        "version_stages",
        "secret_data",
        "secret_data_type",
    ] {
        state.set(a, prior.attr(a).clone());
    }
    state
}

/// Reads the server into a state object, keeping what only Terraform knows from `prior`.
async fn read_state(ctx: &Ctx, prior: &Value) -> Result<Value, Diags> {
    let c = ctx.client()?;
    let name = prior
        .str_attr("name")
        .or_else(|| prior.str_attr("id"))
        .unwrap_or_default()
        .to_string();
    let s = match c.describe_secret(&name).await {
        Ok(s) => s,
        Err(e) if e.code() == Some(ErrorCode::SecretNotFound) => return Ok(Value::Null),
        Err(e) => return Err(vec![api_diag("Reading the secret failed", None, &e)]),
    };
    if s.planned_delete_time.is_some() {
        // Deleted outside Terraform (or by an earlier destroy): gone as far as Terraform goes.
        return Ok(Value::Null);
    }
    let mut v = null_object(&schema());
    v.set("name", Value::string(&s.name));
    v.set("id", Value::string(&s.name));
    v.set("arn", Value::string(&s.arn));
    v.set("creation_date", Value::string(s.creation_date.to_string()));
    v.set("planned_delete_time", ts(s.planned_delete_time));
    v.set("last_rotation_date", ts(s.last_rotation_date));
    v.set("next_rotation_date", ts(s.next_rotation_date));
    v.set(
        "description",
        keep_null_if_empty(prior, "description", &s.description),
    );
    v.set("tags", keep_null_if_empty_map(prior, "tags", &s.tags));
    v.set("encryption_key_id", Value::string(&s.encryption_key_id));
    v.set("secret_type", Value::string(type_name(s.secret_type)));
    v.set("rotation_policy", opt_str(s.rotation_policy.clone()));
    v.set(
        "extended_config",
        match (&s.extended_config, prior.str_attr("extended_config")) {
            (None, _) => Value::Null,
            // Removing extended_config stores an empty object: null as before.
            (Some(m), None) if m.is_empty() => Value::Null,
            (Some(m), Some(p))
                if serde_json::from_str::<serde_json::Value>(p).ok()
                    == Some(serde_json::Value::Object(m.clone())) =>
            {
                Value::string(p)
            }
            (Some(m), _) => Value::string(serde_json::Value::Object(m.clone()).to_string()),
        },
    );
    for a in [
        "recovery_window_in_days",
        "force_delete_without_recovery",
        "secret_data_wo_version",
    ] {
        v.set(a, prior.attr(a).clone());
    }
    if v.attr("recovery_window_in_days").is_null() {
        v.set(
            "recovery_window_in_days",
            Value::Number(Number::from_i64(30)),
        );
    }
    if v.attr("force_delete_without_recovery").is_null() {
        v.set("force_delete_without_recovery", Value::Bool(false));
    }
    v.set("version_id", Value::string(&s.version_id));
    let versions = c
        .list_secret_versions(&name)
        .await
        .map_err(|e| vec![api_diag("Reading versions failed", None, &e)])?;
    let current = versions
        .versions
        .iter()
        .find(|x| x.version_id == s.version_id);
    // Rotation is not drift: when the current version was made by rotations of the
    // version Terraform wrote, the state keeps that version (changing the configuration
    // still writes a new version; a change by anyone else still shows, also when a
    // rotation replaced it since).
    let rotated = rotated_since(
        &versions.versions,
        &s.version_id,
        prior.str_attr("version_id"),
    ) && prior.str_attr("version_id").is_some()
        && !prior.attr("version_stages").is_null();
    if rotated {
        let had = match prior.attr("version_stages") {
            Value::List(had) => had.as_slice(),
            _ => &[],
        };
        let stages = rotated_stages(had, prior.str_attr("version_id"), &versions.versions);
        let mut v = keep_prior_value(v, prior);
        v.set("version_stages", stages);
        return Ok(v);
    }
    // Imported (Terraform knows no version of it yet) after a rotation: the state takes
    // the last version a principal wrote, current as when it was written, as if
    // Terraform had written it. The configured value then matches it, and no apply writes
    // it back over the rotated one (a credential the rotation changed would stop working).
    let rotated_before_import = prior.str_attr("version_id").is_none()
        && !prior.attr("version_id").is_unknown()
        && current.is_some_and(|cur| cur.created_by == ROTATION_PRINCIPAL);
    if rotated_before_import {
        // Without that version (pruned after many rotations) or its value (any error:
        // its key disabled, a timeout), the state could only take the rotated value, and
        // the configured one would be planned as a change written over the credential
        // the rotation made: the import fails instead, saying what to do.
        // The version the current value's rotations started from: the chain of
        // `rotated_from`, not the newest version a principal wrote (one put since with
        // a label of its own, never current, is not what the rotations replaced). A server
        // that recorded no `rotated_from` leaves only the newest one to go by.
        let written = match rotation_base(&versions.versions, &s.version_id) {
            Base::Found(v) => Some(v),
            Base::Unrecorded => versions
                .versions
                .iter()
                .find(|x| x.created_by != ROTATION_PRINCIPAL),
            Base::Gone => None,
        };
        let Some(written) = written else {
            return Err(vec![Diag::error(
                "Cannot import: the value its rotations started from is gone",
                format!(
                    "the version of {name} that its rotations started from is no longer kept \
                     (pruned after many rotations), so the value \
                     Terraform would manage is gone, and an apply would write the configured value \
                     over the rotated one. With Terraform 1.11 or later, import it as \
                     `{name}{WRITE_ONLY_IMPORT}` and manage its value with secret_data_wo, which \
                     leaves the current value alone; with older Terraform (no write-only \
                     attributes), leave its value to the rotation: keep it out of the \
                     configuration and read it with the strongbox_secret data source"
                ),
            )]);
        };
        let val = c
            .get_secret_value(&name, Some(&written.version_id), None)
            .await
            .map_err(|e| {
                vec![api_diag(
                    "Reading the last version a principal wrote failed (the import needs it, so that the rotated value is not planned as drift)",
                    None,
                    &e,
                )]
            })?;
        v.set("version_id", Value::string(&written.version_id));
        v.set("secret_data", Value::string(&val.secret_data));
        v.set("secret_data_type", data_type_value(val.secret_data_type));
        // Its labels as the next refresh reads them.
        v.set(
            "version_stages",
            rotated_stages(
                &[Value::string(STAGE_CURRENT)],
                Some(&written.version_id),
                &versions.versions,
            ),
        );
        return Ok(v);
    }
    if write_only_state(prior) {
        // Write-only mode never fetches the value. The state follows the version Terraform
        // wrote: when another became current (not by rotation, handled above), that
        // version's stages no longer include ACSCurrent, and the plan shows it.
        let mine = match prior.str_attr("version_id") {
            Some(id) => versions.versions.iter().find(|x| x.version_id == id),
            None => current,
        };
        match (mine, prior.str_attr("version_id")) {
            (Some(ver), _) => {
                v.set("version_id", Value::string(&ver.version_id));
                v.set(
                    "version_stages",
                    stages_in_prior_order(prior, &ver.version_stages),
                );
                v.set("secret_data_type", data_type_value(ver.secret_data_type));
            }
            // Pruned: no stages at all.
            (None, Some(id)) => {
                v.set("version_id", Value::string(id));
                v.set("version_stages", Value::List(Vec::new()));
                v.set("secret_data_type", prior.attr("secret_data_type").clone());
            }
            (None, None) => {}
        }
    } else {
        let val = match c.get_secret_value(&name, None, None).await {
            Ok(v) => v,
            Err(e) if e.code() == Some(ErrorCode::SecretNotFound) => return Ok(Value::Null),
            Err(e)
                if matches!(
                    e.code(),
                    Some(
                        ErrorCode::KeyDisabled
                            | ErrorCode::KeyPendingDeletion
                            | ErrorCode::KeyDeleted
                    )
                ) =>
            {
                // The CMK cannot open the value (disabled, or its deletion under way):
                // the metadata is refreshed and the value is what Terraform last knew, so
                // that the plan can still show — and apply repair — the key's state.
                return Ok(keep_prior_value(v, prior));
            }
            Err(e) => {
                return Err(vec![api_diag(
                    "Reading the value failed",
                    Some("secret_data"),
                    &e,
                )]);
            }
        };
        v.set("secret_data", Value::string(&val.secret_data));
        v.set(
            "version_stages",
            stages_in_prior_order(prior, &val.version_stages),
        );
        v.set("secret_data_type", data_type_value(val.secret_data_type));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, stages: &[&str], by: &str) -> api::SecretVersion {
        api::SecretVersion {
            version_id: id.into(),
            version_stages: stages.iter().map(|s| s.to_string()).collect(),
            creation_date: api::Timestamp::from_unix(0),
            created_by: by.into(),
            secret_data_type: api::SecretDataType::Text,
            key_id: None,
            rotated_from: None,
        }
    }

    fn rotated(id: &str, from: Option<&str>) -> api::SecretVersion {
        api::SecretVersion {
            rotated_from: from.map(str::to_string),
            ..version(id, &[], ROTATION_PRINCIPAL)
        }
    }

    /// A rotation is not drift when its chain of replaced versions goes back to the
    /// version Terraform wrote through rotated versions only; one that replaced another
    /// writer's version is. A chain that cannot be followed counts as rotation.
    #[test]
    fn a_rotation_counts_as_such_only_back_to_the_written_version() {
        let chain = [
            rotated("r2", Some("r1")),
            rotated("r1", Some("w")),
            version("w", &[], "principal/root"),
        ];
        assert!(rotated_since(&chain, "r2", Some("w")));
        assert!(!rotated_since(&chain, "w", Some("w")), "Terraform's own");
        let over_another = [
            rotated("r2", Some("r1")),
            rotated("r1", Some("b")),
            version("b", &[], "principal/other"),
            version("w", &[], "principal/root"),
        ];
        assert!(!rotated_since(&over_another, "r2", Some("w")));
        assert!(!rotated_since(&over_another, "b", Some("w")));
        // Pruned links and versions from before rotated_from was recorded.
        assert!(rotated_since(&[rotated("r9", Some("r8"))], "r9", Some("w")));
        assert!(rotated_since(&[rotated("r9", None)], "r9", Some("w")));
    }

    /// A label the state had that only a rotated version older than the written one
    /// holds was moved there by someone else: the state drops it.
    #[test]
    fn a_label_moved_to_a_rotated_version_before_the_written_one_is_drift() {
        let had = [Value::string(STAGE_CURRENT), Value::string("canary")];
        let versions = [
            version("r3", &[STAGE_CURRENT], ROTATION_PRINCIPAL),
            version("r2", &[STAGE_PREVIOUS], ROTATION_PRINCIPAL),
            version("w", &[], "principal/root"),
            version("r1", &["canary"], ROTATION_PRINCIPAL),
        ];
        assert_eq!(
            rotated_stages(&had, Some("w"), &versions),
            Value::List(vec![Value::string(STAGE_CURRENT)])
        );
        let on_rotated = [
            version("r3", &[STAGE_CURRENT, "canary"], ROTATION_PRINCIPAL),
            version("w", &[], "principal/root"),
        ];
        assert_eq!(
            rotated_stages(&had, Some("w"), &on_rotated),
            Value::List(had.to_vec())
        );
    }

    /// A label on a rotated version is Terraform's only when that version came after the
    /// one Terraform wrote; once that one was pruned, none is.
    #[test]
    fn labels_on_rotated_versions_count_only_after_the_written_one() {
        let had = [Value::string(STAGE_CURRENT)];
        let with_written = [
            version("r3", &[STAGE_CURRENT, "new"], ROTATION_PRINCIPAL),
            version("r2", &[STAGE_PREVIOUS], ROTATION_PRINCIPAL),
            version("w", &[], "principal/root"),
            version("r1", &["canary"], ROTATION_PRINCIPAL),
        ];
        assert_eq!(
            rotated_stages(&had, Some("w"), &with_written),
            Value::List(vec![Value::string(STAGE_CURRENT), Value::string("new")])
        );
        let pruned = [
            version("r13", &[STAGE_CURRENT], ROTATION_PRINCIPAL),
            version("r12", &[STAGE_PREVIOUS], ROTATION_PRINCIPAL),
            version("r1", &["canary"], ROTATION_PRINCIPAL),
        ];
        assert_eq!(
            rotated_stages(&had, Some("w"), &pruned),
            Value::List(vec![Value::string(STAGE_CURRENT)])
        );
    }
}
