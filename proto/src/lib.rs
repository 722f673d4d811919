//! Scoria's protobuf schema, compiled. Modules mirror the proto packages:
//! `scoria.rpc.v1` is [`scoria::rpc::v1`].
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all)]

/// The `scoria` proto packages.
pub mod scoria {
    /// The public API (`scoria.v1`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/scoria.v1.rs"));
    }
    /// Messages between Scoria's processes (`scoria.bus.v1`).
    pub mod bus {
        /// Version 1.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/scoria.bus.v1.rs"));
        }
    }
    /// The bus envelopes (`scoria.rpc.v1`).
    pub mod rpc {
        /// Version 1.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/scoria.rpc.v1.rs"));
        }
    }
}

/// The encoded `FileDescriptorSet` of every Scoria proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/scoria_descriptor.bin"));

pub use scoria::{bus::v1 as bus, rpc::v1 as rpc, v1};
