//! `strongbox_cmk_alias`: a name for a CMK, usable wherever a key id is.

use strongbox_client::ErrorCode;

use super::{changed, string, unknown_if_null};
use crate::core::{
    Attr, ClientCaps, Ctx, Diag, Diags, Model, ObjExt, PlanReq, PlanResp, Resource, TfSchema,
    api_diag, null_object, read_back,
};
use crate::value::Value;

/// The resource type.
pub struct AliasResource;

/// Aliases under `alias/strongbox/` are the server's: it refuses every change and
/// deletion of them, so they can be neither created nor imported here.
fn reserved(name: &str) -> Option<Diag> {
    name.starts_with(strongbox_schemas::RESERVED_ALIAS_PREFIX)
        .then(|| {
            Diag::error(
                "Reserved alias",
                format!(
                    "{name}: aliases under {} are the server's ({} names the key of the secrets that name none) and cannot be managed with Terraform",
                    strongbox_schemas::RESERVED_ALIAS_PREFIX,
                    strongbox_schemas::DEFAULT_KEY_ALIAS
                ),
            )
        })
}

fn schema() -> TfSchema {
    static SCHEMA: std::sync::OnceLock<TfSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema).clone()
}

fn build_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(strongbox_schemas::Alias),
        schemars::schema_for!(strongbox_schemas::PutAliasRequest),
    ]);
    TfSchema {
        version: 0,
        description: "An alias (`alias/NAME`) pointing at a CMK.".into(),
        attrs: vec![
            Attr::required("name", string()).describe("`alias/NAME` (forces replacement)."),
            m.required("key_id")
                .describe("The key it points to (changes in place)."),
            Attr::computed("id", string()).describe("The alias name."),
            m.computed("arn"),
        ],
    }
}

async fn read_alias(ctx: &Ctx, name: &str) -> Result<Value, Diags> {
    let c = ctx.client()?;
    match c.get_alias(name).await {
        Ok(a) => {
            let mut v = null_object(&schema());
            v.set("name", Value::string(&a.alias_name));
            v.set("id", Value::string(&a.alias_name));
            v.set("key_id", Value::string(&a.key_id));
            v.set("arn", Value::string(&a.arn));
            Ok(v)
        }
        Err(e) if e.code() == Some(ErrorCode::AliasNotFound) => Ok(Value::Null),
        Err(e) => Err(vec![api_diag("Reading the alias failed", None, &e)]),
    }
}

#[async_trait::async_trait]
impl Resource for AliasResource {
    fn name(&self) -> &'static str {
        "strongbox_cmk_alias"
    }

    fn schema(&self) -> TfSchema {
        schema()
    }

    fn validate(&self, config: &Value, _: ClientCaps) -> Diags {
        let Some(name) = config.str_attr("name") else {
            return Vec::new();
        };
        match strongbox_schemas::validate_alias_name("name", name) {
            Err(e) => vec![Diag::error("Invalid alias name", e.to_string()).at("name")],
            Ok(()) => reserved(name)
                .map(|d| vec![d.at("name")])
                .unwrap_or_default(),
        }
    }

    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        let mut p = req.proposed.clone();
        if req.prior.is_null() {
            unknown_if_null(&mut p, &["id", "arn"]);
            return Ok(PlanResp {
                planned: p,
                requires_replace: Vec::new(),
                diags: Vec::new(),
            });
        }
        let requires_replace = if changed(req.prior, &p, "name") {
            vec!["name"]
        } else {
            Vec::new()
        };
        if !requires_replace.is_empty() {
            p.set("id", Value::unknown());
            p.set("arn", Value::unknown());
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
        _config: &Value,
    ) -> Result<Value, Diags> {
        let c = ctx.client()?;
        if planned.is_null() {
            return match c
                .delete_alias(prior.str_attr("name").unwrap_or_default())
                .await
            {
                Ok(()) => Ok(Value::Null),
                Err(e) if e.code() == Some(ErrorCode::AliasNotFound) => Ok(Value::Null),
                Err(e) => Err(vec![api_diag("Deleting the alias failed", None, &e)]),
            };
        }
        let name = planned.str_attr("name").unwrap_or_default();
        let key_id = planned.str_attr("key_id").unwrap_or_default();
        if prior.is_null() {
            // Created, never moved: an alias made outside Terraform (or by a concurrent
            // apply) that points at another key is refused by the server in the same
            // write, not checked first and then overwritten.
            match c.create_alias(name, key_id).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
                    return Err(vec![Diag::error(
                        "Alias already exists",
                        format!("{name} exists already; import it with `terraform import ADDRESS {name}`"),
                    )
                    .at("name")]);
                }
                Err(e) => {
                    return Err(vec![api_diag(
                        "Writing the alias failed",
                        Some("key_id"),
                        &e,
                    )]);
                }
            }
        } else {
            c.put_alias(name, key_id)
                .await
                .map_err(|e| vec![api_diag("Writing the alias failed", Some("key_id"), &e)])?;
        }
        read_back(read_alias(ctx, name).await, prior.is_null(), planned, name)
    }

    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        read_alias(
            ctx,
            state
                .str_attr("name")
                .or_else(|| state.str_attr("id"))
                .unwrap_or_default(),
        )
        .await
    }

    async fn import(&self, _ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        if let Some(d) = reserved(id) {
            return Err(vec![d]);
        }
        let mut v = null_object(&schema());
        v.set("name", Value::string(id));
        v.set("id", Value::string(id));
        Ok(v)
    }
}
