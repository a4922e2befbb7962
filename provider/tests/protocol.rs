//! Checks of the generated protocol code: field numbers on the wire and a
//! loopback gRPC round trip through the generated server and client stubs.

use prost::Message;
use terraform_provider_strongbox::value::{Type, Value, decode_msgpack, encode_msgpack};
use terraform_provider_strongbox::{plugin, tfplugin5, tfplugin6};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

#[test]
fn write_only_field_numbers() {
    // v5: write_only = 10 (varint tag 0x50); v6: write_only = 11 (tag 0x58).
    let v5 = tfplugin5::schema::Attribute {
        write_only: true,
        ..Default::default()
    };
    assert_eq!(v5.encode_to_vec(), [0x50, 0x01]);
    let v6 = tfplugin6::schema::Attribute {
        write_only: true,
        ..Default::default()
    };
    assert_eq!(v6.encode_to_vec(), [0x58, 0x01]);
    // v6 nested_type = 10, length-delimited (tag 0x52).
    let nested = tfplugin6::schema::Attribute {
        nested_type: Some(tfplugin6::schema::Object::default()),
        ..Default::default()
    };
    assert_eq!(nested.encode_to_vec(), [0x52, 0x00]);
}

#[test]
fn capability_and_schema_field_numbers() {
    let caps = tfplugin6::ClientCapabilities {
        deferral_allowed: true,
        write_only_attributes_allowed: true,
    };
    assert_eq!(caps.encode_to_vec(), [0x08, 0x01, 0x10, 0x01]);
    let validate = tfplugin5::validate_resource_type_config::Request {
        client_capabilities: Some(tfplugin5::ClientCapabilities::default()),
        ..Default::default()
    };
    assert_eq!(validate.encode_to_vec(), [0x1a, 0x00]);
    let schema = tfplugin6::get_provider_schema::Response {
        ephemeral_resource_schemas: [("x".to_owned(), tfplugin6::Schema::default())].into(),
        ..Default::default()
    };
    // Field 8, map entry {key = "x"} (prost omits the empty Schema value).
    assert_eq!(schema.encode_to_vec(), [0x42, 0x03, 0x0a, 0x01, b'x']);
    let stop = tfplugin5::stop::Response {
        error: "boom".to_owned(),
    };
    assert_eq!(stop.encode_to_vec(), b"\x0a\x04boom");
}

/// A minimal v6 provider: one schema, echoes config in ValidateProviderConfig
/// diagnostics, everything else left to the generated default stubs.
struct Demo;

#[tonic::async_trait]
impl tfplugin6::provider_server::Provider for Demo {
    async fn get_provider_schema(
        &self,
        _request: Request<tfplugin6::get_provider_schema::Request>,
    ) -> Result<Response<tfplugin6::get_provider_schema::Response>, Status> {
        let attribute = tfplugin6::schema::Attribute {
            name: "token".to_owned(),
            r#type: Type::String.to_json().into_bytes(),
            optional: true,
            sensitive: true,
            write_only: true,
            ..Default::default()
        };
        Ok(Response::new(tfplugin6::get_provider_schema::Response {
            provider: Some(tfplugin6::Schema {
                version: 0,
                block: Some(tfplugin6::schema::Block {
                    attributes: vec![attribute],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }))
    }

    async fn validate_provider_config(
        &self,
        request: Request<tfplugin6::validate_provider_config::Request>,
    ) -> Result<Response<tfplugin6::validate_provider_config::Response>, Status> {
        let ty = Type::object([("token", Type::String)]);
        let config = request.into_inner().config.unwrap_or_default();
        let value = decode_msgpack(&config.msgpack, &ty)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let token = value
            .get_attr("token")
            .and_then(Value::as_str)
            .unwrap_or("");
        Ok(Response::new(
            tfplugin6::validate_provider_config::Response {
                diagnostics: vec![tfplugin6::Diagnostic {
                    severity: tfplugin6::diagnostic::Severity::Warning.into(),
                    summary: format!("token is {token}"),
                    ..Default::default()
                }],
            },
        ))
    }
}

struct Controller(tokio::sync::mpsc::Sender<()>);

#[tonic::async_trait]
impl plugin::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(
        &self,
        _request: Request<plugin::Empty>,
    ) -> Result<Response<plugin::Empty>, Status> {
        let _ = self.0.send(()).await;
        Ok(Response::new(plugin::Empty {}))
    }
}

#[tokio::test]
async fn loopback_round_trip() {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tfplugin6::provider_server::ProviderServer::new(Demo))
            .add_service(plugin::grpc_controller_server::GrpcControllerServer::new(
                Controller(stop_tx),
            ))
            .serve_with_incoming_shutdown(incoming, async move {
                stop_rx.recv().await;
            }),
    );

    let endpoint = format!("http://{addr}");
    let mut client = tfplugin6::provider_client::ProviderClient::connect(endpoint.clone())
        .await
        .expect("connect");

    let schema = client
        .get_provider_schema(tfplugin6::get_provider_schema::Request {})
        .await
        .expect("schema")
        .into_inner();
    let attribute = &schema
        .provider
        .expect("provider")
        .block
        .expect("block")
        .attributes[0];
    assert!(attribute.write_only);
    assert_eq!(
        Type::from_json(&attribute.r#type).expect("type"),
        Type::String
    );

    let config = encode_msgpack(
        &Value::object([("token", Value::string("s3cr3t"))]),
        &Type::object([("token", Type::String)]),
    )
    .expect("encode");
    let validated = client
        .validate_provider_config(tfplugin6::validate_provider_config::Request {
            config: Some(tfplugin6::DynamicValue {
                msgpack: config,
                json: Vec::new(),
            }),
        })
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(validated.diagnostics[0].summary, "token is s3cr3t");

    // Methods the provider does not implement answer Unimplemented.
    let status = client
        .open_ephemeral_resource(tfplugin6::open_ephemeral_resource::Request::default())
        .await
        .expect_err("default stub");
    assert_eq!(status.code(), Code::Unimplemented);

    let mut controller = plugin::grpc_controller_client::GrpcControllerClient::connect(endpoint)
        .await
        .expect("connect controller");
    controller
        .shutdown(plugin::Empty {})
        .await
        .expect("shutdown");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stops after Shutdown")
        .expect("server task")
        .expect("server result");
}
