//! PostgreSQL: logins with tokio-postgres (TLS through rustls), passwords sent as
//! SCRAM-SHA-256 verifiers, clones created as members of the account they copy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{NoTls, Socket};
use zeroize::Zeroizing;

use super::{Account, ChannelBindingMode, Engine, LoginError, Target, failed, tls};
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `"name"` with inner quotes doubled: an identifier for any statement.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A string literal that means `s` whatever `standard_conforming_strings` says
/// (PostgreSQL's own `quote_literal`).
pub(crate) fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// Describes an error without anything the statement held: the SQLSTATE and the
/// server's message (PostgreSQL does not quote statements in messages), or the kind of
/// transport failure.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            // Connection and authentication errors ("error connecting to server:
            // Connection refused", "authentication error: server did not use channel
            // binding") name no value; keep them short.
            let s = match std::error::Error::source(e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            };
            s.chars().take(200).collect()
        }
    }
}

/// A rustls connector for tokio-postgres.
#[derive(Clone)]
struct MakeRustls(Arc<rustls::ClientConfig>);

struct Connect {
    config: Arc<rustls::ClientConfig>,
    domain: rustls::pki_types::ServerName<'static>,
}

/// A TLS connection to the server.
struct Stream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<Connect, Self::Error> {
        Ok(Connect {
            config: self.0.clone(),
            domain: rustls::pki_types::ServerName::try_from(domain.to_string())?,
        })
    }
}

impl TlsConnect<Socket> for Connect {
    type Stream = Stream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Stream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let s = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.domain, stream)
                .await?;
            Ok(Stream(Box::new(s)))
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl TlsStream for Stream {
    /// `tls-server-end-point` (RFC 5929), so that SCRAM logins over TLS use
    /// SCRAM-SHA-256-PLUS when the server offers it (unless `ChannelBinding` is
    /// `disable`): a login relayed by someone holding another certificate (possible when
    /// `TlsMode` is `require`, which checks none) then fails instead of reaching the
    /// server.
    fn channel_binding(&self) -> ChannelBinding {
        let cert = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match cert.and_then(|c| server_end_point(c.as_ref())) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// The hash of a certificate that `tls-server-end-point` binds to: with its
/// signature's hash function, SHA-256 for MD5 and SHA-1 (RFC 5929 §4.1); for RSASSA-PSS
/// the hash its parameters name (SHA-1 when they name none). `None` for signatures
/// without a hash function (Ed25519, which PostgreSQL does not bind to either) or one
/// not listed here: the login is then not bound (it still succeeds, unless
/// `ChannelBinding` is `require`).
fn server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use der::Reader as _;
    use sha2::Digest as _;
    let hash = der::SliceReader::new(cert_der)
        .ok()?
        .sequence(|r| {
            r.tlv_bytes()?; // tbsCertificate
            let algorithm: spki::AlgorithmIdentifierRef<'_> = r.decode()?;
            r.tlv_bytes()?; // signatureValue
            Ok::<_, der::Error>(signature_hash(&algorithm))
        })
        .ok()??;
    match hash {
        // md5, sha1, sha256 WithRSAEncryption; ecdsa-with-SHA1, -SHA256
        "md5" | "sha1" | "sha256" => Some(sha2::Sha256::digest(cert_der).to_vec()),
        "sha224" => Some(sha2::Sha224::digest(cert_der).to_vec()),
        "sha384" => Some(sha2::Sha384::digest(cert_der).to_vec()),
        "sha512" => Some(sha2::Sha512::digest(cert_der).to_vec()),
        _ => None,
    }
}

/// The hash function of a certificate's signature algorithm, by name.
fn signature_hash(algorithm: &spki::AlgorithmIdentifierRef<'_>) -> Option<&'static str> {
    let name = match algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.4" => "md5",
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => "sha1",
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" => "sha224",
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => "sha256",
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => "sha384",
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => "sha512",
        // RSASSA-PSS: the hash is in its parameters.
        "1.2.840.113549.1.1.10" => return pss_hash(algorithm.parameters.as_ref()),
        _ => return None,
    };
    Some(name)
}

/// The `hashAlgorithm` of RSASSA-PSS parameters (RFC 4055: `[0] EXPLICIT
/// AlgorithmIdentifier DEFAULT sha1`), by name.
fn pss_hash(parameters: Option<&der::asn1::AnyRef<'_>>) -> Option<&'static str> {
    use der::{Decode as _, Reader as _, Tagged as _};
    let Some(p) = parameters else {
        return Some("sha1");
    };
    if p.tag() != der::Tag::Sequence {
        return None;
    }
    let mut fields = der::SliceReader::new(p.value()).ok()?;
    // Absent (every field defaulted, or another field first): SHA-1.
    if fields.is_finished() || fields.peek_byte() != Some(0xA0) {
        return Some("sha1");
    }
    let explicit = der::asn1::AnyRef::from_der(fields.tlv_bytes().ok()?).ok()?;
    let hash = spki::AlgorithmIdentifierRef::from_der(explicit.value()).ok()?;
    let name = match hash.oid.to_string().as_str() {
        "1.3.14.3.2.26" => "sha1",
        "2.16.840.1.101.3.4.2.4" => "sha224",
        "2.16.840.1.101.3.4.2.1" => "sha256",
        "2.16.840.1.101.3.4.2.2" => "sha384",
        "2.16.840.1.101.3.4.2.3" => "sha512",
        _ => return None,
    };
    Some(name)
}

/// Logs in as `t.user`; the connection task runs until the client is dropped.
async fn connect(t: &Target<'_>, step: &str) -> Result<tokio_postgres::Client> {
    connect_classified(t, step)
        .await
        .map_err(LoginError::into_error)
}

/// [`connect`], saying whether the server refused the password itself.
async fn connect_classified(
    t: &Target<'_>,
    step: &str,
) -> std::result::Result<tokio_postgres::Client, LoginError> {
    let fail = |e: tokio_postgres::Error| {
        failed(
            Engine::Postgres,
            step,
            format!("login as {} failed: {}", t.user, describe(&e)),
        )
    };
    // Only addresses the egress policy allows, tried in order; the host name still
    // serves TLS (SNI and the certificate check).
    let addrs = t
        .egress
        .resolve(&t.cfg.host, t.cfg.port)
        .await
        .map_err(|e| LoginError::Other(failed(Engine::Postgres, step, e.message)))?;
    let tls = tls::client_config(t.cfg).map_err(LoginError::Other)?;
    let mut last = None;
    for addr in addrs {
        match connect_to(t, addr.ip(), tls.clone()).await {
            Ok(c) => return Ok(c),
            // The server answered (a refused login, say): another address would too.
            Err(e) if e.as_db_error().is_some() => {
                let wrong = e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD);
                let e = fail(e);
                return Err(if wrong {
                    LoginError::WrongPassword(e)
                } else {
                    LoginError::Other(e)
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(LoginError::Other(match last {
        Some(e) => fail(e),
        None => Error::internal("egress resolution returned no address"),
    }))
}

async fn connect_to(
    t: &Target<'_>,
    ip: std::net::IpAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut c = tokio_postgres::Config::new();
    c.host(&t.cfg.host)
        .hostaddr(ip)
        .port(t.cfg.port)
        .user(t.user)
        .password(t.password.as_bytes())
        .dbname(&t.cfg.database)
        .application_name("strongbox-rotation")
        .connect_timeout(CONNECT_TIMEOUT)
        .channel_binding(match t.cfg.channel_binding {
            ChannelBindingMode::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBindingMode::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBindingMode::Require => tokio_postgres::config::ChannelBinding::Require,
        });
    match tls {
        None => {
            c.ssl_mode(SslMode::Disable);
            let (client, conn) = c.connect(NoTls).await?;
            tokio::spawn(conn);
            Ok(client)
        }
        Some(tls) => {
            c.ssl_mode(SslMode::Require);
            let (client, conn) = c.connect(MakeRustls(tls)).await?;
            tokio::spawn(conn);
            Ok(client)
        }
    }
}

/// Logs in with the account and runs `SELECT 1`.
pub(crate) async fn login(t: &Target<'_>, step: &str) -> Result<()> {
    try_login(t, step).await.map_err(LoginError::into_error)
}

/// [`login`], saying whether the server refused the password itself.
pub(crate) async fn try_login(t: &Target<'_>, step: &str) -> std::result::Result<(), LoginError> {
    let client = connect_classified(t, step).await?;
    client.simple_query("SELECT 1").await.map_err(|e| {
        LoginError::Other(failed(
            Engine::Postgres,
            step,
            format!("SELECT 1 as {} failed: {}", t.user, describe(&e)),
        ))
    })?;
    Ok(())
}

/// Refuses privileged roles among `names` (the pending account and the current one a
/// clone copies).
async fn check_not_privileged(
    client: &tokio_postgres::Client,
    names: &[&str],
    step: &str,
) -> Result<()> {
    // Privileged roles are never rotated: their password would land in a secret its
    // readers may not be trusted with, and a clone would inherit the privileges.
    // Membership counts too, direct or through other roles: a member can SET ROLE to
    // a superuser role, and the built-in roles named here reach the server's files and
    // programs (a shell as the postgres user) or every table. REPLICATION streams the
    // whole cluster.
    let privileged = client
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolbypassrls, \
                r.rolreplication, \
                (SELECT string_agg(p.rolname::text, ', ' ORDER BY p.rolname) FROM pg_roles p \
                 WHERE p.oid <> r.oid AND pg_has_role(r.oid, p.oid, 'MEMBER') \
                   AND (p.rolsuper OR p.rolcreaterole OR p.rolbypassrls OR p.rolreplication \
                        OR p.rolname IN ('pg_execute_server_program', \
                         'pg_write_server_files', 'pg_read_server_files', \
                         'pg_read_all_data', 'pg_write_all_data'))) \
             FROM pg_roles r WHERE r.rolname = ANY($1)",
            &[&names.to_vec()],
        )
        .await
        .map_err(|e| {
            failed(
                Engine::Postgres,
                step,
                format!("looking up the account's privileges: {}", describe(&e)),
            )
        })?;
    // Read with `try_get`: a server that answers other types (not PostgreSQL, or not
    // the one expected) fails the step instead of panicking.
    let odd = |e: tokio_postgres::Error| {
        failed(
            Engine::Postgres,
            step,
            format!("reading the account's privileges: {}", describe(&e)),
        )
    };
    for row in privileged {
        let name: String = row.try_get(0).map_err(odd)?;
        let mut attrs: Vec<String> = Vec::new();
        for (i, a) in [
            (1, "SUPERUSER"),
            (2, "CREATEROLE"),
            (3, "BYPASSRLS"),
            (4, "REPLICATION"),
        ] {
            if row.try_get::<_, bool>(i).map_err(odd)? {
                attrs.push(a.to_string());
            }
        }
        if let Some(roles) = row.try_get::<_, Option<String>>(5).map_err(odd)? {
            attrs.push(format!("membership in {roles}"));
        }
        if !attrs.is_empty() {
            return Err(failed(
                Engine::Postgres,
                step,
                format!(
                    "AccountName {name} has {}: Strongbox does not rotate privileged roles",
                    attrs.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// *create*'s check, before anything is pending, so that a rotation that could never
/// be completed leaves nothing behind: as the admin, refuses privileged roles among
/// `names`, and (dual accounts) an existing clone `pending` of `template` that *set*
/// would not take over. *set* checks again.
pub(crate) async fn check_accounts(
    admin: &Target<'_>,
    names: &[&str],
    clone: Option<(&str, &str)>,
    step: &str,
) -> Result<()> {
    let client = connect(admin, step).await?;
    check_not_privileged(&client, names, step).await?;
    if let Some((pending, template)) = clone {
        check_adoptable(&client, pending, template, step).await?;
    }
    Ok(())
}

/// Whether role `pending` exists; refused when it does and is unrelated to `template`.
/// It is ours only if one is a member of the other (the clone is created IN ROLE the
/// original): an unrelated role is never adopted.
async fn check_adoptable(
    client: &tokio_postgres::Client,
    pending: &str,
    template: &str,
    step: &str,
) -> Result<bool> {
    let fail = |what: &str, e: tokio_postgres::Error| -> Error {
        failed(Engine::Postgres, step, format!("{what}: {}", describe(&e)))
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&pending])
        .await
        .map_err(|e| fail("looking up the account", e))?
        .is_some();
    if !exists {
        return Ok(false);
    }
    let related = client
        .query_opt(
            "SELECT 1 FROM pg_auth_members m \
             JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             WHERE (r.rolname = $1 AND u.rolname = $2) OR (r.rolname = $2 AND u.rolname = $1)",
            &[&template, &pending],
        )
        .await
        .map_err(|e| fail("looking up the account's membership", e))?
        .is_some();
    if !related {
        return Err(failed(
            Engine::Postgres,
            step,
            format!(
                "account {pending} exists and is not a member of {template}: Strongbox does \
                 not adopt a role it did not create"
            ),
        ));
    }
    Ok(true)
}

/// *set*: as the admin, creates `pending` as a member of `template` when asked and it
/// does not exist, then sets its password (a SCRAM verifier, never the plaintext).
pub(crate) async fn set_password(
    admin: &Target<'_>,
    pending: &Account,
    template: Option<&str>,
) -> Result<()> {
    let step = "set";
    let fail = |what: &str, e: tokio_postgres::Error| -> Error {
        failed(Engine::Postgres, step, format!("{what}: {}", describe(&e)))
    };
    let client = connect(admin, step).await?;
    let names: Vec<&str> = std::iter::once(pending.name.as_str())
        .chain(template)
        .collect();
    check_not_privileged(&client, &names, step).await?;
    let role = quote_ident(&pending.name);
    if let Some(template) = template
        && !check_adoptable(&client, &pending.name, template, step).await?
    {
        let r = client
            .batch_execute(&format!(
                "CREATE ROLE {role} WITH LOGIN IN ROLE {}",
                quote_ident(template)
            ))
            .await;
        match r {
            Ok(()) => {}
            // Created meanwhile by a concurrent or repeated step: fine.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => {
                return Err(fail(
                    &format!("creating account {} like {template}", pending.name),
                    e,
                ));
            }
        }
    }
    let verifier = Zeroizing::new(postgres_protocol::password::scram_sha_256(
        pending.password.as_bytes(),
    ));
    let stmt = Zeroizing::new(format!(
        "ALTER ROLE {role} WITH PASSWORD {}",
        quote_literal(&verifier)
    ));
    client
        .batch_execute(&stmt)
        .await
        .map_err(|e| fail(&format!("setting the password of {}", pending.name), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end point is the certificate's hash with its signature's hash function, and
    /// none for a signature without one.
    #[test]
    fn the_end_point_hash_follows_the_certificate_signature() {
        use sha2::Digest as _;
        let cert = |alg: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let params = rcgen::CertificateParams::new(vec!["db.example".to_string()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            server_end_point(&p256),
            Some(sha2::Sha256::digest(&p256).to_vec())
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            server_end_point(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        assert_eq!(server_end_point(&cert(&rcgen::PKCS_ED25519)), None);
        // RSASSA-PSS (made with `openssl req -x509 -sigopt rsa_padding_mode:pss`): the hash
        // its parameters name, SHA-384 here; SHA-1 when they name none, bound with SHA-256.
        let der = |pem: &str| {
            rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .unwrap()
                .unwrap()
                .to_vec()
        };
        let pss384 = der(include_str!("testdata/rsa-pss-sha384.pem"));
        assert_eq!(
            server_end_point(&pss384),
            Some(sha2::Sha384::digest(&pss384).to_vec())
        );
        let pss1 = der(include_str!("testdata/rsa-pss-sha1.pem"));
        assert_eq!(
            server_end_point(&pss1),
            Some(sha2::Sha256::digest(&pss1).to_vec())
        );
        assert_eq!(server_end_point(b"not a certificate"), None);
    }

    #[test]
    fn quoting_doubles_quotes_and_escapes_backslashes() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
    }
}
