//! The `postgresql` and `mysql` strategies: rotate the password of a database account
//! held in an `Rds` secret.
//!
//! An `Rds` secret's value is `{"AccountName": "…", "AccountPassword": "…"}` (other
//! top-level fields are kept); its `extended_config` says where the database is and how
//! the rotation runs:
//!
//! ```json
//! {"SecretSubType": "SingleUser" | "DoubleUsers", "Host": "db.internal", "Port": 5432,
//!  "Database": "app", "TlsMode": "disable" | "require" | "verify-full",
//!  "AdminSecret": "NAME OF A SECRET HOLDING THE ADMIN ACCOUNT (same JSON shape)",
//!  "CaCert": "PEM (optional; with verify-full the only CA trusted)",
//!  "ChannelBinding": "prefer" (default) | "disable" | "require"   (PostgreSQL logins)}
//! ```
//!
//! - **SingleUser**: *create* makes a new password for the same account; *set* changes
//!   the account's password in place (as the admin account); *test* logs in with it;
//!   *finish* has nothing to do. Between *set* and *finish* the database already has the
//!   new password while `ACSCurrent` still holds the old one: logins with the value an
//!   application read before fail until it reads again (the window is measured in
//!   BENCHMARKS.md).
//! - **DoubleUsers**: two accounts, `NAME` and `NAME_clone` (when longer than the
//!   server's name limit — 63 bytes on PostgreSQL, 80 characters on MariaDB, 32 on
//!   MySQL — `NAME` cut, then `_`, 8 hex digits of a hash of `NAME`, `_clone`).
//!   *create* picks the account that is not `ACSCurrent` (the one behind
//!   `ACSPrevious`, or the clone on the first rotation); *set* creates it with the
//!   grants of the current account if it does not exist yet (PostgreSQL refuses an
//!   existing role that is not a member of the current one), then resets its password;
//!   *test* logs in with it; *finish* makes it `ACSCurrent`. The account an
//!   application holds stays valid for a full cycle.
//!
//! Statements: DDL takes no bound parameters, so identifiers and literals are quoted
//! here (see [`postgres::quote_ident`], [`mysql::quote_str`]). PostgreSQL receives a
//! SCRAM-SHA-256 verifier, MariaDB a `mysql_native_password` hash, never the plaintext,
//! so the new password does not land in server logs. Error messages name the step, the
//! account and the database's error code, never a value or a statement holding one.

pub(crate) mod mysql;
pub(crate) mod postgres;
mod tls;

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use strongbox_schemas::{ErrorCode, RotationStrategy, STAGE_PREVIOUS, SecretType};
use zeroize::Zeroizing;

use super::egress::EgressPolicy;
use super::random::PasswordRules;
use super::strategy::{StepContext, Strategy};
use crate::error::{Error, Result};
use crate::service::records::{PolicyRecord, SecretRecord};

/// Suffix of the second account in dual-account rotation.
pub(crate) const CLONE_SUFFIX: &str = "_clone";

/// Longest account name accepted in an `Rds` value (MariaDB's limit; each engine checks
/// its own when rotating).
const ACCOUNT_NAME_MAX: usize = 80;

/// Which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub(crate) fn from_strategy(s: RotationStrategy) -> Option<Self> {
        match s {
            RotationStrategy::Postgresql => Some(Self::Postgres),
            RotationStrategy::Mysql => Some(Self::Mysql),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Mysql => "mysql",
        }
    }

    /// The longest account name the server takes: 63 bytes on PostgreSQL, 80
    /// characters on MariaDB, 32 on MySQL.
    fn fits(self, name: &str, mariadb: bool) -> bool {
        match self {
            Self::Postgres => name.len() <= 63,
            Self::Mysql if mariadb => name.chars().count() <= 80,
            Self::Mysql => name.chars().count() <= 32,
        }
    }
}

/// Single or dual account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubType {
    SingleUser,
    DoubleUsers,
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS, the server's certificate not verified (libpq's `require`).
    Require,
    /// TLS, the certificate verified against `CaCert` (or the system's roots) and the
    /// host name checked.
    VerifyFull,
}

/// Whether PostgreSQL's SCRAM logins over TLS are bound to the server's certificate
/// (SCRAM-SHA-256-PLUS), as libpq's `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelBindingMode {
    /// Never (for a TLS-terminating proxy that passes SCRAM on, which binding refuses).
    Disable,
    /// When the server offers it (the default).
    Prefer,
    /// Always: a login that cannot be bound (no TLS, md5 or password authentication, a
    /// certificate PostgreSQL does not bind to) fails.
    Require,
}

/// The parsed `extended_config` of an `Rds` secret.
#[derive(Debug, Clone)]
pub(crate) struct RdsConfig {
    pub(crate) sub_type: SubType,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) database: String,
    pub(crate) tls: TlsMode,
    pub(crate) admin_secret: String,
    pub(crate) ca_cert: Option<String>,
    pub(crate) channel_binding: ChannelBindingMode,
}

const KNOWN_KEYS: [&str; 8] = [
    "SecretSubType",
    "Host",
    "Port",
    "Database",
    "TlsMode",
    "AdminSecret",
    "CaCert",
    "ChannelBinding",
];

/// The value of `key` that one of `options` names, `default` when absent; otherwise an
/// error listing the options.
fn choice<T: Copy>(
    c: &Map<String, Value>,
    key: &str,
    options: &[(&str, T)],
    default: T,
) -> Result<T> {
    match c.get(key) {
        None => Ok(default),
        Some(Value::String(s)) => options
            .iter()
            .find(|(name, _)| name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                let (last, rest) = names.split_last().unwrap_or((&"", &[]));
                Error::invalid(
                    &field(key),
                    format!("must be {} or {last}", rest.join(", ")),
                )
            }),
        Some(_) => Err(Error::invalid(&field(key), "must be a string")),
    }
}

fn field(k: &str) -> String {
    format!("extended_config.{k}")
}

fn text<'a>(c: &'a Map<String, Value>, k: &str) -> Result<&'a str> {
    match c.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Error::invalid(&field(k), "must not be empty")),
        Some(_) => Err(Error::invalid(&field(k), "must be a string")),
        None => Err(Error::invalid(&field(k), "is required for an Rds secret")),
    }
}

/// `Host` is a DNS name or an IP literal: never a socket path (a leading `/` makes
/// the PostgreSQL driver use a Unix socket on the Strongbox host), a URL, a port or
/// blanks.
fn check_host(host: &str) -> Result<()> {
    let why = "must be a host name or an IP address (no socket path, scheme, port or blanks)";
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    // DNS names only (rustls' check: letters, digits, '-' and '.'); this refuses '/',
    // ':', blanks and an empty name.
    match rustls::pki_types::DnsName::try_from(host) {
        Ok(_) if !host.starts_with('/') => Ok(()),
        _ => Err(Error::invalid(&field("Host"), why)),
    }
}

impl RdsConfig {
    /// Parses and checks `extended_config`, naming the wrong field.
    pub(crate) fn parse(c: Option<&Map<String, Value>>) -> Result<Self> {
        let c = c.ok_or_else(|| {
            Error::invalid(
                "extended_config",
                "an Rds secret needs SecretSubType, Host, Port, Database and AdminSecret",
            )
        })?;
        if let Some(k) = c.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(Error::invalid(
                &field(k),
                format!("unknown setting (known: {})", KNOWN_KEYS.join(", ")),
            ));
        }
        let sub_type = match text(c, "SecretSubType")? {
            "SingleUser" => SubType::SingleUser,
            "DoubleUsers" => SubType::DoubleUsers,
            _ => {
                return Err(Error::invalid(
                    &field("SecretSubType"),
                    "must be SingleUser or DoubleUsers",
                ));
            }
        };
        let host = text(c, "Host")?.to_string();
        check_host(&host)?;
        let port = match c.get("Port") {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::invalid(&field("Port"), "must be from 1 to 65535"))?,
            Some(_) => return Err(Error::invalid(&field("Port"), "must be a number")),
            None => {
                return Err(Error::invalid(
                    &field("Port"),
                    "is required for an Rds secret",
                ));
            }
        };
        let database = text(c, "Database")?.to_string();
        let tls = choice(
            c,
            "TlsMode",
            &[
                ("disable", TlsMode::Disable),
                ("require", TlsMode::Require),
                ("verify-full", TlsMode::VerifyFull),
            ],
            TlsMode::VerifyFull,
        )?;
        let admin_secret = text(c, "AdminSecret")?.to_string();
        strongbox_schemas::validate_secret_name(&field("AdminSecret"), &admin_secret)?;
        let ca_cert = match c.get("CaCert") {
            None => None,
            Some(Value::String(pem)) => {
                tls::roots_from_pem(pem)?;
                Some(pem.clone())
            }
            Some(_) => return Err(Error::invalid(&field("CaCert"), "must be a PEM string")),
        };
        let channel_binding = choice(
            c,
            "ChannelBinding",
            &[
                ("disable", ChannelBindingMode::Disable),
                ("prefer", ChannelBindingMode::Prefer),
                ("require", ChannelBindingMode::Require),
            ],
            ChannelBindingMode::Prefer,
        )?;
        Ok(Self {
            sub_type,
            host,
            port,
            database,
            tls,
            admin_secret,
            ca_cert,
            channel_binding,
        })
    }
}

/// A parsed secret value whose strings are wiped when dropped.
struct Scrubbed(Map<String, Value>);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for v in self.0.values_mut() {
            if let Value::String(s) = v {
                s.zeroize();
            }
        }
    }
}

/// A database account from a secret value. The password is plaintext: never log it.
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) password: Zeroizing<String>,
    /// The whole JSON object (other fields are kept across rotations).
    fields: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Parses `{"AccountName", "AccountPassword"}`; `what` names the value in errors
    /// (`secret_data` for requests). The messages never quote the value.
    pub(crate) fn parse(value: &[u8], what: &str) -> Result<Self> {
        let obj = Scrubbed(serde_json::from_slice(value).map_err(|_| {
            Error::invalid(
                what,
                "must be a JSON object {\"AccountName\": \"…\", \"AccountPassword\": \"…\"}",
            )
        })?);
        let name = match obj.0.get("AccountName") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= ACCOUNT_NAME_MAX => {
                s.clone()
            }
            Some(Value::String(_)) => {
                return Err(Error::invalid(
                    &format!("{what}.AccountName"),
                    format!("must be 1 to {ACCOUNT_NAME_MAX} characters"),
                ));
            }
            _ => {
                return Err(Error::invalid(
                    &format!("{what}.AccountName"),
                    "is required (a string)",
                ));
            }
        };
        if name.contains('\0') {
            return Err(Error::invalid(
                &format!("{what}.AccountName"),
                "must not contain NUL",
            ));
        }
        let password = match obj.0.get("AccountPassword") {
            Some(Value::String(s)) if !s.contains('\0') => Zeroizing::new(s.clone()),
            Some(Value::String(_)) => {
                return Err(Error::invalid(
                    &format!("{what}.AccountPassword"),
                    "must not contain NUL",
                ));
            }
            _ => {
                return Err(Error::invalid(
                    &format!("{what}.AccountPassword"),
                    "is required (a string)",
                ));
            }
        };
        Ok(Self {
            name,
            password,
            fields: Zeroizing::new(value.to_vec()),
        })
    }

    /// The same JSON object with another account name and password.
    fn with(&self, name: &str, password: &str) -> Result<Zeroizing<Vec<u8>>> {
        let mut obj = Scrubbed(serde_json::from_slice(&self.fields).map_err(Error::internal)?);
        obj.0
            .insert("AccountName".into(), Value::String(name.into()));
        obj.0
            .insert("AccountPassword".into(), Value::String(password.into()));
        Ok(Zeroizing::new(
            serde_json::to_vec(&obj.0).map_err(Error::internal)?,
        ))
    }
}

/// Checks an `Rds` secret's `extended_config` (secret create and update; values are
/// checked by [`validate_rds_value`]).
pub(crate) fn validate_rds(extended_config: Option<&Map<String, Value>>) -> Result<()> {
    RdsConfig::parse(extended_config).map(|_| ())
}

/// Checks a value of an `Rds` secret (create and put-value).
pub(crate) fn validate_rds_value(value: &[u8]) -> Result<()> {
    Account::parse(value, "secret_data").map(|_| ())
}

/// The `AccountName` of an `Rds` value, if it parses.
pub(crate) fn rds_account_name(value: &[u8]) -> Option<String> {
    Account::parse(value, "secret_data").ok().map(|a| a.name)
}

/// What a value must not name: the admin account (the rotation would hand the admin's
/// password to whoever reads the secret).
const ADMIN_ACCOUNT: &str =
    "must not be the admin account (the AccountName of extended_config.AdminSecret)";

/// Refuses a value whose `AccountName` is the admin account's (`admin_value`, the
/// value of the admin secret). Values that do not parse are checked elsewhere.
pub(crate) fn check_not_admin(value: &[u8], admin_value: &[u8]) -> Result<()> {
    match (
        Account::parse(value, "secret_data"),
        Account::parse(admin_value, "admin secret"),
    ) {
        (Ok(a), Ok(admin)) if a.name == admin.name => {
            Err(Error::invalid("secret_data.AccountName", ADMIN_ACCOUNT))
        }
        _ => Ok(()),
    }
}

/// The name of the second account for `name`: `name_clone` when it fits the server's
/// limit (`mariadb`: MariaDB's 80 characters rather than MySQL's 32), else `name` cut
/// and followed by `_` and 8 hex digits of a SHA-256 of the whole name, so that two long
/// names sharing a prefix get different clones.
pub(crate) fn clone_name(engine: Engine, name: &str, mariadb: bool) -> String {
    let whole = format!("{name}{CLONE_SUFFIX}");
    if engine.fits(&whole, mariadb) {
        return whole;
    }
    use sha2::Digest as _;
    let tag = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..4]);
    let mut base: String = name.to_string();
    loop {
        let candidate = format!("{base}_{tag}{CLONE_SUFFIX}");
        if engine.fits(&candidate, mariadb) || base.is_empty() {
            return candidate;
        }
        base.pop();
    }
}

/// A connection target: where and as whom.
pub(crate) struct Target<'a> {
    pub(crate) cfg: &'a RdsConfig,
    /// Which of the host's addresses may be used.
    pub(crate) egress: &'a EgressPolicy,
    pub(crate) user: &'a str,
    pub(crate) password: &'a str,
}

/// A failed login.
pub(crate) enum LoginError {
    /// The server refused the password (PostgreSQL 28P01, MySQL 1045).
    WrongPassword(Error),
    /// MariaDB refused without checking a password (1698): the account authenticates
    /// another way (`unix_socket`), or it has no entry for this host and MariaDB went
    /// through the motions with a stand-in account, picked by the name, that does.
    Denied(Error),
    /// Anything else: unreachable, refused for another reason (not allowed to log in
    /// from here, locked), TLS.
    Other(Error),
}

impl LoginError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Self::WrongPassword(e) | Self::Denied(e) | Self::Other(e) => e,
        }
    }
}

pub(crate) fn failed(engine: Engine, step: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::RotationFailed,
        format!("{} {step}: {why}", engine.label()),
    )
}

/// A database strategy ready to run, built for one secret from its record: the engine
/// (from the policy), the secret's `extended_config`, the admin account and the
/// account names of `ACSCurrent` and `ACSPrevious`.
pub(crate) struct DatabaseStrategy {
    engine: Engine,
    cfg: RdsConfig,
    /// The admin account, or why it could not be read: only *create* and *set* need
    /// it, so a rotation stopped after *set* can still be tested and finished while the
    /// admin secret is unreadable (pending deletion, its key disabled).
    admin: std::result::Result<Account, String>,
    /// `ACSCurrent`'s account (the template of the clone's grants).
    current: Option<Account>,
    /// `ACSPrevious`'s account name, if any.
    previous_name: Option<String>,
    rules: PasswordRules,
    egress: EgressPolicy,
}

impl std::fmt::Debug for DatabaseStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseStrategy")
            .field("engine", &self.engine)
            .field("cfg", &self.cfg.host)
            .finish_non_exhaustive()
    }
}

/// What a database strategy reads from the secret and the store, besides the policy.
pub(crate) struct SecretSide<'a> {
    pub(crate) extended_config: Option<&'a Map<String, Value>>,
    pub(crate) current: Option<&'a [u8]>,
    pub(crate) previous: Option<&'a [u8]>,
}

/// Checks a database policy's settings: the password rules of the `random` strategy.
pub(crate) fn validate_settings(settings: &BTreeMap<String, String>) -> Result<()> {
    PasswordRules::parse(settings, "settings.").map(|_| ())
}

impl DatabaseStrategy {
    /// Builds the strategy; `admin` reads the value of the admin secret by name.
    pub(crate) fn build(
        engine: Engine,
        settings: &BTreeMap<String, String>,
        secret: SecretSide<'_>,
        admin: impl FnOnce(&str) -> Result<Zeroizing<Vec<u8>>>,
    ) -> Result<Self> {
        let cfg = RdsConfig::parse(secret.extended_config).map_err(|e| {
            failed(
                engine,
                "create",
                format!("the secret is not a valid Rds secret: {}", e.message),
            )
        })?;
        let admin = admin(&cfg.admin_secret)
            .map_err(|e| {
                format!(
                    "admin secret {} cannot be read ({})",
                    cfg.admin_secret, e.code
                )
            })
            .and_then(|value| {
                Account::parse(&value, "admin secret")
                    .map_err(|e| format!("admin secret {}: {}", cfg.admin_secret, e.message))
            });
        let current = secret
            .current
            .map(|v| Account::parse(v, "ACSCurrent"))
            .transpose()
            .map_err(|e| failed(engine, "create", e.message))?;
        if let (Some(c), Ok(admin)) = (&current, &admin)
            && c.name == admin.name
        {
            return Err(failed(
                engine,
                "create",
                format!("ACSCurrent.AccountName {ADMIN_ACCOUNT}"),
            ));
        }
        // Dual user: the account behind ACSPrevious is the one to reset. A value that
        // does not parse fails the rotation (guessing would reset another account).
        let previous_name = match (cfg.sub_type, secret.previous) {
            (SubType::DoubleUsers, Some(v)) => Some(
                Account::parse(v, "ACSPrevious")
                    .map_err(|e| failed(engine, "create", e.message))?
                    .name,
            ),
            _ => None,
        };
        Ok(Self {
            engine,
            cfg,
            admin,
            current,
            previous_name,
            rules: PasswordRules::parse(settings, "settings.")?,
            egress: EgressPolicy::default(),
        })
    }

    /// The accounts this rotation may name: the current one and its clone, the one
    /// behind `ACSPrevious` and the admin.
    pub(crate) fn account_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some(c) = &self.current {
            names.push(c.name.clone());
            for mariadb in [false, true] {
                names.push(clone_name(self.engine, &c.name, mariadb));
            }
        }
        names.extend(self.previous_name.clone());
        if let Ok(a) = &self.admin {
            names.push(a.name.clone());
        }
        names
    }

    /// Connects only where `egress` allows (the default policy until this is called).
    pub(crate) fn with_egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
    }

    /// The admin account's connection, for `step`; the error when it could not be read.
    fn admin_target(&self, step: &str) -> Result<Target<'_>> {
        let admin = self
            .admin
            .as_ref()
            .map_err(|why| failed(self.engine, step, why.clone()))?;
        Ok(Target {
            cfg: &self.cfg,
            egress: &self.egress,
            user: &admin.name,
            password: &admin.password,
        })
    }

    /// The account the pending version uses, given the current one: the same one
    /// (single user), the account behind `ACSPrevious`, or a clone of the current one
    /// (named by [`clone_name`], never guessed from the current name: an account whose
    /// name ends in `_clone` is not taken for ours).
    async fn pending_name(&self, current: &str) -> Result<String> {
        Ok(match self.cfg.sub_type {
            SubType::SingleUser => current.to_string(),
            SubType::DoubleUsers => match &self.previous_name {
                Some(p) if p != current => p.clone(),
                _ => {
                    let mariadb = match self.engine {
                        Engine::Mysql => {
                            mysql::is_mariadb(&self.admin_target("create")?, "create").await?
                        }
                        Engine::Postgres => false,
                    };
                    clone_name(self.engine, current, mariadb)
                }
            },
        })
    }

    async fn try_login(&self, a: &Account) -> std::result::Result<(), LoginError> {
        let t = Target {
            cfg: &self.cfg,
            egress: &self.egress,
            user: &a.name,
            password: &a.password,
        };
        match self.engine {
            Engine::Postgres => postgres::try_login(&t, "set").await,
            Engine::Mysql => mysql::try_login(&t, "set").await,
        }
    }

    /// Before a single-user *set* changes the only account's password, the account must
    /// be able to log in from here at all, or *test* could never pass and the password
    /// the applications use would be gone. So the current password must log in (then
    /// `false`: go on), or be refused as a wrong password: then either an earlier *set*
    /// applied the pending one, whatever it reported (`true` when the pending password
    /// logs in: nothing to change), or the current one drifted and the change repairs
    /// it. Any other refusal (not allowed to log in from this host, locked,
    /// unreachable) stops *set* before it changes anything. The pending password is
    /// tried only after the current one failed, so a normal rotation makes no failed
    /// login (lockout policies count them).
    async fn single_user_set_done(&self, pending: &Account) -> Result<bool> {
        let Some(current) = &self.current else {
            return Ok(false);
        };
        if self.current_logs_in(current, "set").await? {
            return Ok(false);
        }
        Ok(self.try_login(pending).await.is_ok())
    }

    /// Whether `current` logs in from here (`true`) or is refused as a wrong password
    /// (`false`); any other refusal is an error that says nothing was changed. On MySQL
    /// a login from a host the account does not allow is refused as a wrong password
    /// too (1045), or, on MariaDB, sometimes as refused without a password check (1698),
    /// so the admin is asked whether any of the account's hosts matches this one.
    async fn current_logs_in(&self, current: &Account, step: &str) -> Result<bool> {
        let cannot = |why: &str| {
            failed(
                self.engine,
                step,
                format!(
                    "account {} cannot log in from Strongbox, so a new password could not be \
                     tested; nothing was changed ({why})",
                    current.name
                ),
            )
        };
        match self.try_login(current).await {
            Ok(()) => Ok(true),
            Err(LoginError::WrongPassword(_)) => {
                if self.engine == Engine::Mysql
                    && let Some(why) =
                        mysql::login_blocked(&self.admin_target(step)?, &current.name, step).await?
                {
                    return Err(cannot(why));
                }
                Ok(false)
            }
            // Never repaired: a password would replace how the account logs in.
            Err(LoginError::Denied(e)) => {
                if self.engine == Engine::Mysql
                    && let Some(why) =
                        mysql::login_blocked(&self.admin_target(step)?, &current.name, step).await?
                {
                    return Err(cannot(why));
                }
                Err(cannot(&e.message))
            }
            Err(LoginError::Other(e)) => Err(cannot(&e.message)),
        }
    }

    fn pending(&self, step: &str, cx: &StepContext<'_>) -> Result<Account> {
        let v = cx
            .pending
            .ok_or_else(|| failed(self.engine, step, "no pending value"))?;
        let a =
            Account::parse(v, "ACSPending").map_err(|e| failed(self.engine, step, e.message))?;
        self.not_admin(step, "ACSPending", &a.name)?;
        Ok(a)
    }

    /// Refuses to rotate the admin account. (Unknown when the admin secret could not be
    /// read: then only *test* and *finish* can run, after a *set* that checked.)
    fn not_admin(&self, step: &str, what: &str, name: &str) -> Result<()> {
        if self.admin.as_ref().is_ok_and(|a| name == a.name) {
            return Err(failed(
                self.engine,
                step,
                format!("{what}.AccountName {ADMIN_ACCOUNT}"),
            ));
        }
        Ok(())
    }
}

impl Strategy for DatabaseStrategy {
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>> {
        let current = match cx.current {
            Some(v) => Account::parse(v, "ACSCurrent")
                .map_err(|e| failed(self.engine, "create", e.message))?,
            None => return Err(failed(self.engine, "create", "no current value")),
        };
        let name = self.pending_name(&current.name).await?;
        self.not_admin("create", "ACSPending", &name)?;
        // What would make *set* refuse is checked here, before anything is pending: a
        // rotation that could never complete leaves nothing behind (a failure after
        // *create* keeps the pending value, which may already be applied).
        let names: Vec<&str> = match self.cfg.sub_type {
            SubType::DoubleUsers if name != current.name => vec![&name, &current.name],
            _ => vec![&name],
        };
        let clone = (self.cfg.sub_type == SubType::DoubleUsers && name != current.name)
            .then_some((name.as_str(), current.name.as_str()));
        match self.engine {
            Engine::Postgres => {
                postgres::check_accounts(&self.admin_target("create")?, &names, clone, "create")
                    .await?
            }
            Engine::Mysql => {
                // A pair no version names is made by *set*: it must not exist yet.
                let clone_is_new = !matches!(&self.previous_name, Some(p) if *p == name);
                mysql::check_accounts(
                    &self.admin_target("create")?,
                    &names,
                    clone,
                    clone_is_new,
                    "create",
                )
                .await?
            }
        }
        if self.cfg.sub_type == SubType::SingleUser {
            self.current_logs_in(&current, "create").await?;
        }
        let password = self.rules.generate();
        current.with(&name, &password)
    }

    async fn set(&self, cx: &StepContext<'_>) -> Result<()> {
        let pending = self.pending("set", cx)?;
        // On MySQL an account is one entry per host, set one after the other: that the
        // pending password logs in from here says only that the entry this host matches
        // has it, and an interrupted set may have left others with the old one (whose
        // applications would be refused once it is current). So MySQL sets every entry
        // again (the same password: nothing changes where it was set); on PostgreSQL a
        // role has one password, and a set that took is done.
        if self.cfg.sub_type == SubType::SingleUser
            && self.single_user_set_done(&pending).await?
            && self.engine == Engine::Postgres
        {
            return Ok(());
        }
        let template = match (self.cfg.sub_type, &self.current) {
            (SubType::DoubleUsers, Some(c)) if c.name != pending.name => Some(c.name.as_str()),
            _ => None,
        };
        match self.engine {
            Engine::Postgres => {
                postgres::set_password(&self.admin_target("set")?, &pending, template).await
            }
            Engine::Mysql => {
                mysql::set_password(&self.admin_target("set")?, &pending, template).await
            }
        }
    }

    async fn test(&self, cx: &StepContext<'_>) -> Result<()> {
        let pending = self.pending("test", cx)?;
        let t = Target {
            cfg: &self.cfg,
            egress: &self.egress,
            user: &pending.name,
            password: &pending.password,
        };
        match self.engine {
            Engine::Postgres => postgres::login(&t, "test").await,
            Engine::Mysql => mysql::login(&t, "test").await,
        }
    }

    async fn finish(&self, _cx: &StepContext<'_>) -> Result<()> {
        Ok(())
    }
}

impl crate::service::Service {
    /// The database strategy for one step of a rotation of `rec`: reads the admin
    /// secret, `ACSCurrent` and, for *create* (`creating`), `ACSPrevious` (values stay
    /// in memory, zeroized on drop). Only *create* chooses the account to reset, so the
    /// later steps go on when `ACSPrevious` can no longer be read.
    pub(super) fn database_strategy(
        &self,
        engine: Engine,
        policy: &PolicyRecord,
        rec: &SecretRecord,
        creating: bool,
    ) -> Result<DatabaseStrategy> {
        if rec.secret_type != SecretType::Rds {
            return Err(failed(
                engine,
                "create",
                format!(
                    "secret {} is not an Rds secret (secret_type {:?})",
                    rec.name, rec.secret_type
                ),
            ));
        }
        let current = self.plaintext(&rec.name, None)?;
        // Only a dual-account *create* needs ACSPrevious. No ACSPrevious yet is normal; one
        // that cannot be read (sealed, its key deleted, corrupt) fails the step rather
        // than being taken for none.
        let dual = RdsConfig::parse(rec.extended_config.as_ref())
            .is_ok_and(|c| c.sub_type == SubType::DoubleUsers);
        let previous = match rec.version_with_stage(STAGE_PREVIOUS) {
            _ if !(creating && dual) => None,
            None => None,
            Some(_) => match self.get_secret_value(&rec.name, None, Some(STAGE_PREVIOUS)) {
                Ok(v) => Some(Zeroizing::new(v.secret_data.clone().into_bytes())),
                Err(e) => {
                    return Err(failed(
                        engine,
                        "create",
                        format!(
                            "ACSPrevious of {} cannot be read ({}); a dual-account rotation \
                             resets the account it names: move ACSPrevious onto a readable \
                             version to go on",
                            rec.name, e.code
                        ),
                    ));
                }
            },
        };
        // Dual users alternate between two accounts, an account and its clone, and the one
        // to reset is the other one. When ACSPrevious names the same account as ACSCurrent
        // (someone put the current account's value again) or there is none, the other one
        // is taken from the versions: the newest that names the current account's pair
        // (its clone, or the account it is the clone of). Otherwise each such put would
        // start a clone of the clone, and the first account's password would stay valid,
        // unrotated and untracked. An account that is not the pair (a secret moved to a
        // new account and put twice, or a second account of the operator's own naming)
        // is not taken from the versions: the current account gets a clone instead. An
        // ACSPrevious that names another account is still the one reset (one put of a new
        // account leaves the old one there), and one that does not parse still fails.
        let name_of = |v: &[u8]| Account::parse(v, "value").ok().map(|a| a.name);
        let same_as_current = |cur: &str| match previous.as_deref() {
            None => true,
            Some(p) => name_of(p).is_some_and(|p| p == cur),
        };
        let previous = match (dual, name_of(&current)) {
            (true, Some(cur)) if creating && same_as_current(&cur) => {
                self.paired_account(engine, rec, &cur).or(previous)
            }
            _ => previous,
        };
        DatabaseStrategy::build(
            engine,
            &policy.settings,
            SecretSide {
                extended_config: rec.extended_config.as_ref(),
                current: Some(&current),
                previous: previous.as_ref().map(|p| p.as_slice()),
            },
            |admin| {
                let v = self.get_secret_value(admin, None, None)?;
                Ok(Zeroizing::new(v.secret_data.clone().into_bytes()))
            },
        )
        .map(|s| s.with_egress(self.inner.config.rotation.egress.clone()))
    }
}

impl crate::service::Service {
    /// The value of the newest version of `rec` that names `current`'s pair: its clone,
    /// or the account it is the clone of (a version that cannot be read is passed over).
    fn paired_account(
        &self,
        engine: Engine,
        rec: &SecretRecord,
        current: &str,
    ) -> Option<Zeroizing<Vec<u8>>> {
        // Whether the server is MariaDB (which allows longer names, so clones are named
        // differently) is not known without connecting: either naming pairs them.
        let paired = |other: &str| {
            other != current
                && [false, true].into_iter().any(|mariadb| {
                    clone_name(engine, current, mariadb) == other
                        || clone_name(engine, other, mariadb) == current
                })
        };
        // Newest first; versions of the same second in the order they were added, last
        // first.
        let mut versions: Vec<_> = rec.versions.iter().rev().collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.created));
        versions.into_iter().find_map(|v| {
            let value = self.plaintext(&rec.name, Some(&v.version_id)).ok()?;
            let account = Account::parse(&value, "value").ok()?;
            paired(&account.name).then_some(value)
        })
    }
}

/// Test-only: runs a database strategy through the shared conformance suite (each step
/// twice) against a real database and returns the value it created. `extended_config`
/// is the secret's, `admin` the admin secret's value, `current`/`previous` the values
/// of `ACSCurrent`/`ACSPrevious`.
#[cfg(any(test, feature = "failpoints"))]
pub async fn database_conformance(
    kind: RotationStrategy,
    extended_config: &Map<String, Value>,
    admin: &[u8],
    current: &[u8],
    previous: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let engine = Engine::from_strategy(kind)
        .ok_or_else(|| Error::invalid("strategy", "not a database strategy"))?;
    let s = DatabaseStrategy::build(
        engine,
        &BTreeMap::new(),
        SecretSide {
            extended_config: Some(extended_config),
            current: Some(current),
            previous,
        },
        |_| Ok(Zeroizing::new(admin.to_vec())),
    )?;
    super::strategy::conformance(&s, current)
        .await
        .map(|v| v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> Result<RdsConfig> {
        RdsConfig::parse(v.as_object())
    }

    /// A choice outside its options is refused listing them; one that is not a string
    /// too; an absent one takes its default.
    #[test]
    fn choices_list_their_options() {
        let base = serde_json::json!({"SecretSubType": "SingleUser", "Host": "h", "Port": 5432,
            "Database": "d", "AdminSecret": "admin"});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            cfg(c).unwrap_err().message
        };
        assert_eq!(
            with("TlsMode", serde_json::json!("prefer")),
            "extended_config.TlsMode: must be disable, require or verify-full"
        );
        assert_eq!(
            with("ChannelBinding", serde_json::json!("allow")),
            "extended_config.ChannelBinding: must be disable, prefer or require"
        );
        assert_eq!(
            with("ChannelBinding", serde_json::json!(1)),
            "extended_config.ChannelBinding: must be a string"
        );
        let c = cfg(base).unwrap();
        assert_eq!(
            (c.tls, c.channel_binding),
            (TlsMode::VerifyFull, ChannelBindingMode::Prefer)
        );
    }

    #[test]
    fn extended_config_errors_name_the_field() {
        let ok = serde_json::json!({"SecretSubType": "DoubleUsers", "Host": "h", "Port": 5432,
            "Database": "d", "TlsMode": "disable", "AdminSecret": "admin"});
        let c = cfg(ok.clone()).unwrap();
        assert_eq!(
            (c.sub_type, c.port, c.tls),
            (SubType::DoubleUsers, 5432, TlsMode::Disable)
        );
        for (k, v, needle) in [
            (
                "SecretSubType",
                serde_json::json!("Triple"),
                "extended_config.SecretSubType",
            ),
            ("Port", serde_json::json!("5432"), "extended_config.Port"),
            ("Port", serde_json::json!(70000), "extended_config.Port"),
            ("Host", serde_json::json!(""), "extended_config.Host"),
            (
                "Host",
                serde_json::json!("/var/run/postgresql"),
                "extended_config.Host",
            ),
            (
                "Host",
                serde_json::json!("db.internal:5432"),
                "extended_config.Host",
            ),
            (
                "Host",
                serde_json::json!("db internal"),
                "extended_config.Host",
            ),
            ("Host", serde_json::json!(" db"), "extended_config.Host"),
            (
                "Host",
                serde_json::json!("postgres://db"),
                "extended_config.Host",
            ),
            ("Host", serde_json::json!("db_1!"), "extended_config.Host"),
            (
                "TlsMode",
                serde_json::json!("prefer"),
                "extended_config.TlsMode",
            ),
            (
                "AdminSecret",
                serde_json::json!("bad name!"),
                "extended_config.AdminSecret",
            ),
            ("Hots", serde_json::json!("x"), "extended_config.Hots"),
        ] {
            let mut bad = ok.clone();
            bad[k] = v;
            if k == "Hots" {
                bad.as_object_mut().unwrap().remove("Hots");
                bad["Hots"] = serde_json::json!("x");
            }
            let e = cfg(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidParameter);
            assert!(e.message.contains(needle), "{} / {needle}", e.message);
        }
        for host in [
            "db.internal",
            "localhost",
            "127.0.0.1",
            "::1",
            "fd00::5",
            "db-1.eu",
        ] {
            let mut good = ok.clone();
            good["Host"] = serde_json::json!(host);
            assert_eq!(cfg(good).unwrap().host, host);
        }
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("Database");
        assert!(
            cfg(missing)
                .unwrap_err()
                .message
                .contains("extended_config.Database")
        );
        assert!(
            RdsConfig::parse(None)
                .unwrap_err()
                .message
                .contains("extended_config")
        );
    }

    #[test]
    fn an_unreadable_previous_value_fails_a_dual_rotation() {
        let c = serde_json::json!({"SecretSubType": "DoubleUsers", "Host": "h", "Port": 5432,
            "Database": "d", "TlsMode": "disable", "AdminSecret": "admin"});
        let build = |sub: &str, previous: &[u8]| {
            let mut c = c.clone();
            c["SecretSubType"] = serde_json::json!(sub);
            DatabaseStrategy::build(
                Engine::Postgres,
                &BTreeMap::new(),
                SecretSide {
                    extended_config: c.as_object(),
                    current: Some(br#"{"AccountName":"app","AccountPassword":"pw"}"#),
                    previous: Some(previous),
                },
                |_| {
                    Ok(Zeroizing::new(
                        br#"{"AccountName":"postgres","AccountPassword":"a"}"#.to_vec(),
                    ))
                },
            )
        };
        let e = build("DoubleUsers", b"corrupt-secret-value").unwrap_err();
        assert_eq!(e.code, ErrorCode::RotationFailed);
        assert!(e.message.contains("ACSPrevious"), "{}", e.message);
        assert!(!e.message.contains("corrupt-secret-value"));
        // Single user never uses it.
        build("SingleUser", b"corrupt-secret-value").unwrap();
        // A readable one names the account to reset.
        let s = build(
            "DoubleUsers",
            br#"{"AccountName":"app_clone","AccountPassword":"x"}"#,
        )
        .unwrap();
        assert_eq!(s.previous_name.as_deref(), Some("app_clone"));
    }

    #[test]
    fn account_values_are_checked_without_quoting_them() {
        let a = Account::parse(
            br#"{"AccountName":"app","AccountPassword":"pw","Extra":1}"#,
            "secret_data",
        )
        .unwrap();
        assert_eq!(a.name, "app");
        let v = a.with("app_clone", "new").unwrap();
        let back: Value = serde_json::from_slice(&v).unwrap();
        assert_eq!(back["Extra"], 1);
        assert_eq!(back["AccountName"], "app_clone");
        let e = Account::parse(
            br#"{"AccountName":"app","AccountPassword":7}"#,
            "secret_data",
        )
        .unwrap_err();
        assert!(e.message.contains("secret_data.AccountPassword"));
        let e = Account::parse(b"hunter2-not-json", "secret_data").unwrap_err();
        assert!(!e.message.contains("hunter2"));
        assert!(
            Account::parse(br#"{"AccountPassword":"x"}"#, "v")
                .unwrap_err()
                .message
                .contains("v.AccountName")
        );
    }

    #[test]
    fn clone_names_respect_the_engine_limits_and_do_not_collide() {
        assert_eq!(clone_name(Engine::Mysql, "app", false), "app_clone");
        let long = "a".repeat(40);
        let m = clone_name(Engine::Mysql, &long, false);
        assert_eq!(m.chars().count(), 32);
        assert!(m.ends_with("_clone"));
        // MariaDB takes 80 characters: no cut.
        assert_eq!(
            clone_name(Engine::Mysql, &long, true),
            format!("{long}_clone")
        );
        let m = clone_name(Engine::Mysql, &"b".repeat(80), true);
        assert_eq!(m.chars().count(), 80);
        let p = clone_name(Engine::Postgres, &"é".repeat(40), false);
        assert!(p.len() <= 63 && p.ends_with("_clone"));
        // Two long names sharing a prefix get different clones (the review's example).
        let eu = clone_name(Engine::Mysql, "reporting_service_readonly_eu", false);
        let us = clone_name(Engine::Mysql, "reporting_service_readonly_us", false);
        assert_ne!(eu, us);
        assert!(eu.chars().count() <= 32 && us.chars().count() <= 32);
        assert!(
            eu.starts_with("reporting_") && eu.ends_with("_clone"),
            "{eu}"
        );
        // Deterministic: every rotation computes the same clone.
        assert_eq!(
            eu,
            clone_name(Engine::Mysql, "reporting_service_readonly_eu", false)
        );
    }
}
