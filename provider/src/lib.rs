//! `terraform-provider-strongbox`: a Terraform provider for Strongbox that
//! speaks the Terraform plugin gRPC protocol (versions 5.8 and 6.8) itself.
//!
//! This crate currently provides the building blocks:
//!
//! * [`tfplugin5`] and [`tfplugin6`]: prost messages and tonic server/client
//!   stubs generated from Strongbox's own `proto/tfplugin5.proto` and
//!   `proto/tfplugin6.proto` (package names `tfplugin5` / `tfplugin6`,
//!   service `Provider`).
//! * [`plugin`]: go-plugin's side services (`GRPCController`, `GRPCStdio`,
//!   `GRPCBroker`), generated from `proto/plugin.proto`.
//! * [`value`]: a codec for cty values as Terraform puts them in
//!   `DynamicValue` (msgpack) and `RawState` (JSON).

pub mod core;
pub mod grpc;
pub mod plugin_host;
pub mod resources;
pub mod value;

/// Terraform plugin protocol 5 (minor version 5.8), package `tfplugin5`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod tfplugin5 {
    include!(concat!(env!("OUT_DIR"), "/tfplugin5.rs"));
}

/// Terraform plugin protocol 6 (minor version 6.8), package `tfplugin6`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod tfplugin6 {
    include!(concat!(env!("OUT_DIR"), "/tfplugin6.rs"));
}

/// go-plugin's auxiliary services, package `plugin`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod plugin {
    include!(concat!(env!("OUT_DIR"), "/plugin.rs"));
}
