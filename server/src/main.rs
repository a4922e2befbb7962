//! `strongbox`: the server and its administration commands.

/// `println!` for the commands' output: a reader that went away (`strongbox audit tail |
/// head -1`) ends the command quietly, with the status a shell gives a process that
/// SIGPIPE stopped (141), instead of the panic `println!` makes of it.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out_line(format_args!($($arg)*))
    };
}

mod admin;
mod key_cli;
mod secret_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use strongbox_server::barrier::RootKey;
use strongbox_server::server::{self, ServeOptions};
use strongbox_server::service::{EgressPolicy, RotationConfig, ServiceConfig};
use strongbox_server::tls;
use zeroize::Zeroizing;

/// mimalloc instead of glibc malloc: a busy server spent 13 % of its CPU in glibc's
/// allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "strongbox",
    version,
    about = "Strongbox secrets manager and key-management control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a database and a root key; prints the root token once.
    Init {
        /// Directory for the database.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write the root key (mode 0600, outside the data dir).
        #[arg(long)]
        root_key_file: PathBuf,
    },
    /// Run the server.
    Server(ServerArgs),
    /// Replace a lost root token, with the root key, while the server is stopped; prints
    /// the new token once. The old one stops working; the audit trail records it.
    ResetRootToken {
        /// Directory of the database.
        #[arg(long)]
        data_dir: PathBuf,
        /// File holding the root key (or STRONGBOX_ROOT_KEY).
        #[arg(long)]
        root_key_file: Option<PathBuf>,
    },
    /// Save a backup of the whole database, from one snapshot, through the API (needs
    /// `sys:Backup`). Values stay sealed: only the same root key restores it.
    Backup {
        /// File to write (made new, mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new data dir, with the root key of the database it was
    /// taken from; refused, with nothing written, for another key or a changed file.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// A directory without a database, for the restored one.
        #[arg(long)]
        data_dir: PathBuf,
        /// File holding the root key (or STRONGBOX_ROOT_KEY).
        #[arg(long)]
        root_key_file: Option<PathBuf>,
        /// Revoke every principal's token and replace the root token (printed once):
        /// the backup holds the tokens of its time, also those revoked since.
        #[arg(long)]
        revoke_tokens: bool,
    },
    /// Manage principals (through the API: STRONGBOX_ADDR, STRONGBOX_TOKEN, STRONGBOX_CACERT).
    #[command(subcommand)]
    Principal(admin::PrincipalCommand),
    /// Manage principals' tokens (through the API).
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Manage access policies (through the API).
    #[command(subcommand)]
    Policy(admin::PolicyCommand),
    /// Verify, follow, export or prune the audit trail (through the API).
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Read and write secrets (through the API; values on standard input and output).
    #[command(subcommand)]
    Secret(secret_cli::SecretCommand),
    /// Encrypt, decrypt and re-encrypt with a CMK, and make data keys (through the API;
    /// data on standard input and output).
    #[command(subcommand)]
    Key(key_cli::KeyCommand),
    /// Run a program with secrets in its environment:
    /// `strongbox run --env DB_PASSWORD=MyDbCreds:AccountPassword -- ./app`.
    Run(secret_cli::RunArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Throwaway development server: temp data dir, generated root key, token and certificate.
    #[arg(long, conflicts_with_all = ["root_key_file", "tls_cert", "tls_key"])]
    dev: bool,
    /// Directory of the database (a temporary one with --dev when absent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the root key. The key itself (base64) may come in the environment
    /// variable STRONGBOX_ROOT_KEY instead; there is no flag for it, since any local
    /// user can read a process's arguments.
    #[arg(long)]
    root_key_file: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// PEM certificate chain (required outside --dev). SIGHUP reads it and --tls-key
    /// again: new connections get the renewed certificate, without a restart.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key (required outside --dev); refused if other users may read it.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Seconds between background jobs (key deletion and rotation, secret purge, audit
    /// retention).
    #[arg(long, default_value_t = 60)]
    tick_interval: u64,
    /// Versions kept per secret.
    #[arg(long, default_value_t = 10)]
    max_versions: usize,
    /// Audit records younger than this are never pruned (`strongbox audit prune
    /// --older-than` may not ask for less), such as 30d or 2160h; 0s allows any prune.
    #[arg(long, env = "STRONGBOX_AUDIT_MIN_RETENTION", default_value = "30d",
          value_parser = admin::parse_interval)]
    audit_min_retention: strongbox_schemas::Interval,
    /// Audit records older than this (such as 365d) are pruned in the background, as
    /// `strongbox audit prune --older-than` would, without an export: ship the trail
    /// elsewhere first if it must be kept. At least --audit-min-retention. Without it,
    /// records are kept until a prune is asked for.
    #[arg(long, env = "STRONGBOX_AUDIT_RETENTION", value_parser = admin::parse_interval)]
    audit_retention: Option<strongbox_schemas::Interval>,
    /// Connections served at once; at the limit the idlest makes way for a new one, and
    /// while all are busy, new ones wait in the listen backlog.
    #[arg(long, env = "STRONGBOX_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Connections served at once from one client address (an IPv6 client's /64); more
    /// are closed at once. Behind a proxy, raise it to --max-connections.
    #[arg(long, env = "STRONGBOX_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections_per_address: u32,
    /// Requests without a valid token answered per second from one client address (an
    /// IPv6 client's /64), in bursts of ten seconds' worth, and twenty times as many
    /// server-wide; more are refused with 429 and, but for one an address a minute, left
    /// out of the audit trail (counted in the metrics). Requests with a valid token are
    /// never limited. Behind a proxy every client has the proxy's address: raise the
    /// limit there. 0: no limit, every one recorded.
    #[arg(long, env = "STRONGBOX_UNAUTHENTICATED_RATE_LIMIT", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    unauthenticated_rate_limit: u32,
    /// Seconds a connection may stay open with no request under way before it is
    /// closed (gracefully: an HTTP/2 client gets a GOAWAY).
    #[arg(long, env = "STRONGBOX_IDLE_TIMEOUT", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout: u64,
    /// Networks rotations may connect to (database, SSH and webhook hosts), as
    /// comma-separated CIDRs or addresses. Default: any address except link-local ones
    /// and cloud metadata services.
    #[arg(long, env = "STRONGBOX_ROTATION_EGRESS_ALLOW", value_parser = EgressPolicy::parse)]
    rotation_egress_allow: Option<EgressPolicy>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
}

/// Writes one line of a command's output (see [`outln`]).
fn out_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(READER_GONE);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// Writes what is shown only this once (a new token). A write that fails, for a reader
/// gone away too, is an error saying what was made and what to do (`lost`), never the
/// quiet exit of a closed pipe: what was made is nowhere else.
pub(crate) fn show_once(text: &str, lost: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        // Not kept as the error's source: a broken pipe must not end as a quiet 141.
        .map_err(|e| anyhow::anyhow!("{lost} (writing to standard output: {e})"))
}

/// The exit status when the reader of standard output went away.
const READER_GONE: i32 = 141;

/// Whether `e` is, at its root, a write to a pipe whose reader went away.
fn reader_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if reader_gone(&e) => std::process::ExitCode::from(READER_GONE as u8),
        Err(e) => {
            // The message may hold what a server (or something in front of it) sent:
            // control characters are shown escaped, never sent to the terminal.
            eprintln!("error: {}", admin::printable(&format!("{e:#}")));
            if e.downcast_ref::<admin::VerifyUnavailable>().is_some() {
                return std::process::ExitCode::from(2);
            }
            match e.downcast_ref::<secret_cli::ExecFailed>() {
                Some(x) => std::process::ExitCode::from(x.exit_code()),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}

/// Keeps what this process holds (the root key, tokens, secret values) out of core dumps
/// and away from other processes of the same user that would read its memory: the
/// process is made non-dumpable (`strongbox run`'s program is dumpable again after its
/// exec) and, for the server, which runs for long, the core size limit is set to 0.
fn no_core_dumps(server: bool) {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("warning: could not make the process non-dumpable: {e}");
    }
    if server
        && let Err(e) =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
    {
        eprintln!("warning: could not set the core size limit to 0: {e}");
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    no_core_dumps(matches!(cli.command, Command::Server(_)));
    match cli.command {
        Command::Init {
            data_dir,
            root_key_file,
        } => {
            init_logging("text");
            let key = RootKey::random();
            // Shown before the init is final: if it cannot be shown, nothing is kept.
            server::init_announcing(&data_dir, Some(&root_key_file), &key, |token| {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                writeln!(out, "Initialised {}.", data_dir.display())?;
                writeln!(
                    out,
                    "Root key written to {} (keep it apart from the data).",
                    root_key_file.display()
                )?;
                writeln!(out, "Root token (shown only this once):\n{token}")?;
                out.flush()
            })
            // A reader gone away is said too (not the quiet end of a closed pipe): the
            // init did not happen.
            .map_err(|e| {
                if reader_gone(&e) {
                    anyhow::anyhow!("{e:#}")
                } else {
                    e
                }
            })?;
            Ok(())
        }
        Command::Server(args) => {
            init_logging(&args.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run_server(args))
        }
        Command::ResetRootToken {
            data_dir,
            root_key_file,
        } => {
            init_logging("text");
            client_runtime()?.block_on(reset_root_token(&data_dir, root_key_file.as_deref()))
        }
        Command::Backup { out } => client_runtime()?.block_on(backup(&out)),
        Command::Restore {
            from,
            data_dir,
            root_key_file,
            revoke_tokens,
        } => {
            init_logging("text");
            client_runtime()?.block_on(restore(
                &from,
                &data_dir,
                root_key_file.as_deref(),
                revoke_tokens,
            ))
        }
        Command::Principal(c) => client_runtime()?.block_on(admin::principal(c)),
        Command::Token(c) => client_runtime()?.block_on(admin::token(c)),
        Command::Policy(c) => client_runtime()?.block_on(admin::policy(c)),
        Command::Audit(c) => client_runtime()?.block_on(admin::audit(c)),
        Command::Secret(c) => client_runtime()?.block_on(secret_cli::secret(c)),
        Command::Key(c) => client_runtime()?.block_on(key_cli::key(c)),
        Command::Run(args) => {
            let cmd = client_runtime()?.block_on(secret_cli::prepare_run(args))?;
            // The runtime is gone by now: the program replaces this process.
            Err(secret_cli::exec(cmd))
        }
    }
}

/// `strongbox backup`: streams the server's backup into a new file beside `out`, checks
/// that it is complete, and only then gives it its name (never over an existing file); a
/// failed, cut-off or interrupted backup leaves no file at `out`.
async fn backup(out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if out.exists() {
        anyhow::bail!("{} exists; a backup never overwrites a file", out.display());
    }
    let c = admin::client()?;
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".partial-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let partial = out.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let written = async {
        let bytes = c.backup(&mut file).await?;
        file.sync_all()?;
        let entries = strongbox_server::backup::check_complete(&partial)?;
        server::name_new_file(&partial, out)
            .with_context(|| format!("naming the backup {}", out.display()))?;
        anyhow::Ok((bytes, entries))
    }
    .await;
    let (bytes, entries) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("the backup failed; no file was kept"));
        }
    };
    // The name, durable before the backup is reported written.
    strongbox_server::storage::sync_parent_dir(out).with_context(|| {
        format!(
            "the backup was written to {}, but its directory could not be synced: a power loss may take the file away",
            out.display()
        )
    })?;
    outln!(
        "wrote a backup of {entries} entries ({bytes} bytes) to {}",
        out.display()
    );
    Ok(())
}

/// `strongbox restore`: a backup into a new data dir, which is then opened as the server
/// would open it (root key, audit trail) before the restore is reported done.
async fn restore(
    from: &std::path::Path,
    data_dir: &std::path::Path,
    root_key_file: Option<&std::path::Path>,
    revoke_tokens: bool,
) -> anyhow::Result<()> {
    let root = server::load_root_key(root_key_file, env_root_key().as_ref().map(|k| k.as_str()))?;
    let restored =
        strongbox_server::backup::restore_and_record(data_dir, from, &root, revoke_tokens).await?;
    outln!(
        "restored {} entries into {}; start it with strongbox server --data-dir {}",
        restored.entries,
        data_dir.display(),
        data_dir.display()
    );
    match &restored.revoked {
        Some((revoked, token)) => show_once(
            &zeroize::Zeroizing::new(format!(
                "Revoked {revoked} tokens; the root token was replaced.\nRoot token (shown only this once):\n{}\n",
                token.as_str()
            )),
            &format!(
                "the backup was restored and every token revoked, but the new root token could not be shown: make another with strongbox reset-root-token --data-dir {}",
                data_dir.display()
            ),
        )?,
        None => outln!(
            "Tokens are those of the backup's time, also any revoked since; if one may have leaked, restore with --revoke-tokens (revokes them all and replaces the root token)"
        ),
    }
    Ok(())
}

/// `strongbox reset-root-token`: opens the database (refused while the server has it
/// open), replaces the root token, checkpoints and prints the token once.
async fn reset_root_token(
    data_dir: &std::path::Path,
    root_key_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let root = server::load_root_key(root_key_file, env_root_key().as_ref().map(|k| k.as_str()))?;
    let mut u = server::open(data_dir, &root, ServiceConfig::default())?;
    let token = server::reset_root_token(&mut u, "strongbox reset-root-token").await?;
    // Durable once the write returned: shown before the checkpoint, so that a failed
    // checkpoint (the journal keeps the change for the next start) loses no token.
    let shown = show_once(
        &zeroize::Zeroizing::new(format!(
            "Root token of {} replaced; the old one no longer works.\nRoot token (shown only this once):\n{}\n",
            data_dir.display(),
            token.as_str()
        )),
        "the root token was replaced (the old one no longer works), but the new one could not be shown: run strongbox reset-root-token again",
    );
    u.service.store().close().await?;
    shown
}

/// The file in a data dir that says `--dev` made the store (and may take it over).
const DEV_MARKER: &str = "strongbox-dev";

/// Open files kept for other than client connections: the database and its journal,
/// rotations' connections to databases, hosts and webhooks, certificate reloads.
const FILES_RESERVED: u64 = 256;

/// Raises the soft limit of open files to the hard one (systemd and most shells start
/// services at 1024), and returns `max_connections`, lowered when the limit cannot hold
/// that many connections and [`FILES_RESERVED`] more: past it, accepting fails with
/// "too many open files" and so does everything else that opens a file.
fn fit_to_open_files(max_connections: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max_connections;
    };
    // An unlimited hard limit is still capped by the kernel (fs.nr_open).
    let wanted = hard.min(1 << 20);
    let soft = if soft < wanted {
        match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
            Ok(()) => wanted,
            Err(e) => {
                tracing::warn!(error = %e, soft, "could not raise the open-file limit");
                soft
            }
        }
    } else {
        soft
    };
    let room = usize::try_from(soft.saturating_sub(FILES_RESERVED).max(1)).unwrap_or(usize::MAX);
    if max_connections > room {
        tracing::warn!(
            max_connections,
            open_files = soft,
            serving = room,
            "--max-connections lowered to fit the open-file limit (raise it with ulimit -n or LimitNOFILE=)"
        );
        room
    } else {
        max_connections
    }
}

/// The root key from STRONGBOX_ROOT_KEY, if set.
fn env_root_key() -> Option<Zeroizing<String>> {
    std::env::var("STRONGBOX_ROOT_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(Zeroizing::new)
}

/// SIGHUP: the certificate and key files are read again and presented to new
/// connections. Files that cannot be read or do not belong together are refused and the
/// certificate in place stays (a renewal half written does not stop the server).
fn reload_certificate(reload: Option<&(Arc<tls::ServerCertificate>, PathBuf, PathBuf)>) {
    let Some((handle, cert, key)) = reload else {
        tracing::info!("SIGHUP: --dev made its own certificate; nothing to reload");
        return;
    };
    match handle.reload(cert, key) {
        Ok(()) => {
            tracing::info!(cert = %cert.display(), "SIGHUP: TLS certificate reloaded; new connections get it")
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: TLS certificate not reloaded; the one in place stays")
        }
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn init_logging(format: &str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let env = tracing_subscriber::EnvFilter::try_from_env("STRONGBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    // Whatever STRONGBOX_LOG asks: tokio-postgres logs each statement it sends at debug
    // level, and a PostgreSQL rotation sends the new password's SCRAM verifier in one.
    let no_statements = tracing_subscriber::filter::filter_fn(|m| {
        !(m.target().starts_with("tokio_postgres") && *m.level() > tracing::Level::INFO)
    });
    let filter = env.and(no_statements);
    // Colours only on a terminal: a log file or journald gets plain text.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    if format == "json" {
        registry.with(layer.json().with_filter(filter)).init();
    } else {
        registry.with(layer.with_filter(filter)).init();
    }
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // SIGTERM and SIGHUP, caught from the start: one that arrives while the store opens
    // (a service manager's stop or reload) is acted on once the server serves, instead
    // of ending the process unclean. (Ctrl-C still ends a start that takes long.)
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    if let Some(r) = &args.audit_retention
        && r.seconds() < args.audit_min_retention.seconds()
    {
        anyhow::bail!(
            "--audit-retention {} is shorter than --audit-min-retention {}: records are kept at least that long",
            r.as_str(),
            args.audit_min_retention.as_str()
        );
    }
    let config = ServiceConfig {
        max_versions: args.max_versions,
        audit_min_retention_secs: args.audit_min_retention.seconds(),
        audit_retention_secs: args.audit_retention.as_ref().map(|r| r.seconds()),
        rotation: RotationConfig {
            egress: args.rotation_egress_allow.clone().unwrap_or_default(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut _temp = None;
    // The certificate and key files SIGHUP reloads (outside --dev).
    let mut reload = None;
    let (mut unsealed, tls_cfg, ca_path, token) = if args.dev {
        if std::env::var_os("STRONGBOX_ROOT_KEY").is_some_and(|k| !k.is_empty()) {
            anyhow::bail!(
                "--dev makes and keeps its own root key (beside the data dir) and does not use STRONGBOX_ROOT_KEY: unset it, or run without --dev"
            );
        }
        // The dev root key lives beside the data dir, never inside it: DIR.root-key
        // (`sb.v1` and `sb.v2` get keys of their own).
        let (data_dir, key_file) = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                let d = std::fs::canonicalize(d)?;
                let mut name = d.file_name().unwrap_or_default().to_os_string();
                name.push(".root-key");
                let k = d.with_file_name(name);
                // Where releases before this one kept it, for a dir with a dot in its name
                // (only for a store they made: a new one gets a key of its own).
                let legacy = d.with_extension("root-key");
                let k = if !k.exists()
                    && legacy != k
                    && legacy.exists()
                    && server::db_path(&d).exists()
                {
                    legacy
                } else {
                    k
                };
                (d, k)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("strongbox-dev-")
                    .tempdir()?;
                let p = std::fs::canonicalize(t.path())?;
                _temp = Some(t);
                (p.join("data"), p.join("root-key"))
            }
        };
        // A store --dev made says so in a file beside its database (stores of releases
        // before it have the certificate files --dev writes at each start instead).
        let marker = data_dir.join(DEV_MARKER);
        let key = if server::db_path(&data_dir).exists() {
            // A store `strongbox init` made keeps its key elsewhere, or at least has no
            // marker: --dev would replace its root token and serve it with a throwaway
            // certificate.
            let made_by_dev = marker.exists()
                || (data_dir.join("ca.pem").exists() && data_dir.join("tls-key.pem").exists());
            if !key_file.exists() || !made_by_dev {
                anyhow::bail!(
                    "{} holds a database that --dev did not make (no {} beside it, or its key {} is not there): run it with `strongbox server --data-dir … --root-key-file … --tls-cert … --tls-key …`, not --dev",
                    data_dir.display(),
                    DEV_MARKER,
                    key_file.display()
                );
            }
            server::load_root_key(Some(&key_file), None)?
        } else {
            let k = RootKey::random();
            server::init(&data_dir, Some(&key_file), &k)?;
            k
        };
        // Written once the key opened the store: a refused start leaves nothing behind.
        let mut u = server::open(&data_dir, &key, config)?;
        std::fs::write(
            &marker,
            "made by `strongbox server --dev`: a throwaway store, whose root token each start replaces\n",
        )?;
        let token = server::reset_root_token(&mut u, "strongbox server --dev").await?;
        // The certificate names the address clients are told to use (below).
        let ip = args.listen.ip();
        let extra = if ip.is_unspecified() || ip.is_loopback() {
            vec![]
        } else {
            vec![ip.to_string()]
        };
        let certs = tls::dev_certificates_for(&extra)?;
        let ca_path = data_dir.join("ca.pem");
        std::fs::write(&ca_path, &certs.ca_pem)?;
        tls::write_private(&data_dir.join("tls-key.pem"), certs.key_pem.as_bytes())?;
        std::fs::write(data_dir.join("tls-cert.pem"), &certs.cert_pem)?;
        let cfg = tls::server_config(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())?;
        (u, cfg, Some(ca_path), Some(token))
    } else {
        let data_dir = args
            .data_dir
            .context("--data-dir is required (or use --dev)")?;
        let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
            anyhow::bail!(
                "--tls-cert and --tls-key are required: Strongbox never serves plain HTTP (use --dev for a throwaway certificate)"
            );
        };
        // The TLS files first: one that is refused stops the start before the store is
        // opened (which may write to it).
        let cert_pem =
            std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let (cfg, handle) = tls::reloadable_server_config(&cert_pem, &tls::read_key_file(key)?)?;
        let env_key = env_root_key();
        let root = server::load_root_key(
            args.root_key_file.as_deref(),
            env_key.as_ref().map(|k| k.as_str()),
        )?;
        let u = server::open(&data_dir, &root, config)?;
        reload = Some((handle, cert.clone(), key.clone()));
        (u, cfg, None, None)
    };
    let _ = &mut unsealed;
    let running = server::start(
        unsealed,
        ServeOptions {
            listen: args.listen,
            tls: tls_cfg,
            tick_interval: Duration::from_secs(args.tick_interval.max(1)),
            limits: tls::ConnectionLimits {
                max_connections: fit_to_open_files(
                    usize::try_from(args.max_connections).unwrap_or(4096),
                ),
                max_connections_per_address: usize::try_from(args.max_connections_per_address)
                    .unwrap_or(1024),
                idle_timeout: Duration::from_secs(args.idle_timeout),
                unauthenticated_per_second: args.unauthenticated_rate_limit,
                ..Default::default()
            },
        },
    )
    .await?;
    tracing::info!(addr = %running.addr, "serving HTTPS");
    if let (Some(ca), Some(token)) = (ca_path, token) {
        // Listening on every address: clients on this host use the loopback one, which
        // the certificate names.
        let mut addr = running.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        outln!("export STRONGBOX_ADDR=https://{addr}");
        outln!("export STRONGBOX_TOKEN={}", token.as_str());
        outln!("export STRONGBOX_CACERT={}", ca.display());
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => reload_certificate(reload.as_ref()),
        }
    }
    tracing::info!("shutting down");
    let _ = running.stop.send(());
    // In-flight requests get the limits' grace period; then the process ends.
    let grace = tls::ConnectionLimits::default().shutdown_grace;
    let _ = tokio::time::timeout(grace + Duration::from_secs(2), running.task).await;
    Ok(())
}
