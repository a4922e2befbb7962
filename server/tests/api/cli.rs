//! `strongbox principal|token|policy` against a running server, as an operator would.

use std::process::{Command, Output};

use strongbox_client::ErrorCode;

use crate::common::*;

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn ok(s: &TestServer, args: &[&str]) -> String {
    let mut cmd = s.cli(&s.token);
    cmd.args(args);
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "strongbox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn principals_tokens_and_policies_from_the_command_line() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("app/db", "v"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("readers.json");
    std::fs::write(
        &good,
        r#"{"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["kms:GetSecretValue"], "Resource": ["secret/app/*"]},
            {"Effect": "Deny", "Action": ["kms:*"], "Resource": ["secret/app/root"]}]}"#,
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "kms:GetSecretValue", "Resource": "secret/x"},
            {"Effect": "Allow", "Action": "kms:GetSecretValue"}]}"#,
    )
    .unwrap();

    let mut cmd = s.cli(&s.token);
    cmd.args(["policy", "create", "bad", "--file"]).arg(&bad);
    let out = run(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Statement[1].Resource"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");

    let created = ok(
        &s,
        &[
            "policy",
            "create",
            "readers",
            "--description",
            "read app secrets",
            "--file",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert!(created.contains("\"name\": \"readers\""), "{created}");
    let list = ok(&s, &["policy", "list"]).await;
    assert!(list.contains("readers\tcustom\t2 statements"), "{list}");
    assert!(list.contains("AdministratorAccess\tbuilt-in"), "{list}");

    ok(&s, &["principal", "create", "app", "--policy", "readers"]).await;
    let list = ok(&s, &["principal", "list"]).await;
    assert!(list.contains("app\treaders"), "{list}");

    let mut cmd = s.cli(&s.token);
    cmd.args(["token", "create", "app", "--expires-in", "30d"]);
    let out = run(cmd).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only this once"));
    let t: strongbox_schemas::CreatedToken = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t.expires_at.is_some());
    let app = s.client_with_token(&t.token);
    app.get_secret_value("app/db", None, None).await.unwrap();

    let list = ok(&s, &["token", "list", "app"]).await;
    assert!(
        list.contains(&t.token_id) && list.contains("valid"),
        "{list}"
    );
    assert!(!list.contains(&t.token[4..]), "never a token value");
    ok(&s, &["token", "revoke", "app", &t.token_id]).await;
    assert_code(
        app.get_secret_value("app/db", None, None).await,
        ErrorCode::Unauthenticated,
        "token",
    );

    // The policy is in use: the server's refusal reaches the operator.
    let mut cmd = s.cli(&s.token);
    cmd.args(["policy", "delete", "readers"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PolicyInUse"));
    ok(&s, &["principal", "delete", "app"]).await;
    ok(&s, &["policy", "delete", "readers"]).await;
    assert!(!ok(&s, &["principal", "list"]).await.contains("app"));

    // A token without the right is refused, and says so.
    let weak = s
        .principal_token(
            "weak",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:ListKeys", "Resource": "*"}]}),
        )
        .await;
    let mut cmd = s.cli(&weak);
    cmd.args(["principal", "list"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ram:ListPrincipals"));
}

/// What a command refuses before it sends anything, with a message saying why.
/// A token made for a reader that went away (`strongbox token create P | true`) is not
/// lost in silence, as the quiet end of a closed pipe would lose it: the command fails
/// saying which token was made and how to revoke it.
#[tokio::test]
async fn a_new_token_that_cannot_be_shown_is_named_on_stderr() {
    let s = TestServer::start().await;
    s.client
        .create_principal(&strongbox_schemas::CreatePrincipalRequest {
            name: "ci".into(),
            description: None,
            policies: None,
        })
        .await
        .unwrap();
    let mut cmd = s.cli(&s.token);
    cmd.args(["token", "create", "ci"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("could not be shown"), "{err}");
    let tokens = s.client.list_tokens("ci").await.unwrap().tokens;
    assert_eq!(tokens.len(), 1);
    assert!(
        err.contains(&format!("strongbox token revoke ci {}", tokens[0].token_id)),
        "{err}"
    );
}

async fn refused(cmd: Command, needle: &str) {
    let out = run(cmd).await;
    assert!(!out.status.success(), "{needle}: exited 0");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[tokio::test]
async fn bad_command_lines_are_refused_with_a_reason() {
    let s = TestServer::start().await;
    // No token: said so, rather than a 401 from the server.
    let mut no_token = s.cli(&s.token);
    no_token
        .env_remove("STRONGBOX_TOKEN")
        .args(["principal", "list"]);
    refused(no_token, "STRONGBOX_TOKEN is not set").await;
    // An expiry past what a timestamp holds is not turned into 1970.
    ok(&s, &["principal", "create", "far"]).await;
    let mut far = s.cli(&s.token);
    far.args(["token", "create", "far", "--expires-in", "999999999999d"]);
    refused(far, "--expires-in: too far in the future").await;
    assert_eq!(
        ok(&s, &["token", "list", "far"]).await,
        "",
        "no token was made"
    );
    // A poll interval out of range is refused, not quietly changed.
    for bad in ["nan", "0", "inf", "0.001", "7200"] {
        let mut tail = s.cli(&s.token);
        tail.args(["audit", "tail", "--interval", bad]);
        refused(tail, "--interval: a number of seconds from 0.05 to 3600").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tail_starts_with_the_last_records_its_filters_match() {
    let s = TestServer::start().await;
    let app = s
        .principal_with(
            "app",
            serde_json::json!({"Version": "1", "Statement": [
                {"Effect": "Allow", "Action": "kms:DescribeSecret", "Resource": "*"}]}),
        )
        .await;
    for i in 0..3 {
        app.describe_secret(&format!("app/none{i}"))
            .await
            .unwrap_err();
        // Many records by others after each of app's.
        for j in 0..40 {
            s.client
                .describe_secret(&format!("other/{i}/{j}"))
                .await
                .unwrap_err();
        }
    }
    let lines = |out: String| -> Vec<strongbox_schemas::AuditRecord> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // The last two of app's, although the last 2 records overall are someone else's.
    let recs = lines(
        ok(
            &s,
            &[
                "audit",
                "tail",
                "--principal",
                "app",
                "-n",
                "2",
                "--max",
                "2",
            ],
        )
        .await,
    );
    let resources: Vec<&str> = recs.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(resources, ["secret/app/none1", "secret/app/none2"]);
    // Asking for audit:Read shows those records (hidden otherwise).
    let recs = lines(
        ok(
            &s,
            &[
                "audit",
                "tail",
                "--action",
                "audit:Read",
                "-n",
                "1",
                "--max",
                "1",
            ],
        )
        .await,
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].action, "audit:Read");
}

/// Runs a command with `input` on its standard input.
async fn run_with_stdin(cmd: Command, input: &str) -> Output {
    run_with_stdin_bytes(cmd, input.as_bytes()).await
}

/// Runs a command with the bytes `input` on its standard input.
async fn run_with_stdin_bytes(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// A value typed at a terminal (here a pseudo-terminal made by `script`) is asked for
/// with echo off: it never shows in what the terminal displays, and it is stored whole.
#[tokio::test]
async fn a_value_typed_at_a_terminal_is_not_shown() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("tty/s", "old"))
        .await
        .unwrap();
    let typed = "typed-Value-7731";
    let line = format!("{} secret put tty/s", env!("CARGO_BIN_EXE_strongbox"));
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("STRONGBOX_ADDR", s.base())
        .env("STRONGBOX_TOKEN", &s.token)
        .env("STRONGBOX_CACERT", s.ca_file());
    // Typed once the prompt is up, as a person would (input that arrives before the
    // program asks is echoed by the terminal whatever the program does).
    let (ok, shown) = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut shown = Vec::new();
        while !String::from_utf8_lossy(&shown).contains("Value (not shown") {
            let chunk = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("the prompt");
            shown.extend(chunk);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{typed}\n").as_bytes()).unwrap();
        drop(stdin);
        let status = child.wait().unwrap();
        reader.join().unwrap();
        shown.extend(rx.try_iter().flatten());
        (
            status.success(),
            String::from_utf8_lossy(&shown).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(ok, "{shown}");
    assert!(!shown.contains(typed), "the value was echoed: {shown}");
    let v = s
        .client
        .get_secret_value("tty/s", None, None)
        .await
        .unwrap();
    assert_eq!(v.secret_data, typed);
}

#[tokio::test]
async fn secrets_from_the_command_line_with_values_on_stdin_and_stdout() {
    let s = TestServer::start().await;
    let value = r#"{"AccountName":"app","AccountPassword":"pw-cli-0123"}"#;
    let mut create = s.cli(&s.token);
    create.args([
        "secret",
        "create",
        "app/cli",
        "--description",
        "from the CLI",
    ]);
    let out = run_with_stdin(create, &format!("{value}\n")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The value went in without its trailing newline, and comes out as it is.
    assert_eq!(ok(&s, &["secret", "get", "app/cli"]).await, value);
    assert_eq!(
        ok(
            &s,
            &["secret", "get", "app/cli", "--field", "AccountPassword"]
        )
        .await,
        "pw-cli-0123"
    );
    let mut put = s.cli(&s.token);
    put.args(["secret", "put", "app/cli"]);
    let out = run_with_stdin(put, "second\r\n").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&s, &["secret", "get", "app/cli"]).await, "second");
    assert_eq!(
        ok(
            &s,
            &["secret", "get", "app/cli", "--version-stage", "ACSPrevious"]
        )
        .await,
        value
    );
    let d: serde_json::Value =
        serde_json::from_str(&ok(&s, &["secret", "describe", "app/cli"]).await).unwrap();
    assert_eq!(d["description"], "from the CLI");
    assert!(!d.to_string().contains("second"), "describe shows no value");
    assert_eq!(
        ok(&s, &["secret", "list", "--prefix", "app/"]).await,
        "app/cli\n"
    );
    // Fields that are not strings come out exactly as they are written in the value.
    s.client
        .create_secret(&text_secret(
            "app/numbers",
            r#"{"Big":98765432109876543210,"Rate":1.50,"N":{"b":1,"a":2},"S":"a\"b"}"#,
        ))
        .await
        .unwrap();
    for (field, text) in [
        ("Big", "98765432109876543210"),
        ("Rate", "1.50"),
        ("N", r#"{"b":1,"a":2}"#),
        ("S", "a\"b"),
    ] {
        assert_eq!(
            ok(&s, &["secret", "get", "app/numbers", "--field", field]).await,
            text
        );
    }
    // Errors name the secret and field, never the value; an empty value is refused.
    let mut no_field = s.cli(&s.token);
    no_field.args(["secret", "get", "app/cli", "--field", "AccountName"]);
    refused(no_field, "secret app/cli: the value is not JSON").await;
    let mut empty = s.cli(&s.token);
    empty.args(["secret", "put", "app/cli"]);
    let out = run_with_stdin(empty, "\n").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let out = ok(
        &s,
        &[
            "secret",
            "delete",
            "app/cli",
            "--recovery-window-in-days",
            "7",
        ],
    )
    .await;
    assert!(out.contains("restorable"), "{out}");
    let mut gone = s.cli(&s.token);
    gone.args(["secret", "get", "app/cli"]);
    refused(gone, "SecretPendingDeletion").await;
}

/// `strongbox secret get NAME` with a terminal for its output (util-linux `script` gives
/// it a pseudo-terminal); returns its exit status and what the terminal showed.
async fn get_at_a_terminal(s: &TestServer, name: &str) -> (bool, String) {
    let mut cmd = Command::new("script");
    cmd.env("STRONGBOX_ADDR", s.base())
        .env("STRONGBOX_TOKEN", &s.token)
        .env("STRONGBOX_CACERT", s.ca_file())
        .env_remove("RUST_BACKTRACE")
        .args([
            "-qec",
            &format!("{} secret get {name}", env!("CARGO_BIN_EXE_strongbox")),
            "/dev/null",
        ]);
    let out = run(cmd).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Whoever may put a value chooses its bytes: at a terminal, a value with control
/// characters (an escape sequence that would set the clipboard) is refused instead of
/// acted on; into a pipe it still comes byte for byte.
#[tokio::test]
async fn secret_get_writes_no_control_characters_to_a_terminal() {
    let s = TestServer::start().await;
    let evil = "ok\u{1b}]52;c;cGF5bG9hZA==\u{7}";
    s.client
        .create_secret(&text_secret("tty/evil", evil))
        .await
        .unwrap();
    s.client
        .create_secret(&text_secret("tty/plain", "plain-value-77\tcol2"))
        .await
        .unwrap();
    let (ok_status, shown) = get_at_a_terminal(&s, "tty/evil").await;
    assert!(!ok_status, "{shown}");
    assert!(shown.contains("control characters"), "{shown}");
    assert!(!shown.contains("cGF5bG9hZA"), "{shown}");
    let (ok_status, shown) = get_at_a_terminal(&s, "tty/plain").await;
    assert!(ok_status, "{shown}");
    assert!(shown.contains("plain-value-77\tcol2"), "{shown}");
    assert_eq!(ok(&s, &["secret", "get", "tty/evil"]).await, evil);
}

#[tokio::test]
async fn run_puts_secrets_in_the_programs_environment_and_only_them() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret(
            "MyDbCreds",
            r#"{"AccountName":"myapp","AccountPassword":"pw-run-4711","Port":5432}"#,
        ))
        .await
        .unwrap();
    s.client
        .create_secret(&text_secret("api/key", "key-run-0815"))
        .await
        .unwrap();
    let script = r#"printf '%s|%s|%s|%s|%s' "$DB_USER" "$DB_PASSWORD" "$DB_PORT" "$API_KEY" "${STRONGBOX_TOKEN-none}""#;
    let out = ok(
        &s,
        &[
            "run",
            "--env",
            "DB_USER=MyDbCreds:AccountName",
            "--env",
            "DB_PASSWORD=MyDbCreds:AccountPassword",
            "--env",
            "DB_PORT=MyDbCreds:Port",
            "--env",
            "API_KEY=api/key",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .await;
    // The program has its secrets, and not the token that could read others.
    assert_eq!(out, "myapp|pw-run-4711|5432|key-run-0815|none");
    // Kept on request; the root key, in an operator's environment, never.
    let mut keep = s.cli(&s.token);
    keep.env("EXPECTED", &s.token)
        .env("STRONGBOX_ROOT_KEY", "root-key-of-the-operator")
        .args([
            "run",
            "--keep-token",
            "--env",
            "K=api/key",
            "--",
            "sh",
            "-c",
            r#"test "$STRONGBOX_TOKEN" = "$EXPECTED" && printf 'kept|%s' "${STRONGBOX_ROOT_KEY-none}""#,
        ]);
    let out = run(keep).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept|none");

    // The program's exit status is run's.
    let mut status = s.cli(&s.token);
    status.args(["run", "--env", "K=api/key", "--", "sh", "-c", "exit 7"]);
    assert_eq!(run(status).await.status.code(), Some(7));
    // A program that cannot be started: the shell's codes, 127 and 126.
    let mut absent = s.cli(&s.token);
    absent.args(["run", "--env", "K=api/key", "--", "/nonexistent/program"]);
    let out = run(absent).await;
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running /nonexistent/program"));
    let dir = tempfile::tempdir().unwrap();
    let not_exec = dir.path().join("script");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let mut denied = s.cli(&s.token);
    denied
        .args(["run", "--env", "K=api/key", "--"])
        .arg(&not_exec);
    assert_eq!(run(denied).await.status.code(), Some(126));

    // A secret that cannot be read stops the run before the program starts.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let mut missing = s.cli(&s.token);
    missing.args([
        "run",
        "--env",
        "K=api/key",
        "--env",
        "X=not/there",
        "--",
        "touch",
    ]);
    missing.arg(&marker);
    refused(missing, "reading secret not/there").await;
    assert!(!marker.exists(), "the program did not run");
    let mut twice = s.cli(&s.token);
    twice.args([
        "run",
        "--env",
        "K=api/key",
        "--env",
        "K=MyDbCreds",
        "--",
        "true",
    ]);
    refused(twice, "--env K: the variable is set twice").await;
    let mut bad = s.cli(&s.token);
    bad.args(["run", "--env", "1X=api/key", "--", "true"]);
    refused(bad, "is not a variable name").await;
    let mut no_field = s.cli(&s.token);
    no_field.args(["run", "--env", "P=MyDbCreds:Password", "--", "true"]);
    refused(
        no_field,
        "secret MyDbCreds: the value has no field Password",
    )
    .await;
}

/// With `--binary`, standard input is stored byte for byte (a NUL, bytes that are not
/// UTF-8, a trailing newline all kept) as a binary value, and `secret get` writes the
/// same bytes back.
#[tokio::test]
async fn binary_values_from_the_command_line_keep_every_byte() {
    let s = TestServer::start().await;
    let first: &[u8] = b"\x00\xff\xfe keystore \x80\n";
    let mut create = s.cli(&s.token);
    create.args(["secret", "create", "app/keystore", "--binary"]);
    let out = run_with_stdin_bytes(create, first).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |stage: &'static str| {
        let mut cmd = s.cli(&s.token);
        cmd.args(["secret", "get", "app/keystore", "--version-stage", stage]);
        run(cmd)
    };
    assert_eq!(get("ACSCurrent").await.stdout, first);
    let v = s
        .client
        .get_secret_value("app/keystore", None, None)
        .await
        .unwrap();
    assert_eq!(
        v.secret_data_type,
        strongbox_schemas::SecretDataType::Binary
    );
    let second: &[u8] = b"\x01\x02";
    let mut put = s.cli(&s.token);
    put.args(["secret", "put", "app/keystore", "--binary"]);
    let out = run_with_stdin_bytes(put, second).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get("ACSCurrent").await.stdout, second);
    assert_eq!(get("ACSPrevious").await.stdout, first);
    // Without --binary, bytes that are not UTF-8 are refused, not mangled.
    let mut text = s.cli(&s.token);
    text.args(["secret", "put", "app/keystore"]);
    let out = run_with_stdin_bytes(text, first).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}

/// `strongbox run` tries a read again when the error may pass by itself: here the
/// first two connections are closed at once (as while a server restarts), the third
/// reaches the server, and the program runs with its secret. An error that will not
/// pass (no such secret) fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tries_a_read_again_when_the_server_is_not_there_yet() {
    let s = TestServer::start().await;
    s.client
        .create_secret(&text_secret("api/late", "value-after-retry"))
        .await
        .unwrap();
    // In front of the server: drops the first two connections, then forwards.
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let backend = s.addr;
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = front.accept().await {
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    let mut cmd = s.cli(&s.token);
    cmd.env("STRONGBOX_ADDR", format!("https://{front_addr}"))
        .args([
            "run",
            "--env",
            "V=api/late",
            "--",
            "sh",
            "-c",
            r#"printf '%s' "$V""#,
        ]);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "value-after-retry");
    assert_eq!(err.matches("trying again").count(), 2, "{err}");
    assert!(!err.contains("value-after-retry"));

    let mut missing = s.cli(&s.token);
    missing.args(["run", "--env", "V=api/none", "--", "true"]);
    let out = run(missing).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("SecretNotFound"), "{err}");
    assert!(!err.contains("trying again"), "{err}");
}

/// `strongbox key encrypt | decrypt | generate-data-key`: data byte for byte through
/// standard input and output, the context from `--context`, the key from the blob.
#[tokio::test]
async fn encrypt_decrypt_and_data_keys_from_the_command_line() {
    use base64::Engine as _;
    let s = TestServer::start().await;
    let k = s
        .client
        .create_key(&Default::default())
        .await
        .unwrap()
        .key_id;
    s.client.put_alias("alias/files", &k).await.unwrap();
    let data: &[u8] = b"\x00\xff report \x80\n";
    let mut enc = s.cli(&s.token);
    enc.args(["key", "encrypt", "alias/files", "--context", "file=a.pdf"]);
    let out = run_with_stdin_bytes(enc, data).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = String::from_utf8(out.stdout).unwrap();
    assert!(blob.ends_with('\n'));
    assert_eq!(
        s.client
            .decrypt(
                blob.trim(),
                &[("file".to_string(), "a.pdf".to_string())].into()
            )
            .await
            .unwrap()
            .as_slice(),
        data
    );
    let decrypt = |context: &'static [&'static str]| {
        let mut cmd = s.cli(&s.token);
        cmd.args(["key", "decrypt"]);
        for c in context {
            cmd.args(["--context", c]);
        }
        run_with_stdin(cmd, &blob)
    };
    let out = decrypt(&["file=a.pdf"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, data, "every byte, nothing added");
    let out = decrypt(&["file=b.pdf"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidCiphertext"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = decrypt(&["file"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=VALUE"));
    // --key: the key expected, refused when the blob names another.
    let with_key = |key: String| {
        let mut cmd = s.cli(&s.token);
        cmd.args(["key", "decrypt", "--key", &key, "--context", "file=a.pdf"]);
        run_with_stdin(cmd, &blob)
    };
    let out = with_key("alias/files".into()).await;
    assert_eq!(out.stdout, data, "{}", String::from_utf8_lossy(&out.stderr));
    let other = s
        .client
        .create_key(&Default::default())
        .await
        .unwrap()
        .key_id;
    let out = with_key(other).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not made under this key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Re-encrypt under the same key after a rotation: version 2, the same data.
    s.client.rotate_key(&k).await.unwrap();
    let mut cmd = s.cli(&s.token);
    cmd.args([
        "key",
        "re-encrypt",
        "alias/files",
        "--source-context",
        "file=a.pdf",
        "--context",
        "file=b.pdf",
    ]);
    let out = run_with_stdin(cmd, &blob).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = String::from_utf8(out.stdout).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(moved.trim())
        .unwrap();
    assert_eq!(
        strongbox_schemas::ciphertext_blob_key(&raw),
        Some((k.as_str(), 2))
    );
    let mut cmd = s.cli(&s.token);
    cmd.args(["key", "decrypt", "--context", "file=b.pdf"]);
    assert_eq!(run_with_stdin(cmd, &moved).await.stdout, data);
    // More than encrypt takes is refused before anything is sent.
    let mut enc = s.cli(&s.token);
    enc.args(["key", "encrypt", &k]);
    let out = run_with_stdin_bytes(enc, &[b'x'; 6145]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("longer than 6144 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ok(&s, &["key", "generate-data-key", &k, "--spec", "AES_128"]).await;
    let made: strongbox_schemas::GenerateDataKeyResponse = serde_json::from_str(&out).unwrap();
    let plain = base64::engine::general_purpose::STANDARD
        .decode(&made.plaintext)
        .unwrap();
    assert_eq!(plain.len(), 16);
    let mut cmd = s.cli(&s.token);
    cmd.args(["key", "decrypt"]);
    let out = run_with_stdin(cmd, &made.ciphertext_blob).await;
    assert_eq!(out.stdout, plain);
    let out = ok(
        &s,
        &[
            "key",
            "generate-data-key",
            &k,
            "--without-plaintext",
            "--bytes",
            "64",
        ],
    )
    .await;
    let only: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(only.get("plaintext").is_none(), "{only}");
    let mut cmd = s.cli(&s.token);
    cmd.args(["key", "decrypt"]);
    let out = run_with_stdin(cmd, only["ciphertext_blob"].as_str().unwrap()).await;
    assert_eq!(out.stdout.len(), 64);
}
