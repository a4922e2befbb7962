//! `StopProvider` (and protocol 5's `Stop`) cancels the reads and plans in flight, and
//! only those: the provider keeps serving afterwards, and an apply under way finishes
//! (its result is the state Terraform keeps).
//!
//! The server address points at a "blackhole": a TCP listener that accepts and then
//! never answers, so a ReadResource against it hangs in the TLS handshake until the
//! client's own 30 s timeout. The test stops it long before that and checks that the
//! call ended with the cancellation diagnostic, not with a timeout.

use std::sync::Arc;

use terraform_provider_strongbox::core::{ObjExt, null_object};
use terraform_provider_strongbox::value::{Type, Value, encode_msgpack};
use terraform_provider_strongbox::{grpc, resources, tfplugin5, tfplugin6};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;

/// Accepts connections and holds them open without a byte in reply; reports each one.
async fn blackhole() -> (String, mpsc::UnboundedReceiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("https://{}", l.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

fn dv(v: &Value, ty: &Type) -> Vec<u8> {
    encode_msgpack(v, ty).expect("encode")
}

const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(120);

/// Serves one protocol's adapter on loopback (plain gRPC: AutoMTLS has its own tests).
async fn serve(routes: tonic::service::Routes) -> String {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let endpoint = format!("http://{}", incoming.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming),
    );
    endpoint
}

/// Provider configuration pointing at `address`, msgpack-encoded.
fn provider_config(address: String) -> Vec<u8> {
    let schema = resources::core().provider_schema;
    let mut config = null_object(&schema);
    config.set("address", Value::string(address));
    config.set("token", Value::string("sbt_not_a_real_token"));
    dv(&config, &schema.object_type())
}

#[tokio::test]
async fn stop_provider_cancels_in_flight_calls_and_the_provider_keeps_serving() {
    let core = Arc::new(resources::core());
    let secret_schema = core.resources["strongbox_secret"].schema();
    let secret_ty = secret_schema.object_type();
    let (_, v6) = grpc::adapters(core);
    let endpoint = serve(tonic::service::Routes::new(
        tfplugin6::provider_server::ProviderServer::new(v6),
    ))
    .await;
    let mut client = tfplugin6::provider_client::ProviderClient::connect(endpoint)
        .await
        .expect("connect");

    let (address, mut accepted) = blackhole().await;
    let configured = client
        .configure_provider(tfplugin6::configure_provider::Request {
            terraform_version: "1.11.4".into(),
            config: Some(tfplugin6::DynamicValue {
                msgpack: provider_config(address),
                json: Vec::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("configure")
        .into_inner();
    assert!(
        configured.diagnostics.is_empty(),
        "{:?}",
        configured.diagnostics
    );

    let mut state = null_object(&secret_schema);
    state.set("name", Value::string("app/db"));
    state.set("id", Value::string("app/db"));
    let read = tfplugin6::read_resource::Request {
        type_name: "strongbox_secret".into(),
        current_state: Some(tfplugin6::DynamicValue {
            msgpack: dv(&state, &secret_ty),
            json: Vec::new(),
        }),
        ..Default::default()
    };

    // Twice: a stop cancels what is in flight, and the next call is served (and can be
    // stopped) again.
    for round in 0..2 {
        let mut c = client.clone();
        let r = read.clone();
        let call = tokio::spawn(async move { c.read_resource(r).await });
        // The provider's request reached the "server": the call is now in flight.
        tokio::time::timeout(HANG_GUARD, accepted.recv())
            .await
            .expect("the provider connects to the server")
            .expect("blackhole running");
        assert!(!call.is_finished(), "round {round}: the call cannot finish");
        client
            .stop_provider(tfplugin6::stop_provider::Request {})
            .await
            .expect("stop_provider");
        let resp = tokio::time::timeout(HANG_GUARD, call)
            .await
            .expect("the call ends after StopProvider")
            .expect("task")
            .expect("a response, not a gRPC error")
            .into_inner();
        let d = &resp.diagnostics;
        assert_eq!(d.len(), 1, "round {round}: {d:?}");
        assert_eq!(d[0].summary, "Operation cancelled", "round {round}: {d:?}");
        assert!(d[0].detail.contains("StopProvider"));
        // Terraform keeps the prior state when a read fails.
        assert_eq!(resp.new_state, read.current_state);
    }

    // Calls that do not touch the server are unaffected.
    let schema = client
        .get_provider_schema(tfplugin6::get_provider_schema::Request {})
        .await
        .expect("schema")
        .into_inner();
    assert!(schema.resource_schemas.contains_key("strongbox_secret"));
}

#[tokio::test]
async fn protocol_5_stop_cancels_a_data_source_read() {
    let core = Arc::new(resources::core());
    let ds_schema = core.data_sources["strongbox_secret"].schema();
    let ds_ty = ds_schema.object_type();
    let (v5, _) = grpc::adapters(core);
    let endpoint = serve(tonic::service::Routes::new(
        tfplugin5::provider_server::ProviderServer::new(v5),
    ))
    .await;
    let mut client = tfplugin5::provider_client::ProviderClient::connect(endpoint)
        .await
        .expect("connect");
    let (address, mut accepted) = blackhole().await;
    client
        .configure(tfplugin5::configure::Request {
            terraform_version: "1.0.3".into(),
            config: Some(tfplugin5::DynamicValue {
                msgpack: provider_config(address),
                json: Vec::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("configure");

    let mut ds = null_object(&ds_schema);
    ds.set("name", Value::string("app/db"));
    let req = tfplugin5::read_data_source::Request {
        type_name: "strongbox_secret".into(),
        config: Some(tfplugin5::DynamicValue {
            msgpack: dv(&ds, &ds_ty),
            json: Vec::new(),
        }),
        ..Default::default()
    };
    let mut c = client.clone();
    let call = tokio::spawn(async move { c.read_data_source(req).await });
    tokio::time::timeout(HANG_GUARD, accepted.recv())
        .await
        .expect("the provider connects to the server")
        .expect("blackhole running");
    client
        .stop(tfplugin5::stop::Request {})
        .await
        .expect("stop");
    let resp = tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("the call ends after Stop")
        .expect("task")
        .expect("a response")
        .into_inner();
    assert_eq!(resp.diagnostics.len(), 1, "{:?}", resp.diagnostics);
    assert_eq!(resp.diagnostics[0].summary, "Operation cancelled");
}

/// A resource whose apply waits to be released: it tells when it has started.
struct Gated {
    schema: terraform_provider_strongbox::core::TfSchema,
    entered: mpsc::UnboundedSender<()>,
    release: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl terraform_provider_strongbox::core::Resource for Gated {
    fn name(&self) -> &'static str {
        "test_gated"
    }
    fn schema(&self) -> terraform_provider_strongbox::core::TfSchema {
        self.schema.clone()
    }
    async fn plan(
        &self,
        _: &terraform_provider_strongbox::core::Ctx,
        _: terraform_provider_strongbox::core::PlanReq<'_>,
    ) -> Result<
        terraform_provider_strongbox::core::PlanResp,
        terraform_provider_strongbox::core::Diags,
    > {
        Err(Vec::new())
    }
    async fn apply(
        &self,
        _: &terraform_provider_strongbox::core::Ctx,
        _: &Value,
        planned: &Value,
        _: &Value,
    ) -> Result<Value, terraform_provider_strongbox::core::Diags> {
        let _ = self.entered.send(());
        if let Some(rx) = self.release.lock().await.take() {
            let _ = rx.await;
        }
        Ok(planned.clone())
    }
    async fn read(
        &self,
        _: &terraform_provider_strongbox::core::Ctx,
        _: &Value,
    ) -> Result<Value, terraform_provider_strongbox::core::Diags> {
        Err(Vec::new())
    }
    async fn import(
        &self,
        _: &terraform_provider_strongbox::core::Ctx,
        _: &str,
    ) -> Result<Value, terraform_provider_strongbox::core::Diags> {
        Err(Vec::new())
    }
}

/// StopProvider does not cut an apply short: it finishes, and its result (here a
/// create's new object) is what Terraform gets and keeps in the state. Cut short, the
/// object would exist on the server and nowhere in the state.
#[tokio::test]
async fn stop_lets_an_apply_under_way_finish() {
    let mut core = resources::core();
    let schema = core.resources["strongbox_secret"].schema();
    let ty = schema.object_type();
    let (entered, mut started) = mpsc::unbounded_channel();
    let (release, gate) = tokio::sync::oneshot::channel();
    core.resources.insert(
        "test_gated",
        Arc::new(Gated {
            schema: schema.clone(),
            entered,
            release: tokio::sync::Mutex::new(Some(gate)),
        }),
    );
    let (_, v6) = grpc::adapters(Arc::new(core));
    let endpoint = serve(tonic::service::Routes::new(
        tfplugin6::provider_server::ProviderServer::new(v6),
    ))
    .await;
    let mut client = tfplugin6::provider_client::ProviderClient::connect(endpoint)
        .await
        .expect("connect");
    let mut planned = null_object(&schema);
    planned.set("name", Value::string("made"));
    planned.set("id", Value::string("made"));
    let encoded = tfplugin6::DynamicValue {
        msgpack: dv(&planned, &ty),
        json: Vec::new(),
    };
    let mut c = client.clone();
    let req = tfplugin6::apply_resource_change::Request {
        type_name: "test_gated".into(),
        prior_state: Some(tfplugin6::DynamicValue {
            msgpack: dv(&Value::Null, &ty),
            json: Vec::new(),
        }),
        planned_state: Some(encoded.clone()),
        config: Some(encoded.clone()),
        ..Default::default()
    };
    let call = tokio::spawn(async move { c.apply_resource_change(req).await });
    tokio::time::timeout(HANG_GUARD, started.recv())
        .await
        .expect("the apply starts")
        .expect("gate");
    client
        .stop_provider(tfplugin6::stop_provider::Request {})
        .await
        .expect("stop_provider");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!call.is_finished(), "the apply was cut short by the stop");
    release.send(()).expect("release");
    let resp = tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("the apply ends")
        .expect("task")
        .expect("a response")
        .into_inner();
    assert!(resp.diagnostics.is_empty(), "{:?}", resp.diagnostics);
    assert_eq!(resp.new_state, Some(encoded));
}
