//! Generates the beckon.v1 gRPC code with a vendored protoc, so no system protoc is needed.
//!
//! Two passes: the messages and the servers, whose decoder is Beckon's own (a request that
//! cannot be decoded is the caller's error), then the clients alone, over the same messages
//! and with the stock decoder (an answer that cannot be decoded is not the caller's fault).

#![allow(unsafe_code)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    // SAFETY: a build script runs on one thread, and prost-build reads PROTOC from the
    // environment; nothing else is running that could read the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    println!("cargo:rerun-if-changed=beckon");

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "beckon/v1/common.proto",
        "beckon/v1/ingest.proto",
        "beckon/v1/user_state.proto",
        "beckon/v1/journeys.proto",
        "beckon/v1/scheduler.proto",
        "beckon/v1/gateway.proto",
    ];
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::RequestCodec")
        .file_descriptor_set_path(out_dir.join("beckon_descriptor.bin"))
        .compile_protos(&files, &["."])?;

    let clients = out_dir.join("clients");
    std::fs::create_dir_all(&clients)?;
    tonic_prost_build::configure()
        .build_server(false)
        .extern_path(".beckon.v1", "crate::v1")
        .out_dir(&clients)
        .compile_protos(&files, &["."])?;
    Ok(())
}
