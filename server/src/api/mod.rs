//! The HTTP edge: one route table builds the router, the authorization of every route
//! (action and resource), the audit record of every request and the OpenAPI document,
//! so no route can exist without a policy check.

mod error;
mod extract;
mod guard;
mod handlers;
mod metrics;
mod openapi;
mod throttle;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use strongbox_schemas::ErrorCode;

pub use error::ApiError;
pub use handlers::{known_actions, route_table};
pub use metrics::Metrics;
pub use openapi::openapi_document;

use crate::service::Service;

/// Largest request body accepted: the largest create fits however its JSON escapes it.
/// A value of 30,720 bytes takes at most 184,320 (a control character takes 6 bytes as
/// `\u0001`, a character outside the BMP 12 as a surrogate pair, Python's default); an
/// `Rds` secret's CA bundle of 160 KiB at most twice that (its line ends, `\/` where an
/// encoder escapes slashes); the rest of the configuration (16 KiB), the description
/// and the tags take the remaining 140 KiB, escaped as they may be. Only an authorized
/// caller's body is read.
pub const MAX_BODY_BYTES: usize = 640 * 1024;

/// How a route's resource is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceRule {
    /// A template over the path parameters, such as `secret/{name}`; one without
    /// placeholders (`*`, `key/*`) is the same for every request (lists, creates whose id
    /// the server picks, server-wide routes).
    Path(&'static str),
    /// A create: the template is filled from the top-level string fields of the JSON
    /// body of the same name, so `secret/{name}` authorizes against the secret it would
    /// create.
    Body(&'static str),
}

impl ResourceRule {
    /// The template.
    pub fn template(&self) -> &'static str {
        match self {
            ResourceRule::Path(t) | ResourceRule::Body(t) => t,
        }
    }

    /// The resource of a request with these path parameters and (for a create) body.
    pub fn resource(
        &self,
        path_params: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Option<String> {
        match self {
            ResourceRule::Path(t) => guard::fill(t, |k| {
                path_params
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }),
            ResourceRule::Body(t) => guard::fill(t, |k| body?.get(k)?.as_str().map(str::to_string)),
        }
    }
}

/// One row of the route table.
#[derive(Clone)]
pub struct RouteSpec {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path with `{param}` placeholders.
    pub path: &'static str,
    /// The action a caller must be allowed (empty: public, not audited).
    pub action: &'static str,
    /// The resource the action is authorized against.
    pub resource: ResourceRule,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Success status.
    pub status: u16,
    /// JSON Schema of the request body, if any.
    pub request: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
    /// Whether the body may be left out (its handler takes an `OptionalJson`).
    pub optional_body: bool,
    /// JSON Schema of the query parameters, if any.
    pub query: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
    /// JSON Schema of the success body (none for 204).
    pub response: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
}

/// What every handler can reach. Cheap to clone: one reference count.
///
/// Every request clones the state several times (each middleware and extractor takes
/// its own), from every core at once, so it is one `Arc`: a reference count that all
/// cores update is a cache line they pass between them, and the profile showed three
/// of them (one per field) costing about 3 % of the server's CPU.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The fields of [`AppState`].
pub struct StateInner {
    /// Domain services.
    pub service: Service,
    /// Metrics registry.
    pub metrics: Metrics,
    routes: HashMap<(&'static str, &'static str), RouteSpec>,
    /// Time for a request's body to arrive, once its headers have.
    pub body_read_timeout: std::time::Duration,
    /// Limits on requests without a valid token, per client address and server-wide.
    unauthenticated: Option<throttle::Unauthenticated>,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// State over services, with the default limits.
    pub fn new(service: Service) -> Self {
        Self::with_limits(service, &crate::tls::ConnectionLimits::default())
    }

    /// State over services, with the time a request's body has to arrive and the limit
    /// on requests without a valid token from `limits`.
    pub fn with_limits(service: Service, limits: &crate::tls::ConnectionLimits) -> Self {
        let routes = handlers::route_table()
            .into_iter()
            .map(|r| ((r.method, r.path), r))
            .collect();
        Self(Arc::new(StateInner {
            service,
            metrics: Metrics::default(),
            routes,
            body_read_timeout: limits.body_read_timeout,
            unauthenticated: throttle::Unauthenticated::new(limits.unauthenticated_per_second),
        }))
    }
}

/// The application: routes, authentication and authorization, audit, metrics, request
/// ids, error format.
pub fn app(state: AppState) -> Router {
    handlers::router()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn(limit_uri))
        .layer(middleware::from_fn_with_state(state.clone(), guard::audit))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Longest request URI (path and query string) served; no valid request comes close.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Time for a request's body to arrive, once its headers have (the default of
/// [`AppState::body_read_timeout`]).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A request body, whole: at most [`MAX_BODY_BYTES`], within `timeout`.
pub(crate) async fn read_body(
    body: axum::body::Body,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    // Most requests (every read) have none: no timer for them.
    if axum::body::HttpBody::is_end_stream(&body) {
        return Ok(axum::body::Bytes::new());
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES));
    match read.await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
            let mut too_large = false;
            while let Some(c) = cause {
                too_large |= c.is::<http_body_util::LengthLimitError>();
                cause = c.source();
            }
            Err(if too_large {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            } else {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "the request body could not be read",
                )
            })
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

/// Refuses a request whose URI is longer than [`MAX_URI_BYTES`] before it is routed
/// (it is still audited, without a resource).
async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return ApiError::new(
            ErrorCode::InvalidParameter,
            format!("the request URI is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// A handler that panics answers 500 `InternalError` (and its request is audited as
/// failed), instead of the connection being dropped with no answer and no record.
async fn catch_panic(req: Request, next: Next) -> Response {
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!("a request handler panicked");
            ApiError::new(ErrorCode::InternalError, "internal error").into_response()
        }
    }
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

/// The route table path a request matched, noted by [`guard::authorize`] so that
/// [`guard::audit`], which sees the final response, can label its metrics.
#[derive(Clone, Default)]
pub(crate) struct RouteNote(Arc<std::sync::OnceLock<&'static str>>);

impl RouteNote {
    fn set(&self, path: &'static str) {
        let _ = self.0.set(path);
    }

    fn route(&self) -> &'static str {
        self.0.get().copied().unwrap_or(metrics::UNMATCHED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_internal_error() {
        let app: Router = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .layer(middleware::from_fn(catch_panic));
        let req = Request::builder()
            .uri("/boom")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "InternalError");
    }

    /// Every placeholder of a path template is a parameter of its route's path, and a
    /// create's template names only body fields; every route but health has an action.
    #[test]
    fn resource_templates_name_what_their_route_provides() {
        for r in route_table() {
            let t = r.resource.template();
            let mut rest = t;
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').map(|c| c + open);
                let Some(close) = close else {
                    panic!("{} {}: unclosed placeholder in {t}", r.method, r.path);
                };
                let name = &rest[open..=close];
                if let ResourceRule::Path(_) = r.resource {
                    assert!(
                        r.path.contains(name),
                        "{} {}: {name} is not a path parameter",
                        r.method,
                        r.path
                    );
                }
                rest = &rest[close + 1..];
            }
            assert_eq!(r.action.is_empty(), r.path == "/v1/health", "{}", r.path);
            if !r.action.is_empty() {
                assert!(
                    t == "*"
                        || strongbox_schemas::RESOURCE_TYPES
                            .iter()
                            .any(|p| t.starts_with(p))
                        || t.starts_with('{'),
                    "{} {}: {t}",
                    r.method,
                    r.path
                );
            }
        }
        assert!(known_actions().contains(&"audit:Read"));
        assert!(known_actions().contains(&"ram:AttachPolicy"));
    }
}
