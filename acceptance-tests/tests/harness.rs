//! Self-tests of the harness that do not need a working provider: the dev server starts
//! and answers, and every Terraform installs `strongbox/strongbox` offline from the
//! private mirror (`terraform init` does not launch the provider).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use strongbox_acceptance_tests::{
    DevServer, PROVIDER_ADDRESS, Terraform, TerraformBin, config, find_workspace_bin, os_arch,
    provider_version,
};

/// A placeholder executable, clearly named, that is good enough for `terraform init`
/// (which never runs it) and fails as soon as Terraform launches it.
fn placeholder_provider(dir: &tempfile::TempDir) -> PathBuf {
    let p = dir
        .path()
        .join("PLACEHOLDER-not-terraform-provider-strongbox");
    fs::write(
        &p,
        "#!/bin/sh\necho 'placeholder for the harness self-test, not the provider' >&2\nexit 1\n",
    )
    .expect("write the placeholder");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
        .expect("make the placeholder executable");
    p
}

#[test]
fn a_hanging_command_is_killed_with_a_report() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let sleeper = scratch.path().join("PLACEHOLDER-hanging-provider");
    fs::write(&sleeper, "#!/bin/sh\nsleep 60\n").expect("write the sleeper");
    fs::set_permissions(&sleeper, fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = TerraformBin::all().pop().expect("a terraform");
    let tf = Terraform::builder(&bin)
        .provider_binary(&sleeper)
        .timeout(Duration::from_secs(3))
        .build();
    tf.write_config(&config(""));
    tf.init();
    let started = Instant::now();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tf.run(&["plan", "-no-color", "-input=false"]);
    }));
    let message = panicked
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .expect("the hanging plan should panic with a report");
    assert!(message.contains("killed after"), "{message}");
    assert!(message.contains("last 60 lines of tf.log"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn dev_server_starts_and_answers_health() {
    let srv = DevServer::start();
    assert!(
        srv.addr().starts_with("https://127.0.0.1:"),
        "{}",
        srv.addr()
    );
    assert!(!srv.addr().ends_with(":0"), "{}", srv.addr());
    assert!(!srv.token().is_empty());
    let pem = fs::read_to_string(srv.ca_cert()).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
    let health = srv.block_on(srv.client().health()).unwrap();
    assert_eq!(health.status, "ok", "{health:?}");
    // An authenticated call works too (the token is right).
    let keys = srv
        .block_on(srv.client().list_aliases())
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log_tail(40)));
    assert!(keys.aliases.is_empty(), "{keys:?}");
    let env = srv.env();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["STRONGBOX_ADDR", "STRONGBOX_TOKEN", "STRONGBOX_CACERT"]
    );
}

#[test]
fn both_terraform_versions_are_available() {
    let all = TerraformBin::all();
    let versions: Vec<&str> = all.iter().map(|t| t.version()).collect();
    eprintln!("terraform versions: {versions:?}");
    if std::env::var_os("STRONGBOX_TF_VERSIONS").is_none() {
        assert!(versions.contains(&"1.0.3"), "{versions:?}");
        assert!(
            all.iter().any(|t| t.supports_write_only()),
            "no Terraform >= 1.11 on PATH: {versions:?}"
        );
    }
}

#[test]
fn terraform_init_installs_the_provider_offline_on_every_version() {
    let srv = DevServer::start();
    let scratch = tempfile::tempdir().unwrap();
    // The placeholder always (init must not depend on the provider's state), and the
    // built provider too once it exists.
    let mut providers = vec![(placeholder_provider(&scratch), true)];
    match find_workspace_bin("terraform-provider-strongbox") {
        Some(p) => providers.push((p, false)),
        None => eprintln!("the provider is not built yet: testing with the placeholder only"),
    }
    let version = provider_version();
    for (bin, (provider, placeholder)) in TerraformBin::all()
        .into_iter()
        .flat_map(|b| providers.iter().map(move |p| (b.clone(), p)))
    {
        eprintln!("===== {bin} with {} =====", provider.display());
        let tf = Terraform::builder(&bin)
            .server(&srv)
            .protocols(Some("5"))
            .provider_binary(provider)
            .build();
        // The harness's environment is what the provider will see.
        let env = tf.env();
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("STRONGBOX_ADDR"), Some(srv.addr()));
        assert_eq!(get("STRONGBOX_PROVIDER_PROTOCOLS"), Some("5"));
        assert_eq!(get("CHECKPOINT_DISABLE"), Some("1"));
        assert_eq!(get("TF_IN_AUTOMATION"), Some("1"));

        tf.write_config(&config(""));
        let out = tf.init();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("Installed strongbox/strongbox v{version}")),
            "{stdout}"
        );
        // The lock file pins the fresh copy's h1: hash for this platform only.
        let lock = fs::read_to_string(tf.work_dir().join(".terraform.lock.hcl")).unwrap();
        assert!(
            lock.contains(&format!("provider \"{PROVIDER_ADDRESS}\"")),
            "{lock}"
        );
        assert!(lock.contains(&format!("version = \"{version}\"")), "{lock}");
        assert!(lock.contains("\"h1:"), "{lock}");
        let installed = tf
            .work_dir()
            .join(".terraform/providers")
            .join(PROVIDER_ADDRESS)
            .join(&version)
            .join(os_arch());
        assert!(installed.exists(), "{} missing", installed.display());
        // TF_LOG=trace went to tf.log in the work dir.
        assert!(tf.log_tail(5).contains("[TRACE]") || tf.log_tail(200).contains("TRACE"));

        // Offline and scoped: any other provider has no installation method.
        let other = Terraform::builder(&bin).provider_binary(provider).build();
        other.write_config(
            "terraform {\n  required_providers {\n    null = { source = \"hashicorp/null\" }\n  }\n}\n",
        );
        other.expect_error(&["init", "-input=false", "-no-color"], &["hashicorp/null"]);

        if *placeholder {
            // Commands that launch the provider fail, and the failure report carries
            // the command, the exit code, stderr and the tail of tf.log.
            let args = ["plan", "-no-color", "-input=false"];
            let out = tf.run_expect(&args, &[1]);
            let report = tf.report(&args, &out, "self-test");
            assert!(report.contains("exit code: 1"), "{report}");
            assert!(report.contains("--- stderr ---"), "{report}");
            assert!(report.contains("plugin"), "{report}");
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tf.run_ok(&args);
            }));
            assert!(panicked.is_err());
        }
    }
}
