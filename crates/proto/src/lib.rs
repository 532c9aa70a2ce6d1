//! Generated gRPC types and services for the Downpour roles, plus the
//! conversion between f32 slices and the little-endian bytes they travel as.

#![allow(missing_docs, unreachable_pub)] // generated code

/// Messages and services of the `downpour.v1` package.
pub mod v1 {
    tonic::include_proto!("downpour.v1");
}

mod f32_bytes;

pub use f32_bytes::{
    F32BytesError, decode_bf16s_into, decode_f32s, decode_f32s_into, encode_bf16s,
    encode_bf16s_reusing, encode_f32s, encode_f32s_reusing,
};

pub mod auth;
pub mod transport;
