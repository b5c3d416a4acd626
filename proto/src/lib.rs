//! The gRPC contracts of Beckon, package `beckon.v1`: one service per component.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    // Messages and servers, then the clients over the same messages (see the build script).
    tonic::include_proto!("beckon.v1");
    include!(concat!(env!("OUT_DIR"), "/clients/beckon.v1.rs"));
}

/// Encoded file descriptors of every service, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("beckon_descriptor");

pub mod codec;
pub mod convert;
pub mod internal;
