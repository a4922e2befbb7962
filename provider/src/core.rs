//! The provider's protocol-neutral core: schemas, diagnostics, and the traits each
//! resource, data source and ephemeral resource implements. The gRPC adapters for
//! protocol 5 and 6 (`grpc.rs`) translate to and from these types.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use strongbox_client::Client;

use crate::value::{PathStep, Type, Value};

/// One attribute of a schema.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Name (`[a-z0-9_]`).
    pub name: &'static str,
    /// cty type.
    pub ty: Type,
    /// Markdown description.
    pub description: String,
    /// Must be set in configuration.
    pub required: bool,
    /// May be set in configuration.
    pub optional: bool,
    /// The provider may set it.
    pub computed: bool,
    /// Masked in plan output.
    pub sensitive: bool,
    /// Never stored in plan or state (Terraform ≥ 1.11).
    pub write_only: bool,
    /// Name and type come from the shared model in `schemas/` (see [`Model`]); false
    /// for the few attributes that exist only in Terraform.
    pub from_model: bool,
}

impl Attr {
    fn new(name: &'static str, ty: Type) -> Self {
        Self {
            name,
            ty,
            description: String::new(),
            required: false,
            optional: false,
            computed: false,
            sensitive: false,
            write_only: false,
            from_model: false,
        }
    }
    /// A required attribute.
    pub fn required(name: &'static str, ty: Type) -> Self {
        Self {
            required: true,
            ..Self::new(name, ty)
        }
    }
    /// An optional attribute.
    pub fn optional(name: &'static str, ty: Type) -> Self {
        Self {
            optional: true,
            ..Self::new(name, ty)
        }
    }
    /// An optional attribute the provider fills when absent.
    pub fn optional_computed(name: &'static str, ty: Type) -> Self {
        Self {
            optional: true,
            computed: true,
            ..Self::new(name, ty)
        }
    }
    /// A read-only attribute.
    pub fn computed(name: &'static str, ty: Type) -> Self {
        Self {
            computed: true,
            ..Self::new(name, ty)
        }
    }
    /// Marks it sensitive.
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
    /// Marks it write-only.
    pub fn write_only(mut self) -> Self {
        self.write_only = true;
        self
    }
    /// A list attribute held as a set (order carries no meaning).
    pub fn as_set(mut self) -> Self {
        if let Type::List(t) = self.ty {
            self.ty = Type::Set(t);
        }
        self
    }
    /// Sets the description.
    pub fn describe(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }
}

/// The shared model of a resource: the JSON Schemas (from `schemas/`, via schemars) of
/// the API types that carry it. Attributes built from it take their type and
/// description from the model, so the Terraform schema is not a second copy of it.
///
/// Types follow from the JSON Schema: `string` (also enums, constants, timestamps and
/// intervals) → `string`; `integer`/`number` → `number`; `boolean` → `bool`; arrays →
/// `list`; objects with typed values → `map`; free-form objects → `string` holding
/// JSON (compared by meaning by the resources that have one).
pub struct Model {
    props: serde_json::Map<String, serde_json::Value>,
    defs: serde_json::Map<String, serde_json::Value>,
}

impl Model {
    /// Merges the properties of `schemas`; the first schema that has a property wins.
    pub fn of(schemas: &[schemars::Schema]) -> Self {
        let mut props = serde_json::Map::new();
        let mut defs = serde_json::Map::new();
        for s in schemas {
            let v = s.as_value();
            for (key, into) in [("properties", &mut props), ("$defs", &mut defs)] {
                if let Some(m) = v.get(key).and_then(|p| p.as_object()) {
                    for (k, p) in m {
                        into.entry(k.clone()).or_insert_with(|| p.clone());
                    }
                }
            }
        }
        Self { props, defs }
    }

    /// The Terraform type of a property, if the model has it.
    pub fn type_of(&self, name: &str) -> Option<Type> {
        self.props.get(name).and_then(|p| self.ty(p, 0))
    }

    fn ty(&self, p: &serde_json::Value, depth: u8) -> Option<Type> {
        if depth > 16 {
            return None;
        }
        if let Some(r) = p.get("$ref").and_then(|r| r.as_str()) {
            let def = self.defs.get(r.strip_prefix("#/$defs/")?)?;
            return self.ty(def, depth + 1);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(variants) = p.get(key).and_then(|v| v.as_array()) {
                let mut found: Option<Type> = None;
                for v in variants {
                    if v.get("type").and_then(|t| t.as_str()) == Some("null") {
                        continue;
                    }
                    let t = self.ty(v, depth + 1)?;
                    match &found {
                        Some(f) if *f != t => return None,
                        _ => found = Some(t),
                    }
                }
                return found;
            }
        }
        if p.get("const").is_some_and(|c| c.is_string())
            || p.get("enum")
                .and_then(|e| e.as_array())
                .is_some_and(|e| e.iter().all(|v| v.is_string() || v.is_null()))
        {
            return Some(Type::String);
        }
        let ty = match p.get("type")? {
            serde_json::Value::String(t) => t.as_str(),
            serde_json::Value::Array(ts) => {
                let mut non_null = ts
                    .iter()
                    .filter_map(|t| t.as_str())
                    .filter(|t| *t != "null");
                let t = non_null.next()?;
                if non_null.next().is_some() {
                    return None;
                }
                t
            }
            _ => return None,
        };
        match ty {
            "string" => Some(Type::String),
            "integer" | "number" => Some(Type::Number),
            "boolean" => Some(Type::Bool),
            "array" => Some(Type::list(self.ty(p.get("items")?, depth + 1)?)),
            "object" => match p.get("additionalProperties") {
                Some(ap) if ap.is_object() => Some(Type::map(self.ty(ap, depth + 1)?)),
                _ => Some(Type::String),
            },
            _ => None,
        }
    }

    /// An attribute of the model, typed and described by it.
    ///
    /// # Panics
    /// When the model has no such property (a programming error, caught by every test
    /// that builds the provider's schemas).
    fn attr(&self, name: &'static str) -> Attr {
        let Some(ty) = self.type_of(name) else {
            panic!(
                "attribute {name} is not a property of the shared model (or has no Terraform type)"
            )
        };
        let description = self
            .props
            .get(name)
            .and_then(|p| p.get("description"))
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string();
        Attr {
            description,
            from_model: true,
            ..Attr::new(name, ty)
        }
    }
    /// A required attribute of the model.
    pub fn required(&self, name: &'static str) -> Attr {
        Attr {
            required: true,
            ..self.attr(name)
        }
    }
    /// An optional attribute of the model.
    pub fn optional(&self, name: &'static str) -> Attr {
        Attr {
            optional: true,
            ..self.attr(name)
        }
    }
    /// An optional attribute of the model that the provider fills when absent.
    pub fn optional_computed(&self, name: &'static str) -> Attr {
        Attr {
            optional: true,
            computed: true,
            ..self.attr(name)
        }
    }
    /// A read-only attribute of the model.
    pub fn computed(&self, name: &'static str) -> Attr {
        Attr {
            computed: true,
            ..self.attr(name)
        }
    }
}

/// A resource, data source or provider schema: one block of attributes.
#[derive(Debug, Clone, Default)]
pub struct TfSchema {
    /// Schema version (for state upgrades).
    pub version: i64,
    /// Markdown description.
    pub description: String,
    /// Attributes.
    pub attrs: Vec<Attr>,
}

impl TfSchema {
    /// The object type of a value of this schema.
    pub fn object_type(&self) -> Type {
        Type::Object(
            self.attrs
                .iter()
                .map(|a| (a.name.to_string(), a.ty.clone()))
                .collect(),
        )
    }
}

/// A diagnostic for Terraform.
#[derive(Debug, Clone)]
pub struct Diag {
    /// Error (true) or warning.
    pub error: bool,
    /// One line.
    pub summary: String,
    /// More.
    pub detail: String,
    /// The attribute it is about.
    pub path: Option<Vec<PathStep>>,
    /// The object as an apply that failed part-way left it; see [`partial`].
    pub partial_state: Option<Box<Value>>,
}

impl Diag {
    /// An error.
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error: true,
            summary: summary.into(),
            detail: detail.into(),
            path: None,
            partial_state: None,
        }
    }
    /// A warning.
    pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error: false,
            summary: summary.into(),
            detail: detail.into(),
            path: None,
            partial_state: None,
        }
    }
    /// About attribute `name`.
    pub fn at(mut self, name: &str) -> Self {
        self.path = Some(vec![PathStep::Attr(name.to_string())]);
        self
    }
}

/// Diagnostics; an operation fails when any is an error.
pub type Diags = Vec<Diag>;

/// The errors of an apply that failed after it had created the object, with the object
/// as it now is (`state`, no unknown values). The response then carries that state
/// instead of the prior one (null on a create): Terraform keeps the object, tainted, so
/// the next apply replaces it, instead of forgetting an object that exists (which left
/// an orphan, or a name taken that only an import could get back).
pub fn partial(mut diags: Diags, state: Value) -> Diags {
    if diags.is_empty() {
        diags.push(Diag::error(
            "Apply failed part-way",
            "the object was created, but not all of the configuration could be applied",
        ));
    }
    diags[0].partial_state = Some(Box::new(state));
    diags
}

/// [`partial`] for a create whose object `id` exists but a later step failed: the object
/// as `read_back` found it, or else the planned values with `id` and no unknowns.
pub fn created_then_failed(
    diags: Diags,
    read_back: Result<Value, Diags>,
    planned: &Value,
    id: &str,
) -> Diags {
    let state = match read_back {
        Ok(s) if !s.is_null() => s,
        _ => {
            let mut s = unknowns_to_null(planned);
            s.set("id", Value::string(id));
            s
        }
    };
    partial(diags, state)
}

/// The read-back that ends an apply. When it fails after a create, the object exists, so
/// it stays in the state (tainted, replaced by the next apply) instead of being
/// forgotten and then refused as "already exists".
pub fn read_back(
    read: Result<Value, Diags>,
    created: bool,
    planned: &Value,
    id: &str,
) -> Result<Value, Diags> {
    match read {
        Err(d) if created => Err(created_then_failed(d, Err(Vec::new()), planned, id)),
        r => r,
    }
}

/// `v` with every unknown value, at any depth, made null: a state holds no unknowns.
pub fn unknowns_to_null(v: &Value) -> Value {
    let all = |xs: &[Value]| xs.iter().map(unknowns_to_null).collect();
    let each = |m: &std::collections::BTreeMap<String, Value>| {
        m.iter()
            .map(|(k, x)| (k.clone(), unknowns_to_null(x)))
            .collect()
    };
    match v {
        Value::Unknown(_) => Value::Null,
        Value::List(xs) => Value::List(all(xs)),
        Value::Set(xs) => Value::Set(all(xs)),
        Value::Tuple(xs) => Value::Tuple(all(xs)),
        Value::Map(m) => Value::Map(each(m)),
        Value::Object(m) => Value::Object(each(m)),
        Value::Dynamic(t, x) => Value::Dynamic(t.clone(), Box::new(unknowns_to_null(x))),
        other => other.clone(),
    }
}

/// The first partial state among `diags`, if any.
pub fn partial_state(diags: &Diags) -> Option<&Value> {
    diags.iter().find_map(|d| d.partial_state.as_deref())
}

/// The attribute among `attrs` that a server's refusal is about: the field an
/// `InvalidParameter` message names first (`name: …`, `policies[1]: …`), `name` for
/// `AlreadyExists`, or the attribute `by_code` gives the error's code; else none, and the
/// diagnostic points at the whole block rather than at an attribute it is not about.
pub fn attr_of<'a>(
    e: &strongbox_client::Error,
    attrs: &[&'a str],
    by_code: &[(strongbox_client::ErrorCode, &'a str)],
) -> Option<&'a str> {
    use strongbox_client::{Error as E, ErrorCode as C};
    let E::Api { code, message, .. } = e else {
        return None;
    };
    let named = match code {
        C::InvalidParameter => {
            let field = message.split([':', '.', '[']).next().unwrap_or_default();
            attrs.iter().find(|a| **a == field).copied()
        }
        C::AlreadyExists => attrs.iter().find(|a| **a == "name").copied(),
        _ => None,
    };
    named.or_else(|| by_code.iter().find(|(c, _)| c == code).map(|(_, a)| *a))
}

/// What the client API said, as a diagnostic naming the attribute and the code.
pub fn api_diag(what: &str, attr: Option<&str>, e: &strongbox_client::Error) -> Diag {
    use strongbox_client::Error as E;
    let code = match e {
        E::Api { code, .. } => code.as_str().to_string(),
        // A newer server's code, as it sent it.
        E::UnknownCode { code, .. } => code.clone(),
        E::Status { status } => format!("HTTP {status}"),
        E::Transport(_) => "Transport".into(),
        E::Config(_) => "Configuration".into(),
        E::Decode(_) => "UnexpectedResponse".into(),
        E::Local(_) => "Local".into(),
        E::InvalidArgument(_) => "InvalidArgument".into(),
        _ => "ClientError".into(),
    };
    let d = Diag::error(format!("{what}: {code}"), e.to_string());
    match attr {
        Some(a) => d.at(a),
        None => d,
    }
}

/// What Terraform told us it can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCaps {
    /// Terraform stores nothing of write-only attributes.
    pub write_only_attributes_allowed: bool,
}

/// What `ConfigureProvider` left.
#[derive(Default)]
enum Configured {
    /// Not called yet.
    #[default]
    Not,
    /// Some settings are known only after apply (a plan before the server exists): the
    /// plan goes on as far as it needs no server, and what needs one fails with these.
    Unknown(Diags),
    /// Ready.
    Client(Client),
}

/// Shared by every request: the configured API client.
pub struct Ctx {
    client: RwLock<Configured>,
    /// Terraform version from Configure.
    pub terraform_version: RwLock<String>,
    /// Bumped by `StopProvider`: work started before the bump is cancelled.
    stops: tokio::sync::watch::Sender<u64>,
}

impl Default for Ctx {
    fn default() -> Self {
        Self {
            client: RwLock::default(),
            terraform_version: RwLock::default(),
            stops: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Ctx {
    /// Runs `work` unless `StopProvider` arrives first: then the work is dropped (its
    /// HTTP request is aborted) and the call ends with a diagnostic. Calls that start
    /// after the stop run normally; the provider keeps serving.
    pub async fn cancellable<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Diags>>,
    ) -> Result<T, Diags> {
        // A new receiver has seen the current generation: only a later stop wakes it.
        let mut stops = self.stops.subscribe();
        tokio::select! {
            r = work => r,
            _ = stops.changed() => Err(vec![Diag::error(
                "Operation cancelled",
                "Terraform asked the provider to stop (StopProvider) while this call was in flight; nothing more was sent to the server",
            )]),
        }
    }

    /// `StopProvider`: cancels every call in flight.
    pub fn stop(&self) {
        self.stops.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The configured client, or an error diagnostic.
    pub fn client(&self) -> Result<Client, Diags> {
        let not_configured = || {
            vec![Diag::error(
                "Provider not configured",
                "ConfigureProvider was not called",
            )]
        };
        match self.client.read().as_deref() {
            Ok(Configured::Client(c)) => Ok(c.clone()),
            Ok(Configured::Unknown(d)) => Err(d.clone()),
            Ok(Configured::Not) | Err(_) => Err(not_configured()),
        }
    }

    /// Installs the client.
    pub fn set_client(&self, c: Client) {
        if let Ok(mut g) = self.client.write() {
            *g = Configured::Client(c);
        }
    }

    /// Notes a configuration known only after apply: `why` is what every call that
    /// needs the server answers (without attribute paths, which would point into the
    /// resource's configuration, not the provider's).
    pub fn set_unknown(&self, why: Diags) {
        let why = why
            .into_iter()
            .map(|mut d| {
                d.path = None;
                d
            })
            .collect();
        if let Ok(mut g) = self.client.write() {
            *g = Configured::Unknown(why);
        }
    }
}

/// `PlanResourceChange` input.
pub struct PlanReq<'a> {
    /// Null on create.
    pub prior: &'a Value,
    /// Null on destroy.
    pub proposed: &'a Value,
    /// Null on destroy.
    pub config: &'a Value,
}

/// `PlanResourceChange` output.
pub struct PlanResp {
    /// Planned new state.
    pub planned: Value,
    /// Attributes whose change forces replacement.
    pub requires_replace: Vec<&'static str>,
    /// Warnings.
    pub diags: Diags,
}

/// A managed resource type.
#[async_trait::async_trait]
pub trait Resource: Send + Sync {
    /// Type name, e.g. `strongbox_secret`.
    fn name(&self) -> &'static str;
    /// Schema.
    fn schema(&self) -> TfSchema;
    /// Static checks of a configuration (values may be unknown).
    fn validate(&self, _config: &Value, _caps: ClientCaps) -> Diags {
        Vec::new()
    }
    /// Plans a create or update.
    async fn plan(&self, ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags>;
    /// Warnings for a planned destroy of `prior` (Terraform ≥ 1.3 plans destroys with
    /// the provider); the plan itself is always the null.
    async fn plan_destroy(&self, _ctx: &Ctx, _prior: &Value) -> Diags {
        Vec::new()
    }
    /// Applies the plan; returns the new state (null after a destroy).
    async fn apply(
        &self,
        ctx: &Ctx,
        prior: &Value,
        planned: &Value,
        config: &Value,
    ) -> Result<Value, Diags>;
    /// Refreshes; null when the remote object is gone.
    async fn read(&self, ctx: &Ctx, state: &Value) -> Result<Value, Diags>;
    /// State from an import id.
    async fn import(&self, ctx: &Ctx, id: &str) -> Result<Value, Diags>;
}

/// A data source type.
#[async_trait::async_trait]
pub trait DataSource: Send + Sync {
    /// Type name.
    fn name(&self) -> &'static str;
    /// Schema.
    fn schema(&self) -> TfSchema;
    /// Reads it.
    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags>;
}

/// An ephemeral resource type (Terraform ≥ 1.10): its result never lands in plan or state.
#[async_trait::async_trait]
pub trait Ephemeral: Send + Sync {
    /// Type name.
    fn name(&self) -> &'static str;
    /// Schema.
    fn schema(&self) -> TfSchema;
    /// Opens it.
    async fn open(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diags>;
}

/// Everything the provider serves.
pub struct Core {
    /// Request context.
    pub ctx: Ctx,
    /// Provider configuration schema.
    pub provider_schema: TfSchema,
    /// Resources by type name.
    pub resources: BTreeMap<&'static str, Arc<dyn Resource>>,
    /// Data sources by type name.
    pub data_sources: BTreeMap<&'static str, Arc<dyn DataSource>>,
    /// Ephemeral resources by type name.
    pub ephemerals: BTreeMap<&'static str, Arc<dyn Ephemeral>>,
}

/// Attribute access on object values.
pub trait ObjExt {
    /// The attribute, or null.
    fn attr(&self, name: &str) -> &Value;
    /// A known string attribute.
    fn str_attr(&self, name: &str) -> Option<&str>;
    /// A known bool attribute.
    fn bool_attr(&self, name: &str) -> Option<bool>;
    /// A known whole-number attribute.
    fn int_attr(&self, name: &str) -> Option<i64>;
    /// A known map-of-strings attribute.
    fn map_attr(&self, name: &str) -> Option<BTreeMap<String, String>>;
    /// Sets an attribute (on objects).
    fn set(&mut self, name: &str, v: Value);
}

static NULL: Value = Value::Null;

impl ObjExt for Value {
    fn attr(&self, name: &str) -> &Value {
        self.get_attr(name).unwrap_or(&NULL)
    }
    fn str_attr(&self, name: &str) -> Option<&str> {
        self.attr(name).as_str()
    }
    fn bool_attr(&self, name: &str) -> Option<bool> {
        self.attr(name).as_bool()
    }
    fn int_attr(&self, name: &str) -> Option<i64> {
        self.attr(name).as_number().and_then(|n| n.to_i64())
    }
    fn map_attr(&self, name: &str) -> Option<BTreeMap<String, String>> {
        match self.attr(name) {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect(),
            _ => None,
        }
    }
    fn set(&mut self, name: &str, v: Value) {
        if let Value::Object(m) = self {
            m.insert(name.to_string(), v);
        }
    }
}

/// An error for each attribute of `obj` (a resource's configuration or plan) that is a
/// map, list or set holding a null element. The server has no null in any of them: such
/// an element would be dropped, the result would differ from the plan, and a map read as
/// a whole would be lost. Checked for every resource when its configuration is validated
/// and again before apply (a value unknown at validation may turn out null).
pub fn no_null_elements(obj: &Value) -> Diags {
    let Value::Object(attrs) = obj else {
        return Vec::new();
    };
    attrs
        .iter()
        .filter(|(_, v)| match v {
            Value::Map(m) => m.values().any(Value::is_null),
            Value::List(l) | Value::Set(l) => l.iter().any(Value::is_null),
            _ => false,
        })
        .map(|(a, _)| {
            Diag::error(
                format!("Invalid {a}"),
                format!(
                    "{a} cannot hold a null element: give it a value, or leave the element out"
                ),
            )
            .at(a)
        })
        .collect()
}

/// A string value, or null for `None`.
pub fn opt_str(s: Option<impl Into<String>>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.into()))
}

/// A map-of-strings value.
pub fn str_map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The empty object of a schema (every attribute null).
pub fn null_object(schema: &TfSchema) -> Value {
    Value::Object(
        schema
            .attrs
            .iter()
            .map(|a| (a.name.to_string(), Value::Null))
            .collect(),
    )
}

#[cfg(test)]
mod api_diag_tests {
    use super::*;
    use strongbox_client::Error as E;

    /// Each kind of client error is named in the summary by what it is: the server's
    /// code (also one this client does not know), a bare HTTP status, or the client's
    /// own kind; only a failed connection is "Transport".
    #[test]
    fn a_diagnostic_names_what_kind_of_error_it_was() {
        let summary = |e: E| api_diag("Reading failed", Some("name"), &e).summary;
        let api = E::Api {
            status: 404,
            code: strongbox_client::ErrorCode::SecretNotFound,
            message: "m".into(),
            request_id: "r".into(),
        };
        assert_eq!(summary(api), "Reading failed: SecretNotFound");
        let newer = E::UnknownCode {
            status: 409,
            code: "QuotaExceeded".into(),
            message: "m".into(),
            request_id: "r".into(),
        };
        assert_eq!(summary(newer), "Reading failed: QuotaExceeded");
        assert_eq!(
            summary(E::Status { status: 502 }),
            "Reading failed: HTTP 502"
        );
        assert_eq!(
            summary(E::InvalidArgument(".".into())),
            "Reading failed: InvalidArgument"
        );
        assert_eq!(
            summary(E::Transport("refused".into())),
            "Reading failed: Transport"
        );
        assert_eq!(
            summary(E::Decode("x".into())),
            "Reading failed: UnexpectedResponse"
        );
    }
}
