//! The request guard: authentication, authorization from the route table, and the
//! audit record of every request.
//!
//! Two middlewares share the work. [`audit`] wraps every request (matched or not): it
//! drafts the record (time, request id, source, user agent), authenticates the bearer
//! token if there is one, runs the request with the draft as its audit slot, and after
//! the response records it, unless a write job already did so together with its change
//! (or, if the client went away first, as abandoned).
//! If the record cannot be written, the response is replaced by an error. A request other
//! than `GET`/`HEAD` runs on a task of its own (holding its connection's places), so that
//! a client going away does not stop it between what it started and its record. Requests
//! without a valid token past their address's allowance (or the server's) are answered
//! 429 instead, and most of those are not recorded (`throttle`). [`authorize`]
//! runs on matched routes only: it forms the route's resource, answers 401 or 403, or
//! lets the handler run with the caller's identity.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use strongbox_schemas::{AuditOutcome, ErrorCode, RESOURCE_TYPES};

use super::error::{ApiError, current_request_id};
use super::extract::{Caller, is_json};
use super::metrics::method_label;
use super::throttle::Verdict;
use super::{AppState, ResourceRule, RouteNote, RouteSpec};
use crate::Error;
use crate::service::{AuditEntry, AuditSlot, Identity};
use crate::tls::{ConnectionHold, PeerAddr};

/// What the bearer token (if any) proved; set by [`audit`], read by [`authorize`].
#[derive(Clone)]
enum Authn {
    Missing,
    Valid(Arc<Identity>),
    Refused(Error),
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive).
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Outermost of the two: drafts, runs and records; then counts the request in the
/// metrics, with its final status and its whole time (the record's commit included).
///
/// A request that may change something runs to its end, record and metrics included,
/// also when its client goes away (hyper drops the connection's future): a rotate
/// request starts a rotation that goes on without it, and must not lose the record
/// naming its caller. It runs on a task of its own, which keeps a hold on its connection
/// (`tls::ConnectionHold`): the connection limits still bound such work, and a shutdown
/// waits for it. Reads stay on the connection's task (a spawn per read would cost them
/// all): one whose client goes away before the answer is dropped there, and recorded
/// as such (`ClientClosedRequest`) by [`RecordIfAbandoned`].
pub(super) async fn audit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return observed(state, req, next).await;
    }
    let hold = req.extensions().get::<ConnectionHold>().cloned();
    let id = current_request_id();
    let task = tokio::spawn(super::error::REQUEST_ID.scope(id, async move {
        let _hold = hold;
        observed(state, req, next).await
    }));
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "a request's task ended without an answer");
            ApiError::new(ErrorCode::InternalError, "internal error").into_response()
        }
    }
}

/// [`audit`]'s work: the record, then the metrics.
async fn observed(state: AppState, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let note = RouteNote::default();
    req.extensions_mut().insert(note.clone());
    let resp = record(&state, req, next).await;
    state.metrics.observe(
        method,
        note.route(),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Drafts the request's record, runs the request, records it.
async fn record(state: &AppState, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let mut entry = AuditEntry {
        time: state.service.now(),
        request_id: current_request_id(),
        principal: "anonymous".into(),
        source: peer.map(|p| p.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    if let Some(ua) = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        entry.set_user_agent(ua);
    }
    let authn = match bearer(req.headers()).map(|t| state.service.authenticate(t)) {
        None => Authn::Missing,
        Some(Ok(id)) => {
            entry.principal = id.principal().to_string();
            Authn::Valid(id)
        }
        Some(Err(e)) => Authn::Refused(e),
    };
    // No token, or one refused as not valid (not a token the server could not check
    // for a failure of its own).
    let unauthenticated = match &authn {
        Authn::Missing => true,
        Authn::Refused(e) => e.code == ErrorCode::Unauthenticated,
        Authn::Valid(_) => false,
    };
    req.extensions_mut().insert(authn);
    let slot = AuditSlot::new(entry);
    req.extensions_mut().insert(slot.clone());
    let abandoned = RecordIfAbandoned {
        service: &state.service,
        slot: &slot,
    };
    let resp = state.service.audited(slot.clone(), next.run(req)).await;
    abandoned.disarm();
    // A request without a valid token past its address's allowance (or the server's)
    // is refused instead: it did nothing (no handler runs without a caller, and it was
    // refused with a 4xx), and it is recorded only if it is the address's first such
    // refusal this minute (api::throttle).
    let resp = match (&state.unauthenticated, peer.map(|p| p.ip())) {
        (Some(limit), Some(ip))
            if unauthenticated && slot.is_open() && resp.status().is_client_error() =>
        {
            match limit.check(ip) {
                Verdict::Admit => resp,
                Verdict::RefuseRecorded => {
                    tracing::warn!(
                        client = %crate::tls::client_of(ip),
                        per_second = limit.per_second(),
                        "requests without a valid token from this client exceed its limit: refused (429), and not recorded but for one a minute"
                    );
                    too_many(limit)
                }
                Verdict::RefuseUnrecorded => {
                    state.metrics.unrecorded();
                    return too_many(limit);
                }
                Verdict::RefuseServerWide { log } => {
                    if log {
                        tracing::warn!(
                            per_second = limit.per_second(),
                            "requests without a valid token exceed the server-wide limit: refused (429) and not recorded"
                        );
                    }
                    state.metrics.unrecorded();
                    return too_many(limit);
                }
            }
        }
        _ => resp,
    };
    let status = resp.status();
    let outcome = if status.is_success() || status.is_redirection() {
        AuditOutcome::Succeeded
    } else if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        AuditOutcome::Denied
    } else {
        AuditOutcome::Failed
    };
    let code = resp.extensions().get::<ErrorCode>().copied();
    match state.service.finish_audit(&slot, outcome, code).await {
        Ok(()) => resp,
        // The request was not recorded, so it is not answered: a read's value is dropped.
        Err(e) => ApiError(e).into_response(),
    }
}

/// Records the request if it is dropped while its handler runs: its client went away
/// (a `GET` runs on its connection's task, which hyper drops then). Once the handler has
/// answered, [`record`] records it (or decides not to) itself.
struct RecordIfAbandoned<'a> {
    service: &'a crate::service::Service,
    slot: &'a AuditSlot,
}

impl RecordIfAbandoned<'_> {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for RecordIfAbandoned<'_> {
    fn drop(&mut self) {
        self.service.record_abandoned(self.slot);
    }
}

/// The answer to a request refused by [`throttle`](super::throttle).
fn too_many(limit: &super::throttle::Unauthenticated) -> Response {
    let mut resp = ApiError::new(ErrorCode::TooManyRequests, limit.message()).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Fills `{param}` placeholders from `lookup`; `None` if one has no value.
pub(super) fn fill(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')? + open;
        out.push_str(&rest[..open]);
        out.push_str(&lookup(&rest[open + 1..close])?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn well_formed(resource: &str) -> bool {
    resource == "*" || RESOURCE_TYPES.iter().any(|t| resource.starts_with(t))
}

/// The resource a create names in its body: the body is read (within the size limit),
/// checked to be JSON, and handed on unchanged to the handler.
async fn body_resource(
    template: &str,
    body: Body,
    timeout: std::time::Duration,
) -> Result<(String, Body), ApiError> {
    let bytes = super::read_body(body, timeout).await?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("body: {e}")))?;
    let resource = fill(template, |field| {
        v.get(field).and_then(|f| f.as_str()).map(str::to_string)
    })
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("body: the fields of {template} are required strings"),
        )
    })?;
    Ok((resource, Body::from(bytes)))
}

/// Runs on matched routes: 401, 403, or the handler with a [`Caller`].
pub(super) async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // HEAD is answered by the GET route (without the body), so it is authorized as one.
    let method = match req.method() {
        &axum::http::Method::HEAD => "GET",
        m => m.as_str(),
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let Some(spec) = state.routes.get(&(method, path)).cloned() else {
        // A route outside the table cannot be authorized, so it is refused.
        return ApiError::new(ErrorCode::Forbidden, "route has no authorization rule")
            .into_response();
    };
    if let Some(note) = req.extensions().get::<RouteNote>() {
        note.set(spec.path);
    }
    let slot = req.extensions().get::<AuditSlot>().cloned();
    if spec.action.is_empty() {
        if let Some(s) = &slot {
            s.exempt();
        }
        return next.run(req).await;
    }
    let (req, resource) = match check(&spec, slot.as_ref(), req, state.body_read_timeout).await {
        Ok(checked) => checked,
        Err(resp) => return resp,
    };
    // Authorized: the body is read whole, within its time, so that a client cannot hold
    // a connection by dripping it. (Nothing is read before the caller is known; a
    // create's body, read to name its resource, is in memory already.)
    let (mut parts, body) = req.into_parts();
    // Whether the body may have kept the request waiting: anything but a request that
    // came with none (every read), however long what arrives turns out to be.
    let waited = !axum::body::HttpBody::is_end_stream(&body);
    let bytes = match super::read_body(body, state.body_read_timeout).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    // The body may have taken up to its timeout: the token and its policies are checked
    // again as they are now, so a token revoked or expired, a policy detached or a Deny
    // added meanwhile holds, and the handler acts with the identity as it is now.
    if waited {
        let fresh = match bearer(&parts.headers).map(|t| state.service.authenticate(t)) {
            Some(Ok(id)) => id,
            Some(Err(e)) => return challenge(ApiError(e)),
            None => {
                return challenge(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "a valid token is required: Authorization: Bearer TOKEN",
                ));
            }
        };
        if !fresh.allows(spec.action, &resource) {
            return ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "principal {} is not allowed {} on {resource}",
                    fresh.principal(),
                    spec.action
                ),
            )
            .into_response();
        }
        parts.extensions.insert(Caller(fresh));
    }
    // What the route does not take is refused, not ignored: a body on a route without
    // one (`DELETE` with AWS-style parameters in JSON) or a query string on a route
    // without parameters (`?pending_window_in_days=7` on schedule-deletion) would
    // otherwise be dropped and the request done with the defaults.
    if spec.request.is_none() && !bytes.is_empty() {
        return ApiError(crate::error::Error::invalid(
            "body",
            format!("{} {} takes no request body", spec.method, spec.path),
        ))
        .into_response();
    }
    if spec.query.is_none()
        && let Some(q) = parts.uri.query().filter(|q| !q.is_empty())
    {
        let names: Vec<String> = url_query_names(q);
        return ApiError(crate::error::Error::invalid(
            "query",
            format!(
                "{} {} takes no query parameters (got {})",
                spec.method,
                spec.path,
                names.join(", ")
            ),
        ))
        .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The parameter names of a query string, for an error message: the names of `NAME=…`
/// parameters, never values, and a count for the bare ones (`?hunter2` may be a value).
fn url_query_names(q: &str) -> Vec<String> {
    let parts = q.split('&').filter(|p| !p.is_empty());
    let mut names: Vec<String> = parts
        .clone()
        .filter_map(|p| p.split_once('=').map(|(n, _)| n))
        .map(|name| {
            percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect()
        })
        .collect();
    match parts.filter(|p| !p.contains('=')).count() {
        0 => {}
        1 => names.push("a parameter without a value".into()),
        n => names.push(format!("{n} parameters without a value")),
    }
    names
}

/// The caller's identity, or why there is none.
fn identity(parts: &Parts) -> Result<Arc<Identity>, ApiError> {
    match parts.extensions.get::<Authn>().cloned() {
        Some(Authn::Valid(id)) => Ok(id),
        Some(Authn::Refused(e)) => Err(ApiError(e)),
        Some(Authn::Missing) | None => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "a valid token is required: Authorization: Bearer TOKEN",
        )),
    }
}

/// The error as a response; a 401 says which scheme to use.
fn challenge(e: ApiError) -> Response {
    let unauthenticated = e.0.code == ErrorCode::Unauthenticated;
    let mut resp = e.into_response();
    if unauthenticated {
        resp.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The resource of a create, from its JSON body (which is handed on unchanged).
async fn create_resource(
    template: &str,
    parts: &Parts,
    body: Body,
    timeout: std::time::Duration,
) -> Result<(String, Body), Response> {
    if !is_json(&parts.headers) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON with Content-Type: application/json",
        )
        .into_response());
    }
    body_resource(template, body, timeout)
        .await
        .map_err(IntoResponse::into_response)
}

/// Authenticates, forms the resource, authorizes; records action and resource in the
/// audit slot as soon as they are known (so a 401 names what was attempted). Returns the
/// request with its [`Caller`], and the resource it was authorized against.
async fn check(
    spec: &RouteSpec,
    slot: Option<&AuditSlot>,
    req: Request,
    body_timeout: std::time::Duration,
) -> Result<(Request, String), Response> {
    let target = |resource: &str| {
        if let Some(s) = slot {
            s.set_target(spec.action, resource);
        }
    };
    let (mut parts, body) = req.into_parts();
    let params = match Path::<Vec<(String, String)>>::from_request_parts(&mut parts, &()).await {
        Ok(Path(p)) => p,
        Err(e) => {
            target("");
            return Err(ApiError::from(e).into_response());
        }
    };
    let path_resource = match spec.resource {
        ResourceRule::Path(t) => Some(
            fill(t, |name| {
                params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
            // The table's own test checks that templates only name path parameters.
            .unwrap_or_default(),
        ),
        ResourceRule::Body(_) => None,
    };
    target(path_resource.as_deref().unwrap_or_default());
    let identity = identity(&parts).map_err(challenge)?;
    let (resource, body) = match (spec.resource, path_resource) {
        (ResourceRule::Body(t), _) => create_resource(t, &parts, body, body_timeout).await?,
        (ResourceRule::Path(_), r) => (r.unwrap_or_default(), body),
    };
    target(&resource);
    if !well_formed(&resource) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "path: {resource} is not a resource name; this route's resources look like {}",
                spec.resource.template()
            ),
        )
        .into_response());
    }
    if !identity.allows(spec.action, &resource) {
        // Decided on the request alone, before anything is loaded: the answer is the
        // same whether or not the resource exists.
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "principal {} is not allowed {} on {resource}",
                identity.principal(),
                spec.action
            ),
        )
        .into_response());
    }
    parts.extensions.insert(Caller(identity));
    Ok((Request::from_parts(parts, body), resource))
}
