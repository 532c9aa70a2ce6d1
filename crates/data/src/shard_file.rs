//! The binary shard format that the coordinator serves to workers.
//!
//! Layout, in order:
//! 1. the magic bytes `DPSHARD1`;
//! 2. the length of the JSON header in bytes, as a little-endian u32;
//! 3. the JSON header `{"version", "dtype", "rows", "features", "classes",
//!    "scale", "checksum"}`, where `dtype` is `"u8"` or `"f32"` and
//!    `checksum` is the CRC-32 of the payload;
//! 4. the payload: the features in row-major order (one byte each, or
//!    little-endian f32), then one little-endian u32 label per row, or for
//!    a regression shard (`classes` 0) one little-endian f32 target per row.

use std::path::Path;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::dataset::{Dataset, Features};
use crate::error::{DataError, Result};

/// Bytes every shard starts with.
pub const MAGIC: &[u8; 8] = b"DPSHARD1";
/// Header version this crate writes and reads.
pub const VERSION: u32 = 1;

/// Element type of the features in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    U8,
    F32,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F32 => 4,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    dtype: Dtype,
    rows: usize,
    features: usize,
    classes: usize,
    /// Factor that converts a byte feature to f32, or 1 for f32 features.
    scale: f32,
    checksum: u32,
}

/// Only the version field, read first so that a header of another version
/// gets a version error rather than a complaint about its fields.
#[derive(Deserialize)]
struct HeaderVersion {
    version: u32,
}

/// Encodes a data set in the shard format.
///
/// A byte feature scale that is not finite, which [`Dataset::new`] rejects,
/// is written as JSON `null`, and [`decode`] then rejects the shard.
pub fn encode(dataset: &Dataset) -> Vec<u8> {
    let mut payload = encode_features(&dataset.features);
    payload.reserve(dataset.len() * 4);
    for label in &dataset.labels {
        payload.extend_from_slice(&label.to_le_bytes());
    }
    for target in &dataset.targets {
        payload.extend_from_slice(&target.to_le_bytes());
    }

    let (dtype, scale) = match &dataset.features {
        Features::U8 { scale, .. } => (Dtype::U8, *scale),
        Features::F32(_) => (Dtype::F32, 1.0),
    };
    let header = Header {
        version: VERSION,
        dtype,
        rows: dataset.len(),
        features: dataset.num_features(),
        classes: dataset.classes,
        scale,
        checksum: crc32fast::hash(&payload),
    };
    // A struct of numbers and an enum always serializes.
    let header = serde_json::to_vec(&header).expect("shard header serializes to JSON");
    let header_len = u32::try_from(header.len()).expect("shard header is a few hundred bytes");

    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + header.len() + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&payload);
    bytes
}

/// Decodes a shard, checking the magic bytes, the header, the payload length,
/// the checksum and every label. All sizes are checked against `bytes.len()`
/// before anything is allocated, so garbage input returns an error.
///
/// # Errors
///
/// [`DataError::InvalidShard`] with no path, saying what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Dataset> {
    decode_with_path(bytes, None)
}

/// Writes a data set as a shard file, atomically.
///
/// # Errors
///
/// [`DataError::Io`] naming `path` when writing fails.
pub fn write(path: &Path, dataset: &Dataset) -> Result<()> {
    write_atomic(path, &encode(dataset)).map_err(|error| DataError::io(path, error))
}

/// Reads and decodes a shard file.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read, and
/// [`DataError::InvalidShard`] naming `path` when its content is malformed.
pub fn read(path: &Path) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|error| DataError::io(path, error))?;
    decode_with_path(&bytes, Some(path))
}

fn decode_with_path(bytes: &[u8], path: Option<&Path>) -> Result<Dataset> {
    let invalid = |reason: String| DataError::InvalidShard {
        path: path.map(Path::to_path_buf),
        reason,
    };

    let (header, payload) = split_header(bytes).map_err(invalid)?;
    let (feature_len, expected_len) = payload_layout(&header).map_err(invalid)?;
    if payload.len() != expected_len {
        return Err(invalid(format!(
            "the header declares {expected_len} payload bytes but {} follow it",
            payload.len()
        )));
    }
    let checksum = crc32fast::hash(payload);
    if checksum != header.checksum {
        return Err(invalid(format!(
            "checksum mismatch (header 0x{:08x}, payload 0x{checksum:08x}), \
             the data is corrupt",
            header.checksum
        )));
    }

    let (feature_bytes, label_bytes) = payload.split_at(feature_len);
    let features = decode_features(&header, feature_bytes).map_err(invalid)?;
    let words = label_bytes
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]]);
    let dataset = if header.classes == 0 {
        Dataset::regression(features, words.map(f32::from_le_bytes).collect())
    } else {
        Dataset::new(
            features,
            words.map(u32::from_le_bytes).collect(),
            header.classes,
        )
    };
    dataset.map_err(|error| invalid(error.to_string()))
}

/// Checks the magic bytes, parses the header and returns it with the bytes
/// that follow it.
fn split_header(bytes: &[u8]) -> std::result::Result<(Header, &[u8]), String> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err("missing the DPSHARD1 magic bytes".to_owned());
    };
    let Some((len_bytes, rest)) = rest.split_first_chunk::<4>() else {
        return Err(format!(
            "{} bytes are too short for the header length",
            bytes.len()
        ));
    };
    let header_len = u32::from_le_bytes(*len_bytes) as usize;
    if header_len > rest.len() {
        return Err(format!(
            "the header length is {header_len} bytes but only {} bytes follow",
            rest.len()
        ));
    }
    let (header_bytes, payload) = rest.split_at(header_len);

    let version: HeaderVersion = serde_json::from_slice(header_bytes)
        .map_err(|error| format!("the header is not valid JSON ({error})"))?;
    if version.version != VERSION {
        return Err(format!(
            "unsupported version {}, expected {VERSION}",
            version.version
        ));
    }
    let header: Header = serde_json::from_slice(header_bytes)
        .map_err(|error| format!("invalid header ({error})"))?;
    Ok((header, payload))
}

/// Returns the feature length and the total payload length in bytes that
/// the header declares.
fn payload_layout(header: &Header) -> std::result::Result<(usize, usize), String> {
    let overflow = || {
        format!(
            "the header declares {} rows of {} features, too large to address",
            header.rows, header.features
        )
    };
    let feature_len = header
        .rows
        .checked_mul(header.features)
        .and_then(|n| n.checked_mul(header.dtype.size()))
        .ok_or_else(overflow)?;
    let total = header
        .rows
        .checked_mul(4)
        .and_then(|n| n.checked_add(feature_len))
        .ok_or_else(overflow)?;
    Ok((feature_len, total))
}

fn encode_features(features: &Features) -> Vec<u8> {
    match features {
        Features::U8 { values, .. } => match values.as_slice() {
            Some(slice) => slice.to_vec(),
            None => values.iter().copied().collect(),
        },
        Features::F32(values) => {
            let mut bytes = Vec::with_capacity(values.len() * 4);
            for value in values {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            bytes
        }
    }
}

fn decode_features(header: &Header, bytes: &[u8]) -> std::result::Result<Features, String> {
    let shape = (header.rows, header.features);
    let shape_error = |error: ndarray::ShapeError| format!("invalid feature shape ({error})");
    match header.dtype {
        Dtype::U8 => Ok(Features::U8 {
            values: Array2::from_shape_vec(shape, bytes.to_vec()).map_err(shape_error)?,
            scale: header.scale,
        }),
        Dtype::F32 => {
            let values = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok(Features::F32(
                Array2::from_shape_vec(shape, values).map_err(shape_error)?,
            ))
        }
    }
}

#[cfg(test)]
mod tests;
