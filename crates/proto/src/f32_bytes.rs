//! θ and gradients travel as raw little-endian f32 bytes; gradients may
//! travel as bfloat16 instead, at half the size.

use bytes::{Bytes, BytesMut};

/// A byte field that cannot hold f32 values of the expected count.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum F32BytesError {
    #[error("byte length {len} is not a multiple of {width}")]
    Misaligned { len: usize, width: usize },
    #[error("expected {expected} values, got {actual}")]
    WrongCount { expected: usize, actual: usize },
}

/// Encodes f32 values as little-endian bytes.
pub fn encode_f32s(values: &[f32]) -> Bytes {
    if cfg!(target_endian = "little") {
        Bytes::copy_from_slice(bytemuck::cast_slice(values))
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Encodes f32 values as little-endian bytes into `buffer` and hands them
/// out as `Bytes`. Once every handle to the bytes of the previous call is
/// dropped, the buffer reuses their memory instead of allocating.
pub fn encode_f32s_reusing(values: &[f32], buffer: &mut BytesMut) -> Bytes {
    buffer.clear();
    buffer.reserve(values.len() * 4);
    if cfg!(target_endian = "little") {
        buffer.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        for value in values {
            buffer.extend_from_slice(&value.to_le_bytes());
        }
    }
    buffer.split().freeze()
}

/// Like [`encode_f32s_reusing`], as little-endian bfloat16 (see
/// [`encode_bf16s`]).
pub fn encode_bf16s_reusing(values: &[f32], buffer: &mut BytesMut) -> Bytes {
    buffer.clear();
    buffer.resize(values.len() * 2, 0);
    for (pair, &value) in buffer.chunks_exact_mut(2).zip(values) {
        pair.copy_from_slice(&half::bf16::from_f32(value).to_le_bytes());
    }
    buffer.split().freeze()
}

/// Decodes little-endian f32 bytes into a new vector.
///
/// # Errors
///
/// Returns [`F32BytesError::Misaligned`] when the length is not a multiple
/// of 4.
pub fn decode_f32s(bytes: &[u8]) -> Result<Vec<f32>, F32BytesError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(F32BytesError::Misaligned {
            len: bytes.len(),
            width: 4,
        });
    }
    let mut out = vec![0.0; bytes.len() / 4];
    decode_f32s_into(bytes, &mut out)?;
    Ok(out)
}

/// Decodes little-endian f32 bytes into `out`, which must have room for
/// exactly `bytes.len() / 4` values.
///
/// # Errors
///
/// Returns an error when the length is misaligned or does not match `out`.
pub fn decode_f32s_into(bytes: &[u8], out: &mut [f32]) -> Result<(), F32BytesError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(F32BytesError::Misaligned {
            len: bytes.len(),
            width: 4,
        });
    }
    if bytes.len() / 4 != out.len() {
        return Err(F32BytesError::WrongCount {
            expected: out.len(),
            actual: bytes.len() / 4,
        });
    }
    if cfg!(target_endian = "little") {
        // `out` is f32-aligned, so viewing it as bytes is always valid,
        // while `bytes` may start at any address.
        bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes);
    } else {
        for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    Ok(())
}

/// Encodes f32 values as little-endian bfloat16, rounding each to the
/// nearest representable value (ties to even).
pub fn encode_bf16s(values: &[f32]) -> Bytes {
    encode_bf16s_reusing(values, &mut BytesMut::new())
}

/// Decodes little-endian bfloat16 bytes into `out`, which must have room for
/// exactly `bytes.len() / 2` values.
///
/// # Errors
///
/// Returns an error when the length is misaligned or does not match `out`.
pub fn decode_bf16s_into(bytes: &[u8], out: &mut [f32]) -> Result<(), F32BytesError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(F32BytesError::Misaligned {
            len: bytes.len(),
            width: 2,
        });
    }
    if bytes.len() / 2 != out.len() {
        return Err(F32BytesError::WrongCount {
            expected: out.len(),
            actual: bytes.len() / 2,
        });
    }
    for (value, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *value = half::bf16::from_le_bytes([pair[0], pair[1]]).to_f32();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_preserves_values() {
        let values = [0.0, -1.5, f32::MIN_POSITIVE, 3.25e7];
        let decoded = decode_f32s(&encode_f32s(&values)).unwrap();
        assert_eq!(decoded, values);
    }

    #[test]
    fn reusing_encoders_reuse_memory() {
        let values = [1.5f32, -2.0, 3.25];
        let mut buffer = BytesMut::new();

        let first = encode_f32s_reusing(&values, &mut buffer);
        assert_eq!(first, encode_f32s(&values));
        let address = first.as_ptr();
        drop(first);
        let second = encode_f32s_reusing(&values, &mut buffer);
        assert_eq!(second.as_ptr(), address, "the freed memory is reused");

        let bf16 = encode_bf16s_reusing(&values, &mut buffer);
        assert_eq!(bf16, encode_bf16s(&values));
    }

    #[test]
    fn decode_accepts_unaligned_input() {
        let encoded = encode_f32s(&[1.5, -2.0]);
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&encoded);
        let mut out = [0.0; 2];

        decode_f32s_into(&shifted[1..], &mut out).unwrap();

        assert_eq!(out, [1.5, -2.0]);
    }

    #[test]
    fn misaligned_length_is_rejected() {
        assert_eq!(
            decode_f32s(&[0, 0, 0]),
            Err(F32BytesError::Misaligned { len: 3, width: 4 })
        );
    }

    #[test]
    fn bf16_round_trip_rounds_to_even() {
        let values = [0.0, 1.0, -2.5, 1.0 + 1.0 / 256.0, 3.0e-5, f32::INFINITY];
        let encoded = encode_bf16s(&values);
        assert_eq!(encoded.len(), values.len() * 2);
        let mut decoded = [0.0; 6];

        decode_bf16s_into(&encoded, &mut decoded).unwrap();

        assert_eq!(decoded[..3], values[..3]);
        // 1 + 2^-8 lies halfway between two bf16 values and rounds to even.
        assert_eq!(decoded[3], 1.0);
        assert!((decoded[4] - 3.0e-5).abs() / 3.0e-5 < 1.0 / 128.0);
        assert_eq!(decoded[5], f32::INFINITY);
    }

    #[test]
    fn bf16_rejects_odd_length() {
        let mut out = [0.0; 1];
        assert_eq!(
            decode_bf16s_into(&[0, 0, 0], &mut out),
            Err(F32BytesError::Misaligned { len: 3, width: 2 })
        );
    }

    #[test]
    fn wrong_count_is_rejected() {
        let mut out = [0.0; 2];
        assert_eq!(
            decode_f32s_into(&[0; 4], &mut out),
            Err(F32BytesError::WrongCount {
                expected: 2,
                actual: 1
            })
        );
    }
}
