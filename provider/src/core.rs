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
    /// Sets the description.
    pub fn describe(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
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

    /// Fills descriptions from a JSON Schema of the shared model (by attribute name),
    /// where the provider has not written its own.
    pub fn describe_from(mut self, model: &schemars::Schema) -> Self {
        let props = model
            .as_value()
            .get("properties")
            .and_then(|p| p.as_object())
            .cloned()
            .unwrap_or_default();
        for a in &mut self.attrs {
            if a.description.is_empty()
                && let Some(d) = props
                    .get(a.name)
                    .and_then(|p| p.get("description"))
                    .and_then(|d| d.as_str())
            {
                a.description = d.to_string();
            }
        }
        self
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
}

impl Diag {
    /// An error.
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error: true,
            summary: summary.into(),
            detail: detail.into(),
            path: None,
        }
    }
    /// A warning.
    pub fn warning(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            error: false,
            summary: summary.into(),
            detail: detail.into(),
            path: None,
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

/// What the client API said, as a diagnostic naming the attribute and the code.
pub fn api_diag(what: &str, attr: Option<&str>, e: &strongbox_client::Error) -> Diag {
    let code = e
        .code()
        .map(|c| c.as_str().to_string())
        .unwrap_or_else(|| "Transport".into());
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

/// Shared by every request: the configured API client.
#[derive(Default)]
pub struct Ctx {
    client: RwLock<Option<Client>>,
    /// Terraform version from Configure.
    pub terraform_version: RwLock<String>,
}

impl Ctx {
    /// The configured client, or an error diagnostic.
    pub fn client(&self) -> Result<Client, Diags> {
        self.client
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                vec![Diag::error(
                    "Provider not configured",
                    "ConfigureProvider was not called",
                )]
            })
    }

    /// Installs the client.
    pub fn set_client(&self, c: Client) {
        if let Ok(mut g) = self.client.write() {
            *g = Some(c);
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
    /// Plans a create, update or destroy.
    async fn plan(&self, ctx: &Ctx, req: PlanReq<'_>) -> Result<PlanResp, Diags>;
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
