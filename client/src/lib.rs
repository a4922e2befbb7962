//! Rust SDK for the Strongbox HTTPS API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strongbox_client::Error> {
//! let client = strongbox_client::Client::from_env()?;
//! let value = client.get_secret_value("MyDbCreds", None, None).await?;
//! println!("version {}", value.version_id);
//! # Ok(()) }
//! ```
//!
//! Path segments are always percent-encoded, so names containing `/` work as is.
//!
//! Applications that read the same secrets often use a [`SecretCache`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), strongbox_client::Error> {
//! use strongbox_client::{CacheConfig, Client, SecretCache};
//! let cache = SecretCache::new(Client::from_env()?, CacheConfig::default());
//! let value = cache.get("MyDbCreds").await?; // from memory for 5 minutes
//! let fresh = cache.refresh("MyDbCreds").await?; // after a refused login
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strongbox_schemas as api;

/// A list response that comes a page at a time.
trait Paged: DeserializeOwned {
    /// Takes the next page's token.
    fn take_next(&mut self) -> Option<String>;
    /// Adds a later page's items.
    fn append(&mut self, page: Self);
}

macro_rules! paged {
    ($($t:ty => $items:ident),* $(,)?) => {$(
        impl Paged for $t {
            fn take_next(&mut self) -> Option<String> {
                self.next_page_token.take()
            }
            fn append(&mut self, page: Self) {
                self.$items.extend(page.$items);
            }
        }
    )*};
}

paged!(
    api::ListAliasesResponse => aliases,
    api::ListRotationPoliciesResponse => rotation_policies,
    api::ListPrincipalsResponse => principals,
    api::ListPoliciesResponse => policies,
    api::ListSecretsResponse => secrets,
);
pub use strongbox_schemas::ErrorCode;

mod cache;
mod rotation;

pub use cache::{CacheConfig, CachedValue, SecretCache};

/// Attempts of a put the client named itself, and the pause before the second (four
/// times longer before the third).
const PUT_ATTEMPTS: u32 = 3;
const PUT_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Characters left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Errors of the client. More kinds may come: match with a wildcard arm.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error body.
    #[error("{code}: {message} (HTTP {status}, request {request_id})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable code.
        code: ErrorCode,
        /// Message from the server.
        message: String,
        /// Request id, for the server log.
        request_id: String,
    },
    /// The request did not complete (connection, TLS, timeout).
    #[error("transport: {0}")]
    Transport(String),
    /// The client is not configured correctly.
    #[error("configuration: {0}")]
    Config(String),
    /// The response was not what the API promises.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// An HTTP error without the server's error body: from something in front of the
    /// server (a proxy, a gateway), or not from a Strongbox server at all.
    #[error("HTTP {status} without an error body")]
    Status {
        /// HTTP status.
        status: u16,
    },
    /// Writing on this machine failed (the backup's file: a full disk, say).
    #[error("writing locally: {0}")]
    Local(String),
    /// An argument cannot be sent as given (a name or id that is empty, `.` or `..`,
    /// which a URL would resolve to another resource); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server answered with an error body whose code this client does not know (a
    /// newer server): the code and message as sent.
    #[error(
        "{code} (a code this client does not know): {message} (HTTP {status}, request {request_id})"
    )]
    UnknownCode {
        /// HTTP status.
        status: u16,
        /// The code as the server sent it.
        code: String,
        /// Message from the server.
        message: String,
        /// Request id for support.
        request_id: String,
    },
}

impl Error {
    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status of an answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. }
            | Error::Status { status }
            | Error::UnknownCode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: no answer, the server not available now
    /// (`Unavailable`), or what is in front of it answering 429, 502, 503 or 504
    /// without the server's error body. An error the server explains is not transient
    /// otherwise: `RotationFailed` (a 502) says to rotate again with a new version id,
    /// and asking again with the same one gives the same answer; `TooManyRequests` (the
    /// server's 429) comes only to requests without a valid token, which asking again
    /// does not give.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Status { status } => matches!(status, 429 | 502 | 503 | 504),
            Error::Api { status, code, .. } => {
                *code == ErrorCode::Unavailable
                    || (*status == 429 && *code != ErrorCode::TooManyRequests)
            }
            Error::UnknownCode { status, .. } => matches!(status, 429 | 503),
            _ => false,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `pause` scaled by a random factor between 0.5 and 1.5: clients that failed together
/// (a fleet started at once, a server restart) do not all try again at the same instant.
pub fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + rand::random::<f64>())
}

/// `address` as an error message may show it: a `user:password@` part (which a
/// mistyped address can carry) is left out, and so are control characters.
pub fn address_for_display(address: &str) -> String {
    let shown = match address.split_once("://") {
        // Up to the last `@`, wherever it is: a password may hold a `/` (typed without
        // percent-encoding), and showing less of a mistyped address costs nothing.
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
            None => address.to_string(),
        },
        // Without a scheme, whatever comes before an `@` may be credentials too.
        None => match address.rfind('@') {
            Some(at) => format!("…@{}", &address[at + 1..]),
            None => address.to_string(),
        },
    };
    format!("{shown:?}")
}

/// How to reach a server.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// `https://host:port`.
    pub address: String,
    /// Bearer token.
    pub token: String,
    /// PEM of the CA that signed the server's certificate; the system roots when absent.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Per-request timeout (default 30 s).
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Options of a secret deletion.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteSecretOptions {
    /// 7–30 days.
    pub recovery_window_in_days: Option<u32>,
    /// Delete at once.
    pub force_delete_without_recovery: bool,
}

/// Filters of a secret listing.
#[derive(Debug, Clone, Default)]
pub struct ListSecretsOptions {
    /// Page size.
    pub limit: Option<usize>,
    /// From the previous page.
    pub page_token: Option<String>,
    /// Name prefix.
    pub name_prefix: Option<String>,
    /// Only secrets that use this key (its id, or `alias/NAME` for the key it points at
    /// now): by id, by an alias that points at it, or with a version sealed under it.
    pub key_id: Option<String>,
    /// Required tags.
    pub tags: Vec<(String, String)>,
}

/// Filters of an audit trail listing (`GET /v1/audit`).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this principal's requests.
    pub principal: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only resources starting with this.
    pub resource_prefix: Option<String>,
    /// Only the request with this id.
    pub request_id: Option<String>,
    /// Records at or after this time.
    pub start_time: Option<api::Timestamp>,
    /// Records before this time.
    pub end_time: Option<api::Timestamp>,
    /// Page size, 1–1000.
    pub limit: Option<usize>,
    /// From the previous page, or a record's `seq` to read the records after it.
    pub page_token: Option<String>,
}

/// A client of one Strongbox server. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
    /// Each request's timeout.
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn tls_config(ca_pem: Option<&[u8]>) -> Result<Option<rustls::ClientConfig>> {
    let Some(pem) = ca_pem else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("CA certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(
            "the CA certificate PEM holds no certificate".into(),
        ));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(cfg))
}

impl Client {
    /// A client from explicit settings.
    pub fn new(cfg: ClientConfig) -> Result<Self> {
        let address = cfg.address.trim_end_matches('/');
        if !address.starts_with("https://") {
            return Err(Error::Config(format!(
                "address must start with https:// (got {})",
                address_for_display(address)
            )));
        }
        // A user:password@ part would be shown by transport errors that print the URL,
        // and Strongbox never uses it.
        if reqwest::Url::parse(address)
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
        {
            return Err(Error::Config(format!(
                "address must not hold user:password@ (got {}); the token authenticates",
                address_for_display(address)
            )));
        }
        let timeout = cfg.timeout.unwrap_or(Duration::from_secs(30));
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            // The server closes an HTTP/1.1 connection idle for 30 s: one kept longer
            // could be taken for a request just as (or after) the server closed it, a
            // transport error for a request that never reached it. Idle connections are
            // dropped first (also when the caller's runtime did not run meanwhile).
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // The token goes only where the address says: never after a redirect (which
            // could go to plain HTTP on the same host and port, and reqwest would keep
            // the Authorization header), never over anything but HTTPS.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent(concat!("strongbox-client/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls_config(cfg.ca_cert_pem.as_deref())? {
            b = b.tls_backend_preconfigured(tls);
        }
        let http = b.build().map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            http,
            base: address.into(),
            token: cfg.token.into(),
            timeout,
        })
    }

    /// A client from `STRONGBOX_ADDR`, `STRONGBOX_TOKEN` and `STRONGBOX_CACERT` (a path).
    pub fn from_env() -> Result<Self> {
        let address = std::env::var("STRONGBOX_ADDR")
            .map_err(|_| Error::Config("STRONGBOX_ADDR is not set".into()))?;
        let token = match std::env::var("STRONGBOX_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => return Err(Error::Config("STRONGBOX_TOKEN is not set".into())),
        };
        let ca_cert_pem = match std::env::var("STRONGBOX_CACERT") {
            Ok(p) if !p.is_empty() => Some(
                std::fs::read(&p)
                    .map_err(|e| Error::Config(format!("STRONGBOX_CACERT {p}: {e}")))?,
            ),
            _ => None,
        };
        Self::new(ClientConfig {
            address,
            token,
            ca_cert_pem,
            timeout: None,
        })
    }

    /// `base` + `/`-joined percent-encoded segments. A segment that is empty, `.` or
    /// `..` is refused: URL parsing drops or resolves it (`%2E` too), so the request
    /// would go to another route, about another resource.
    fn url(&self, segments: &[&str]) -> Result<String> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(Error::InvalidArgument(format!(
                "{bad:?} cannot be a name or id in a request path"
            )));
        }
        Ok(self.url_unchecked(segments))
    }

    fn url_unchecked(&self, segments: &[&str]) -> String {
        let mut u = self.base.to_string();
        for s in segments {
            u.push('/');
            u.extend(utf8_percent_encode(s, SEGMENT));
        }
        u
    }

    fn req(&self, method: Method, segments: &[&str]) -> Req {
        Req(self
            .url(segments)
            .map(|u| self.http.request(method, u).bearer_auth(&*self.token)))
    }

    async fn send<T: DeserializeOwned>(&self, rb: Req) -> Result<T> {
        let resp = self.check(rb).await?;
        let body = body_within(resp, MAX_ANSWER_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Every page of the list at `segments` with the filters `query`, following
    /// `next_page_token`, as one response.
    async fn all_pages<T: Paged>(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<T> {
        let mut all: T = self
            .send(
                self.req(Method::GET, segments)
                    .query(&[("limit", "100")])
                    .query(query),
            )
            .await?;
        let mut next = all.take_next();
        // Tokens move forward: one seen before would make this loop for good.
        let mut seen = std::collections::HashSet::new();
        while let Some(token) = next {
            if !seen.insert(token.clone()) {
                return Err(Error::Decode(
                    "the server returned a page token it had returned before".into(),
                ));
            }
            let q = [("limit", "100"), ("page_token", token.as_str())];
            let mut page: T = self
                .send(self.req(Method::GET, segments).query(&q).query(query))
                .await?;
            next = page.take_next();
            all.append(page);
        }
        Ok(all)
    }

    async fn check(&self, rb: Req) -> Result<reqwest::Response> {
        let resp = self.answer(rb).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = body_within(resp, MAX_ERROR_BYTES).await.unwrap_or_default();
        Err(error_from_body(status, &body))
    }

    /// The answer to `rb`, whatever its status; an error only when there is none.
    async fn answer(&self, rb: Req) -> Result<reqwest::Response> {
        rb.0?.send().await.map_err(|e| {
            // A request that could not be built (a token that is no header value) is
            // the caller's configuration, not the network: asking again cannot help.
            if e.is_builder() {
                Error::Config(error_chain(&e))
            } else if is_tls_refusal(&e) {
                // A certificate that does not verify (a wrong CA, another host's name)
                // is the same on every try: not worth waiting out.
                Error::Config(format!(
                    "TLS: {} (is STRONGBOX_CACERT the CA of this server's certificate, and does the certificate name this address?)",
                    error_chain(&e)
                ))
            } else {
                Error::Transport(error_chain(&e))
            }
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T> {
        self.send(self.req(Method::POST, segments).json(body)).await
    }

    /// `GET /v1/health` (no token needed).
    /// While the server's storage is failing it answers 503 with its health (status
    /// `storage_failing`), not an error body: that is an `Unavailable` error here,
    /// transient, naming the status.
    pub async fn health(&self) -> Result<api::Health> {
        let resp = self
            .answer(Req(self.url(&["v1", "health"]).map(|u| self.http.get(u))))
            .await?;
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if resp.status().is_success() {
            let body = body_within(resp, MAX_ANSWER_BYTES).await?;
            return serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()));
        }
        // As `check` reads an error answer.
        let body = body_within(resp, MAX_ERROR_BYTES).await.unwrap_or_default();
        match serde_json::from_slice::<api::Health>(&body) {
            Ok(h) if status == 503 => Err(Error::Api {
                status,
                code: ErrorCode::Unavailable,
                message: format!("the server reports {}", h.status),
                request_id,
            }),
            _ => Err(error_from_body(status, &body)),
        }
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.send(self.req(Method::GET, &["v1", "openapi.json"]))
            .await
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> Result<String> {
        let r = self.check(self.req(Method::GET, &["metrics"])).await?;
        let body = body_within(r, MAX_ANSWER_BYTES).await?;
        String::from_utf8(body.to_vec()).map_err(|e| Error::Decode(e.to_string()))
    }

    // ---- keys ----

    /// Creates a CMK.
    pub async fn create_key(&self, req: &api::CreateKeyRequest) -> Result<api::Key> {
        self.post(&["v1", "keys"], req).await
    }
    /// Describes a CMK by id or alias.
    pub async fn describe_key(&self, key: &str) -> Result<api::Key> {
        self.send(self.req(Method::GET, &["v1", "keys", key])).await
    }
    /// Lists CMKs.
    pub async fn list_keys(
        &self,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<api::ListKeysResponse> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(p) = page_token {
            q.push(("page_token", p.to_string()));
        }
        self.send(self.req(Method::GET, &["v1", "keys"]).query(&q))
            .await
    }
    /// Updates a CMK.
    pub async fn update_key(&self, key: &str, req: &api::UpdateKeyRequest) -> Result<api::Key> {
        self.send(self.req(Method::PATCH, &["v1", "keys", key]).json(req))
            .await
    }
    async fn key_action(&self, key: &str, action: &str) -> Result<api::Key> {
        self.send(self.req(Method::POST, &["v1", "keys", key, action]))
            .await
    }
    /// Enables a CMK.
    pub async fn enable_key(&self, key: &str) -> Result<api::Key> {
        self.key_action(key, "enable").await
    }
    /// Disables a CMK.
    pub async fn disable_key(&self, key: &str) -> Result<api::Key> {
        self.key_action(key, "disable").await
    }
    /// Rotates a CMK's material.
    pub async fn rotate_key(&self, key: &str) -> Result<api::Key> {
        self.key_action(key, "rotate").await
    }
    /// Schedules a CMK's destruction.
    pub async fn schedule_key_deletion(
        &self,
        key: &str,
        pending_window_in_days: Option<u32>,
    ) -> Result<api::Key> {
        let body = api::ScheduleKeyDeletionRequest {
            pending_window_in_days,
        };
        self.post(&["v1", "keys", key, "schedule-deletion"], &body)
            .await
    }
    /// Cancels a scheduled destruction.
    pub async fn cancel_key_deletion(&self, key: &str) -> Result<api::Key> {
        self.key_action(key, "cancel-deletion").await
    }

    // ---- cryptography with a CMK ----

    /// Encrypts up to 6 KiB under a CMK (id or alias), bound to `context` (empty for
    /// none); the answer's `ciphertext_blob` names the key and key version.
    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &std::collections::BTreeMap<String, String>,
    ) -> Result<api::EncryptResponse> {
        use base64::Engine as _;
        let mut body = api::EncryptRequest {
            plaintext: base64::engine::general_purpose::STANDARD.encode(plaintext),
            encryption_context: context.clone(),
        };
        let answer = self.post(&["v1", "keys", key, "encrypt"], &body).await;
        zeroize::Zeroize::zeroize(&mut body.plaintext);
        answer
    }

    /// Decrypts a blob with the key its header names (needs `kms:Decrypt` on that key)
    /// and the `context` it was made with; the data is wiped when dropped.
    ///
    /// The blob chooses the key: one that a third party could have swapped for a blob
    /// made under another key the caller may use (with data of their choosing, such as a
    /// data key they know) should be opened with [`decrypt_under`](Self::decrypt_under)
    /// and the key expected, as AWS advises giving `KeyId` to `Decrypt`.
    pub async fn decrypt(
        &self,
        ciphertext_blob: &str,
        context: &std::collections::BTreeMap<String, String>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(ciphertext_blob)
            .map_err(|_| Error::InvalidArgument("a ciphertext blob is standard base64".into()))?;
        let (key, _) = api::ciphertext_blob_key(&raw).ok_or_else(|| {
            Error::InvalidArgument("not a Strongbox ciphertext blob (no key in its header)".into())
        })?;
        self.decrypt_with_key(key, ciphertext_blob, context).await
    }

    /// [`decrypt_under`](Self::decrypt_under), answering the data itself, wiped when
    /// dropped.
    pub async fn decrypt_with_key(
        &self,
        key: &str,
        ciphertext_blob: &str,
        context: &std::collections::BTreeMap<String, String>,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        use base64::Engine as _;
        let mut answer = self.decrypt_under(key, ciphertext_blob, context).await?;
        let plaintext = base64::engine::general_purpose::STANDARD
            .decode(&answer.plaintext)
            .map(zeroize::Zeroizing::new)
            .map_err(|_| Error::Decode("decrypt answered plaintext that is not base64".into()));
        zeroize::Zeroize::zeroize(&mut answer.plaintext);
        plaintext
    }

    /// Decrypts a blob with a CMK the caller names (id or alias): refused
    /// (`InvalidCiphertext`) if the blob was made under another key.
    pub async fn decrypt_under(
        &self,
        key: &str,
        ciphertext_blob: &str,
        context: &std::collections::BTreeMap<String, String>,
    ) -> Result<api::DecryptResponse> {
        let body = api::DecryptRequest {
            ciphertext_blob: ciphertext_blob.to_string(),
            encryption_context: context.clone(),
        };
        self.post(&["v1", "keys", key, "decrypt"], &body).await
    }

    /// Re-encrypts a blob under a CMK (id or alias) without the data reaching the caller.
    pub async fn re_encrypt(
        &self,
        key: &str,
        req: &api::ReEncryptRequest,
    ) -> Result<api::ReEncryptResponse> {
        self.post(&["v1", "keys", key, "re-encrypt"], req).await
    }

    /// A fresh data key, in the clear and encrypted under a CMK (envelope encryption).
    pub async fn generate_data_key(
        &self,
        key: &str,
        req: &api::GenerateDataKeyRequest,
    ) -> Result<api::GenerateDataKeyResponse> {
        self.post(&["v1", "keys", key, "generate-data-key"], req)
            .await
    }

    /// A fresh data key, only encrypted under a CMK.
    pub async fn generate_data_key_without_plaintext(
        &self,
        key: &str,
        req: &api::GenerateDataKeyRequest,
    ) -> Result<api::GenerateDataKeyWithoutPlaintextResponse> {
        self.post(
            &["v1", "keys", key, "generate-data-key-without-plaintext"],
            req,
        )
        .await
    }

    // ---- aliases ----

    /// Creates or moves an alias.
    pub async fn put_alias(&self, alias: &str, key_id: &str) -> Result<api::Alias> {
        let body = api::PutAliasRequest {
            key_id: key_id.to_string(),
        };
        self.send(self.req(Method::PUT, &["v1", "aliases", alias]).json(&body))
            .await
    }
    /// Creates an alias pointing at `key_id`, never moving one that exists: an alias
    /// that exists already is `AlreadyExists` (`If-None-Match: *`).
    pub async fn create_alias(&self, alias: &str, key_id: &str) -> Result<api::Alias> {
        let body = api::PutAliasRequest {
            key_id: key_id.to_string(),
        };
        self.send(
            self.req(Method::PUT, &["v1", "aliases", alias])
                .header(reqwest::header::IF_NONE_MATCH, "*")
                .json(&body),
        )
        .await
    }
    /// Describes an alias.
    pub async fn get_alias(&self, alias: &str) -> Result<api::Alias> {
        self.send(self.req(Method::GET, &["v1", "aliases", alias]))
            .await
    }
    /// Lists the aliases the caller may describe (every page).
    pub async fn list_aliases(&self) -> Result<api::ListAliasesResponse> {
        self.all_pages(&["v1", "aliases"], &[]).await
    }
    /// Deletes an alias.
    pub async fn delete_alias(&self, alias: &str) -> Result<()> {
        self.check(self.req(Method::DELETE, &["v1", "aliases", alias]))
            .await
            .map(|_| ())
    }

    // ---- secrets ----

    /// Creates a secret.
    pub async fn create_secret(&self, req: &api::CreateSecretRequest) -> Result<api::Secret> {
        self.post(&["v1", "secrets"], req).await
    }
    /// Describes a secret.
    pub async fn describe_secret(&self, name: &str) -> Result<api::Secret> {
        self.send(self.req(Method::GET, &["v1", "secrets", name]))
            .await
    }
    /// Lists secrets.
    pub async fn list_secrets(&self, o: &ListSecretsOptions) -> Result<api::ListSecretsResponse> {
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(l) = o.limit {
            q.push(("limit".into(), l.to_string()));
        }
        if let Some(p) = &o.page_token {
            q.push(("page_token".into(), p.clone()));
        }
        if let Some(p) = &o.name_prefix {
            q.push(("name_prefix".into(), p.clone()));
        }
        if let Some(k) = &o.key_id {
            q.push(("key_id".into(), k.clone()));
        }
        for (k, v) in &o.tags {
            q.push((format!("tag.{k}"), v.clone()));
        }
        self.send(self.req(Method::GET, &["v1", "secrets"]).query(&q))
            .await
    }
    /// Lists every secret the caller may describe, following every page.
    pub async fn list_all_secrets(&self) -> Result<api::ListSecretsResponse> {
        self.all_pages(&["v1", "secrets"], &[]).await
    }
    /// Lists every secret the caller may describe that uses key `key_id` (see
    /// [`ListSecretsOptions::key_id`]), following every page.
    pub async fn list_secrets_using_key(&self, key_id: &str) -> Result<api::ListSecretsResponse> {
        self.all_pages(&["v1", "secrets"], &[("key_id", key_id)])
            .await
    }
    /// Updates a secret's metadata.
    pub async fn update_secret(
        &self,
        name: &str,
        req: &api::UpdateSecretRequest,
    ) -> Result<api::Secret> {
        self.send(self.req(Method::PATCH, &["v1", "secrets", name]).json(req))
            .await
    }
    /// Deletes a secret.
    pub async fn delete_secret(
        &self,
        name: &str,
        o: DeleteSecretOptions,
    ) -> Result<api::DeleteSecretResponse> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(d) = o.recovery_window_in_days {
            q.push(("recovery_window_in_days", d.to_string()));
        }
        if o.force_delete_without_recovery {
            q.push(("force_delete_without_recovery", "true".into()));
        }
        self.send(self.req(Method::DELETE, &["v1", "secrets", name]).query(&q))
            .await
    }
    /// Restores a secret scheduled for deletion.
    pub async fn restore_secret(&self, name: &str) -> Result<api::Secret> {
        self.send(self.req(Method::POST, &["v1", "secrets", name, "restore"]))
            .await
    }
    /// Reads a value: by version id, by stage, or `ACSCurrent`.
    pub async fn get_secret_value(
        &self,
        name: &str,
        version_id: Option<&str>,
        version_stage: Option<&str>,
    ) -> Result<api::SecretValue> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(v) = version_id {
            q.push(("version_id", v));
        }
        if let Some(s) = version_stage {
            q.push(("version_stage", s));
        }
        self.send(
            self.req(Method::GET, &["v1", "secrets", name, "value"])
                .query(&q),
        )
        .await
    }
    /// Adds a version. Without a `version_id` in `req` the client names the version
    /// itself (a UUID, as the server would), so the request can be sent again safely: a
    /// put whose answer was lost (a dropped connection, a gateway's 502/503/504) is
    /// sent again up to twice with the same id, and the server takes the repeat as the
    /// same version instead of adding a second one.
    pub async fn put_secret_value(
        &self,
        name: &str,
        req: &api::PutSecretValueRequest,
    ) -> Result<api::SecretVersionRef> {
        #[derive(Serialize)]
        struct Named<'a> {
            #[serde(flatten)]
            req: &'a api::PutSecretValueRequest,
            version_id: &'a str,
        }
        let segments = ["v1", "secrets", name, "versions"];
        let Some(id) = req
            .version_id
            .is_none()
            .then(|| uuid::Uuid::new_v4().to_string())
        else {
            return self.post(&segments, req).await;
        };
        let body = Named {
            req,
            version_id: &id,
        };
        let mut pause = PUT_RETRY_PAUSE;
        let mut attempts = 1;
        loop {
            match self.post(&segments, &body).await {
                Err(e) if e.is_transient() && attempts < PUT_ATTEMPTS => {
                    tokio::time::sleep(jittered(pause)).await;
                    pause *= 4;
                    attempts += 1;
                }
                r => return r,
            }
        }
    }
    /// Lists versions, newest first.
    pub async fn list_secret_versions(
        &self,
        name: &str,
    ) -> Result<api::ListSecretVersionsResponse> {
        self.send(self.req(Method::GET, &["v1", "secrets", name, "versions"]))
            .await
    }
    /// Moves or removes a stage.
    pub async fn update_secret_stage(
        &self,
        name: &str,
        req: &api::UpdateSecretStageRequest,
    ) -> Result<api::ListSecretVersionsResponse> {
        self.post(&["v1", "secrets", name, "stages"], req).await
    }

    // ---- rotation policies ----

    /// Creates a rotation policy.
    pub async fn create_rotation_policy(
        &self,
        req: &api::CreateRotationPolicyRequest,
    ) -> Result<api::RotationPolicy> {
        self.post(&["v1", "rotation-policies"], req).await
    }
    /// Describes a rotation policy.
    pub async fn describe_rotation_policy(&self, name: &str) -> Result<api::RotationPolicy> {
        self.send(self.req(Method::GET, &["v1", "rotation-policies", name]))
            .await
    }
    /// Lists the rotation policies the caller may describe (every page).
    pub async fn list_rotation_policies(&self) -> Result<api::ListRotationPoliciesResponse> {
        self.all_pages(&["v1", "rotation-policies"], &[]).await
    }
    /// Updates a rotation policy.
    pub async fn update_rotation_policy(
        &self,
        name: &str,
        req: &api::UpdateRotationPolicyRequest,
    ) -> Result<api::RotationPolicy> {
        self.send(
            self.req(Method::PATCH, &["v1", "rotation-policies", name])
                .json(req),
        )
        .await
    }
    /// Deletes a rotation policy.
    pub async fn delete_rotation_policy(&self, name: &str) -> Result<()> {
        self.check(self.req(Method::DELETE, &["v1", "rotation-policies", name]))
            .await
            .map(|_| ())
    }

    // ---- principals and tokens ----

    /// Creates a principal.
    pub async fn create_principal(
        &self,
        req: &api::CreatePrincipalRequest,
    ) -> Result<api::Principal> {
        self.post(&["v1", "principals"], req).await
    }
    /// Describes a principal.
    pub async fn get_principal(&self, name: &str) -> Result<api::Principal> {
        self.send(self.req(Method::GET, &["v1", "principals", name]))
            .await
    }
    /// Lists the principals the caller may see (every page).
    pub async fn list_principals(&self) -> Result<api::ListPrincipalsResponse> {
        self.all_pages(&["v1", "principals"], &[]).await
    }
    /// Changes a principal's description or attached policies.
    pub async fn update_principal(
        &self,
        name: &str,
        req: &api::UpdatePrincipalRequest,
    ) -> Result<api::Principal> {
        self.send(
            self.req(Method::PATCH, &["v1", "principals", name])
                .json(req),
        )
        .await
    }
    /// Deletes a principal and revokes its tokens.
    pub async fn delete_principal(&self, name: &str) -> Result<()> {
        self.check(self.req(Method::DELETE, &["v1", "principals", name]))
            .await
            .map(|_| ())
    }
    /// Creates a token for a principal; the value is in the answer only.
    pub async fn create_token(
        &self,
        principal: &str,
        req: &api::CreateTokenRequest,
    ) -> Result<api::CreatedToken> {
        self.post(&["v1", "principals", principal, "tokens"], req)
            .await
    }
    /// Lists a principal's tokens (metadata only).
    pub async fn list_tokens(&self, principal: &str) -> Result<api::ListTokensResponse> {
        self.send(self.req(Method::GET, &["v1", "principals", principal, "tokens"]))
            .await
    }
    /// Revokes a token, effective at once.
    pub async fn delete_token(&self, principal: &str, token_id: &str) -> Result<()> {
        self.check(self.req(
            Method::DELETE,
            &["v1", "principals", principal, "tokens", token_id],
        ))
        .await
        .map(|_| ())
    }

    // ---- access policies ----

    /// Creates an access policy.
    pub async fn create_policy(&self, req: &api::CreatePolicyRequest) -> Result<api::Policy> {
        self.post(&["v1", "policies"], req).await
    }
    /// Describes an access policy.
    pub async fn get_policy(&self, name: &str) -> Result<api::Policy> {
        self.send(self.req(Method::GET, &["v1", "policies", name]))
            .await
    }
    /// Lists the access policies the caller may see (every page).
    pub async fn list_policies(&self) -> Result<api::ListPoliciesResponse> {
        self.all_pages(&["v1", "policies"], &[]).await
    }
    /// Changes an access policy's description or document.
    pub async fn update_policy(
        &self,
        name: &str,
        req: &api::UpdatePolicyRequest,
    ) -> Result<api::Policy> {
        self.send(self.req(Method::PATCH, &["v1", "policies", name]).json(req))
            .await
    }
    /// Deletes an access policy no principal uses.
    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        self.check(self.req(Method::DELETE, &["v1", "policies", name]))
            .await
            .map(|_| ())
    }

    // ---- audit ----

    /// A page of the audit trail, oldest first.
    pub async fn list_audit(&self, q: &AuditQuery) -> Result<api::ListAuditResponse> {
        let mut p: Vec<(&str, String)> = Vec::new();
        let text = [
            ("principal", &q.principal),
            ("action", &q.action),
            ("resource_prefix", &q.resource_prefix),
            ("request_id", &q.request_id),
            ("page_token", &q.page_token),
        ];
        for (k, v) in text {
            if let Some(v) = v {
                p.push((k, v.clone()));
            }
        }
        for (k, t) in [("start_time", &q.start_time), ("end_time", &q.end_time)] {
            if let Some(t) = t {
                p.push((k, t.to_string()));
            }
        }
        if let Some(l) = q.limit {
            p.push(("limit", l.to_string()));
        }
        self.send(self.req(Method::GET, &["v1", "audit"]).query(&p))
            .await
    }
    /// Streams a backup of the whole database (`GET /v1/backup`) into `out`; returns the
    /// bytes written. However long the backup takes, it goes on while bytes come: it
    /// stops when none came for the client's timeout (at least 5 minutes).
    pub async fn backup(&self, out: &mut (dyn std::io::Write + Send)) -> Result<u64> {
        let stall = self.timeout.max(Duration::from_secs(300));
        let stalled = || Error::Transport(format!("the backup stalled: no bytes for {stall:?}"));
        // Up to the answer's head too: a server that takes the request and never answers
        // is given up on as one that stops sending.
        let mut resp = tokio::time::timeout(
            stall,
            self.check(
                self.req(Method::GET, &["v1", "backup"])
                    .timeout(Duration::from_secs(7 * 24 * 3600)),
            ),
        )
        .await
        .map_err(|_| stalled())??;
        let mut n = 0u64;
        loop {
            let chunk = tokio::time::timeout(stall, resp.chunk())
                .await
                .map_err(|_| stalled())?
                .map_err(|e| Error::Transport(error_chain(&e)))?;
            let Some(chunk) = chunk else { break };
            out.write_all(&chunk)
                .map_err(|e| Error::Local(format!("the backup: {e}")))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// Deletes the oldest audit records, those older than `older_than`, at most one
    /// batch a call (`more` says whether to call again).
    pub async fn prune_audit(
        &self,
        req: &api::PruneAuditRequest,
    ) -> Result<api::PruneAuditResponse> {
        self.post(&["v1", "audit", "prune"], req).await
    }

    /// Checks the audit trail's chain; names the first bad record.
    pub async fn verify_audit(&self) -> Result<api::AuditVerifyReport> {
        self.verify_audit_since(None).await
    }

    /// [`verify_audit`](Self::verify_audit), and that the trail still holds what the
    /// verify that gave `since` (its report's `anchor`, kept elsewhere) saw.
    pub async fn verify_audit_since(&self, since: Option<&str>) -> Result<api::AuditVerifyReport> {
        let q: Vec<(&str, &str)> = since.map(|a| ("since", a)).into_iter().collect();
        // The server walks the whole trail: on a large one that takes longer than a
        // usual request, so this waits up to an hour whatever the client's timeout.
        self.send(
            self.req(Method::GET, &["v1", "audit", "verify"])
                .query(&q)
                .timeout(self.timeout.max(Duration::from_secs(3600))),
        )
        .await
    }

    /// A raw request, for tests and tools: method, path segments, optional JSON body;
    /// returns the status and body bytes without interpreting them.
    pub async fn raw(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let mut rb = self
            .http
            .request(method, self.url_unchecked(segments))
            .bearer_auth(&*self.token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| Error::Transport(error_chain(&e)))?;
        let status = resp.status();
        let body = body_within(resp, MAX_ANSWER_BYTES).await?;
        Ok((status, body.to_vec()))
    }
}

/// Largest JSON answer read (a page of 1,000 audit records is far below it): a proxy or
/// gateway that sends more does not make the client hold it all.
const MAX_ANSWER_BYTES: usize = 32 << 20;

/// How long an idle connection is kept for the next request: below the 30 s after which
/// the server closes an idle HTTP/1.1 connection (`header_read_timeout`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest error answer read.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The body of `resp`, at most `cap` bytes, in one buffer that is wiped when dropped (a
/// value's answer holds the value in clear): grown by hand, so that no reallocation of
/// it leaves an unwiped copy behind. (The HTTP and TLS layers' buffers, and the copy the
/// JSON parser makes of a string with escapes, are not this buffer.)
async fn body_within(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let too_large = || Error::Decode(format!("the answer is larger than {cap} bytes"));
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let hint = declared
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(8 * 1024)
        .min(cap);
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(hint));
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::Transport(error_chain(&e)))?
    {
        let len = buf.len() + chunk.len();
        if len > cap {
            return Err(too_large());
        }
        if len > buf.capacity() {
            let mut bigger =
                zeroize::Zeroizing::new(Vec::with_capacity(len.max(buf.capacity() * 2).min(cap)));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A request being built, or why it cannot be made.
struct Req(Result<RequestBuilder>);

impl Req {
    fn json<B: Serialize + ?Sized>(self, body: &B) -> Self {
        Self(self.0.map(|r| r.json(body)))
    }

    fn query<Q: Serialize + ?Sized>(self, query: &Q) -> Self {
        Self(self.0.map(|r| r.query(query)))
    }

    fn header(self, name: reqwest::header::HeaderName, value: &'static str) -> Self {
        Self(self.0.map(|r| r.header(name, value)))
    }

    fn timeout(self, timeout: Duration) -> Self {
        Self(self.0.map(|r| r.timeout(timeout)))
    }
}

/// An error answer: the server's error body (with a code this client may not know
/// yet), or only the status when the body is not one (an HTML 502 from a proxy).
fn error_from_body(status: u16, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Loose {
        code: String,
        message: String,
        #[serde(default)]
        request_id: String,
    }
    let Ok(e) = serde_json::from_slice::<Loose>(body) else {
        return Error::Status { status };
    };
    match serde_json::from_value::<ErrorCode>(serde_json::Value::String(e.code.clone())) {
        Ok(code) => Error::Api {
            status,
            code,
            message: e.message,
            request_id: e.request_id,
        },
        Err(_) => Error::UnknownCode {
            status,
            code: e.code,
            message: e.message,
            request_id: e.request_id,
        },
    }
}

/// Whether `e` came from the TLS handshake itself (rustls refused the peer or its
/// certificate) rather than from the network. An `io::Error` hides its inner error from
/// `source()` (reqwest nests two of them), so each one is opened too.
fn is_tls_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<rustls::Error>()
        || e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| is_tls_refusal(inner))
        || e.source().is_some_and(is_tls_refusal)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub use reqwest::Method as HttpMethod;

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn retry_pauses_are_spread_within_half_either_way() {
        let d = Duration::from_millis(1000);
        let got: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(got.iter().all(|p| *p >= d / 2 && *p < d * 3 / 2), "{got:?}");
        assert!(
            got.iter().any(|p| *p < d * 9 / 10) && got.iter().any(|p| *p > d * 11 / 10),
            "not spread: {got:?}"
        );
    }

    #[test]
    fn an_address_in_an_error_shows_no_credentials() {
        for (address, shown) in [
            (
                "http://alice:s3cret@vault.example:8443/x",
                "http://…@vault.example:8443/x",
            ),
            ("alice:s3cret@vault.example", "…@vault.example"),
            ("http://alice:pa/ss@vault.example", "http://…@vault.example"),
            ("ftp://h", "ftp://h"),
        ] {
            assert_eq!(address_for_display(address), format!("{shown:?}"));
        }
        let e = Client::new(ClientConfig {
            address: "http://alice:s3cret@vault.example".into(),
            ..ClientConfig::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("https://") && !e.contains("s3cret"), "{e}");
        // Credentials in an https address are refused too (never sent, never shown):
        // the token is how a client authenticates.
        let e = Client::new(ClientConfig {
            address: "https://alice:s3cret@vault.example".into(),
            ..ClientConfig::default()
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("user:password@") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn what_may_pass_by_itself() {
        assert!(Error::Transport("reset".into()).is_transient());
        for status in [429, 502, 503, 504] {
            assert!(Error::Status { status }.is_transient(), "{status}");
        }
        assert!(!Error::Status { status: 500 }.is_transient());
        // The server's own 429 says the token is not valid: asking again does not help.
        let body = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes();
        assert!(!error_from_body(429, &body("TooManyRequests")).is_transient());
        assert!(error_from_body(503, &body("Unavailable")).is_transient());
        assert!(!Error::Decode("bad JSON".into()).is_transient());
        assert!(!Error::Config("token is no header value".into()).is_transient());
        assert_eq!(Error::Status { status: 504 }.status(), Some(504));
    }

    #[test]
    fn error_bodies_are_read_whatever_their_code() {
        let body = |code: &str| {
            serde_json::to_vec(&serde_json::json!({
                "code": code, "message": "m", "request_id": "r"
            }))
            .unwrap()
        };
        // The server's own: a rotation that failed is not worth asking again as is;
        // one still running is.
        let e = error_from_body(502, &body("RotationFailed"));
        assert_eq!(e.code(), Some(ErrorCode::RotationFailed));
        assert!(!e.is_transient());
        let e = error_from_body(503, &body("Unavailable"));
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert!(e.is_transient());
        // A newer server's code keeps its code and message.
        let e = error_from_body(409, &body("SomethingNew"));
        assert!(
            matches!(&e, Error::UnknownCode { code, message, .. } if code == "SomethingNew" && message == "m"),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(409));
        assert!(e.to_string().contains("SomethingNew"));
        // A proxy's page: the status alone.
        let e = error_from_body(502, b"<html>Bad Gateway</html>");
        assert!(matches!(e, Error::Status { status: 502 }));
        assert!(e.is_transient());
    }
}
