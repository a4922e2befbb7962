//! MyApp: the seed's story. An application that holds no database password: at runtime
//! it asks Strongbox for the secret `MyDbCreds` over HTTPS (the client crate), parses
//! `{"AccountName", "AccountPassword"}`, reads where the database is from the secret's
//! `extended_config` (`Host`, `Port`, `Database`) and connects to PostgreSQL. It keeps
//! the value it read; when a login is refused (the account was rotated) it reads the
//! secret again and retries once — so it keeps working across rotations. A failed
//! request (the database or Strongbox briefly unreachable) is counted, not fatal.
//!
//! Its token needs `kms:GetSecretValue` and `kms:DescribeSecret` on the secret.
//!
//! It speaks plain TCP only and refuses a secret whose `TlsMode` is not `disable`
//! (a production application would use TLS, e.g. rustls as the server does).
//!
//! Configuration (no password anywhere): `STRONGBOX_ADDR`, `STRONGBOX_TOKEN`,
//! `STRONGBOX_CACERT` (as for the `strongbox` CLI), `MYAPP_SECRET` (default
//! `MyDbCreds`), `MYAPP_SECONDS` (how long to run, default 10), `MYAPP_INTERVAL_MS`
//! (pause between requests, default 20). At the end it prints one JSON line:
//! `{"requests", "refreshes", "failures", "accounts", "versions"}` (`versions`: the
//! secret's version ids it made a successful request with).
//!
//! With `MYAPP_UNTIL_EOF=1` it runs until its standard input is closed instead of for
//! `MYAPP_SECONDS`, and prints the same JSON line after every request (progress, for a
//! driver that waits for conditions rather than for time); the last line is the summary.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strongbox_client::Client;

/// The database account as stored in the secret (wiped from memory when dropped).
#[derive(serde::Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct DbCreds {
    #[serde(rename = "AccountName")]
    name: String,
    #[serde(rename = "AccountPassword")]
    password: String,
}

/// Where the database is (from the secret's `extended_config`).
struct DbTarget {
    host: String,
    port: u16,
    database: String,
}

fn env_num(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

/// The current value of the secret and its version id.
async fn read_creds(sb: &Client, secret: &str) -> Result<(DbCreds, String), String> {
    let v = sb
        .get_secret_value(secret, None, None)
        .await
        .map_err(|e| format!("reading {secret}: {e}"))?;
    let c = serde_json::from_str(&v.secret_data)
        .map_err(|_| format!("{secret} is not {{\"AccountName\", \"AccountPassword\"}}"))?;
    Ok((c, v.version_id.clone()))
}

async fn read_target(sb: &Client, secret: &str) -> Result<DbTarget, String> {
    let d = sb
        .describe_secret(secret)
        .await
        .map_err(|e| format!("describing {secret}: {e}"))?;
    let c = d
        .extended_config
        .ok_or_else(|| format!("{secret} has no extended_config"))?;
    let text = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("extended_config.{k} missing"))
    };
    // This small example speaks plain TCP only; it refuses rather than downgrade a
    // secret that asks for TLS.
    match c.get("TlsMode").and_then(|v| v.as_str()) {
        Some("disable") => {}
        other => {
            return Err(format!(
                "extended_config.TlsMode is {other:?}; MyApp supports \"disable\" only"
            ));
        }
    }
    Ok(DbTarget {
        host: text("Host")?,
        port: c
            .get("Port")
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("extended_config.Port missing")?,
        database: text("Database")?,
    })
}

/// Whether PostgreSQL refused the login itself (wrong password, or no such account):
/// the value the application holds is stale.
fn login_refused(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// One request: a fresh connection with the account, one query.
async fn request(t: &DbTarget, c: &DbCreds) -> Result<String, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&t.host)
        .port(t.port)
        .dbname(&t.database)
        .user(&c.name)
        .password(c.password.as_bytes())
        .application_name("myapp");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

async fn run() -> Result<(), String> {
    let sb = Client::from_env().map_err(|e| format!("Strongbox client: {e}"))?;
    let secret = std::env::var("MYAPP_SECRET").unwrap_or_else(|_| "MyDbCreds".into());
    let run_for = Duration::from_secs(env_num("MYAPP_SECONDS", 10)?);
    let pause = Duration::from_millis(env_num("MYAPP_INTERVAL_MS", 20)?);
    let until_eof = env_num("MYAPP_UNTIL_EOF", 0)? != 0;
    let stopped = Arc::new(AtomicBool::new(false));
    if until_eof {
        let stopped = stopped.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stopped.store(true, Ordering::SeqCst);
        });
    }
    let target = read_target(&sb, &secret).await?;
    let (mut creds, mut version) = read_creds(&sb, &secret).await?;
    let (mut requests, mut refreshes, mut failures) = (0u64, 0u64, 0u64);
    let mut accounts = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let summary = |requests,
                   refreshes,
                   failures,
                   accounts: &BTreeSet<String>,
                   versions: &BTreeSet<String>| {
        serde_json::json!({
            "requests": requests, "refreshes": refreshes, "failures": failures,
            "accounts": accounts, "versions": versions,
        })
    };
    let start = Instant::now();
    loop {
        let done = if until_eof {
            stopped.load(Ordering::SeqCst)
        } else {
            start.elapsed() >= run_for
        };
        if done {
            break;
        }
        requests += 1;
        let user = match request(&target, &creds).await {
            // Refused login: the account was rotated. Read the secret again and retry
            // once. Other errors (the database down, say) are not the secret's doing.
            Err(e) if login_refused(&e) => {
                refreshes += 1;
                match read_creds(&sb, &secret).await {
                    Ok(fresh) => {
                        (creds, version) = fresh;
                        request(&target, &creds)
                            .await
                            .map_err(|e| format!("after a refresh: {e}"))
                    }
                    // Strongbox unreachable for a moment: keep the value we have, and
                    // try again with the next request.
                    Err(e) => Err(e),
                }
            }
            other => other.map_err(|e| e.to_string()),
        };
        match user {
            Ok(u) => {
                accounts.insert(u);
                versions.insert(version.clone());
            }
            Err(e) => {
                failures += 1;
                eprintln!("myapp: request failed: {e}");
            }
        }
        if until_eof {
            println!(
                "{}",
                summary(requests, refreshes, failures, &accounts, &versions)
            );
        }
        tokio::time::sleep(pause).await;
    }
    println!(
        "{}",
        summary(requests, refreshes, failures, &accounts, &versions)
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("myapp: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
