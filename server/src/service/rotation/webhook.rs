//! The `webhook` strategy: a custom function reached over HTTPS, called once per step.
//!
//! Each call is `POST url` with the JSON body `{"secret_name", "version_id", "step",
//! "secret_data", "delivery_id"}` (`secret_data` only for *set* and *test*; the
//! `delivery_id` is new for every attempt, so a retry is never a replay), and the headers
//! `X-Strongbox-Timestamp: UNIX_SECONDS` and `X-Strongbox-Signature: sha256=HEX`, the
//! HMAC-SHA256 of `timestamp ‖ "." ‖ body` keyed with the value of the secret named by
//! the `signing_secret` setting (see `barrier::webhook_signature`). Any 2xx answer means
//! the step is done; anything else, a timeout or a transport error fails the attempt
//! (the engine retries with backoff). Redirects are not followed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strongbox_schemas::{ErrorCode, Interval};
use zeroize::Zeroizing;

use super::egress::{EgressPolicy, Resolver};
use super::random::PasswordRules;
use super::strategy::{Step, StepContext, Strategy};
use crate::error::{Error, Result};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT_SECS: u64 = 300;

/// A webhook strategy ready to call.
pub(crate) struct WebhookStrategy {
    url: String,
    key: Zeroizing<Vec<u8>>,
    http: reqwest::Client,
    egress: EgressPolicy,
    /// Seconds since the epoch, from the service clock (tests move it).
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for WebhookStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookStrategy")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn failed(step: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::RotationFailed, format!("webhook {step}: {why}"))
}

/// Checks webhook settings without reading the signing secret (policy create/update).
pub(crate) fn validate_settings(settings: &BTreeMap<String, String>) -> Result<()> {
    match settings.get("url") {
        Some(u) if u.starts_with("https://") && reqwest::Url::parse(u).is_ok() => {}
        _ => {
            return Err(Error::invalid(
                "settings.url",
                "a webhook needs an https:// url",
            ));
        }
    }
    if settings.get("signing_secret").is_none_or(String::is_empty) {
        return Err(Error::invalid(
            "settings.signing_secret",
            "name the secret whose value signs webhook calls",
        ));
    }
    timeout(settings)?;
    if let Some(pem) = settings.get("ca_cert") {
        tls_config(pem)?;
    }
    Ok(())
}

fn timeout(settings: &BTreeMap<String, String>) -> Result<Duration> {
    match settings.get("timeout") {
        None => Ok(DEFAULT_TIMEOUT),
        Some(t) => {
            // Settings stored before intervals were parsed strictly may carry blanks.
            let i = Interval::parse(t.trim())
                .map_err(|e| Error::invalid("settings.timeout", format!("{e} (e.g. 10s)")))?;
            if !(1..=MAX_TIMEOUT_SECS).contains(&i.seconds()) {
                return Err(Error::invalid(
                    "settings.timeout",
                    format!("must be from 1s to {MAX_TIMEOUT_SECS}s"),
                ));
            }
            Ok(Duration::from_secs(i.seconds()))
        }
    }
}

/// A TLS configuration trusting only the CA in `pem`.
fn tls_config(pem: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::invalid("settings.ca_cert", "not a PEM certificate"))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "settings.ca_cert",
            "holds no PEM certificate",
        ));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| Error::invalid("settings.ca_cert", e))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl WebhookStrategy {
    pub(crate) fn from_settings(
        settings: &BTreeMap<String, String>,
        signing_key: impl FnOnce(&str) -> Result<Zeroizing<Vec<u8>>>,
        egress: &EgressPolicy,
    ) -> Result<Self> {
        validate_settings(settings)?;
        let url = settings.get("url").cloned().unwrap_or_default();
        let signing = settings.get("signing_secret").cloned().unwrap_or_default();
        // Whatever the reason (absent, scheduled for deletion, key disabled), the
        // error says only this: it is shown to anyone who may describe the secret.
        let key = signing_key(&signing)
            .map_err(|_| failed("create", format!("signing secret {signing} cannot be read")))?;
        let mut b = reqwest::Client::builder()
            .timeout(timeout(settings)?)
            .redirect(reqwest::redirect::Policy::none())
            // Straight to the function: through a proxy from the environment, the
            // proxy would resolve the name, out of the egress policy's reach.
            .no_proxy()
            // Every connection goes to an address the egress policy allows, however
            // the name resolves by then (the check in `call` names the host up front).
            .dns_resolver(Resolver(egress.clone()))
            .user_agent(concat!("strongbox-rotation/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = settings.get("ca_cert") {
            b = b.tls_backend_preconfigured(tls_config(pem)?);
        }
        let http = b.build().map_err(Error::internal)?;
        Ok(Self {
            url,
            key,
            http,
            egress: egress.clone(),
            now: Arc::new(|| time::OffsetDateTime::now_utc().unix_timestamp()),
        })
    }

    /// Takes timestamps from `now` (the service clock).
    pub(crate) fn with_clock(mut self, now: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        self.now = now;
        self
    }

    /// Refuses a URL whose host the egress policy does not allow. An address in the URL
    /// is checked here only: reqwest resolves names alone (through [`Resolver`]).
    async fn check_egress(&self) -> Result<()> {
        let url = reqwest::Url::parse(&self.url).map_err(Error::internal)?;
        let port = url.port_or_known_default().unwrap_or(443);
        // An IPv6 address comes in brackets.
        let host = url
            .host_str()
            .ok_or_else(|| Error::invalid("settings.url", "names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        self.egress.resolve(host, port).await.map(|_| ())
    }

    async fn call(&self, step: Step, cx: &StepContext<'_>, with_data: bool) -> Result<()> {
        let data = match (with_data, cx.pending) {
            (true, Some(v)) => Some(Zeroizing::new(
                String::from_utf8(v.to_vec())
                    .map_err(|_| failed(step.as_str(), "the pending value is not text"))?,
            )),
            (true, None) => return Err(failed(step.as_str(), "no pending value")),
            (false, _) => None,
        };
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({
                "secret_name": cx.secret_name,
                "version_id": cx.version_id,
                "step": step.as_str(),
                "secret_data": data.as_deref().map(String::as_str),
                "delivery_id": uuid::Uuid::new_v4().to_string(),
            }))
            .map_err(Error::internal)?,
        );
        self.check_egress()
            .await
            .map_err(|e| failed(step.as_str(), e.message))?;
        let timestamp = (self.now)().to_string();
        let signature = crate::barrier::webhook_signature(&self.key, &timestamp, &body);
        let resp = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Strongbox-Timestamp", &timestamp)
            .header(
                "X-Strongbox-Signature",
                format!("sha256={}", hex::encode(signature)),
            )
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                // The reqwest error names the URL and the cause, never the body.
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                failed(step.as_str(), kind)
            })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            // The answer's body is not quoted: a function could echo the value back.
            Err(failed(
                step.as_str(),
                format!("the function answered HTTP {}", status.as_u16()),
            ))
        }
    }
}

impl Strategy for WebhookStrategy {
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>> {
        self.call(Step::Create, cx, false).await?;
        let pw = PasswordRules::default().generate();
        Ok(Zeroizing::new(pw.as_bytes().to_vec()))
    }
    async fn set(&self, cx: &StepContext<'_>) -> Result<()> {
        self.call(Step::Set, cx, true).await
    }
    async fn test(&self, cx: &StepContext<'_>) -> Result<()> {
        self.call(Step::Test, cx, true).await
    }
    async fn finish(&self, cx: &StepContext<'_>) -> Result<()> {
        self.call(Step::Finish, cx, false).await
    }
}
