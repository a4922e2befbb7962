//! Real databases for the rotation tests: a throwaway PostgreSQL cluster with SCRAM
//! password authentication (this machine's main cluster trusts loopback logins, so a
//! wrong password would still log in there), and accounts on the local MariaDB
//! (127.0.0.1:3306, root without a password). Both are installed and started by
//! `scripts/install-databases.sh`; when one is missing the tests fail, never skip.

use mysql_async::prelude::Queryable as _;

pub(crate) use crate::pg_cluster::{PgCluster, account};

/// MariaDB/MySQL reachable by the tests.
pub(crate) const MYSQL_HOST: &str = "127.0.0.1";
/// Its port.
pub(crate) const MYSQL_PORT: u16 = 3306;

impl PgCluster {
    /// A connection as `user`.
    pub(crate) async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db);
        let (client, conn) = c.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// A connection as the superuser.
    pub(crate) async fn admin(&self) -> tokio_postgres::Client {
        self.connect("postgres", &self.admin_password, "postgres")
            .await
            .expect("the throwaway cluster refuses its superuser")
    }

    /// Logs in and runs `SELECT 1`: `Ok` or the SQLSTATE of the refusal.
    pub(crate) async fn login(&self, user: &str, password: &str) -> Result<(), String> {
        match self.connect(user, password, "postgres").await {
            Ok(c) => c
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e
                .as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_else(|| e.to_string())),
        }
    }

    /// Asserts that the cluster checks passwords: a wrong one is refused (28P01).
    pub(crate) async fn assert_wrong_password_refused(&self) {
        let r = self.login("postgres", "not-the-password").await;
        assert_eq!(
            r,
            Err("28P01".to_string()),
            "a wrong password must be refused, or the tests prove nothing"
        );
    }
}

/// A unique name for accounts and databases (fits MySQL's 32 characters with `_clone`).
pub(crate) fn unique(tag: &str) -> String {
    format!("sbx{:08x}_{tag}", rand::random::<u32>())
}

/// A connection to MariaDB as `user`.
pub(crate) async fn mysql_connect(
    user: &str,
    password: &str,
    db: Option<&str>,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(MYSQL_HOST)
        .tcp_port(MYSQL_PORT)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db)
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await
}

/// MariaDB as root; fails the test with a clear message when it is not there.
pub(crate) async fn mysql_root() -> mysql_async::Conn {
    mysql_connect("root", "", None).await.unwrap_or_else(|e| {
        panic!(
            "MariaDB is not reachable as root on {MYSQL_HOST}:{MYSQL_PORT} ({e}); \
             run scripts/install-databases.sh"
        )
    })
}

/// Logs into MariaDB and runs `SELECT 1`: `Ok` or the server's error code.
pub(crate) async fn mysql_login(user: &str, password: &str, db: &str) -> Result<(), String> {
    match mysql_connect(user, password, Some(db)).await {
        Ok(mut c) => {
            let r = c.query_drop("SELECT 1").await.map_err(|e| e.to_string());
            let _ = c.disconnect().await;
            r
        }
        Err(mysql_async::Error::Server(s)) => Err(s.code.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A database and an account `user@'%'` with `password` and `SELECT` on the database's
/// table `t` (one row); the admin secret value is root's. Dropped by [`MysqlApp::drop_all`].
pub(crate) struct MysqlApp {
    pub db: String,
    pub user: String,
}

impl MysqlApp {
    pub(crate) async fn create(tag: &str, password: &str) -> Self {
        let user = unique(tag);
        let db = user.clone();
        let mut root = mysql_root().await;
        root.query_drop(format!("CREATE DATABASE `{db}`"))
            .await
            .unwrap();
        root.query_drop(format!("CREATE TABLE `{db}`.t (x INT)"))
            .await
            .unwrap();
        root.query_drop(format!("INSERT INTO `{db}`.t VALUES (42)"))
            .await
            .unwrap();
        // DDL takes no parameters; the test passwords hold no quote.
        assert!(!password.contains(['\'', '\\']));
        root.query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        ))
        .await
        .unwrap();
        root.query_drop(format!("GRANT SELECT ON `{db}`.* TO '{user}'@'%'"))
            .await
            .unwrap();
        root.disconnect().await.unwrap();
        Self { db, user }
    }

    /// The admin secret value (root, empty password).
    pub(crate) fn admin_value() -> String {
        account("root", "")
    }

    pub(crate) fn config(&self, sub_type: &str, admin_secret: &str) -> serde_json::Value {
        serde_json::json!({
            "SecretSubType": sub_type, "Host": MYSQL_HOST, "Port": MYSQL_PORT,
            "Database": self.db, "TlsMode": "disable", "AdminSecret": admin_secret,
        })
    }

    /// Reads the table as `user`: the grants work.
    pub(crate) async fn read_table(&self, user: &str, password: &str) -> Result<i32, String> {
        let mut c = mysql_connect(user, password, Some(&self.db))
            .await
            .map_err(|e| e.to_string())?;
        let x: Option<i32> = c
            .query_first("SELECT x FROM t")
            .await
            .map_err(|e| e.to_string())?;
        let _ = c.disconnect().await;
        x.ok_or_else(|| "no row".to_string())
    }

    /// Drops the accounts (`user` and its clone) and the database.
    pub(crate) async fn drop_all(&self) {
        let mut root = mysql_root().await;
        for u in [self.user.clone(), format!("{}_clone", self.user)] {
            root.query_drop(format!("DROP USER IF EXISTS '{u}'@'%'"))
                .await
                .unwrap();
        }
        root.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.db))
            .await
            .unwrap();
        let _ = root.disconnect().await;
    }
}
