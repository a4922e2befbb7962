//! Creates N secrets one after another through the API and prints the wall time.
//! Used by `scripts/bench-terraform.sh` as the server's own time for the same creates
//! that Terraform makes.
//!
//! `STRONGBOX_ADDR=… STRONGBOX_TOKEN=… STRONGBOX_CACERT=… cargo run --release -p strongbox-client --example create_many -- 200 prefix`

use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().unwrap_or_else(|| "200".into()).parse()?;
    let prefix = args.next().unwrap_or_else(|| "api-bench".into());
    let client = strongbox_client::Client::from_env()?;
    let start = Instant::now();
    for i in 0..n {
        let req = strongbox_schemas::CreateSecretRequest {
            name: format!("{prefix}/s{i}"),
            secret_data: format!("value-{i}"),
            ..Default::default()
        };
        client.create_secret(&req).await?;
    }
    println!(
        "{n} creates through the API: {:.3} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
