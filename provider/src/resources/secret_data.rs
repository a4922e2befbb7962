//! Reading a secret's value at plan/apply time: data source `strongbox_secret` (stored
//! in state, sensitive) and ephemeral resource `strongbox_secret` (never stored).

use super::string;
use crate::core::{
    Attr, Ctx, DataSource, Diags, Ephemeral, Model, ObjExt, TfSchema, api_diag, null_object,
};
use crate::value::Value;

/// The data source.
pub struct SecretDataSource;
/// The ephemeral resource.
pub struct SecretEphemeral;

fn schema(description: &str) -> TfSchema {
    let m = Model::of(&[schemars::schema_for!(strongbox_schemas::SecretValue)]);
    TfSchema {
        version: 0,
        description: description.into(),
        attrs: vec![
            m.required("name").describe("Secret name."),
            m.optional_computed("version_id")
                .describe("A version id (default: the version holding `version_stage`)."),
            Attr::optional("version_stage", string()).describe("A stage (default `ACSCurrent`)."),
            m.computed("secret_data")
                .sensitive()
                .describe("The value (base64 when binary)."),
            m.computed("secret_data_type"),
            m.computed("version_stages"),
            Attr::computed("id", string()).describe("The secret name."),
        ],
    }
}

async fn read(ctx: &Ctx, config: &Value, s: &TfSchema) -> Result<Value, Diags> {
    let c = ctx.client()?;
    let name = config.str_attr("name").unwrap_or_default();
    let val = c
        .get_secret_value(
            name,
            config.str_attr("version_id"),
            config.str_attr("version_stage"),
        )
        .await
        .map_err(|e| {
            vec![api_diag(
                "Reading the secret value failed",
                Some("name"),
                &e,
            )]
        })?;
    let mut v = null_object(s);
    v.set("name", Value::string(name));
    v.set("id", Value::string(name));
    v.set("version_id", Value::string(&val.version_id));
    v.set("version_stage", config.attr("version_stage").clone());
    v.set("secret_data", Value::string(&val.secret_data));
    v.set(
        "secret_data_type",
        Value::string(
            if val.secret_data_type == strongbox_schemas::SecretDataType::Binary {
                "binary"
            } else {
                "text"
            },
        ),
    );
    v.set(
        "version_stages",
        Value::List(val.version_stages.iter().map(Value::string).collect()),
    );
    Ok(v)
}

#[async_trait::async_trait]
impl DataSource for SecretDataSource {
    fn name(&self) -> &'static str {
        "strongbox_secret"
    }
    fn schema(&self) -> TfSchema {
        schema(
            "Reads a secret's value. The value lands in state (marked sensitive); prefer the ephemeral `strongbox_secret` on Terraform ≥ 1.10.",
        )
    }
    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags> {
        read(ctx, config, &self.schema()).await
    }
}

#[async_trait::async_trait]
impl Ephemeral for SecretEphemeral {
    fn name(&self) -> &'static str {
        "strongbox_secret"
    }
    fn schema(&self) -> TfSchema {
        schema(
            "Reads a secret's value for use in provider configuration or write-only attributes; it never lands in plan or state (Terraform ≥ 1.10).",
        )
    }
    async fn open(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags> {
        read(ctx, config, &self.schema()).await
    }
}
