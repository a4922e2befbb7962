//! Cryptography with a CMK in configurations: resource `strongbox_ciphertext` (encrypts a
//! value, as `alicloud_kms_ciphertext` and `aws_kms_ciphertext`), data source and
//! ephemeral resource `strongbox_plaintext` (decrypts a blob kept in the configuration, as
//! `alicloud_kms_plaintext` and `aws_kms_secrets`). With the ephemeral one, a value kept
//! encrypted in version control reaches a secret's `secret_data_wo` without ever being
//! in plan or state.

use base64::Engine as _;
use strongbox_client::ErrorCode;
use strongbox_schemas::{MAX_ENCRYPT_PLAINTEXT_BYTES, MAX_ENCRYPTION_CONTEXT_BYTES};

use super::string;
use crate::core::{
    Attr, Ctx, DataSource, Diag, Diags, Ephemeral, Model, ObjExt, PlanReq, PlanResp, Resource,
    TfSchema, api_diag, null_object,
};
use crate::value::{Number, Type, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The resource.
pub struct CiphertextResource;
/// The data source.
pub struct PlaintextDataSource;
/// The ephemeral resource.
pub struct PlaintextEphemeral;

fn ciphertext_schema() -> TfSchema {
    static SCHEMA: std::sync::OnceLock<TfSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_ciphertext_schema).clone()
}

fn build_ciphertext_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(strongbox_schemas::EncryptRequest),
        schemars::schema_for!(strongbox_schemas::EncryptResponse),
    ]);
    TfSchema {
        version: 0,
        description: "Data encrypted under a CMK (`encrypt`, at most 6144 bytes). The plaintext is kept in state, marked sensitive; the server keeps nothing, so there is nothing to refresh or import. Any change makes a new blob.".into(),
        attrs: vec![
            m.required("key_id")
                .describe("Key id or `alias/NAME` (forces replacement)."),
            Attr::required("plaintext", string())
                .sensitive()
                .describe("The data, as text (forces replacement)."),
            m.optional("encryption_context")
                .describe("Names and values bound to the blob: decrypting needs the same (forces replacement)."),
            m.computed("ciphertext_blob"),
            m.computed("key_version"),
            Attr::computed("id", string()).describe("The key id and version that encrypted, `KEY_ID:VERSION`."),
        ],
    }
}

fn plaintext_schema(description: &str) -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(strongbox_schemas::DecryptRequest),
        schemars::schema_for!(strongbox_schemas::DecryptResponse),
    ]);
    TfSchema {
        version: 0,
        description: description.into(),
        attrs: vec![
            m.required("ciphertext_blob").describe(
                "A ciphertext blob (base64) from `strongbox_ciphertext`, the API or `strongbox key encrypt`.",
            ),
            m.optional("encryption_context")
                .describe("The encryption context the blob was made with."),
            m.optional_computed("key_id").describe(
                "The key that must have made the blob (id or `alias/NAME`; refused if the blob names another). Without it, the key the blob names: give it when the blob comes from somewhere a third party could swap it for one made under another key you may use.",
            ),
            Attr::computed("plaintext", Type::String)
                .sensitive()
                .describe("The data as text; null when it is not UTF-8 (use `plaintext_base64`)."),
            Attr::computed("plaintext_base64", Type::String)
                .sensitive()
                .describe("The data, base64."),
            m.computed("key_version"),
            Attr::computed("id", string()).describe("The key id and version, `KEY_ID:VERSION`."),
        ],
    }
}

async fn decrypt(ctx: &Ctx, config: &Value, s: &TfSchema) -> Result<Value, Diags> {
    let c = ctx.client()?;
    let blob = config.str_attr("ciphertext_blob").unwrap_or_default();
    let raw = B64.decode(blob.trim()).map_err(|_| {
        vec![
            Diag::error(
                "Invalid ciphertext blob",
                "ciphertext_blob is not standard base64",
            )
            .at("ciphertext_blob"),
        ]
    })?;
    let Some((named, _)) = strongbox_schemas::ciphertext_blob_key(&raw) else {
        return Err(vec![
            Diag::error(
                "Invalid ciphertext blob",
                "ciphertext_blob is not a Strongbox ciphertext blob (no key in its header)",
            )
            .at("ciphertext_blob"),
        ]);
    };
    let key = config.str_attr("key_id").unwrap_or(named);
    let context = config.map_attr("encryption_context").unwrap_or_default();
    let mut answer = c
        .decrypt_under(key, blob.trim(), &context)
        .await
        .map_err(|e| {
            let at = match e.code() {
                Some(ErrorCode::InvalidCiphertext)
                    if e.to_string().contains("encryption context") =>
                {
                    "encryption_context"
                }
                Some(ErrorCode::InvalidCiphertext) if !config.attr("key_id").is_null() => {
                    if e.to_string().contains("not made under this key") {
                        "key_id"
                    } else {
                        "ciphertext_blob"
                    }
                }
                Some(ErrorCode::InvalidCiphertext) => "ciphertext_blob",
                _ => key_error_at(&e).unwrap_or("ciphertext_blob"),
            };
            vec![api_diag("Decrypting failed", Some(at), &e)]
        })?;
    let data = zeroize::Zeroizing::new(B64.decode(&answer.plaintext).map_err(|_| {
        vec![Diag::error(
            "Decrypting failed",
            "the server answered a plaintext that is not base64",
        )]
    })?);
    let mut v = null_object(s);
    v.set("ciphertext_blob", config.attr("ciphertext_blob").clone());
    v.set(
        "encryption_context",
        config.attr("encryption_context").clone(),
    );
    v.set(
        "plaintext",
        std::str::from_utf8(&data).map_or(Value::Null, Value::string),
    );
    v.set("plaintext_base64", Value::string(&answer.plaintext));
    zeroize::Zeroize::zeroize(&mut answer.plaintext);
    // As configured (an alias stays an alias); the id the blob names otherwise.
    v.set(
        "key_id",
        Value::string(config.str_attr("key_id").unwrap_or(&answer.key_id)),
    );
    v.set(
        "key_version",
        Value::Number(Number::from_u64(u64::from(answer.key_version))),
    );
    v.set(
        "id",
        Value::string(format!("{}:{}", answer.key_id, answer.key_version)),
    );
    Ok(v)
}

#[async_trait::async_trait]
impl DataSource for PlaintextDataSource {
    fn name(&self) -> &'static str {
        "strongbox_plaintext"
    }
    fn schema(&self) -> TfSchema {
        plaintext_schema(
            "Decrypts a ciphertext blob (from `strongbox_ciphertext`, the API or `strongbox key encrypt`) with the key it names. The plaintext lands in state (marked sensitive); prefer the ephemeral `strongbox_plaintext` on Terraform ≥ 1.10.",
        )
    }
    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags> {
        decrypt(ctx, config, &self.schema()).await
    }
}

#[async_trait::async_trait]
impl Ephemeral for PlaintextEphemeral {
    fn name(&self) -> &'static str {
        "strongbox_plaintext"
    }
    fn schema(&self) -> TfSchema {
        plaintext_schema(
            "Decrypts a ciphertext blob for use in provider configuration or write-only attributes (such as a secret's `secret_data_wo`); the plaintext never lands in plan or state (Terraform ≥ 1.10).",
        )
    }
    async fn open(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags> {
        decrypt(ctx, config, &self.schema()).await
    }
}

const COMPUTED: [&str; 3] = ["ciphertext_blob", "key_version", "id"];

/// The attribute an error about the key is about: its state, its existence, the rights
/// on it, or the server's refusal of it (the default key).
fn key_error_at(e: &strongbox_client::Error) -> Option<&'static str> {
    match e.code()? {
        ErrorCode::KeyNotFound
        | ErrorCode::AliasNotFound
        | ErrorCode::Forbidden
        | ErrorCode::KeyDisabled
        | ErrorCode::KeyPendingDeletion
        | ErrorCode::KeyDeleted => Some("key_id"),
        ErrorCode::InvalidParameter if e.to_string().contains("key_id:") => Some("key_id"),
        _ => None,
    }
}

/// Whether an encryption context is empty (null and `{}` seal alike).
fn no_context(v: &Value) -> bool {
    v.is_null() || matches!(v, Value::Map(m) if m.is_empty())
}

#[async_trait::async_trait]
impl Resource for CiphertextResource {
    fn name(&self) -> &'static str {
        "strongbox_ciphertext"
    }

    fn schema(&self) -> TfSchema {
        ciphertext_schema()
    }

    fn validate(&self, config: &Value, _: crate::core::ClientCaps) -> Diags {
        let mut d = Vec::new();
        if config.str_attr("key_id") == Some("") {
            d.push(Diag::error("Invalid key_id", "key_id: must not be empty").at("key_id"));
        }
        if let Some(p) = config.str_attr("plaintext") {
            if p.is_empty() {
                d.push(
                    Diag::error("Invalid plaintext", "plaintext: must not be empty")
                        .at("plaintext"),
                );
            } else if p.len() > MAX_ENCRYPT_PLAINTEXT_BYTES {
                d.push(
                    Diag::error(
                        "Plaintext too large",
                        format!("plaintext: at most {MAX_ENCRYPT_PLAINTEXT_BYTES} bytes; encrypt larger data under a data key"),
                    )
                    .at("plaintext"),
                );
            }
        }
        if let Some(ctx) = config.map_attr("encryption_context") {
            if ctx.keys().any(String::is_empty) {
                d.push(
                    Diag::error(
                        "Invalid encryption context",
                        "encryption_context: a name may not be empty",
                    )
                    .at("encryption_context"),
                );
            }
            let size: usize = ctx.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > MAX_ENCRYPTION_CONTEXT_BYTES {
                d.push(
                    Diag::error(
                        "Encryption context too large",
                        format!("encryption_context: at most {MAX_ENCRYPTION_CONTEXT_BYTES} bytes of names and values together"),
                    )
                    .at("encryption_context"),
                );
            }
        }
        d
    }

    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        // Null and `{}` seal alike: a switch between them is an update of the state only.
        let replace_on: &[&'static str] = if !req.prior.is_null()
            && no_context(req.prior.attr("encryption_context"))
            && no_context(req.proposed.attr("encryption_context"))
        {
            &["key_id", "plaintext"]
        } else {
            &["key_id", "plaintext", "encryption_context"]
        };
        Ok(super::plan_simple(req, &COMPUTED, replace_on))
    }

    async fn apply(
        &self,
        ctx: &Ctx,
        prior: &Value,
        planned: &Value,
        _config: &Value,
    ) -> Result<Value, Diags> {
        if planned.is_null() {
            // Nothing is kept on the server: forgetting the blob is the whole destroy.
            return Ok(Value::Null);
        }
        if !prior.is_null() {
            // What is not replaced changes nothing on the server (the context between
            // null and `{}`): the plan, with the blob and its key version as they were.
            let mut v = planned.clone();
            for n in COMPUTED {
                if v.attr(n).is_unknown() {
                    v.set(n, prior.attr(n).clone());
                }
            }
            return Ok(v);
        }
        let c = ctx.client()?;
        let key = planned.str_attr("key_id").unwrap_or_default();
        let plaintext = planned.str_attr("plaintext").unwrap_or_default();
        let context = planned.map_attr("encryption_context").unwrap_or_default();
        let made = c
            .encrypt(key, plaintext.as_bytes(), &context)
            .await
            .map_err(|e| {
                let at =
                    key_error_at(&e).unwrap_or(if e.to_string().contains("encryption_context") {
                        "encryption_context"
                    } else {
                        "plaintext"
                    });
                vec![api_diag("Encrypting failed", Some(at), &e)]
            })?;
        let mut v = planned.clone();
        v.set("ciphertext_blob", Value::string(&made.ciphertext_blob));
        v.set(
            "key_version",
            Value::Number(Number::from_u64(u64::from(made.key_version))),
        );
        v.set(
            "id",
            Value::string(format!("{}:{}", made.key_id, made.key_version)),
        );
        Ok(v)
    }

    async fn read(&self, _ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        // The blob lives only in the state; the key's state shows when it is used.
        Ok(state.clone())
    }

    async fn import(&self, _ctx: &Ctx, _id: &str) -> Result<Value, Diags> {
        Err(vec![Diag::error(
            "strongbox_ciphertext cannot be imported",
            "the server keeps nothing of a blob; declare the resource and let Terraform encrypt",
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Ctx, ObjExt, PlanReq, Resource, null_object};

    /// Null and `{}` seal alike: switching between them is an update of the state only,
    /// and the blob stays.
    #[tokio::test]
    async fn an_empty_context_and_none_are_the_same_blob() {
        let r = CiphertextResource;
        let mut prior = null_object(&r.schema());
        prior.set("key_id", Value::string("alias/k"));
        prior.set("plaintext", Value::string("p"));
        prior.set("ciphertext_blob", Value::string("U0JLMQ=="));
        prior.set("key_version", Value::Number(Number::from_u64(1)));
        prior.set("id", Value::string("k:1"));
        let mut config = prior.clone();
        for n in COMPUTED {
            config.set(n, Value::Null);
        }
        config.set("encryption_context", Value::Map(Default::default()));
        let mut proposed = config.clone();
        for n in COMPUTED {
            proposed.set(n, prior.attr(n).clone());
        }
        let ctx = Ctx::default();
        let plan = r
            .plan(
                &ctx,
                PlanReq {
                    prior: &prior,
                    proposed: &proposed,
                    config: &config,
                },
            )
            .await
            .unwrap_or_else(|_| panic!("plans"));
        assert!(plan.requires_replace.is_empty());
        assert_eq!(plan.planned, proposed);
        let applied = r
            .apply(&ctx, &prior, &plan.planned, &config)
            .await
            .unwrap_or_else(|_| panic!("applies without the server"));
        assert_eq!(applied, proposed);

        // A context with a pair is another blob.
        let mut other = proposed.clone();
        other.set(
            "encryption_context",
            Value::Map([("a".to_string(), Value::string("b"))].into()),
        );
        let plan = r
            .plan(
                &ctx,
                PlanReq {
                    prior: &prior,
                    proposed: &other,
                    config: &other,
                },
            )
            .await
            .unwrap_or_else(|_| panic!("plans"));
        assert_eq!(plan.requires_replace, ["encryption_context"]);
        assert!(plan.planned.attr("ciphertext_blob").is_unknown());
    }
}
