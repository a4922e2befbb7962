//! The provider's resources, data sources and ephemeral resources, one file each
//! (schema, plan, apply, read, import), in the style of the big Go providers.

pub mod access;
pub mod alias;
pub mod cmk;
pub mod kms_crypto;
pub mod policy;
pub mod provider;
pub mod secret;
pub mod secret_data;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::{Core, Ctx, ObjExt, PlanReq, PlanResp};
use crate::value::{Type, Value};

/// The whole provider.
pub fn core() -> Core {
    let mut resources: BTreeMap<&'static str, Arc<dyn crate::core::Resource>> = BTreeMap::new();
    for r in [
        Arc::new(secret::SecretResource) as Arc<dyn crate::core::Resource>,
        Arc::new(cmk::CmkResource),
        Arc::new(alias::AliasResource),
        Arc::new(policy::PolicyResource),
        Arc::new(access::PolicyResource),
        Arc::new(access::PrincipalResource),
        Arc::new(access::TokenResource),
        Arc::new(kms_crypto::CiphertextResource),
    ] {
        resources.insert(r.name(), r);
    }
    let mut data_sources: BTreeMap<&'static str, Arc<dyn crate::core::DataSource>> =
        BTreeMap::new();
    for d in [
        Arc::new(secret_data::SecretDataSource) as Arc<dyn crate::core::DataSource>,
        Arc::new(cmk::CmkDataSource),
        Arc::new(kms_crypto::PlaintextDataSource),
    ] {
        data_sources.insert(d.name(), d);
    }
    let mut ephemerals: BTreeMap<&'static str, Arc<dyn crate::core::Ephemeral>> = BTreeMap::new();
    for e in [
        Arc::new(secret_data::SecretEphemeral) as Arc<dyn crate::core::Ephemeral>,
        Arc::new(kms_crypto::PlaintextEphemeral),
    ] {
        ephemerals.insert(e.name(), e);
    }
    Core {
        ctx: Ctx::default(),
        provider_schema: provider::schema(),
        resources,
        data_sources,
        ephemerals,
    }
}

/// `string`.
pub(crate) fn string() -> Type {
    Type::String
}

/// For an optional+computed attribute with a default: when the configuration leaves it
/// unset, the default is planned (so a change made outside Terraform is put back).
pub(crate) fn default_if_unset(planned: &mut Value, config: &Value, name: &str, default: Value) {
    if config.attr(name).is_null() {
        planned.set(name, default);
    }
}

/// Computed-only attributes left null: unknown (filled by apply), on create and on an
/// update of a state written before the attribute existed.
pub(crate) fn unknown_if_null(planned: &mut Value, names: &[&str]) {
    for n in names {
        if planned.attr(n).is_null() {
            planned.set(n, Value::unknown());
        }
    }
}

/// The plan of a resource whose `replace_on` arguments force replacement and whose
/// `computed` attributes come from the server: unknown on create and on replacement.
pub(crate) fn plan_simple(
    req: PlanReq<'_>,
    computed: &[&str],
    replace_on: &[&'static str],
) -> PlanResp {
    let mut p = req.proposed.clone();
    if req.prior.is_null() {
        unknown_if_null(&mut p, computed);
        return PlanResp {
            planned: p,
            requires_replace: Vec::new(),
            diags: Vec::new(),
        };
    }
    let requires_replace: Vec<&'static str> = replace_on
        .iter()
        .copied()
        .filter(|a| changed(req.prior, &p, a))
        .collect();
    if requires_replace.is_empty() {
        // A state written before an attribute existed (read with -refresh=false).
        unknown_if_null(&mut p, computed);
    } else {
        for a in computed {
            p.set(a, Value::unknown());
        }
    }
    PlanResp {
        planned: p,
        requires_replace,
        diags: Vec::new(),
    }
}

/// Whether two interval texts mean the same time (`7d` and `168h`).
pub(crate) fn same_interval(a: &str, b: &str) -> bool {
    strongbox_schemas::Interval::parse(a).ok() == strongbox_schemas::Interval::parse(b).ok()
}

/// Whether attribute `name` differs between two objects (unknown counts as different).
pub(crate) fn changed(a: &Value, b: &Value, name: &str) -> bool {
    let (x, y) = (a.attr(name), b.attr(name));
    x.is_unknown() || y.is_unknown() || x != y
}

/// Empty string from the server reads back as null when the state had null (and the
/// other way round), so that null and empty never flap.
pub(crate) fn keep_null_if_empty(prior: &Value, name: &str, server: &str) -> Value {
    if server.is_empty() && prior.attr(name).is_null() {
        Value::Null
    } else {
        Value::String(server.to_string())
    }
}

/// Same for maps.
pub(crate) fn keep_null_if_empty_map(
    prior: &Value,
    name: &str,
    server: &BTreeMap<String, String>,
) -> Value {
    if server.is_empty() && prior.attr(name).is_null() {
        Value::Null
    } else {
        crate::core::str_map(server)
    }
}
