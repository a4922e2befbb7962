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
