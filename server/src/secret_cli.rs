//! `strongbox secret …` and `strongbox run`: secrets from the command line, and
//! injected into a program's environment ("codeless" use, as `op run` or `doppler run`).
//!
//! Values come in on standard input and go out on standard output (or into the
//! program's environment), never through command-line arguments, which any local user
//! can read with `ps`. The server is named by `STRONGBOX_ADDR`, `STRONGBOX_TOKEN` and
//! `STRONGBOX_CACERT`, as for the other administration commands.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};

use crate::admin::client;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Subcommand;
use strongbox_schemas::{self as api, MAX_SECRET_VALUE_BYTES, SecretDataType};
use zeroize::{Zeroize as _, Zeroizing};

#[derive(Subcommand)]
pub(crate) enum SecretCommand {
    /// Print a secret's value (ACSCurrent unless told otherwise) on standard output:
    /// byte for byte into a file or pipe; at a terminal only text without control
    /// characters.
    Get {
        /// Secret name.
        name: String,
        /// This version instead of ACSCurrent.
        #[arg(long)]
        version_id: Option<String>,
        /// The version with this stage instead of ACSCurrent.
        #[arg(long)]
        version_stage: Option<String>,
        /// Only this top-level field of a JSON object value.
        #[arg(long)]
        field: Option<String>,
    },
    /// Create a secret; its first value is read from standard input (one trailing
    /// newline is dropped).
    Create {
        /// Secret name.
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Key id or alias/NAME of the CMK (the default CMK when absent).
        #[arg(long)]
        encryption_key_id: Option<String>,
        /// Name of a rotation policy to attach.
        #[arg(long)]
        rotation_policy: Option<String>,
        /// Store standard input as a binary value, byte for byte (nothing dropped).
        #[arg(long)]
        binary: bool,
    },
    /// Store a new value, read from standard input (one trailing newline is dropped);
    /// it becomes ACSCurrent, the old one ACSPrevious.
    Put {
        /// Secret name.
        name: String,
        /// Id of the new version (generated when absent; repeating one is a no-op).
        #[arg(long)]
        version_id: Option<String>,
        /// Store standard input as a binary value, byte for byte (nothing dropped).
        #[arg(long)]
        binary: bool,
    },
    /// Print a secret's metadata (never its value) as JSON.
    Describe {
        /// Secret name.
        name: String,
    },
    /// List secret names, one per line.
    List {
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Rotate a secret now with its rotation policy, and wait for the rotation.
    Rotate {
        /// Secret name.
        name: String,
        /// The version the rotation makes (asking again with it waits for that rotation).
        #[arg(long)]
        version_id: Option<String>,
        /// Seconds to wait for the rotation to end; the server answers within its own
        /// wait (60 s), and the request is repeated for the same rotation until then.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// Schedule a secret's deletion (30 days of recovery unless told otherwise).
    Delete {
        /// Secret name.
        name: String,
        /// Days before the secret is purged (7–30).
        #[arg(long, conflicts_with = "force")]
        recovery_window_in_days: Option<u32>,
        /// Purge at once, without a recovery window.
        #[arg(long)]
        force: bool,
    },
}

/// `strongbox run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// VAR=SECRET, or VAR=SECRET:FIELD for one top-level field of a JSON object value
    /// (ACSCurrent). Repeat for several.
    #[arg(long = "env", value_name = "VAR=SECRET[:FIELD]", required = true)]
    env: Vec<String>,
    /// Leave STRONGBOX_TOKEN in the program's environment (it is removed by default:
    /// the program gets its secrets, not the right to read more). STRONGBOX_ROOT_KEY is
    /// always removed.
    #[arg(long)]
    keep_token: bool,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    command: Vec<OsString>,
}

/// Standard input, less one trailing newline (`\n` or `\r\n`). At a terminal the
/// value is asked for with echo off (one line), so it never shows on the screen.
fn value_from_stdin() -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        let typed = Zeroizing::new(
            rpassword::prompt_password("Value (not shown; or pipe it in): ")
                .context("reading the value from the terminal")?,
        );
        if typed.is_empty() {
            bail!("the value typed is empty");
        }
        return Ok(typed);
    }
    // Read into a buffer of the most it may hold (the largest value and a line end), so
    // that no grown copy of the value is left unwiped.
    let mut raw = crate::key_cli::read_stdin("value", MAX_SECRET_VALUE_BYTES + 2)?;
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    }
    if raw.len() > MAX_SECRET_VALUE_BYTES {
        bail!("the value on standard input is longer than {MAX_SECRET_VALUE_BYTES} bytes");
    }
    if raw.is_empty() {
        bail!("the value on standard input is empty");
    }
    let text = std::str::from_utf8(&raw).context("the value on standard input is not UTF-8")?;
    Ok(Zeroizing::new(text.to_string()))
}

/// The value to send and its type: standard input as text ([`value_from_stdin`]), or
/// with `binary` its exact bytes, base64-encoded as the API carries binary values (a
/// terminal is refused: what is typed there is text).
fn value_to_send(binary: bool) -> anyhow::Result<(Zeroizing<String>, SecretDataType)> {
    if !binary {
        return Ok((value_from_stdin()?, SecretDataType::Text));
    }
    if std::io::stdin().is_terminal() {
        bail!(
            "--binary reads the value from a pipe or a file: strongbox secret put NAME --binary < FILE"
        );
    }
    let raw = crate::key_cli::read_stdin("value", MAX_SECRET_VALUE_BYTES)?;
    if raw.is_empty() {
        bail!("the value on standard input is empty");
    }
    Ok((
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*raw)),
        SecretDataType::Binary,
    ))
}

/// The plaintext of a value as bytes (binary values come base64-encoded).
fn plaintext(mut v: api::SecretValue) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let raw = match v.secret_data_type {
        SecretDataType::Text => Ok(v.secret_data.as_bytes().to_vec()),
        SecretDataType::Binary => base64::engine::general_purpose::STANDARD
            .decode(&v.secret_data)
            // Not the decoder's error: it quotes a byte of the value.
            .map_err(|_| anyhow::anyhow!("the server sent a binary value that is not base64")),
    };
    // The answer's copy goes now; only the returned one, wiped on drop, stays.
    v.secret_data.zeroize();
    raw.map(Zeroizing::new)
}

/// One top-level field of a JSON object value, as text: strings unescaped, other values
/// exactly as they are written in the value (a number keeps its digits, an object its
/// key order). The error names the secret and field, never the value. Nothing of the
/// value is copied but the field asked for.
fn field_of(name: &str, value: &[u8], field: &str) -> anyhow::Result<Zeroizing<String>> {
    use serde_json::value::RawValue;
    let fields: std::collections::HashMap<String, &RawValue> = match serde_json::from_slice(value) {
        Ok(f) => f,
        Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() => {
            bail!("secret {name}: the value is not a JSON object, so it has no field {field}")
        }
        Err(_) => bail!("secret {name}: the value is not JSON, so it has no field {field}"),
    };
    match fields.get(field).map(|raw| raw.get()) {
        None | Some("null") => bail!("secret {name}: the value has no field {field}"),
        Some(text) if text.starts_with('"') => serde_json::from_str::<String>(text)
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("secret {name}: field {field} is not a valid string")),
        Some(text) => Ok(Zeroizing::new(text.to_string())),
    }
}

/// Whether `bytes` are text without control characters other than tab and newline.
pub(crate) fn fit_for_a_terminal(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|t| !t.chars().any(|c| c.is_control() && c != '\n' && c != '\t'))
}

pub(crate) async fn secret(cmd: SecretCommand) -> anyhow::Result<()> {
    let c = client()?;
    match cmd {
        SecretCommand::Get {
            name,
            version_id,
            version_stage,
            field,
        } => {
            let v = c
                .get_secret_value(&name, version_id.as_deref(), version_stage.as_deref())
                .await?;
            let bytes = plaintext(v)?;
            let out = match &field {
                Some(f) => Zeroizing::new(field_of(&name, &bytes, f)?.as_bytes().to_vec()),
                None => bytes,
            };
            let mut stdout = std::io::stdout().lock();
            let terminal = stdout.is_terminal();
            // A terminal acts on control characters (escape sequences can rewrite the
            // screen or set the clipboard), and whoever may put a value chooses them.
            if terminal && !fit_for_a_terminal(&out) {
                anyhow::bail!(
                    "the value of {name} holds control characters or bytes that are not text, which a terminal would act on; redirect it to a file or a pipe to get it byte for byte"
                );
            }
            stdout.write_all(&out)?;
            // Exact bytes into a pipe or file; a newline for a person at a terminal.
            if terminal {
                stdout.write_all(b"\n")?;
            }
            stdout.flush()?;
            Ok(())
        }
        SecretCommand::Create {
            name,
            description,
            encryption_key_id,
            rotation_policy,
            binary,
        } => {
            let (mut value, secret_data_type) = value_to_send(binary)?;
            // The value moves into the request and is wiped after it, not copied.
            let mut req = api::CreateSecretRequest {
                name,
                secret_data: std::mem::take(&mut *value),
                secret_data_type,
                description,
                encryption_key_id,
                rotation_policy,
                ..Default::default()
            };
            let s = c.create_secret(&req).await;
            req.secret_data.zeroize();
            outln!("{}", serde_json::to_string_pretty(&s?)?);
            Ok(())
        }
        SecretCommand::Put {
            name,
            version_id,
            binary,
        } => {
            let (mut value, secret_data_type) = value_to_send(binary)?;
            let mut req = api::PutSecretValueRequest {
                secret_data: std::mem::take(&mut *value),
                secret_data_type,
                version_id,
                ..Default::default()
            };
            let r = c.put_secret_value(&name, &req).await;
            req.secret_data.zeroize();
            outln!("{}", serde_json::to_string_pretty(&r?)?);
            Ok(())
        }
        SecretCommand::Describe { name } => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&c.describe_secret(&name).await?)?
            );
            Ok(())
        }
        SecretCommand::List { prefix } => {
            let mut page_token = None;
            // Tokens move forward: one seen before would print the same names for good.
            let mut seen = std::collections::HashSet::new();
            loop {
                let page = c
                    .list_secrets(&strongbox_client::ListSecretsOptions {
                        name_prefix: prefix.clone(),
                        page_token: page_token.take(),
                        limit: Some(100),
                        ..Default::default()
                    })
                    .await?;
                for s in &page.secrets {
                    outln!("{}", s.name);
                }
                match page.next_page_token {
                    Some(t) if !seen.insert(t.clone()) => {
                        anyhow::bail!("the server returned a page token it had returned before")
                    }
                    Some(t) => page_token = Some(t),
                    None => return Ok(()),
                }
            }
        }
        SecretCommand::Rotate {
            name,
            version_id,
            wait,
        } => {
            // A wait too long to count is no deadline at all.
            let deadline =
                std::time::Instant::now().checked_add(std::time::Duration::from_secs(wait));
            // The rotation is named from the first request on, so asking again (after the
            // server's own wait ended) always means this rotation, never a new one.
            let given = version_id.is_some();
            let mut id = version_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let mut resumed = false;
            loop {
                match c.rotate_secret(&name, Some(&id)).await {
                    Ok(r) => {
                        outln!("Rotated {name}: version {} is ACSCurrent.", r.version_id);
                        return Ok(());
                    }
                    // Still running (the server's wait ended), or the answer lost on the
                    // way (a dropped connection, a gateway's 503/504 while the server went
                    // on): asking again with the same version id means this rotation, so
                    // it is safe until the deadline. Not a bare 502: the server's own
                    // RotationFailed is a 502, which a gateway may pass on without its
                    // body, and asking again would run a failed rotation again.
                    Err(e)
                        if e.is_transient()
                            && e.status() != Some(502)
                            && deadline.is_none_or(|d| std::time::Instant::now() < d) =>
                    {
                        if e.code() == Some(strongbox_client::ErrorCode::Unavailable) {
                            eprintln!("The rotation of {name} is still running; waiting.");
                        } else {
                            // What a gateway sent may hold control characters.
                            eprintln!(
                                "No answer about the rotation of {name} ({}); asking again.",
                                crate::admin::printable(&e.to_string())
                            );
                        }
                        tokio::time::sleep(strongbox_client::jittered(
                            std::time::Duration::from_secs(1),
                        ))
                        .await;
                    }
                    // A bare 502 is not asked again, but it may have hidden a success:
                    // a read says whether this rotation's version became ACSCurrent.
                    Err(e) if e.status() == Some(502) && e.code().is_none() => {
                        let done = c.list_secret_versions(&name).await.is_ok_and(|l| {
                            l.versions.iter().any(|v| {
                                v.version_id == id
                                    && v.version_stages
                                        .iter()
                                        .any(|s| s == strongbox_schemas::STAGE_CURRENT)
                            })
                        });
                        if !done {
                            return Err(e.into());
                        }
                        outln!("Rotated {name}: version {id} is ACSCurrent.");
                        return Ok(());
                    }
                    // An unfinished rotation of its own (after a failure or a restart):
                    // that one is resumed, named by the version it makes (ACSPending's).
                    Err(e)
                        if e.code() == Some(strongbox_client::ErrorCode::RotationInProgress)
                            && !given
                            && !resumed =>
                    {
                        let pending = c
                            .list_secret_versions(&name)
                            .await?
                            .versions
                            .into_iter()
                            .find(|v| {
                                v.version_stages
                                    .iter()
                                    .any(|s| s == strongbox_schemas::STAGE_PENDING)
                            });
                        let Some(pending) = pending else {
                            return Err(e.into());
                        };
                        eprintln!(
                            "Resuming the unfinished rotation of {name} (version {}).",
                            pending.version_id
                        );
                        id = pending.version_id;
                        resumed = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        SecretCommand::Delete {
            name,
            recovery_window_in_days,
            force,
        } => {
            let d = c
                .delete_secret(
                    &name,
                    strongbox_client::DeleteSecretOptions {
                        recovery_window_in_days,
                        force_delete_without_recovery: force,
                    },
                )
                .await?;
            match d.planned_delete_time {
                Some(t) if !force => {
                    outln!("{name} will be deleted at {t} (restorable until then).")
                }
                _ => outln!("Deleted {name}."),
            }
            Ok(())
        }
    }
}

/// One `--env` item.
struct Injection {
    var: String,
    secret: String,
    field: Option<String>,
}

fn parse_injection(spec: &str) -> anyhow::Result<Injection> {
    let Some((var, source)) = spec.split_once('=') else {
        bail!("--env {spec}: expected VAR=SECRET or VAR=SECRET:FIELD");
    };
    let var_ok = var
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !var_ok {
        bail!("--env {spec}: {var:?} is not a variable name (letters, digits, _)");
    }
    // Secret names have no `:`, so the first one starts the field.
    let (secret, field) = match source.split_once(':') {
        Some((s, f)) if !f.is_empty() => (s, Some(f.to_string())),
        Some(_) => bail!("--env {spec}: name the field after the :"),
        None => (source, None),
    };
    api::validate_secret_name("--env", secret).map_err(|e| anyhow::anyhow!("--env {spec}: {e}"))?;
    Ok(Injection {
        var: var.to_string(),
        secret: secret.to_string(),
        field,
    })
}

/// `ACSCurrent` of `name`. A program started by a service manager often starts with
/// the network or the server still coming up: an error that may pass by itself (no
/// answer, 503, a proxy's 429) is tried again twice, after about 0.5 s and 1 s (each ±50 %, so
/// that programs started together do not all ask again at once); any other fails at
/// once.
async fn read_current(
    c: &strongbox_client::Client,
    name: &str,
) -> strongbox_client::Result<api::SecretValue> {
    let mut pause = std::time::Duration::from_millis(500);
    for _ in 0..2 {
        match c.get_secret_value(name, None, None).await {
            Err(e) if e.is_transient() => {
                eprintln!(
                    "strongbox run: reading secret {name}: {}; trying again",
                    crate::admin::printable(&e.to_string())
                );
                tokio::time::sleep(strongbox_client::jittered(pause)).await;
                pause *= 2;
            }
            r => return r,
        }
    }
    c.get_secret_value(name, None, None).await
}

/// Reads the secrets `run` injects and builds the program's command. Everything is read
/// before the program starts: a secret that cannot be read stops the run, naming it.
pub(crate) async fn prepare_run(args: RunArgs) -> anyhow::Result<std::process::Command> {
    let injections = args
        .env
        .iter()
        .map(|s| parse_injection(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for i in &injections {
        if !seen.insert(i.var.as_str()) {
            bail!("--env {}: the variable is set twice", i.var);
        }
    }
    let c = client()?;
    // Each secret is read once, however many variables take from it.
    let mut values: BTreeMap<&str, Zeroizing<Vec<u8>>> = BTreeMap::new();
    for i in &injections {
        if !values.contains_key(i.secret.as_str()) {
            let v = read_current(&c, &i.secret)
                .await
                .with_context(|| format!("reading secret {}", i.secret))?;
            let raw = plaintext(v).with_context(|| format!("secret {}", i.secret))?;
            values.insert(&i.secret, raw);
        }
    }
    let (program, rest) = args
        .command
        .split_first()
        .context("name the program to run after --")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    if !args.keep_token {
        cmd.env_remove("STRONGBOX_TOKEN");
    }
    // The root key unseals the whole store: no program is given it, even one that keeps
    // the token.
    cmd.env_remove("STRONGBOX_ROOT_KEY");
    for i in &injections {
        let raw = &values[i.secret.as_str()];
        let text: Zeroizing<String> = match &i.field {
            Some(f) => field_of(&i.secret, raw, f)?,
            None => Zeroizing::new(
                std::str::from_utf8(raw)
                    .with_context(|| format!("secret {}: the value is not text", i.secret))?
                    .to_string(),
            ),
        };
        if text.contains('\0') {
            bail!(
                "secret {}: the value holds a NUL byte, which an environment variable cannot",
                i.secret
            );
        }
        cmd.env(&i.var, text.as_str());
    }
    Ok(cmd)
}

/// A program `run` could not start; the exit status says why, as a shell's would
/// (127: not found, 126: found but not executable).
#[derive(Debug, thiserror::Error)]
#[error("running {program}: {source}")]
pub(crate) struct ExecFailed {
    program: String,
    source: std::io::Error,
}

impl ExecFailed {
    pub(crate) fn exit_code(&self) -> u8 {
        match self.source.kind() {
            std::io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}

/// Replaces this process with the prepared program (its exit status and signals are
/// the caller's to see, as if it had been started directly). Returns only on failure.
pub(crate) fn exec(mut cmd: std::process::Command) -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let source = cmd.exec();
    anyhow::Error::new(ExecFailed { program, source })
}
