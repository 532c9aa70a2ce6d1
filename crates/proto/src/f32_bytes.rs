//! θ and gradients travel as raw little-endian f32 bytes.

use bytes::Bytes;

/// A byte field that cannot hold f32 values of the expected count.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum F32BytesError {
    #[error("byte length {len} is not a multiple of 4")]
    Misaligned { len: usize },
    #[error("expected {expected} f32 values, got {actual}")]
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

/// Decodes little-endian f32 bytes into a new vector.
///
/// # Errors
///
/// Returns [`F32BytesError::Misaligned`] when the length is not a multiple
/// of 4.
pub fn decode_f32s(bytes: &[u8]) -> Result<Vec<f32>, F32BytesError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(F32BytesError::Misaligned { len: bytes.len() });
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
        return Err(F32BytesError::Misaligned { len: bytes.len() });
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
            Err(F32BytesError::Misaligned { len: 3 })
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
