//! Build script: compiles the protocol definitions in `proto/` into Rust.
//!
//! `protox` (a pure-Rust protobuf compiler, so no system `protoc` is needed)
//! parses the `.proto` files into a `FileDescriptorSet`, which
//! `tonic-prost-build` turns into prost messages plus tonic server and client
//! stubs. The generated files land in `OUT_DIR` as `tfplugin5.rs`,
//! `tfplugin6.rs` and `plugin.rs` and are included by `src/lib.rs`.

use std::error::Error;

/// The protocol definitions compiled by this script, relative to `proto/`.
const PROTOS: [&str; 3] = ["tfplugin5.proto", "tfplugin6.proto", "plugin.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }

    let fds = protox::compile(PROTOS, ["proto"])?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Unimplemented RPCs answer `Unimplemented` instead of failing to
        // compile, so newer protocol methods can be added one at a time.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
