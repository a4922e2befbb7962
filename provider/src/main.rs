//! `terraform-provider-strongbox`: started by Terraform through go-plugin.
//!
//! Started by hand it explains itself and exits 1; `--debug` serves without Terraform
//! launching it and prints `TF_REATTACH_PROVIDERS`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use terraform_provider_strongbox::plugin_host::{self, Incoming, Shutdown};
use terraform_provider_strongbox::{grpc, resources, tfplugin5, tfplugin6};

const SOURCE: &str = "registry.terraform.io/strongbox/strongbox";
/// Terraform accepts messages up to this size; tonic's default is 4 MiB.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

fn main() {
    let debug = std::env::args().any(|a| a == "--debug");
    if !debug
        && std::env::var(plugin_host::MAGIC_COOKIE_KEY).as_deref()
            != Ok(plugin_host::MAGIC_COOKIE_VALUE)
    {
        eprintln!(
            "This binary is a plugin. These are not meant to be executed directly.\n\
             Please execute the program that consumes these plugins, which will\n\
             load any plugins automatically (Terraform), or run it with --debug."
        );
        std::process::exit(1);
    }
    // Logs go to stderr (Terraform reads them as provider logs); stdout is the handshake.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRONGBOX_PROVIDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("[ERROR] cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    // Removed when `run` ends, also by a panic that unwinds out of it (the exits below
    // run no destructors, so it is dropped before them).
    let cleanup = RemoveSocketDir;
    let result = rt.block_on(run(debug));
    drop(cleanup);
    if let Err(e) = result {
        eprintln!("[ERROR] {e:#}");
        std::process::exit(1);
    }
    // Do not wait for lingering connections: Terraform kills us after 2 s otherwise.
    std::process::exit(0);
}

/// Removes the plaintext socket's directory when dropped.
struct RemoveSocketDir;

impl Drop for RemoveSocketDir {
    fn drop(&mut self) {
        plugin_host::remove_socket_dir();
    }
}

async fn run(debug: bool) -> anyhow::Result<()> {
    // A terminal Ctrl-C reaches the whole process group; Terraform stops us over gRPC.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let restrict = std::env::var("STRONGBOX_PROVIDER_PROTOCOLS").ok();
    let version = if debug {
        plugin_host::negotiate(Some("5,6"), restrict.as_deref()).map_err(anyhow::Error::msg)?
    } else {
        plugin_host::negotiate(
            std::env::var("PLUGIN_PROTOCOL_VERSIONS").ok().as_deref(),
            restrict.as_deref(),
        )
        .map_err(anyhow::Error::msg)?
    };
    let client_cert = if debug {
        None
    } else {
        std::env::var("PLUGIN_CLIENT_CERT")
            .ok()
            .filter(|c| !c.is_empty())
    };
    // SIGTERM (a supervisor, `kill`): leave at once, without the socket's directory;
    // caught before the directory is made.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        if sigterm.recv().await.is_some() {
            plugin_host::remove_socket_dir();
            std::process::exit(143);
        }
    });
    let (addr, cert_der, incoming) = plugin_host::listen(client_cert.as_deref()).await?;
    if cert_der.is_some() {
        plugin_host::warm_up();
    }
    tracing::info!(network = addr.network(), address = %addr, "serving");

    let core = Arc::new(resources::core());
    let (v5, v6) = grpc::adapters(core);
    let shutdown = Shutdown::default();
    let router = tonic::transport::Server::builder()
        .add_service(
            tfplugin5::provider_server::ProviderServer::new(v5)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            tfplugin6::provider_server::ProviderServer::new(v6)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(plugin_host::controller(shutdown.clone()));

    if debug {
        println!("Provider started in debug mode. To attach Terraform, run:\n");
        println!(
            "\texport TF_REATTACH_PROVIDERS='{}'",
            plugin_host::reattach_json(SOURCE, version, &addr)
        );
    } else {
        println!(
            "{}",
            plugin_host::handshake_line(version, &addr, cert_der.as_deref())
        );
    }
    std::io::stdout().flush()?;

    let stop = {
        let s = shutdown.clone();
        async move {
            tokio::select! {
                _ = s.wait() => {}
                _ = async { loop { let _ = sigint.recv().await; if debug { break; } } } => {}
            }
            // Give the Shutdown reply a moment to leave, then stop.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match incoming {
        Incoming::Tls(s) => router.serve_with_incoming_shutdown(s, stop).await?,
        Incoming::Plain(s) => router.serve_with_incoming_shutdown(s, stop).await?,
    }
    Ok(())
}
