//! The `ssh_key` strategy: the key (or password) of a real account on a host, changed
//! over SSH.
//!
//! The secret (`secret_type` `Ssh`) names its host in `extended_config`:
//! `Host` (required), `Port` (default 22), `HostKey` (required: the host's public key in
//! OpenSSH format, `ssh-ed25519 AAAA…`; every connection checks it, none accepts an
//! unknown host), `SecretSubType` (`Key`, the default, or `Password`) and optionally
//! `KeyType` (`ed25519` or `rsa`, overriding the policy's `key_type`).
//!
//! Sub-type `Key`, value `{"UserName", "PublicKey", "PrivateKey"}` (OpenSSH formats):
//! - *create* makes a key pair (ed25519 by default; RSA with `key_type` `rsa`,
//!   `rsa_bits` 2048–8192, default 3072); nothing leaves Strongbox.
//! - *set* logs in with the `ACSCurrent` key and adds the new public key to the
//!   account's `~/.ssh/authorized_keys` unless a line already holds it (idempotent).
//! - *test* logs in with the new key.
//! - *finish* logs in with the new key and removes every line holding the key of the
//!   version that is `ACSPrevious` before the swap (two versions old after it), and the
//!   keys of versions the engine made that no stage keeps any more (a rotation
//!   abandoned, or failed after *set*), unless a key is also the current or new one.
//!   The key an application holds stays valid for a full cycle.
//!
//! Sub-type `Password`, value `{"UserName", "Password"}`:
//! - *create* makes a password with the `random` strategy's settings (`length`, …).
//! - *set* logs in with the current password and runs the account's own `passwd`,
//!   writing the current and new password on its standard input (never on a command
//!   line). A repeated *set* whose first run changed the password finds that the new
//!   password logs in, and is done.
//! - *test* logs in with the new password. *finish* has nothing to do: the old password
//!   stops working at *set*.
//!
//! Errors name the step, the host and what failed; never a key, password or the
//! remote command's output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh::client;
use russh::keys::ssh_key::{self, LineEnding};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use serde::{Deserialize, Serialize};
use strongbox_schemas::{ErrorCode, STAGE_CURRENT, STAGE_PREVIOUS, SecretType};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::egress::EgressPolicy;
use super::random::PasswordRules;
use super::strategy::{StepContext, Strategy};
use crate::barrier;
use crate::error::{Error, Result};
use crate::service::Service;
use crate::service::records::Principal;

/// Longest a whole SSH exchange (connect, log in, run one command) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RSA_BITS: usize = 3072;
/// Comment of generated public keys.
const KEY_COMMENT: &str = "strongbox-rotation";

fn failed(step: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::RotationFailed, format!("ssh_key {step}: {why}"))
}

/// Which algorithm new keys use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlgorithm {
    Ed25519,
    Rsa(usize),
}

fn key_algorithm(field: &str, v: &str, rsa_bits: usize) -> Result<KeyAlgorithm> {
    match v.to_ascii_lowercase().as_str() {
        "ed25519" => Ok(KeyAlgorithm::Ed25519),
        "rsa" => Ok(KeyAlgorithm::Rsa(rsa_bits)),
        _ => Err(Error::invalid(field, "must be ed25519 or rsa")),
    }
}

/// Policy settings of the `ssh_key` strategy.
#[derive(Debug, Clone)]
struct Settings {
    algorithm: KeyAlgorithm,
    rsa_bits: usize,
    password: PasswordRules,
}

impl Settings {
    fn parse(settings: &BTreeMap<String, String>) -> Result<Self> {
        let rsa_bits = match settings.get("rsa_bits") {
            None => DEFAULT_RSA_BITS,
            Some(b) => match b.parse::<usize>() {
                Ok(n) if (2048..=8192).contains(&n) && n % 8 == 0 => n,
                _ => {
                    return Err(Error::invalid(
                        "settings.rsa_bits",
                        "must be a multiple of 8 from 2048 to 8192",
                    ));
                }
            },
        };
        let algorithm = match settings.get("key_type") {
            None => KeyAlgorithm::Ed25519,
            Some(a) => key_algorithm("settings.key_type", a, rsa_bits)?,
        };
        Ok(Self {
            algorithm,
            rsa_bits,
            password: PasswordRules::parse(settings, "settings.")?,
        })
    }
}

/// Checks `ssh_key` settings (policy create and update).
pub(crate) fn validate_settings(settings: &BTreeMap<String, String>) -> Result<()> {
    Settings::parse(settings).map(|_| ())
}

/// What a secret's `extended_config` says about its host.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    host_key: PublicKey,
    sub_type: SubType,
    algorithm: Option<String>,
    /// Which of the host's addresses may be used (the server's; set by the strategy).
    egress: EgressPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubType {
    Key,
    Password,
}

fn config_error(field: &str, why: impl std::fmt::Display) -> Error {
    failed("config", format!("extended_config.{field}: {why}"))
}

impl Target {
    fn parse(config: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<Self> {
        let empty = serde_json::Map::new();
        let c = config.unwrap_or(&empty);
        let text = |k: &str| -> Result<Option<&str>> {
            match c.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(config_error(k, "must be a string")),
            }
        };
        let host = text("Host")?
            .filter(|h| !h.is_empty())
            .ok_or_else(|| config_error("Host", "name the host to log in to"))?;
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(config_error("Host", "must be a host name or address"));
        }
        let port = match c.get("Port") {
            None | Some(serde_json::Value::Null) => 22,
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| config_error("Port", "must be a port number from 1 to 65535"))?,
            Some(serde_json::Value::String(s)) => s
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| config_error("Port", "must be a port number from 1 to 65535"))?,
            Some(_) => return Err(config_error("Port", "must be a port number")),
        };
        let host_key = text("HostKey")?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                config_error(
                    "HostKey",
                    "give the host's public key (OpenSSH format, e.g. the line of /etc/ssh/ssh_host_ed25519_key.pub); unknown hosts are never accepted",
                )
            })?;
        let host_key = PublicKey::from_openssh(host_key.trim())
            .map_err(|_| config_error("HostKey", "not a public key in OpenSSH format"))?;
        let sub_type = match text("SecretSubType")? {
            None | Some("Key") => SubType::Key,
            Some("Password") => SubType::Password,
            Some(_) => return Err(config_error("SecretSubType", "must be Key or Password")),
        };
        Ok(Self {
            host: host.to_string(),
            port,
            host_key,
            sub_type,
            algorithm: text("KeyType")?.map(str::to_string),
            egress: EgressPolicy::default(),
        })
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A `Key` value. Wiped when dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyValue {
    #[serde(rename = "UserName")]
    user_name: String,
    #[serde(rename = "PublicKey", default)]
    public_key: String,
    #[serde(rename = "PrivateKey")]
    private_key: String,
}

/// A `Password` value. Wiped when dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct PasswordValue {
    #[serde(rename = "UserName")]
    user_name: String,
    #[serde(rename = "Password")]
    password: String,
}

fn parse_value<T: for<'de> Deserialize<'de>>(
    step: &str,
    which: &str,
    v: &[u8],
    fields: &str,
) -> Result<T> {
    // Errors never quote the value.
    serde_json::from_slice(v).map_err(|_| {
        failed(
            step,
            format!("the {which} value is not a JSON object with {fields}"),
        )
    })
}

/// A `Key` value. Its `PublicKey`, when given, must be the public half of its
/// `PrivateKey`: the key the rotation adds, keeps or removes is always derived from
/// `PrivateKey`, so a value cannot make it remove some other key.
fn key_value(step: &str, which: &str, v: &[u8]) -> Result<KeyValue> {
    let v: KeyValue = parse_value(step, which, v, "UserName, PublicKey and PrivateKey")?;
    check_user(step, &v.user_name)?;
    if !v.public_key.trim().is_empty() {
        let given = PublicKey::from_openssh(v.public_key.trim()).map_err(|_| {
            failed(
                step,
                format!("the {which} PublicKey is not an OpenSSH public key"),
            )
        })?;
        if given.key_data() != v.private(step, which)?.public_key().key_data() {
            return Err(failed(
                step,
                format!("the {which} PublicKey is not the public half of its PrivateKey"),
            ));
        }
    }
    Ok(v)
}

fn password_value(step: &str, which: &str, v: &[u8]) -> Result<PasswordValue> {
    let v: PasswordValue = parse_value(step, which, v, "UserName and Password")?;
    check_user(step, &v.user_name)?;
    if v.password.contains(['\n', '\r', '\0']) {
        return Err(failed(
            step,
            format!("the {which} password holds a line break or NUL"),
        ));
    }
    Ok(v)
}

fn check_user(step: &str, user: &str) -> Result<()> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(failed(step, "UserName must be an account name"));
    }
    Ok(())
}

impl KeyValue {
    fn private(&self, step: &str, which: &str) -> Result<PrivateKey> {
        PrivateKey::from_openssh(self.private_key.trim()).map_err(|_| {
            failed(
                step,
                format!("the {which} PrivateKey is not an unencrypted OpenSSH private key"),
            )
        })
    }

    /// The base64 field of the public key (what `authorized_keys` lines hold), always
    /// derived from `PrivateKey`.
    fn blob(&self, step: &str, which: &str) -> Result<String> {
        authorized_line(self.private(step, which)?.public_key())
            .map(|(_, blob)| blob)
            .map_err(|_| failed(step, format!("the {which} PublicKey cannot be encoded")))
    }
}

/// `(algorithm blob, blob)` of a public key; both only hold characters safe inside
/// single quotes in a shell.
fn authorized_line(public: &PublicKey) -> Result<(String, String)> {
    let mut public = public.clone();
    public.set_comment("");
    let text = public.to_openssh().map_err(Error::internal)?;
    let mut parts = text.split_whitespace();
    let (Some(alg), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(Error::internal("an OpenSSH public key without two fields"));
    };
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=@.-".contains(c))
    };
    if !safe(alg) || !safe(blob) {
        return Err(Error::internal(
            "an OpenSSH public key with unexpected characters",
        ));
    }
    Ok((format!("{alg} {blob}"), blob.to_string()))
}

/// A fresh key pair.
fn generate(algorithm: KeyAlgorithm) -> Result<PrivateKey> {
    let mut key = match algorithm {
        KeyAlgorithm::Ed25519 => {
            let seed = Zeroizing::new(barrier::random_bytes32());
            PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed))
        }
        KeyAlgorithm::Rsa(bits) => {
            let mut rng = ssh_key::rand_core::UnwrapErr(getrandom::SysRng);
            let kp =
                ssh_key::private::RsaKeypair::random(&mut rng, bits).map_err(Error::internal)?;
            PrivateKey::from(kp)
        }
    };
    key.set_comment(KEY_COMMENT);
    Ok(key)
}

/// Checks the server's host key against the expected one.
struct Verifier {
    expected: PublicKey,
    mismatch: Arc<std::sync::atomic::AtomicBool>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Only the pinned key; a host certificate is not trusted instead of it.
        let ok = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.expected.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(ok)
    }
}

/// How to log in.
enum Login<'a> {
    Key(&'a PrivateKey),
    Password(&'a str),
}

/// What a remote command did.
struct Ran {
    status: Option<u32>,
}

/// Why an exchange failed, in words safe to show.
#[derive(Debug)]
enum SshFailure {
    HostKeyMismatch,
    Refused,
    Transport(String),
    TimedOut,
    /// The egress policy allows none of the host's addresses.
    Egress(String),
}

impl std::fmt::Display for SshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshFailure::HostKeyMismatch => {
                f.write_str("the host presented another host key than extended_config.HostKey")
            }
            SshFailure::Refused => f.write_str("the login was refused"),
            SshFailure::Transport(e) => write!(f, "SSH failed ({e})"),
            SshFailure::TimedOut => write!(f, "no answer within {}s", EXCHANGE_TIMEOUT.as_secs()),
            SshFailure::Egress(why) => f.write_str(why),
        }
    }
}

/// Connects, checks the host key, logs in as `user` and runs `command` (with `stdin`,
/// if given), then disconnects.
async fn run(
    target: &Target,
    user: &str,
    login: Login<'_>,
    command: &str,
    stdin: Option<&[u8]>,
) -> std::result::Result<Ran, SshFailure> {
    match tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange(target, user, login, command, stdin),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SshFailure::TimedOut),
    }
}

async fn exchange(
    target: &Target,
    user: &str,
    login: Login<'_>,
    command: &str,
    stdin: Option<&[u8]>,
) -> std::result::Result<Ran, SshFailure> {
    let transport = |e: russh::Error| SshFailure::Transport(e.to_string());
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(EXCHANGE_TIMEOUT),
        preferred: host_key_preference(&target.host_key),
        ..Default::default()
    });
    let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = Verifier {
        expected: target.host_key.clone(),
        mismatch: mismatch.clone(),
    };
    // Only addresses the egress policy allows (the host key is checked on each).
    let addrs = target
        .egress
        .resolve(&target.host, target.port)
        .await
        .map_err(|e| SshFailure::Egress(e.message))?;
    let mut session = match client::connect(config, addrs.as_slice(), handler).await {
        Ok(s) => s,
        Err(_) if mismatch.load(std::sync::atomic::Ordering::Acquire) => {
            return Err(SshFailure::HostKeyMismatch);
        }
        Err(e) => return Err(transport(e)),
    };
    let auth = match login {
        Login::Key(key) => {
            let hash = session
                .best_supported_rsa_hash()
                .await
                .map_err(transport)?
                .flatten();
            session
                .authenticate_publickey(
                    user,
                    PrivateKeyWithHashAlg::new(Arc::new(key.clone()), hash),
                )
                .await
        }
        Login::Password(p) => session.authenticate_password(user, p).await,
    }
    .map_err(transport)?;
    if !auth.success() {
        return Err(SshFailure::Refused);
    }
    let mut channel = session.channel_open_session().await.map_err(transport)?;
    channel.exec(true, command).await.map_err(transport)?;
    if let Some(input) = stdin {
        channel.data(input).await.map_err(transport)?;
    }
    channel.eof().await.map_err(transport)?;
    let mut status = None;
    while let Some(msg) = channel.wait().await {
        // Output is read and dropped: it could echo what it was given.
        if let ChannelMsg::ExitStatus { exit_status } = msg {
            status = Some(exit_status);
        }
    }
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Ok(Ran { status })
}

/// The negotiation offers only the pinned host key's algorithm (for RSA, its SHA-2
/// signature forms, then SHA-1): a host with several host keys would otherwise show its preferred
/// one (Ed25519 first), and a pinned RSA or ECDSA key would never match.
fn host_key_preference(pinned: &PublicKey) -> russh::Preferred {
    use russh::keys::{Algorithm, HashAlg};
    let key = match pinned.algorithm() {
        Algorithm::Rsa { .. } => vec![
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
            // Last: hosts that offer nothing newer (old OpenSSH, dropbear, appliances).
            Algorithm::Rsa { hash: None },
        ],
        other => vec![other],
    };
    russh::Preferred {
        key: std::borrow::Cow::Owned(key),
        ..russh::Preferred::default()
    }
}

/// Adds a public key line unless a line already holds its blob. The options in front
/// of the current key's line (`from=`, `command=`, `no-port-forwarding`, …) are put in
/// front of the new one too: a rotation must not lift the key's restrictions. That
/// line is the first one, not a comment nor a `cert-authority` line, where the current
/// blob follows a key type; its options are what is left once the key type, the blob
/// and the comment words are taken off its end. Lines ending in CR (a file edited on
/// Windows) are read as without it. A file that is a symbolic link (managed elsewhere)
/// is not written through: the step fails (exit status 3) before anything changes.
fn add_key_script(line: &str, blob: &str, current_blob: &str) -> String {
    format!(
        r#"set -e
umask 077
mkdir -p "$HOME/.ssh"
f="$HOME/.ssh/authorized_keys"
[ ! -L "$f" ] || exit 3
[ -e "$f" ] || : > "$f"
if ! awk -v b='{blob}' '{{sub(/\r$/,"")}} /^[ \t]*#/ {{next}} {{for(i=1;i<=NF;i++) if($i==b) found=1}} END{{exit !found}}' "$f"; then
  o=$(awk -v c='{current_blob}' '{{sub(/\r$/,"")}} /^[ \t]*(#|$)/ {{next}} /cert-authority/ {{next}} {{for(i=2;i<=NF;i++) if($i==c && $(i-1) ~ /^(ssh-|ecdsa-|sk-)/) {{p=$0; for(j=0;j<NF-i+2;j++) sub(/[ \t]*[^ \t]+[ \t]*$/,"",p); if (p != "") print p " "; exit}}}}' "$f")
  if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi
  printf '%s%s\n' "$o" '{line}' >> "$f"
fi
"#
    )
}

/// Removes every line holding one of the key blobs, which arrive on standard input
/// one per line (a command line could not hold many long RSA keys). The new file is
/// written next to the old one (mode 0600) and renamed over it, so an interrupted
/// session or a full disk leaves either the old file or the new one, never a truncated
/// one; the temporary files are removed if anything fails. A file that is a symbolic
/// link (managed elsewhere) is not replaced: the step fails instead. Lines ending in CR
/// are matched as without it.
const REMOVE_KEYS_SCRIPT: &str = r#"set -e
umask 077
f="$HOME/.ssh/authorized_keys"
k=$(mktemp)
t=
trap 'rm -f "$k"; [ -z "$t" ] || rm -f "$t"' EXIT
cat > "$k"
[ -e "$f" ] || exit 0
[ ! -L "$f" ] || exit 3
t=$(mktemp "$f.XXXXXX")
awk -v kf="$k" 'BEGIN{while ((getline b < kf) > 0) if (b != "") old[b]=1} {l=$0; sub(/\r$/,""); for(i=1;i<=NF;i++) if($i in old) next; print l}' "$f" > "$t"
chmod 600 "$t"
mv -f "$t" "$f"
"#;

/// What [`REMOVE_KEYS_SCRIPT`] reads: the blobs, one per line.
fn blobs_input(blobs: &[String]) -> Vec<u8> {
    blobs
        .iter()
        .flat_map(|b| [b.as_bytes(), b"\n"].concat())
        .collect()
}

/// The `ssh_key` strategy, bound to the service that holds the secret.
pub(crate) struct SshKeyStrategy {
    service: Service,
    settings: Settings,
}

impl SshKeyStrategy {
    pub(crate) fn new(service: Service, settings: &BTreeMap<String, String>) -> Result<Self> {
        Ok(Self {
            service,
            settings: Settings::parse(settings)?,
        })
    }

    fn target(&self, name: &str) -> Result<Target> {
        let secret = self.service.describe_secret(name)?;
        if secret.secret_type != SecretType::Ssh {
            return Err(failed(
                "config",
                format!(
                    "the strategy rotates secrets of secret_type Ssh, not {:?}",
                    secret.secret_type
                ),
            ));
        }
        let mut t = Target::parse(secret.extended_config.as_ref())?;
        t.egress = self.service.inner.config.rotation.egress.clone();
        Ok(t)
    }

    fn algorithm(&self, target: &Target) -> Result<KeyAlgorithm> {
        match &target.algorithm {
            Some(a) => key_algorithm("extended_config.KeyType", a, self.settings.rsa_bits)
                .map_err(|e| failed("create", e.message)),
            None => Ok(self.settings.algorithm),
        }
    }

    /// The value of a stage, if the secret has a version there.
    fn stage_value(&self, name: &str, stage: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.service.get_secret_value(name, None, Some(stage)) {
            Ok(v) => Ok(Some(Zeroizing::new(v.secret_data.into_bytes()))),
            Err(e) if e.code == ErrorCode::VersionNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn current(&self, step: &str, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        self.stage_value(name, STAGE_CURRENT)?
            .ok_or_else(|| failed(step, "the secret has no ACSCurrent version"))
    }

    /// Runs a command that must exit 0.
    async fn must_run(
        step: &str,
        target: &Target,
        user: &str,
        login: Login<'_>,
        what: &str,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<()> {
        Self::judge(
            step,
            target,
            user,
            what,
            run(target, user, login, command, stdin).await,
        )
    }

    /// What [`must_run`](Self::must_run) makes of a command's outcome.
    fn judge(
        step: &str,
        target: &Target,
        user: &str,
        what: &str,
        ran: std::result::Result<Ran, SshFailure>,
    ) -> Result<()> {
        let ran = ran.map_err(|e| {
            failed(
                step,
                format!("{what} as {user} on {}: {e}", target.describe()),
            )
        })?;
        match ran.status {
            Some(0) => Ok(()),
            Some(n) => Err(failed(
                step,
                format!(
                    "{what} as {user} on {}: the command exited with status {n}",
                    target.describe()
                ),
            )),
            None => Err(failed(
                step,
                format!(
                    "{what} as {user} on {}: the command ended without an exit status",
                    target.describe()
                ),
            )),
        }
    }

    async fn set_key(&self, cx: &StepContext<'_>, target: &Target) -> Result<()> {
        let pending = key_value("set", "pending", pending_of("set", cx)?)?;
        let current = key_value("set", "current", &self.current("set", cx.secret_name)?)?;
        let new_public = pending.private("set", "pending")?.public_key().clone();
        let (line, blob) = authorized_line(&new_public)?;
        let key = current.private("set", "current")?;
        let (_, current_blob) = authorized_line(key.public_key())?;
        Self::must_run(
            "set",
            target,
            &current.user_name,
            Login::Key(&key),
            "adding the new key with the current key",
            &add_key_script(&line, &blob, &current_blob),
            None,
        )
        .await
    }

    async fn set_password(&self, cx: &StepContext<'_>, target: &Target) -> Result<()> {
        let pending = password_value("set", "pending", pending_of("set", cx)?)?;
        let current = password_value("set", "current", &self.current("set", cx.secret_name)?)?;
        let input = Zeroizing::new(
            format!(
                "{}\n{}\n{}\n",
                current.password, pending.password, pending.password
            )
            .into_bytes(),
        );
        let ran = run(
            target,
            &current.user_name,
            Login::Password(&current.password),
            "LC_ALL=C passwd",
            Some(&input),
        )
        .await;
        // Only when the current password was refused, a repeated set after the password
        // changed: the new one already logs in. Not after passwd itself failed (say a
        // minimum age, PASS_MIN_DAYS): a login bound to fail counts against lockout
        // policies (pam_faillock), and every retry of the step would add one.
        if matches!(ran, Err(SshFailure::Refused))
            && let Ok(Ran { status: Some(0) }) = run(
                target,
                &pending.user_name,
                Login::Password(&pending.password),
                "true",
                None,
            )
            .await
        {
            return Ok(());
        }
        Self::judge(
            "set",
            target,
            &current.user_name,
            "changing the password with passwd",
            ran,
        )
    }
}

fn pending_of<'a>(step: &str, cx: &StepContext<'a>) -> Result<&'a [u8]> {
    cx.pending.ok_or_else(|| failed(step, "no pending value"))
}

impl Strategy for SshKeyStrategy {
    async fn create(&self, cx: &StepContext<'_>) -> Result<Zeroizing<Vec<u8>>> {
        let target = self.target(cx.secret_name)?;
        // A host the egress policy refuses fails here, before anything is pending.
        target
            .egress
            .resolve(&target.host, target.port)
            .await
            .map_err(|e| failed("create", e.message))?;
        let current = cx
            .current
            .ok_or_else(|| failed("create", "no current value"))?;
        let out = match target.sub_type {
            SubType::Key => {
                let current = key_value("create", "current", current)?;
                // RSA generation takes from milliseconds to seconds (8192 bits): off the
                // async workers, which serve every API request.
                let algorithm = self.algorithm(&target)?;
                let key = tokio::task::spawn_blocking(move || generate(algorithm))
                    .await
                    .map_err(Error::internal)??;
                let private = key.to_openssh(LineEnding::LF).map_err(Error::internal)?;
                let public = key.public_key().to_openssh().map_err(Error::internal)?;
                let v = KeyValue {
                    user_name: current.user_name.clone(),
                    public_key: public,
                    private_key: private.to_string(),
                };
                serde_json::to_vec(&v).map_err(Error::internal)?
            }
            SubType::Password => {
                let current = password_value("create", "current", current)?;
                // The current password must log in before anything is pending. One
                // changed outside Strongbox would otherwise cost two refused logins on
                // every retry of *set* (lockout policies such as pam_faillock count
                // them), resumed without end; a failed *create* leaves nothing behind
                // and is tried again after a growing pause.
                Self::must_run(
                    "create",
                    &target,
                    &current.user_name,
                    Login::Password(&current.password),
                    "logging in with the current password",
                    "true",
                    None,
                )
                .await?;
                let v = PasswordValue {
                    user_name: current.user_name.clone(),
                    password: self.settings.password.generate().to_string(),
                };
                serde_json::to_vec(&v).map_err(Error::internal)?
            }
        };
        Ok(Zeroizing::new(out))
    }

    async fn set(&self, cx: &StepContext<'_>) -> Result<()> {
        let target = self.target(cx.secret_name)?;
        match target.sub_type {
            SubType::Key => self.set_key(cx, &target).await,
            SubType::Password => self.set_password(cx, &target).await,
        }
    }

    async fn test(&self, cx: &StepContext<'_>) -> Result<()> {
        let target = self.target(cx.secret_name)?;
        let pending = pending_of("test", cx)?;
        match target.sub_type {
            SubType::Key => {
                let v = key_value("test", "pending", pending)?;
                let key = v.private("test", "pending")?;
                Self::must_run(
                    "test",
                    &target,
                    &v.user_name,
                    Login::Key(&key),
                    "logging in with the new key",
                    "true",
                    None,
                )
                .await
            }
            SubType::Password => {
                let v = password_value("test", "pending", pending)?;
                Self::must_run(
                    "test",
                    &target,
                    &v.user_name,
                    Login::Password(&v.password),
                    "logging in with the new password",
                    "true",
                    None,
                )
                .await
            }
        }
    }

    async fn finish(&self, cx: &StepContext<'_>) -> Result<()> {
        let target = self.target(cx.secret_name)?;
        if target.sub_type == SubType::Password {
            return Ok(());
        }
        let pending = key_value("finish", "pending", pending_of("finish", cx)?)?;
        let current = key_value(
            "finish",
            "current",
            &self.current("finish", cx.secret_name)?,
        )?;
        let keep = [
            pending.blob("finish", "pending")?,
            current.blob("finish", "current")?,
        ];
        let mut old = self.unlabelled_rotation_keys(cx.secret_name)?;
        // A previous value of another shape (e.g. before the sub-type changed) holds no key.
        if let Some(previous) = self.stage_value(cx.secret_name, STAGE_PREVIOUS)?
            && let Ok(previous) = key_value("finish", "previous", &previous)
            && let Ok(blob) = previous.blob("finish", "previous")
        {
            old.push(blob);
        }
        old.retain(|b| !keep.contains(b));
        old.sort();
        old.dedup();
        if old.is_empty() {
            return Ok(());
        }
        let key = pending.private("finish", "pending")?;
        Self::must_run(
            "finish",
            &target,
            &pending.user_name,
            Login::Key(&key),
            "removing the key two versions old and those of abandoned rotations",
            REMOVE_KEYS_SCRIPT,
            Some(&blobs_input(&old)),
        )
        .await
    }
}

impl SshKeyStrategy {
    /// The keys of versions this secret's rotations made that no stage keeps: a
    /// rotation abandoned (its `ACSPending` taken off) or failed after *set* left its
    /// key authorized, and nobody reads that version any more. Only versions the engine
    /// made count, so a key a caller put in a value is never removed this way; a value
    /// that holds no key is passed over.
    fn unlabelled_rotation_keys(&self, name: &str) -> Result<Vec<String>> {
        let mut blobs = Vec::new();
        for v in self.service.list_secret_versions(name)?.versions {
            if !v.version_stages.is_empty() || v.created_by != Principal::Rotation.label() {
                continue;
            }
            // A version that cannot be read (sealed under a key disabled or deleted since,
            // or pruned meanwhile) keeps its key authorized rather than stop the rotation.
            let value = match self
                .service
                .get_secret_value(name, Some(&v.version_id), None)
            {
                Ok(value) => value,
                Err(e) => {
                    tracing::warn!(secret = %name, version_id = %v.version_id, code = %e.code, "the key of an abandoned rotation's version could not be read, so it stays authorized");
                    continue;
                }
            };
            // The private key in it is wiped once read.
            let data = Zeroizing::new(value.secret_data.into_bytes());
            if let Ok(kv) = key_value("finish", "unlabelled", &data)
                && let Ok(blob) = kv.blob("finish", "unlabelled")
            {
                blobs.push(blob);
            }
        }
        Ok(blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn extended_config_errors_name_the_field() {
        let host_key = generate(KeyAlgorithm::Ed25519)
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap();
        let cases = [
            (serde_json::json!({}), "extended_config.Host"),
            (serde_json::json!({"Host": "h"}), "extended_config.HostKey"),
            (
                serde_json::json!({"Host": "h", "HostKey": "nonsense"}),
                "extended_config.HostKey",
            ),
            (
                serde_json::json!({"Host": "h", "HostKey": host_key, "Port": 70000}),
                "extended_config.Port",
            ),
            (
                serde_json::json!({"Host": "h", "HostKey": host_key, "SecretSubType": "Cert"}),
                "extended_config.SecretSubType",
            ),
        ];
        for (c, field) in cases {
            let e = Target::parse(Some(&config(c.clone()))).unwrap_err();
            assert!(e.message.contains(field), "{c}: {e}");
            assert_eq!(e.code, ErrorCode::RotationFailed);
        }
        let t = Target::parse(Some(&config(
            serde_json::json!({"Host": "h", "HostKey": host_key, "Port": "2222", "SecretSubType": "Password"}),
        )))
        .unwrap();
        assert_eq!((t.port, t.sub_type), (2222, SubType::Password));
    }

    #[test]
    fn settings_are_checked() {
        let s = |k: &str, v: &str| -> BTreeMap<String, String> {
            [(k.to_string(), v.to_string())].into()
        };
        assert!(
            validate_settings(&s("key_type", "dsa"))
                .unwrap_err()
                .message
                .contains("settings.key_type")
        );
        assert!(
            validate_settings(&s("rsa_bits", "1024"))
                .unwrap_err()
                .message
                .contains("settings.rsa_bits")
        );
        assert_eq!(
            Settings::parse(&s("key_type", "rsa")).unwrap().algorithm,
            KeyAlgorithm::Rsa(DEFAULT_RSA_BITS)
        );
    }

    #[test]
    fn the_blob_comes_from_the_private_key_and_a_mismatched_public_key_is_refused() {
        let a = generate(KeyAlgorithm::Ed25519).unwrap();
        let b = generate(KeyAlgorithm::Ed25519).unwrap();
        let private = a.to_openssh(LineEnding::LF).unwrap().to_string();
        let value = |public: &PublicKey| {
            serde_json::to_vec(&serde_json::json!({"UserName": "u",
                "PublicKey": public.to_openssh().unwrap(), "PrivateKey": private}))
            .unwrap()
        };
        let e = key_value("finish", "previous", &value(b.public_key()))
            .err()
            .unwrap();
        assert!(e.message.contains("not the public half"), "{e}");
        assert!(!e.message.contains("PRIVATE KEY"));
        let ok = key_value("finish", "previous", &value(a.public_key())).unwrap();
        let (_, blob) = authorized_line(a.public_key()).unwrap();
        assert_eq!(ok.blob("finish", "previous").unwrap(), blob);
        let none = serde_json::to_vec(&serde_json::json!({"UserName": "u", "PrivateKey": private}))
            .unwrap();
        let v = key_value("finish", "previous", &none).unwrap();
        assert_eq!(v.blob("finish", "previous").unwrap(), blob);
    }

    #[test]
    fn the_old_key_is_removed_by_a_rename_not_a_rewrite_in_place() {
        let script = REMOVE_KEYS_SCRIPT;
        assert!(script.contains(r#"mv -f "$t" "$f""#), "{script}");
        assert!(!script.contains(r#"> "$f""#), "{script}");
    }

    /// The script as the account's shell runs it: every line holding one of the blobs
    /// goes (also one ending in CR, and one with options in front), the rest stays as
    /// it was.
    #[test]
    fn the_remove_script_takes_every_line_of_each_blob_and_nothing_else() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let file = ssh.join("authorized_keys");
        std::fs::write(
            &file,
            "ssh-ed25519 AAAAkeep one\n\
             ssh-ed25519 AAAAgone1 a\n\
             from=\"10.0.0.0/8\" ssh-ed25519 AAAAgone2\r\n\
             # ssh-ed25519 AAAAgone1 a comment line holds it too\n\
             ssh-ed25519 AAAAgone2x longer blob\n",
        )
        .unwrap();
        let run = |blobs: &[&str]| {
            use std::io::Write as _;
            let mut child = std::process::Command::new("sh")
                .args(["-c", REMOVE_KEYS_SCRIPT])
                .env("HOME", home.path())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let blobs: Vec<String> = blobs.iter().map(|b| b.to_string()).collect();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(&blobs_input(&blobs)).unwrap();
            drop(stdin);
            let status = child.wait().unwrap();
            assert!(status.success(), "{status:?}");
        };
        let before = std::fs::read_to_string(&file).unwrap();
        // No blobs: nothing goes.
        run(&[]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
        run(&["AAAAgone1", "AAAAgone2"]);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "ssh-ed25519 AAAAkeep one\nssh-ed25519 AAAAgone2x longer blob\n"
        );
    }

    #[test]
    fn generated_keys_round_trip_through_openssh_text() {
        for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa(2048)] {
            let k = generate(alg).unwrap();
            let text = k.to_openssh(LineEnding::LF).unwrap();
            let back = PrivateKey::from_openssh(text.as_str()).unwrap();
            assert_eq!(back.public_key().key_data(), k.public_key().key_data());
            let (line, blob) = authorized_line(k.public_key()).unwrap();
            assert!(line.ends_with(&blob));
        }
        let a = generate(KeyAlgorithm::Ed25519).unwrap();
        let b = generate(KeyAlgorithm::Ed25519).unwrap();
        assert_ne!(a.public_key().key_data(), b.public_key().key_data());
    }
}
