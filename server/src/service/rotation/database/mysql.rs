//! MySQL and MariaDB: logins with mysql_async (TLS through rustls with aws-lc-rs),
//! passwords set on every host entry of the account; MariaDB gets the
//! `mysql_native_password` hash, never the plaintext. A clone gets the grants of the
//! account it copies (`SHOW GRANTS`, re-addressed to the clone).

use std::time::Duration;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use sha1::{Digest as _, Sha1};
use zeroize::Zeroizing;

use super::{Account, ChannelBindingMode, Engine, LoginError, Target, TlsMode, failed};
use crate::error::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `'s'`: a string literal (user and host names, passwords). Backslashes are escaped
/// unless the session's `sql_mode` has `NO_BACKSLASH_ESCAPES`.
pub(crate) fn quote_str(s: &str, backslash_escapes: bool) -> String {
    let mut body = s.replace('\'', "''");
    if backslash_escapes {
        body = body.replace('\\', "\\\\");
    }
    format!("'{body}'")
}

/// `` `s` ``: an identifier, inner backticks doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// The `mysql_native_password` hash: `*` and the upper-case hex of SHA1(SHA1(password)).
pub(crate) fn native_password_hash(password: &str) -> String {
    let inner = Sha1::digest(password.as_bytes());
    let outer = Sha1::digest(inner);
    format!("*{}", hex::encode_upper(outer))
}

/// The server's error code and SQLSTATE; its message only when the statement held no
/// secret (a syntax error's message quotes the statement).
fn describe(e: &mysql_async::Error, with_message: bool) -> String {
    match e {
        mysql_async::Error::Server(s) if with_message => {
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state)
        }
        mysql_async::Error::Server(s) => format!("error {}, SQLSTATE {}", s.code, s.state),
        // A refused certificate is a TLS failure, not an unreachable server.
        mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => format!("TLS failed: {t}"),
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => {
            match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(t) => format!("TLS failed: {t}"),
                None => "could not reach the server".into(),
            }
        }
        mysql_async::Error::Driver(d) => d.to_string().chars().take(200).collect(),
        _ => "client error".into(),
    }
}

/// `verify-full`: the certificate chain is checked against `ca_cert` alone (PEM) or the
/// system's roots (DER), with the driver's built-in roots disabled, and the host name
/// is checked.
fn verify_full_opts(ca_cert: Option<&str>) -> SslOpts {
    let roots: Vec<Vec<u8>> = match ca_cert {
        Some(pem) => vec![pem.as_bytes().to_vec()],
        None => super::tls::system_root_ders(),
    };
    SslOpts::default()
        .with_root_certs(roots.into_iter().map(Into::into).collect())
        .with_disable_built_in_roots(true)
}

async fn connect(t: &Target<'_>, step: &str) -> Result<Conn> {
    connect_classified(t, step)
        .await
        .map_err(LoginError::into_error)
}

/// [`connect`], saying whether the server refused the password itself.
async fn connect_classified(t: &Target<'_>, step: &str) -> std::result::Result<Conn, LoginError> {
    // Only addresses the egress policy allows, tried in order; the host name still
    // serves the certificate check (verify-full).
    let addrs = t
        .egress
        .resolve(&t.cfg.host, t.cfg.port)
        .await
        .map_err(|e| LoginError::Other(failed(Engine::Mysql, step, e.message)))?;
    let mut last = None;
    for addr in addrs {
        match connect_to(t, addr.ip(), step).await {
            Ok(c) => return Ok(c),
            // The server answered (a refused login, say): another address would too.
            Err(Answer::Server(e)) => return Err(e),
            Err(Answer::Unreachable(e)) => last = Some(e),
        }
    }
    Err(LoginError::Other(last.unwrap_or_else(|| {
        Error::internal("egress resolution returned no address")
    })))
}

/// Why one address gave no connection.
enum Answer {
    /// The server answered with a refusal.
    Server(LoginError),
    /// No answer (refused, timed out, TLS failed).
    Unreachable(Error),
}

/// One address.
async fn connect_to(
    t: &Target<'_>,
    ip: std::net::IpAddr,
    step: &str,
) -> std::result::Result<Conn, Answer> {
    let mut b = OptsBuilder::default()
        .ip_or_hostname(ip.to_string())
        .tcp_port(t.cfg.port)
        .user(Some(t.user))
        .pass(Some(t.password))
        .db_name(Some(&t.cfg.database))
        .prefer_socket(false);
    if t.cfg.channel_binding == ChannelBindingMode::Require {
        // Refused before anything is sent: MySQL logins cannot be bound to the TLS
        // connection, so the requirement cannot be met.
        return Err(Answer::Unreachable(failed(
            Engine::Mysql,
            step,
            "ChannelBinding is require, but MySQL logins have no channel binding (it applies to PostgreSQL); use prefer or disable".to_string(),
        )));
    }
    b = match t.cfg.tls {
        TlsMode::Disable => b,
        TlsMode::Require => b.ssl_opts(Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        )),
        // Only the roots given are trusted: `CaCert` when set, else the system's (as for
        // PostgreSQL), never the driver's built-in webpki roots.
        TlsMode::VerifyFull => b.ssl_opts(Some(
            verify_full_opts(t.cfg.ca_cert.as_deref())
                .with_danger_tls_hostname_override(Some(t.cfg.host.clone())),
        )),
    };
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(b))
        .await
        .map_err(|_| {
            Answer::Unreachable(failed(
                Engine::Mysql,
                step,
                format!("login as {} timed out", t.user),
            ))
        })?
        .map_err(|e| {
            let server = match &e {
                mysql_async::Error::Server(s) => Some(s.code),
                _ => None,
            };
            let e = failed(
                Engine::Mysql,
                step,
                format!("login as {} failed: {}", t.user, describe(&e, true)),
            );
            match server {
                // Access denied: a wrong password.
                Some(1045) => Answer::Server(LoginError::WrongPassword(e)),
                // Access denied without a password check (MariaDB's unix_socket).
                Some(1698) => Answer::Server(LoginError::Denied(e)),
                Some(_) => Answer::Server(LoginError::Other(e)),
                None => Answer::Unreachable(e),
            }
        })?;
    Ok(conn)
}

/// Whether the server behind `t` (the admin account) is MariaDB (account names up
/// to 80 characters) rather than MySQL (32).
pub(crate) async fn is_mariadb(t: &Target<'_>, step: &str) -> Result<bool> {
    let mut conn = connect(t, step).await?;
    let version = server_version(&mut conn, step).await;
    let _ = conn.disconnect().await;
    Ok(version?.contains("MariaDB"))
}

/// A statement's failure: the step, what it did, and the driver's error (its message
/// only when `with_message`: one about a statement holding a password may quote it).
fn statement_failed(step: &str, what: &str, e: &mysql_async::Error, with_message: bool) -> Error {
    failed(
        Engine::Mysql,
        step,
        format!("{what}: {}", describe(e, with_message)),
    )
}

/// `SELECT VERSION()`.
async fn server_version(conn: &mut Conn, step: &str) -> Result<String> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| statement_failed(step, "reading the server version", &e, true))?;
    Ok(version.unwrap_or_default())
}

/// Logs in with the account and runs `SELECT 1`.
pub(crate) async fn login(t: &Target<'_>, step: &str) -> Result<()> {
    try_login(t, step).await.map_err(LoginError::into_error)
}

/// [`login`], saying whether the server refused the password itself.
pub(crate) async fn try_login(t: &Target<'_>, step: &str) -> std::result::Result<(), LoginError> {
    let mut conn = connect_classified(t, step).await?;
    conn.query_drop("SELECT 1").await.map_err(|e| {
        LoginError::Other(failed(
            Engine::Mysql,
            step,
            format!("SELECT 1 as {} failed: {}", t.user, describe(&e, true)),
        ))
    })?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// Rewrites one line of `SHOW GRANTS FOR template@host` for `clone@host`: the grantee
/// is replaced and any `IDENTIFIED …` clause (the template's password hash) dropped.
/// `None` for lines that are not grants to the template.
fn regrant(line: &str, template: &str, clone: &str, host: &str) -> Option<String> {
    if !line.starts_with("GRANT ") {
        return None;
    }
    let from = format!(" TO {}@{}", quote_ident(template), quote_ident(host));
    let to = format!(" TO {}@{}", quote_ident(clone), quote_ident(host));
    let at = line.find(&from)?;
    let mut out = format!("{}{to}", &line[..at]);
    let rest = &line[at + from.len()..];
    let rest = match rest.find(" IDENTIFIED ") {
        Some(i) => {
            let tail = &rest[i..];
            let keep = tail.find(" WITH ").map_or("", |w| &tail[w..]);
            format!("{}{keep}", &rest[..i])
        }
        None => rest.to_string(),
    };
    out.push_str(&rest);
    Some(out)
}

/// The statements that take back what one line of `SHOW GRANTS FOR account@host` gives
/// the account: privileges on an object (and the grant option when given: a separate
/// statement, since `ALL PRIVILEGES` may not be listed with it), or roles. None for the
/// `USAGE` line without the grant option (no privilege: the account itself) and for
/// lines that are not grants to the account.
fn revocation(line: &str, account: &str, host: &str) -> Vec<String> {
    let Some(rest) = line.strip_prefix("GRANT ") else {
        return Vec::new();
    };
    let user = format!("{}@{}", quote_ident(account), quote_ident(host));
    let to = format!(" TO {user}");
    let Some(at) = rest.find(&to) else {
        return Vec::new();
    };
    let (what, tail) = (&rest[..at], &rest[at + to.len()..]);
    let Some(on) = what.find(" ON ") else {
        // Roles granted to the account.
        return vec![format!("REVOKE {what} FROM {user}")];
    };
    let (privileges, object) = (&what[..on], &what[on + 4..]);
    let mut out = Vec::new();
    if privileges != "USAGE" {
        out.push(format!("REVOKE {privileges} ON {object} FROM {user}"));
    }
    if tail.contains("WITH GRANT OPTION") && privileges != "PROXY" {
        out.push(format!("REVOKE GRANT OPTION ON {object} FROM {user}"));
    }
    out
}

/// Takes back from `account@host` every grant of its own `SHOW GRANTS` not in `wanted`
/// (lines already re-addressed to it, without `IDENTIFIED …`).
async fn take_back_all_but(
    conn: &mut mysql_async::Conn,
    account: &str,
    host: &str,
    wanted: &[String],
    esc: bool,
    step: &str,
) -> Result<()> {
    let user = format!("{}@{}", quote_str(account, esc), quote_str(host, esc));
    let own: Vec<String> = conn
        .query(format!("SHOW GRANTS FOR {user}"))
        .await
        .map_err(|e| {
            statement_failed(
                step,
                &format!("reading the grants of {account}@{host}"),
                &e,
                true,
            )
        })?;
    for line in &own {
        if regrant(line, account, account, host).is_some_and(|g| wanted.contains(&g)) {
            continue;
        }
        for revoke in revocation(line, account, host) {
            conn.query_drop(&revoke).await.map_err(|e| {
                statement_failed(
                    step,
                    &format!(
                        "taking back from {account}@{host} what the current account does not have"
                    ),
                    &e,
                    true,
                )
            })?;
        }
    }
    Ok(())
}

/// The grants of `template@host`, re-addressed to `clone`. Every account has at least
/// its USAGE line: none read means the server quotes accounts in a way not understood
/// (MySQL 5.7's single quotes, say), and the clone would get nothing.
async fn grants_for_clone(
    conn: &mut mysql_async::Conn,
    template: &str,
    clone: &str,
    host: &str,
    esc: bool,
    step: &str,
) -> Result<Vec<String>> {
    let grants: Vec<String> = conn
        .query(format!(
            "SHOW GRANTS FOR {}@{}",
            quote_str(template, esc),
            quote_str(host, esc)
        ))
        .await
        .map_err(|e| {
            statement_failed(
                step,
                &format!("reading the grants of {template}@{host}"),
                &e,
                true,
            )
        })?;
    let wanted: Vec<String> = grants
        .iter()
        .filter_map(|g| regrant(g, template, clone, host))
        .collect();
    if wanted.is_empty() {
        return Err(failed(
            Engine::Mysql,
            step,
            format!("no line of SHOW GRANTS FOR {template}@{host} could be read as a grant to it"),
        ));
    }
    Ok(wanted)
}

/// `ssl_type, ssl_cipher, x509_issuer, x509_subject` of a `mysql.user` row.
type TlsRequirement = (
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The `REQUIRE …` clause that gives an account the TLS requirement of a `mysql.user`
/// row: `NONE`, `SSL`, `X509`, or the issuer, subject and cipher it names.
fn require_clause(row: Option<&TlsRequirement>, esc: bool) -> String {
    let Some((ty, cipher, issuer, subject)) = row else {
        return "NONE".into();
    };
    match ty.as_deref().unwrap_or("") {
        "ANY" => "SSL".into(),
        "X509" => "X509".into(),
        "SPECIFIED" => {
            let text = |v: &Option<Vec<u8>>| {
                v.as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
                    .into_owned()
            };
            let parts: Vec<String> = [
                ("ISSUER", text(issuer)),
                ("SUBJECT", text(subject)),
                ("CIPHER", text(cipher)),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} {}", quote_str(&v, esc)))
            .collect();
            if parts.is_empty() {
                "SSL".into()
            } else {
                parts.join(" AND ")
            }
        }
        _ => "NONE".into(),
    }
}

/// The default roles of `user@host` as the `SET DEFAULT ROLE` statement names them
/// (`NONE` when it has none). `None` on MySQL before 8.0, which has no roles.
async fn default_role_clause(
    conn: &mut Conn,
    mariadb: bool,
    user: &str,
    host: &str,
) -> std::result::Result<Option<String>, mysql_async::Error> {
    if mariadb {
        // One default role per account, in mysql.user.
        let role: Option<Option<String>> = conn
            .exec_first(
                "SELECT default_role FROM mysql.user WHERE User = ? AND Host = ?",
                (user, host),
            )
            .await?;
        return Ok(Some(match role.flatten().filter(|r| !r.is_empty()) {
            Some(r) => quote_ident(&r),
            None => "NONE".into(),
        }));
    }
    let rows: std::result::Result<Vec<(String, String)>, _> = conn
        .exec(
            "SELECT DEFAULT_ROLE_USER, DEFAULT_ROLE_HOST FROM mysql.default_roles \
             WHERE USER = ? AND HOST = ?",
            (user, host),
        )
        .await;
    let rows = match rows {
        Ok(r) => r,
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(if rows.is_empty() {
        "NONE".into()
    } else {
        rows.iter()
            .map(|(u, h)| format!("{}@{}", quote_ident(u), quote_ident(h)))
            .collect::<Vec<_>>()
            .join(", ")
    }))
}

/// Whether the account `user` can log in from this host as Strongbox does, asked as the
/// admin (whose connection comes from the same host): why not, when no host
/// entry of the account matches this host, or every one that does asks for what
/// Strongbox's login does not bring: TLS (`REQUIRE SSL` or `CIPHER`, when `TlsMode` is
/// `disable`) or a client certificate (`REQUIRE X509`, `ISSUER`, `SUBJECT`). MySQL refuses such logins
/// as a wrong password (1045), so without this a rotation would take them for a password
/// that drifted and change it. Entries given as a netmask (`10.0.0.0/255.255.255.0`)
/// are not evaluated here and count as a match.
pub(crate) async fn login_blocked(
    admin: &Target<'_>,
    user: &str,
    step: &str,
) -> Result<Option<&'static str>> {
    let mut conn = connect(admin, step).await?;
    let tls = admin.cfg.tls != TlsMode::Disable;
    let row: Option<(u64, Option<u64>)> = conn
        .exec_first(
            "SELECT COUNT(*), CAST(SUM(ssl_type = '' OR (? AND (ssl_type = 'ANY' \
             OR (ssl_type = 'SPECIFIED' AND x509_issuer = '' AND x509_subject = '')))) \
             AS UNSIGNED) FROM mysql.user \
             WHERE User = ? AND \
             (SUBSTRING_INDEX(USER(), '@', -1) LIKE Host OR Host LIKE '%/%')",
            (tls, user),
        )
        .await
        .map_err(|e| statement_failed(step, "looking up the account's hosts", &e, true))?;
    let _ = conn.disconnect().await;
    let (matching, plain) = row.unwrap_or((0, None));
    Ok(if matching == 0 {
        Some("no host entry of the account matches this host")
    } else if plain.unwrap_or(0) == 0 {
        Some(
            "the account requires TLS or a client certificate (REQUIRE) that Strongbox's \
             login does not bring: set TlsMode to require or verify-full, or lift REQUIRE \
             X509/ISSUER/SUBJECT",
        )
    } else {
        None
    })
}

/// Whether a server with this `VERSION()` has roles: MariaDB (10.0.5 on), MySQL 8 on.
fn has_roles(version: &str) -> bool {
    version.contains("MariaDB")
        || version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|major| major >= 8)
}

/// Refuses privileged accounts among `names` (the pending account and the current one
/// a clone copies): `root`, and global SUPER, GRANT OPTION, CREATE USER or FILE (which
/// reads and writes the server's files, as PostgreSQL's `pg_*_server_files` roles that
/// its check refuses), held or through roles. `version` is the server's `VERSION()`.
async fn check_not_privileged(
    conn: &mut Conn,
    version: &str,
    names: &[&str],
    step: &str,
) -> Result<()> {
    let fail = |what: String, e: mysql_async::Error, with_message: bool| {
        statement_failed(step, &what, &e, with_message)
    };
    let mariadb = version.contains("MariaDB");
    let has_roles = has_roles(version);
    // Privileged accounts are never rotated: their password would land in a secret
    // its readers may not be trusted with, and a clone would get the privileges.
    for &name in names {
        if name == "root" {
            return Err(failed(
                Engine::Mysql,
                step,
                "AccountName root: Strongbox does not rotate privileged accounts",
            ));
        }
        let privileged: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND (Super_priv = 'Y' \
                 OR Grant_priv = 'Y' OR Create_user_priv = 'Y' OR File_priv = 'Y')",
                (name,),
            )
            .await
            .map_err(|e| fail("looking up the account's privileges".into(), e, true))?;
        if privileged.unwrap_or(0) > 0 {
            return Err(failed(
                Engine::Mysql,
                step,
                format!(
                    "AccountName {name} holds global ALL, SUPER, GRANT OPTION, CREATE USER or \
                     FILE: Strongbox does not rotate privileged accounts"
                ),
            ));
        }
        // The same privileges through roles granted to it, directly or through other
        // roles (SET ROLE takes them up).
        // Who is granted what: (grantee column, role column, table).
        let (grantee, role, table) = if mariadb {
            ("User", "Role", "mysql.roles_mapping")
        } else {
            ("TO_USER", "FROM_USER", "mysql.role_edges")
        };
        let via_roles = format!(
            "WITH RECURSIVE granted(name) AS ( \
               SELECT {role} FROM {table} WHERE {grantee} = ? \
               UNION SELECT m.{role} FROM {table} m JOIN granted g ON m.{grantee} = g.name) \
             SELECT GROUP_CONCAT(DISTINCT u.User ORDER BY u.User SEPARATOR ', ') \
             FROM mysql.user u JOIN granted g ON u.User = g.name \
             WHERE u.Super_priv = 'Y' OR u.Grant_priv = 'Y' OR u.Create_user_priv = 'Y' \
               OR u.File_priv = 'Y'"
        );
        // MySQL before 8.0 has no roles (nor WITH RECURSIVE).
        let roles: Option<Option<String>> = if has_roles {
            conn.exec_first(via_roles.as_str(), (name,))
                .await
                .map_err(|e| fail("looking up the account's roles".into(), e, true))?
        } else {
            None
        };
        if let Some(Some(roles)) = roles {
            return Err(failed(
                Engine::Mysql,
                step,
                format!(
                    "AccountName {name} has roles holding global ALL, SUPER, GRANT OPTION, \
                     CREATE USER or FILE ({roles}): Strongbox does not rotate privileged accounts"
                ),
            ));
        }
    }
    Ok(())
}

/// *create*'s check, before anything is pending, so that a rotation that could never
/// be completed leaves nothing behind: as the admin, refuses privileged accounts among
/// `names`, and (dual accounts) a `template` whose grants, which *set* copies to
/// `clone`, cannot be read on one of its hosts. *set* checks again. A `clone` to be
/// made (no version of the secret names it) must not exist: MySQL has no membership
/// to tell an account Strongbox made from another one of that name, and *set* would
/// take that account over (its grants replaced by the template's, its password reset).
pub(crate) async fn check_accounts(
    admin: &Target<'_>,
    names: &[&str],
    clone: Option<(&str, &str)>,
    clone_is_new: bool,
    step: &str,
) -> Result<()> {
    let mut conn = connect(admin, step).await?;
    let r = check_accounts_on(&mut conn, names, clone, clone_is_new, step).await;
    let _ = conn.disconnect().await;
    r
}

async fn check_accounts_on(
    conn: &mut mysql_async::Conn,
    names: &[&str],
    clone: Option<(&str, &str)>,
    clone_is_new: bool,
    step: &str,
) -> Result<()> {
    let version = server_version(conn, step).await?;
    check_not_privileged(conn, &version, names, step).await?;
    let Some((clone, template)) = clone else {
        return Ok(());
    };
    if clone_is_new {
        let exists: Option<u8> = conn
            .exec_first("SELECT 1 FROM mysql.user WHERE User = ? LIMIT 1", (clone,))
            .await
            .map_err(|e| statement_failed(step, "looking up the account", &e, true))?;
        if exists.is_some() {
            return Err(failed(
                Engine::Mysql,
                step,
                format!(
                    "account {clone} exists and no version of the secret names it: Strongbox \
                     does not adopt an account it did not create (to rotate into it, put a \
                     value naming it as ACSPrevious)"
                ),
            ));
        }
    }
    let sql_mode: String = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .map_err(|e| statement_failed(step, "reading the SQL mode", &e, true))?
        .unwrap_or_default();
    let esc = !sql_mode.contains("NO_BACKSLASH_ESCAPES");
    let hosts: Vec<String> = conn
        .exec("SELECT Host FROM mysql.user WHERE User = ?", (template,))
        .await
        .map_err(|e| statement_failed(step, "looking up the current account", &e, true))?;
    for host in &hosts {
        grants_for_clone(conn, template, clone, host, esc, step).await?;
    }
    Ok(())
}

/// *set*: as the admin, creates `pending` on every host of `template` with the same
/// grants when asked (grants are applied again on a repeated step), then sets its
/// password on every host entry.
pub(crate) async fn set_password(
    admin: &Target<'_>,
    pending: &Account,
    template: Option<&str>,
) -> Result<()> {
    let step = "set";
    let fail = |what: String, e: mysql_async::Error, with_message: bool| {
        statement_failed(step, &what, &e, with_message)
    };
    let mut conn = connect(admin, step).await?;
    let (version, sql_mode): (String, String) = conn
        .query_first("SELECT VERSION(), @@SESSION.sql_mode")
        .await
        .map_err(|e| fail("reading the server version".into(), e, true))?
        .unwrap_or_default();
    let mariadb = version.contains("MariaDB");
    let esc = !sql_mode.contains("NO_BACKSLASH_ESCAPES");
    let names: Vec<&str> = std::iter::once(pending.name.as_str())
        .chain(template)
        .collect();
    check_not_privileged(&mut conn, &version, &names, step).await?;
    let mut hosts: Vec<String> = conn
        .exec(
            "SELECT Host FROM mysql.user WHERE User = ?",
            (&pending.name,),
        )
        .await
        .map_err(|e| fail("looking up the account".into(), e, true))?;
    let hash = Zeroizing::new(native_password_hash(&pending.password));
    let identified = |hash: &str, plain: &str| -> Zeroizing<String> {
        Zeroizing::new(if mariadb {
            format!("IDENTIFIED BY PASSWORD {}", quote_str(hash, esc))
        } else {
            // MySQL rewrites the password out of its logs.
            format!("IDENTIFIED BY {}", quote_str(plain, esc))
        })
    };
    if let Some(template) = template {
        let template_hosts: Vec<String> = conn
            .exec("SELECT Host FROM mysql.user WHERE User = ?", (template,))
            .await
            .map_err(|e| fail("looking up the current account".into(), e, true))?;
        if template_hosts.is_empty() {
            return Err(failed(
                Engine::Mysql,
                step,
                format!("the current account {template} does not exist"),
            ));
        }
        for host in &template_hosts {
            let user = format!("{}@{}", quote_str(&pending.name, esc), quote_str(host, esc));
            let create = Zeroizing::new(format!(
                "CREATE USER IF NOT EXISTS {user} {}",
                identified(&hash, &pending.password).as_str()
            ));
            conn.query_drop(create.as_str()).await.map_err(|e| {
                fail(
                    format!("creating account {}@{host}", pending.name),
                    e,
                    false,
                )
            })?;
            let wanted =
                grants_for_clone(&mut conn, template, &pending.name, host, esc, step).await?;
            // The account gets exactly the template's rights: what it has and the
            // template has not (a privilege revoked from the template since, a role)
            // is taken back first, or a revocation would come back at the next swap.
            take_back_all_but(&mut conn, &pending.name, host, &wanted, esc, step).await?;
            for g in wanted {
                conn.query_drop(&g).await.map_err(|e| {
                    fail(
                        format!("granting {}@{host} what {template} has", pending.name),
                        e,
                        true,
                    )
                })?;
            }
            // The clone must not be easier to reach than the account it copies: an
            // account that requires TLS (or a certificate) gets a clone that does too.
            let tls: Option<TlsRequirement> = conn
                .exec_first(
                    "SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject FROM mysql.user \
                     WHERE User = ? AND Host = ?",
                    (template, host),
                )
                .await
                .map_err(|e| {
                    fail(
                        format!("reading the TLS requirement of {template}@{host}"),
                        e,
                        true,
                    )
                })?;
            let require = format!(
                "ALTER USER {user} REQUIRE {}",
                require_clause(tls.as_ref(), esc)
            );
            conn.query_drop(&require).await.map_err(|e| {
                fail(
                    format!(
                        "requiring of {}@{host} what {template} requires",
                        pending.name
                    ),
                    e,
                    true,
                )
            })?;
            // Roles granted to the account were copied with its grants; the ones it
            // has on at login (default roles) are copied too, or the clone would log
            // in without them and the application's queries would fail after the swap.
            let default = default_role_clause(&mut conn, mariadb, template, host)
                .await
                .map_err(|e| {
                    fail(
                        format!("reading the default roles of {template}@{host}"),
                        e,
                        true,
                    )
                })?;
            if let Some(roles) = default {
                let set = if mariadb {
                    format!("SET DEFAULT ROLE {roles} FOR {user}")
                } else {
                    format!("SET DEFAULT ROLE {roles} TO {user}")
                };
                conn.query_drop(&set).await.map_err(|e| {
                    fail(
                        format!(
                            "giving {}@{host} the default roles of {template}",
                            pending.name
                        ),
                        e,
                        true,
                    )
                })?;
            }
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        // Entries of the account on hosts the template no longer has get no rights
        // (they still get the password below, so no older one stays valid there).
        for host in hosts.iter().filter(|h| !template_hosts.contains(h)) {
            take_back_all_but(&mut conn, &pending.name, host, &[], esc, step).await?;
        }
    }
    if hosts.is_empty() {
        return Err(failed(
            Engine::Mysql,
            step,
            format!("account {} does not exist", pending.name),
        ));
    }
    for host in &hosts {
        let stmt = Zeroizing::new(format!(
            "ALTER USER {}@{} {}",
            quote_str(&pending.name, esc),
            quote_str(host, esc),
            identified(&hash, &pending.password).as_str()
        ));
        conn.query_drop(stmt.as_str()).await.map_err(|e| {
            fail(
                format!("setting the password of {}@{host}", pending.name),
                e,
                false,
            )
        })?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_grant_line_has_its_revocation() {
        let r = |line: &str| revocation(line, "app", "%");
        assert_eq!(
            r("GRANT SELECT, INSERT ON `db`.* TO `app`@`%`"),
            ["REVOKE SELECT, INSERT ON `db`.* FROM `app`@`%`"]
        );
        // ALL PRIVILEGES may not be listed with GRANT OPTION: two statements.
        assert_eq!(
            r("GRANT ALL PRIVILEGES ON `db`.`t` TO `app`@`%` WITH GRANT OPTION"),
            [
                "REVOKE ALL PRIVILEGES ON `db`.`t` FROM `app`@`%`",
                "REVOKE GRANT OPTION ON `db`.`t` FROM `app`@`%`"
            ]
        );
        assert_eq!(
            r("GRANT SELECT (`a`, `b`), UPDATE (`a`) ON `db`.`t` TO `app`@`%`"),
            ["REVOKE SELECT (`a`, `b`), UPDATE (`a`) ON `db`.`t` FROM `app`@`%`"]
        );
        assert_eq!(
            r("GRANT EXECUTE ON PROCEDURE `db`.`p` TO `app`@`%`"),
            ["REVOKE EXECUTE ON PROCEDURE `db`.`p` FROM `app`@`%`"]
        );
        assert_eq!(
            r("GRANT `reader` TO `app`@`%`"),
            ["REVOKE `reader` FROM `app`@`%`"]
        );
        assert_eq!(
            r("GRANT `reader`@`%` TO `app`@`%` WITH ADMIN OPTION"),
            ["REVOKE `reader`@`%` FROM `app`@`%`"]
        );
        assert!(r("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB'").is_empty());
        assert_eq!(
            r("GRANT USAGE ON *.* TO `app`@`%` WITH GRANT OPTION"),
            ["REVOKE GRANT OPTION ON *.* FROM `app`@`%`"]
        );
        assert!(r("GRANT SELECT ON `db`.* TO `other`@`%`").is_empty());
    }

    #[test]
    fn quoting_and_hashes() {
        assert_eq!(quote_str("it's", true), "'it''s'");
        assert_eq!(quote_str("a\\b", true), "'a\\\\b'");
        assert_eq!(quote_str("a\\b", false), "'a\\b'");
        assert_eq!(quote_ident("a`b"), "`a``b`");
        // The hash MariaDB itself computes for PASSWORD('pw1').
        assert_eq!(
            native_password_hash("pw1"),
            "*2B602296A79E0A8784ACC5C88D92E46588CCA3C3"
        );
    }

    #[test]
    fn verify_full_trusts_only_the_roots_given() {
        let o = verify_full_opts(Some("-----BEGIN CERTIFICATE-----"));
        assert!(o.disable_built_in_roots());
        assert_eq!(o.root_certs().len(), 1);
        assert!(!o.accept_invalid_certs() && !o.skip_domain_validation());
        assert!(verify_full_opts(None).disable_built_in_roots());
    }

    #[test]
    fn clones_get_the_tls_requirement_of_their_account() {
        let row = |ty: &str, cipher: &str, issuer: &str, subject: &str| {
            let b = |s: &str| Some(s.as_bytes().to_vec());
            (Some(ty.to_string()), b(cipher), b(issuer), b(subject))
        };
        assert_eq!(require_clause(None, true), "NONE");
        assert_eq!(require_clause(Some(&row("", "", "", "")), true), "NONE");
        assert_eq!(require_clause(Some(&row("ANY", "", "", "")), true), "SSL");
        assert_eq!(require_clause(Some(&row("X509", "", "", "")), true), "X509");
        assert_eq!(
            require_clause(
                Some(&row("SPECIFIED", "TLS_AES_256_GCM_SHA384", "", "/CN=app's")),
                true
            ),
            "SUBJECT '/CN=app''s' AND CIPHER 'TLS_AES_256_GCM_SHA384'"
        );
    }

    #[test]
    fn grants_are_readdressed_without_the_password_hash() {
        let l = "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*2B60'";
        assert_eq!(
            regrant(l, "app", "app_clone", "%").unwrap(),
            "GRANT USAGE ON *.* TO `app_clone`@`%`"
        );
        let l = "GRANT ALL PRIVILEGES ON `db`.* TO `app`@`%` IDENTIFIED BY PASSWORD '*2B' WITH GRANT OPTION";
        assert_eq!(
            regrant(l, "app", "app_clone", "%").unwrap(),
            "GRANT ALL PRIVILEGES ON `db`.* TO `app_clone`@`%` WITH GRANT OPTION"
        );
        assert_eq!(
            regrant(
                "GRANT SELECT ON `db`.`t` TO `app`@`10.%`",
                "app",
                "c",
                "10.%"
            )
            .unwrap(),
            "GRANT SELECT ON `db`.`t` TO `c`@`10.%`"
        );
        assert!(regrant("SET DEFAULT ROLE x FOR `app`@`%`", "app", "c", "%").is_none());
    }
}
