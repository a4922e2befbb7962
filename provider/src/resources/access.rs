//! Access control: `strongbox_policy`, `strongbox_principal`, `strongbox_principal_token`.

use strongbox_client::ErrorCode;
use strongbox_schemas as api;

use super::{plan_simple, string};
use crate::core::{
    Attr, ClientCaps, Ctx, Diag, Diags, Model, ObjExt, PlanReq, PlanResp, Resource, TfSchema,
    api_diag, attr_of, null_object, opt_str, read_back,
};
use crate::value::Value;

/// The attributes a server's refusal of a policy or principal write may name.
const POLICY_ATTRS: &[&str] = &["name", "description", "document"];
const PRINCIPAL_ATTRS: &[&str] = &["name", "description", "policies"];
/// A principal naming a policy that does not exist.
const POLICIES_BY_CODE: &[(ErrorCode, &str)] = &[(ErrorCode::PolicyNotFound, "policies")];

/// `strongbox_policy`.
pub struct PolicyResource;
/// `strongbox_principal`.
pub struct PrincipalResource;
/// `strongbox_principal_token`.
pub struct TokenResource;

// ---- strongbox_policy ----

fn policy_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(api::Policy),
        schemars::schema_for!(api::CreatePolicyRequest),
    ]);
    TfSchema {
        version: 0,
        description: "An access policy: a RAM-style document of Allow/Deny statements over actions (`kms:GetSecretValue`) and resources (`secret/app/*`).".into(),
        attrs: vec![
            m.required("name").describe("Policy name (forces replacement). Renaming a policy that principals use needs `lifecycle { create_before_destroy = true }`: a policy in use cannot be deleted."),
            m.optional("description"),
            m.required("document").describe("The policy document as JSON (use `jsonencode`); compared by meaning."),
            Attr::computed("id", string()).describe("The policy name."),
            m.computed("arn"),
        ],
    }
}

fn parse_document(v: &Value) -> Result<api::PolicyDocument, Diags> {
    let text = v.str_attr("document").unwrap_or_default();
    serde_json::from_str(text)
        .map_err(|e| vec![Diag::error("Invalid policy document", e.to_string()).at("document")])
}

fn same_document(a: &str, b: &api::PolicyDocument) -> bool {
    serde_json::from_str::<api::PolicyDocument>(a)
        .ok()
        .and_then(|d| serde_json::to_value(d).ok())
        .zip(serde_json::to_value(b).ok())
        .is_some_and(|(x, y)| x == y)
}

async fn read_policy(ctx: &Ctx, name: &str, prior: &Value) -> Result<Value, Diags> {
    let c = ctx.client()?;
    let p = match c.get_policy(name).await {
        Ok(p) => p,
        Err(e) if e.code() == Some(ErrorCode::PolicyNotFound) => return Ok(Value::Null),
        Err(e) => return Err(vec![api_diag("Reading the policy failed", None, &e)]),
    };
    let mut v = null_object(&policy_schema());
    v.set("name", Value::string(&p.name));
    v.set("id", Value::string(&p.name));
    v.set("arn", Value::string(&p.arn));
    v.set(
        "description",
        super::keep_null_if_empty(prior, "description", &p.description),
    );
    v.set(
        "document",
        match (prior.str_attr("document"), &p.document) {
            (Some(t), Some(d)) if same_document(t, d) => Value::string(t),
            (_, Some(d)) => Value::string(serde_json::to_string(d).unwrap_or_default()),
            // Never from a describe; an answer that withheld it changes nothing.
            (_, None) => prior.attr("document").clone(),
        },
    );
    Ok(v)
}

#[async_trait::async_trait]
impl Resource for PolicyResource {
    fn name(&self) -> &'static str {
        "strongbox_policy"
    }
    fn schema(&self) -> TfSchema {
        policy_schema()
    }
    fn validate(&self, config: &Value, _: ClientCaps) -> Diags {
        if config.str_attr("document").is_some() {
            parse_document(config).err().unwrap_or_default()
        } else {
            Vec::new()
        }
    }
    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        let (prior, config) = (req.prior, req.config);
        let mut r = plan_simple(req, &["id", "arn"], &["name"]);
        if let (Some(a), Ok(b)) = (prior.str_attr("document"), parse_document(config))
            && same_document(a, &b)
        {
            r.planned.set("document", prior.attr("document").clone());
        }
        Ok(r)
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
                .delete_policy(prior.str_attr("name").unwrap_or_default())
                .await
            {
                Ok(()) => Ok(Value::Null),
                Err(e) if e.code() == Some(ErrorCode::PolicyNotFound) => Ok(Value::Null),
                Err(e) => Err(vec![api_diag("Deleting the policy failed", None, &e)]),
            };
        }
        let name = planned.str_attr("name").unwrap_or_default().to_string();
        let document = parse_document(planned)?;
        if prior.is_null() {
            let req = api::CreatePolicyRequest {
                name: name.clone(),
                description: planned.str_attr("description").map(str::to_string),
                document,
            };
            c.create_policy(&req).await.map_err(|e| {
                let at = attr_of(&e, POLICY_ATTRS, &[]);
                vec![api_diag("Creating the policy failed", at, &e)]
            })?;
        } else {
            let req = api::UpdatePolicyRequest {
                description: Some(
                    planned
                        .str_attr("description")
                        .unwrap_or_default()
                        .to_string(),
                ),
                document: Some(document),
            };
            c.update_policy(&name, &req).await.map_err(|e| {
                let at = attr_of(&e, POLICY_ATTRS, &[]);
                vec![api_diag("Updating the policy failed", at, &e)]
            })?;
        }
        read_back(
            read_policy(ctx, &name, planned).await,
            prior.is_null(),
            planned,
            &name,
        )
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        read_policy(
            ctx,
            state
                .str_attr("name")
                .or_else(|| state.str_attr("id"))
                .unwrap_or_default(),
            state,
        )
        .await
    }
    async fn import(&self, ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        // A built-in policy cannot be changed or deleted: imported, its state could never
        // be managed. It is referred to by name instead.
        if let Ok(p) = ctx.client()?.get_policy(id).await
            && p.builtin
        {
            return Err(vec![Diag::error(
                "Cannot import a built-in policy",
                format!(
                    "{id} is built in: it cannot be changed or deleted, so Terraform cannot manage it; refer to it by name (policies = [\"{id}\"])"
                ),
            )]);
        }
        let mut v = null_object(&policy_schema());
        v.set("name", Value::string(id));
        v.set("id", Value::string(id));
        Ok(v)
    }
}

// ---- strongbox_principal ----

fn principal_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(api::Principal),
        schemars::schema_for!(api::CreatePrincipalRequest),
    ]);
    TfSchema {
        version: 0,
        description: "A principal: an application or person that calls Strongbox with its tokens, allowed what its policies allow.".into(),
        attrs: vec![
            m.required("name").describe("Principal name (forces replacement)."),
            m.optional("description"),
            m.optional("policies").as_set().describe("Names of the access policies attached."),
            Attr::computed("id", string()).describe("The principal name."),
            m.computed("arn"),
            m.computed("principal_id"),
        ],
    }
}

fn policy_names(v: &Value) -> Option<Vec<String>> {
    match v.attr("policies") {
        Value::Set(s) | Value::List(s) => Some(
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    }
}

async fn read_principal(ctx: &Ctx, name: &str, prior: &Value) -> Result<Value, Diags> {
    let c = ctx.client()?;
    let p = match c.get_principal(name).await {
        Ok(p) => p,
        Err(e) if e.code() == Some(ErrorCode::PrincipalNotFound) => return Ok(Value::Null),
        Err(e) => return Err(vec![api_diag("Reading the principal failed", None, &e)]),
    };
    let mut v = null_object(&principal_schema());
    v.set("name", Value::string(&p.name));
    v.set("id", Value::string(&p.name));
    v.set("arn", Value::string(&p.arn));
    v.set("principal_id", Value::string(&p.principal_id));
    v.set(
        "description",
        super::keep_null_if_empty(prior, "description", &p.description),
    );
    v.set(
        "policies",
        if p.policies.is_empty() && prior.attr("policies").is_null() {
            Value::Null
        } else {
            Value::Set(p.policies.iter().map(Value::string).collect())
        },
    );
    Ok(v)
}

#[async_trait::async_trait]
impl Resource for PrincipalResource {
    fn name(&self) -> &'static str {
        "strongbox_principal"
    }
    fn schema(&self) -> TfSchema {
        principal_schema()
    }
    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        Ok(plan_simple(req, &["id", "arn", "principal_id"], &["name"]))
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
                .delete_principal(prior.str_attr("name").unwrap_or_default())
                .await
            {
                Ok(()) => Ok(Value::Null),
                Err(e) if e.code() == Some(ErrorCode::PrincipalNotFound) => Ok(Value::Null),
                Err(e) => Err(vec![api_diag("Deleting the principal failed", None, &e)]),
            };
        }
        let name = planned.str_attr("name").unwrap_or_default().to_string();
        if prior.is_null() {
            let req = api::CreatePrincipalRequest {
                name: name.clone(),
                description: planned.str_attr("description").map(str::to_string),
                policies: policy_names(planned),
            };
            c.create_principal(&req).await.map_err(|e| {
                let at = attr_of(&e, PRINCIPAL_ATTRS, POLICIES_BY_CODE);
                vec![api_diag("Creating the principal failed", at, &e)]
            })?;
        } else {
            let req = api::UpdatePrincipalRequest {
                description: Some(
                    planned
                        .str_attr("description")
                        .unwrap_or_default()
                        .to_string(),
                ),
                policies: Some(policy_names(planned).unwrap_or_default()),
            };
            c.update_principal(&name, &req).await.map_err(|e| {
                let at = attr_of(&e, PRINCIPAL_ATTRS, POLICIES_BY_CODE);
                vec![api_diag("Updating the principal failed", at, &e)]
            })?;
        }
        read_back(
            read_principal(ctx, &name, planned).await,
            prior.is_null(),
            planned,
            &name,
        )
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        read_principal(
            ctx,
            state
                .str_attr("name")
                .or_else(|| state.str_attr("id"))
                .unwrap_or_default(),
            state,
        )
        .await
    }
    async fn import(&self, ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        if let Ok(p) = ctx.client()?.get_principal(id).await
            && p.builtin
        {
            return Err(vec![Diag::error(
                "Cannot import a built-in principal",
                format!(
                    "{id} is built in: it cannot be changed or deleted, so Terraform cannot manage it"
                ),
            )]);
        }
        let mut v = null_object(&principal_schema());
        v.set("name", Value::string(id));
        v.set("id", Value::string(id));
        Ok(v)
    }
}

// ---- strongbox_principal_token ----

fn token_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(api::CreatedToken),
        schemars::schema_for!(api::CreateTokenRequest),
    ]);
    TfSchema {
        version: 0,
        description: "A token of a principal. The token itself is known only at creation: it is stored in state as a sensitive value.".into(),
        attrs: vec![
            m.required("principal").describe("Principal name (forces replacement)."),
            m.optional("description").describe("Forces replacement."),
            m.optional("expires_at").describe("RFC 3339 expiry (forces replacement)."),
            m.computed("token").sensitive().describe("The bearer token."),
            m.computed("token_id"),
            Attr::computed("id", string()).describe("`PRINCIPAL/TOKEN_ID`."),
        ],
    }
}

/// Whole seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An RFC 3339 time as the API reads it.
fn parse_time(t: &str) -> serde_json::Result<api::Timestamp> {
    serde_json::from_value::<api::Timestamp>(serde_json::Value::String(t.into()))
}

#[async_trait::async_trait]
impl Resource for TokenResource {
    fn name(&self) -> &'static str {
        "strongbox_principal_token"
    }
    fn schema(&self) -> TfSchema {
        token_schema()
    }
    fn validate(&self, config: &Value, _: ClientCaps) -> Diags {
        let Some(t) = config.str_attr("expires_at") else {
            return Vec::new();
        };
        let why = match parse_time(t) {
            Err(_) => "expected an RFC 3339 time such as 2027-01-01T00:00:00Z",
            // The server keeps whole seconds: a fraction would read back as another
            // time and plan a replacement every run.
            Ok(at) if at.0.nanosecond() != 0 => {
                "give whole seconds (such as 2027-01-01T00:00:00Z): the server keeps no fraction of a second"
            }
            Ok(_) => return Vec::new(),
        };
        vec![Diag::error("Invalid expires_at", why).at("expires_at")]
    }
    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        // A new token cannot expire in the past: say so now, not halfway through the
        // apply. (A token in the state whose time has come stays there, also once it is
        // gone from the server, see `read`: this is never a token `terraform destroy`
        // would have to plan again.)
        if req.prior.is_null()
            && let Some(at) = req
                .config
                .str_attr("expires_at")
                .and_then(|t| parse_time(t).ok())
            && at.unix() <= unix_now()
        {
            return Err(vec![
                Diag::error(
                    "expires_at is in the past",
                    format!(
                        "A token expiring at {at} cannot be created. Set a new expires_at, or remove it for a token that does not expire."
                    ),
                )
                .at("expires_at"),
            ]);
        }
        // The same instant written another way (`+01:00` for `Z`) is no change: the
        // prior text is planned, rather than a new token for the same expiry.
        let mut proposed = req.proposed.clone();
        if let (Some(was), Some(wanted)) = (
            req.prior.str_attr("expires_at"),
            req.config.str_attr("expires_at"),
        ) && was != wanted
            && let (Ok(a), Ok(b)) = (parse_time(was), parse_time(wanted))
            && a == b
        {
            proposed.set("expires_at", req.prior.attr("expires_at").clone());
        }
        Ok(plan_simple(
            PlanReq {
                proposed: &proposed,
                ..req
            },
            &["token", "token_id", "id"],
            &["principal", "description", "expires_at"],
        ))
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
            let (p, id) = (
                prior.str_attr("principal").unwrap_or_default(),
                prior.str_attr("token_id").unwrap_or_default(),
            );
            return match c.delete_token(p, id).await {
                Ok(()) => Ok(Value::Null),
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ErrorCode::TokenNotFound | ErrorCode::PrincipalNotFound)
                    ) =>
                {
                    Ok(Value::Null)
                }
                Err(e) => Err(vec![api_diag("Revoking the token failed", None, &e)]),
            };
        }
        let principal = planned.str_attr("principal").unwrap_or_default();
        let expires_at = planned
            .str_attr("expires_at")
            .map(parse_time)
            .transpose()
            .map_err(|e| vec![Diag::error("Invalid expires_at", e.to_string()).at("expires_at")])?;
        let req = api::CreateTokenRequest {
            expires_at,
            description: planned.str_attr("description").map(str::to_string),
        };
        let t = c.create_token(principal, &req).await.map_err(|e| {
            let at = attr_of(
                &e,
                &["principal", "description", "expires_at"],
                &[(ErrorCode::PrincipalNotFound, "principal")],
            );
            vec![api_diag("Creating the token failed", at, &e)]
        })?;
        let mut v = planned.clone();
        v.set("token", Value::string(&t.token));
        v.set("token_id", Value::string(&t.token_id));
        v.set("id", Value::string(format!("{principal}/{}", t.token_id)));
        Ok(v)
    }
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags> {
        let c = ctx.client()?;
        let (principal, token_id) = (
            state.str_attr("principal").unwrap_or_default(),
            state.str_attr("token_id").unwrap_or_default(),
        );
        let tokens = match c.list_tokens(principal).await {
            Ok(t) => t,
            Err(e) if e.code() == Some(ErrorCode::PrincipalNotFound) => return Ok(Value::Null),
            Err(e) => return Err(vec![api_diag("Reading the tokens failed", None, &e)]),
        };
        // A token whose `expires_at` has come stays in the state: it is as configured, it
        // could not be made again with that expiry, and `terraform destroy` deletes it
        // (or finds it gone). So also when the server no longer has it (revoked after it
        // expired, or deleted to make room for a new token of its principal). Only a
        // token gone before its time leaves the state, to be created again.
        let expired_in_state = state
            .str_attr("expires_at")
            .and_then(|t| parse_time(t).ok())
            .is_some_and(|at| at.unix() <= unix_now());
        match tokens.tokens.iter().find(|t| t.token_id == token_id) {
            Some(t) => {
                let mut v = state.clone();
                v.set(
                    "description",
                    super::keep_null_if_empty(state, "description", &t.description),
                );
                v.set(
                    "expires_at",
                    match (&t.expires_at, state.str_attr("expires_at")) {
                        (Some(e), Some(p)) if parse_time(p).ok().as_ref() == Some(e) => {
                            Value::string(p)
                        }
                        (e, _) => opt_str(e.map(|e| e.to_string())),
                    },
                );
                Ok(v)
            }
            None if expired_in_state => Ok(state.clone()),
            None => Ok(Value::Null),
        }
    }
    async fn import(&self, _ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        Err(vec![Diag::error(
            "Tokens cannot be imported",
            format!(
                "{id}: a token's secret is shown only when it is created; create a new strongbox_principal_token instead"
            ),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An expiry written as the same instant in another form plans no replacement (a
    /// new token would revoke the one in use); another instant does.
    #[tokio::test]
    async fn the_same_expiry_written_another_way_is_no_change() {
        let mut prior = null_object(&token_schema());
        for (a, x) in [
            ("principal", "app"),
            ("token_id", "t-1"),
            ("id", "app/t-1"),
            ("token", "secret-token"),
            ("expires_at", "2027-01-01T00:00:00Z"),
        ] {
            prior.set(a, Value::string(x));
        }
        let plan = |expires: &str| {
            let mut config = prior.clone();
            for a in ["token_id", "id", "token"] {
                config.set(a, Value::Null);
            }
            config.set("expires_at", Value::string(expires));
            let prior = prior.clone();
            async move {
                let mut proposed = config.clone();
                for a in ["token_id", "id", "token"] {
                    proposed.set(a, prior.attr(a).clone());
                }
                TokenResource
                    .plan(
                        &crate::core::Ctx::default(),
                        PlanReq {
                            prior: &prior,
                            proposed: &proposed,
                            config: &config,
                        },
                    )
                    .await
                    .map_err(|_| "plan failed")
                    .map(|p| (p.planned, p.requires_replace))
            }
        };
        let (planned, replace) = plan("2027-01-01T01:00:00+01:00").await.unwrap();
        assert!(replace.is_empty(), "{replace:?}");
        assert_eq!(planned.str_attr("expires_at"), Some("2027-01-01T00:00:00Z"));
        assert_eq!(planned.str_attr("token"), Some("secret-token"));
        let (planned, replace) = plan("2027-01-01T01:00:00Z").await.unwrap();
        assert_eq!(replace, vec!["expires_at"]);
        assert_eq!(planned.str_attr("expires_at"), Some("2027-01-01T01:00:00Z"));
    }
}
