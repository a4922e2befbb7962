//! The OpenAPI 3.1 document, generated from the route table and the `schemas` crate.
//! A golden copy lives at `schemas/openapi.json`; `STRONGBOX_BLESS=1 cargo test` rewrites it.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::route_table;

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
                   "description": "percent-encode any / inside the value"})
        })
        .collect()
}

/// An operation id for a route without an action: its last path segment, capitalized
/// (`/v1/health` is `Health`).
fn operation_of_path(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or(path);
    let mut chars = last.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Builds the document.
pub fn openapi_document() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let error_ref = generator.subschema_for::<strongbox_schemas::ErrorBody>();

    let mut paths: Map<String, Value> = Map::new();
    for r in route_table() {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        op.insert(
            "operationId".into(),
            // The action's name; a route without one (health) by its last segment.
            json!(
                r.action
                    .rsplit(':')
                    .next()
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| operation_of_path(r.path))
            ),
        );
        if !r.action.is_empty() {
            op.insert("x-strongbox-action".into(), json!(r.action));
            op.insert("x-strongbox-resource".into(), json!(r.resource.template()));
            op.insert("security".into(), json!([{"bearer": []}]));
        } else {
            op.insert("security".into(), json!([]));
        }
        let mut params = path_params(r.path);
        params.extend(header_params(r.method, r.path));
        if let Some(q) = r.query {
            let schema = q(&mut generator);
            let resolved = resolve(&generator, schema.as_value());
            if let Some(props) = resolved.get("properties").and_then(Value::as_object) {
                for (name, s) in props {
                    params
                        .push(json!({"name": name, "in": "query", "required": false, "schema": s}));
                }
            }
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(req) = r.request {
            let schema = req(&mut generator);
            op.insert(
                "requestBody".into(),
                json!({"required": !r.optional_body, "content": {"application/json": {"schema": schema}}}),
            );
        }
        let mut responses = Map::new();
        let ok = match r.response {
            Some(resp) => {
                json!({"description": "success", "content": {"application/json": {"schema": resp(&mut generator)}}})
            }
            None => match untyped_body(r.path) {
                Some((media, schema)) => {
                    json!({"description": "success", "content": {media: {"schema": schema}}})
                }
                None => json!({"description": "success"}),
            },
        };
        if r.path == "/v1/health" {
            // Not the error format: the same body, naming the state.
            responses.insert(
                "503".into(),
                json!({"description": "storage is failing (status `storage_failing`): writes, and reads (whose audit records are writes), are refused until it recovers", "content": ok["content"].clone()}),
            );
        }
        responses.insert(r.status.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({"description": "error", "content": {"application/json": {"schema": error_ref}}}),
        );
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(r.method.to_ascii_lowercase(), Value::Object(op));
        }
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Strongbox",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Secrets manager and key-management control plane. Errors are {code, message, request_id} with stable codes."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

fn resolve(generator: &schemars::SchemaGenerator, v: &Value) -> Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            generator
                .definitions()
                .get(name)
                .cloned()
                .unwrap_or(Value::Null)
        }
        None => v.clone(),
    }
}

/// The media type and schema of a success body that is not a JSON type of the model.
/// Headers a route acts on.
fn header_params(method: &str, path: &str) -> Vec<Value> {
    match (method, path) {
        ("PUT", "/v1/aliases/{alias}") => vec![json!({
            "name": "If-None-Match", "in": "header", "required": false,
            "schema": {"type": "string", "const": "*"},
            "description": "`*`: only create the alias (`AlreadyExists` when it exists), never move it; any other value is refused"
        })],
        _ => Vec::new(),
    }
}

fn untyped_body(path: &str) -> Option<(&'static str, Value)> {
    match path {
        "/v1/backup" => Some((
            "application/octet-stream",
            json!({"type": "string", "format": "binary"}),
        )),
        "/metrics" => Some((
            "application/openmetrics-text",
            json!({"type": "string", "description": "OpenMetrics 1.0 text format (Prometheus scrapes it)"}),
        )),
        "/v1/openapi.json" => Some(("application/json", json!({"type": "object"}))),
        _ => None,
    }
}
