//! Scoria's protobuf schema, compiled. Modules mirror the proto packages:
//! `scoria.rpc.v1` is [`scoria::rpc::v1`].
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all)]

/// The `scoria` proto packages.
pub mod scoria {
    /// The bus envelopes (`scoria.rpc.v1`).
    pub mod rpc {
        /// Version 1.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/scoria.rpc.v1.rs"));
        }
    }
}

/// The encoded `FileDescriptorSet` of every Scoria proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/scoria_descriptor.bin"));

pub use scoria::rpc::v1 as rpc;
