//! Generates the beckon.v1 gRPC code with a vendored protoc, so no system protoc is needed.

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
        .file_descriptor_set_path(out_dir.join("beckon_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    Ok(())
}
