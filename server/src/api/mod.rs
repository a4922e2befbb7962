//! The HTTP edge: one route table builds the router, the authentication check and the
//! OpenAPI document, so no route can exist without an action to authorize.

mod error;
mod extract;
mod handlers;
mod metrics;
mod openapi;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use strongbox_schemas::ErrorCode;

pub use error::ApiError;
pub use metrics::Metrics;
pub use openapi::openapi_document;

use crate::barrier;
use crate::service::{Principal, Service};

/// Largest request body accepted (a 30 KiB value base64-encoded fits with room).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One row of the route table.
#[derive(Clone)]
pub struct RouteSpec {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path with `{param}` placeholders.
    pub path: &'static str,
    /// The action a caller must be allowed (empty: public).
    pub action: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Success status.
    pub status: u16,
    /// JSON Schema of the request body, if any.
    pub request: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
    /// JSON Schema of the query parameters, if any.
    pub query: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
    /// JSON Schema of the success body (none for 204).
    pub response: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Domain services.
    pub service: Service,
    /// SHA-256 of the root token.
    pub root_token_sha256: [u8; 32],
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    routes: Arc<HashMap<(String, String), RouteSpec>>,
}

impl AppState {
    /// State over services, authenticating the root token by its hash.
    pub fn new(service: Service, root_token_sha256: [u8; 32]) -> Self {
        let routes = handlers::route_table()
            .into_iter()
            .map(|r| ((r.method.to_string(), r.path.to_string()), r))
            .collect();
        Self {
            service,
            root_token_sha256,
            metrics: Arc::default(),
            routes: Arc::new(routes),
        }
    }
}

/// The application: routes, authentication, metrics, request ids, error format.
pub fn app(state: AppState) -> Router {
    handlers::router()
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this path",
    )
}

async fn request_id(req: Request, next: Next) -> Response {
    let id = format!("{:032x}", rand::random::<u128>());
    let method = req.method().clone();
    let mut resp = error::REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // Paths are logged without query strings; bodies and tokens never.
    tracing::debug!(request_id = %id, %method, status = resp.status().as_u16(), "request");
    resp
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let key = (req.method().as_str().to_string(), route.unwrap_or_default());
    let Some(spec) = state.routes.get(&key) else {
        // A route outside the table cannot be authorized, so it is refused.
        return ApiError::new(ErrorCode::Forbidden, "route has no authorization rule")
            .into_response();
    };
    if spec.action.is_empty() {
        return next.run(req).await;
    }
    let authenticated = bearer(&req)
        .map(|t| barrier::sha256(t.as_bytes()))
        .is_some_and(|h| barrier::digest_eq(&h, &state.root_token_sha256));
    if !authenticated {
        let mut resp = ApiError::new(
            ErrorCode::Unauthenticated,
            "a valid token is required: Authorization: Bearer TOKEN",
        )
        .into_response();
        resp.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return resp;
    }
    req.extensions_mut()
        .insert(extract::Caller(Principal::Named("root".into())));
    next.run(req).await
}
