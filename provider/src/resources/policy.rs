//! `strongbox_rotation_policy`: when and how secrets attached to it rotate.

use strongbox_client::ErrorCode;
use strongbox_schemas as api;

use super::{changed, default_if_unset, string, unknown_if_null};
use crate::core::{
    Attr, ClientCaps, Ctx, Diag, Diags, Model, ObjExt, PlanReq, PlanResp, Resource, TfSchema,
    api_diag, null_object, read_back,
};
use crate::value::Value;

/// The resource type.
pub struct PolicyResource;

fn schema() -> TfSchema {
    static SCHEMA: std::sync::OnceLock<TfSchema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema).clone()
}

fn build_schema() -> TfSchema {
    let m = Model::of(&[
        schemars::schema_for!(api::CreateRotationPolicyRequest),
        schemars::schema_for!(api::RotationPolicy),
    ]);
    TfSchema {
        version: 0,
        description: "A rotation policy; attach it to secrets with their `rotation_policy`.".into(),
        attrs: vec![
            m.required("name")
                .describe("Policy name (forces replacement). Renaming a policy that secrets use needs `lifecycle { create_before_destroy = true }`: a policy in use cannot be deleted."),
            m.required("interval").describe(
                "Time between rotations, 6h–365d (e.g. `7d`, `604800s`). A change outside Terraform that keeps the meaning (`168h` for `7d`) is not drift.",
            ),
            m.optional_computed("window")
                .describe("Rotations start within this window after they fall due (default `1h`)."),
            m.required("strategy")
                .describe("`random`, `postgresql`, `mysql`, `access_key`, `ssh_key` or `webhook`."),
            m.optional("settings").describe(
                "Strategy settings (never secrets: a webhook's signing key is named, not given).",
            ),
            m.optional_computed("enabled")
                .describe("Whether rotations run (default true)."),
            Attr::computed("id", string()).describe("The policy name."),
            m.computed("arn"),
        ],
    }
}

fn strategy(v: &Value) -> Result<api::RotationStrategy, Diags> {
    let s = v.str_attr("strategy").unwrap_or_default();
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        vec![
            Diag::error(
                "Invalid strategy",
                format!("{s}: expected random, postgresql, mysql, access_key, ssh_key or webhook"),
            )
            .at("strategy"),
        ]
    })
}

fn interval(v: &Value, name: &str) -> Result<Option<api::Interval>, Diags> {
    v.str_attr(name)
        .map(|s| {
            api::Interval::parse(s)
                .map_err(|e| vec![Diag::error(format!("Invalid {name}"), e.to_string()).at(name)])
        })
        .transpose()
}

fn to_state(p: &api::RotationPolicy, prior: &Value) -> Value {
    let same = |name: &str, server: &api::Interval| match prior.str_attr(name) {
        Some(t) if api::Interval::parse(t).ok().as_ref() == Some(server) => Value::string(t),
        _ => Value::string(server.as_str()),
    };
    let mut v = null_object(&schema());
    v.set("name", Value::string(&p.name));
    v.set("id", Value::string(&p.name));
    v.set("arn", Value::string(&p.arn));
    v.set("interval", same("interval", &p.interval));
    v.set("window", same("window", &p.window));
    v.set(
        "strategy",
        serde_json::to_value(p.strategy)
            .ok()
            .and_then(|s| s.as_str().map(Value::string))
            .unwrap_or(Value::Null),
    );
    v.set(
        "settings",
        super::keep_null_if_empty_map(prior, "settings", &p.settings),
    );
    v.set("enabled", Value::Bool(p.enabled));
    v
}

async fn read_policy(ctx: &Ctx, name: &str, prior: &Value) -> Result<Value, Diags> {
    let c = ctx.client()?;
    match c.describe_rotation_policy(name).await {
        Ok(p) => Ok(to_state(&p, prior)),
        Err(e) if e.code() == Some(ErrorCode::RotationPolicyNotFound) => Ok(Value::Null),
        Err(e) => Err(vec![api_diag(
            "Reading the rotation policy failed",
            None,
            &e,
        )]),
    }
}

#[async_trait::async_trait]
impl Resource for PolicyResource {
    fn name(&self) -> &'static str {
        "strongbox_rotation_policy"
    }

    fn schema(&self) -> TfSchema {
        schema()
    }

    fn validate(&self, config: &Value, _: ClientCaps) -> Diags {
        let mut d = Vec::new();
        if config.str_attr("strategy").is_some()
            && let Err(e) = strategy(config)
        {
            d.extend(e);
        }
        for a in ["interval", "window"] {
            if let Err(e) = interval(config, a) {
                d.extend(e);
            }
        }
        d
    }

    async fn plan(&self, _ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags> {
        let (prior, config) = (req.prior, req.config);
        let mut p = req.proposed.clone();
        default_if_unset(&mut p, config, "window", Value::string("1h"));
        // Unset means the default, 1h: a window that already means that (`60m`) stays.
        if config.attr("window").is_null()
            && prior
                .str_attr("window")
                .is_some_and(|w| super::same_interval(w, "1h"))
        {
            p.set("window", prior.attr("window").clone());
        }
        default_if_unset(&mut p, config, "enabled", Value::Bool(true));
        if prior.is_null() {
            unknown_if_null(&mut p, &["id", "arn"]);
            return Ok(PlanResp {
                planned: p,
                requires_replace: Vec::new(),
                diags: Vec::new(),
            });
        }
        // Set in the configuration with other text of the same meaning as the server's
        // (`7d` against `168h`, after an import or a change outside Terraform): the
        // prior text is planned, as a diff-suppress, so that it is not a change.
        for a in ["interval", "window"] {
            if let (Some(was), Some(wanted)) = (prior.str_attr(a), config.str_attr(a))
                && was != wanted
                && super::same_interval(was, wanted)
            {
                p.set(a, prior.attr(a).clone());
            }
        }
        let requires_replace = if changed(prior, &p, "name") {
            vec!["name"]
        } else {
            Vec::new()
        };
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
                .delete_rotation_policy(prior.str_attr("name").unwrap_or_default())
                .await
            {
                Ok(()) => Ok(Value::Null),
                Err(e) if e.code() == Some(ErrorCode::RotationPolicyNotFound) => Ok(Value::Null),
                Err(e) => Err(vec![api_diag(
                    "Deleting the rotation policy failed",
                    None,
                    &e,
                )]),
            };
        }
        let name = planned.str_attr("name").unwrap_or_default().to_string();
        let iv = interval(planned, "interval")?.ok_or_else(|| {
            vec![Diag::error("Missing interval", "interval is required").at("interval")]
        })?;
        if prior.is_null() {
            let req = api::CreateRotationPolicyRequest {
                name: name.clone(),
                interval: iv,
                window: interval(planned, "window")?,
                strategy: strategy(planned)?,
                settings: planned.map_attr("settings"),
                enabled: planned.bool_attr("enabled"),
            };
            c.create_rotation_policy(&req)
                .await
                .map_err(|e| vec![api_diag("Creating the rotation policy failed", None, &e)])?;
        } else {
            let req = api::UpdateRotationPolicyRequest {
                interval: Some(iv),
                window: interval(planned, "window")?,
                strategy: Some(strategy(planned)?),
                settings: Some(planned.map_attr("settings").unwrap_or_default()),
                enabled: planned.bool_attr("enabled"),
            };
            c.update_rotation_policy(&name, &req)
                .await
                .map_err(|e| vec![api_diag("Updating the rotation policy failed", None, &e)])?;
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

    async fn import(&self, _ctx: &Ctx, id: &str) -> Result<Value, Diags> {
        let mut v = null_object(&schema());
        v.set("name", Value::string(id));
        v.set("id", Value::string(id));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::PlanReq;

    /// An unset window is the default, 1h; a prior window that means the same (`60m`,
    /// set outside Terraform) is not planned as a change.
    #[tokio::test]
    async fn an_unset_window_keeps_a_prior_one_of_the_same_meaning() {
        let mut prior = null_object(&schema());
        for (a, x) in [
            ("name", "p"),
            ("id", "p"),
            ("arn", "strongbox:kms:rotation-policy/p"),
            ("interval", "7d"),
            ("window", "60m"),
            ("strategy", "random"),
        ] {
            prior.set(a, Value::string(x));
        }
        prior.set("enabled", Value::Bool(true));
        let mut config = prior.clone();
        for a in ["id", "arn", "window", "enabled"] {
            config.set(a, Value::Null);
        }
        let plan = |config: Value, prior: Value| async move {
            PolicyResource
                .plan(
                    &crate::core::Ctx::default(),
                    PlanReq {
                        prior: &prior,
                        proposed: &config,
                        config: &config,
                    },
                )
                .await
                .unwrap()
                .planned
        };
        let p = plan(config.clone(), prior.clone()).await;
        assert_eq!(p.str_attr("window"), Some("60m"));
        let mut other = prior.clone();
        other.set("window", Value::string("2h"));
        let p = plan(config.clone(), other).await;
        assert_eq!(p.str_attr("window"), Some("1h"));
        // Set, with other text of the same meaning: the prior text stays; of another
        // meaning: the configuration's.
        let mut set = config;
        set.set("interval", Value::string("168h"));
        set.set("window", Value::string("1h"));
        let p = plan(set.clone(), prior.clone()).await;
        assert_eq!(p.str_attr("interval"), Some("7d"));
        assert_eq!(p.str_attr("window"), Some("60m"));
        set.set("interval", Value::string("6d"));
        set.set("window", Value::string("2h"));
        let p = plan(set, prior).await;
        assert_eq!(p.str_attr("interval"), Some("6d"));
        assert_eq!(p.str_attr("window"), Some("2h"));
    }
}
