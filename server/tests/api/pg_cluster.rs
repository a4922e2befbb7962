//! A throwaway PostgreSQL cluster for tests: `initdb --auth=scram-sha-256` and `pg_ctl`
//! on a free port, run as the `postgres` OS user (PostgreSQL refuses root), every
//! statement logged; stopped when dropped. This machine's main cluster trusts loopback
//! logins, so a wrong password would still log in there: tests use this one and first
//! assert that a wrong password is refused. Shared by the server's API tests, MyApp's
//! test and the Terraform scenario (included with `#[path]`); only std, tempfile and
//! serde_json.
#![allow(dead_code, clippy::unwrap_used)] // test helper: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The directory holding `initdb` and `pg_ctl` (the newest installed PostgreSQL).
fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql; \
             run scripts/install-databases.sh"
        ),
    }
}

/// Runs a PostgreSQL program as the `postgres` OS user (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway PostgreSQL cluster on a free port with `scram-sha-256` for every login
/// and every statement logged; stopped when dropped.
pub(crate) struct PgCluster {
    pub(crate) port: u16,
    /// The superuser `postgres`'s password.
    pub(crate) admin_password: String,
    /// The server log (`log_statement = all`).
    pub(crate) log: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl PgCluster {
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// With `Some((cert_pem, key_pem))`: TLS on, and only TLS logins accepted
    /// (`hostssl` in pg_hba.conf, everything else rejected).
    pub(crate) fn start_with(tls: Option<(&str, &str)>) -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("sbx-pg-")
            .tempdir()
            .unwrap();
        let admin_password = format!(
            "adm-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &admin_password).unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                st.success(),
                "chown to postgres failed (is there a postgres user?)"
            );
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=scram-sha-256",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut ssl = String::new();
        if let Some((cert, key)) = tls {
            let (crt, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&crt, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 scram-sha-256\nhost all all 0.0.0.0/0 reject\nlocal all all scram-sha-256\n",
            )
            .unwrap();
            let chown = |p: &Path| {
                if is_root() {
                    Command::new("chown")
                        .args(["postgres:postgres"])
                        .arg(p)
                        .status()
                        .unwrap();
                }
            };
            chown(&crt);
            chown(&k);
            Command::new("chmod").arg("600").arg(&k).status().unwrap();
            ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                crt.display(),
                k.display()
            );
        }
        let port = free_port();
        let log = dir.path().join("server.log");
        let out = as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k {} -h 127.0.0.1 -c log_statement=all -c fsync=off -c max_connections=200{ssl}",
                dir.path().display()
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            port,
            admin_password,
            log,
            bin,
            data,
            _dir: dir,
        }
    }

    /// The value of the admin secret.
    pub(crate) fn admin_value(&self) -> String {
        account("postgres", &self.admin_password)
    }

    /// `extended_config` of an `Rds` secret on this cluster.
    pub(crate) fn config(&self, sub_type: &str, admin_secret: &str) -> serde_json::Value {
        serde_json::json!({
            "SecretSubType": sub_type, "Host": "127.0.0.1", "Port": self.port,
            "Database": "postgres", "TlsMode": "disable", "AdminSecret": admin_secret,
        })
    }

    /// Runs SQL with `psql` as `user` (password authentication over TCP): the output,
    /// or psql's error text.
    pub(crate) fn psql(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        self.psql_at(self.port, &[], user, password, sql)
    }

    /// [`psql`](Self::psql) to `port` on the loopback address (a relay in front of this
    /// cluster, say), with libpq's `env` settings (`PGSSLMODE`, `PGCHANNELBINDING`, …).
    pub(crate) fn psql_at(
        &self,
        port: u16,
        env: &[(&str, &str)],
        user: &str,
        password: &str,
        sql: &str,
    ) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .envs(env.iter().copied())
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(port.to_string())
            .args(["-U", user, "-d", "postgres", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// `{"AccountName", "AccountPassword"}`.
pub(crate) fn account(name: &str, password: &str) -> String {
    serde_json::json!({"AccountName": name, "AccountPassword": password}).to_string()
}
