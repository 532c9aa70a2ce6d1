//! The binary shard format that the coordinator serves to workers.
//!
//! Layout, in order:
//! 1. the magic bytes `DPSHARD1`;
//! 2. the length of the JSON header in bytes, as a little-endian u32;
//! 3. the JSON header `{"version", "dtype", "rows", "features", "classes",
//!    "scale", "checksum"}`, where `dtype` is `"u8"`, `"f32"` or `"csr"`
//!    and `checksum` is the CRC-32 of the payload; a `"csr"` header adds
//!    `"entries"`, the number of stored values;
//! 4. the payload: the features, then one little-endian u32 label per row,
//!    or for a regression shard (`classes` 0) one little-endian f32 target
//!    per row. Dense features are row-major, one byte or one little-endian
//!    f32 per value. CSR features are `rows + 1` little-endian u64 row
//!    offsets, then `entries` little-endian u32 feature indices, then
//!    `entries` little-endian f32 values.

use std::path::Path;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::dataset::{Dataset, Features};
use crate::error::{DataError, Result};
use crate::formats::table::SparseRows;

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
    /// Compressed sparse rows of f32 values.
    Csr,
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
    /// Stored values of CSR features; absent for dense features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entries: Option<usize>,
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

    let (dtype, scale, entries) = match &dataset.features {
        Features::U8 { scale, .. } => (Dtype::U8, *scale, None),
        Features::F32(_) => (Dtype::F32, 1.0, None),
        Features::Sparse { rows, .. } => (Dtype::Csr, 1.0, Some(rows.indices.len())),
    };
    let header = Header {
        version: VERSION,
        dtype,
        rows: dataset.len(),
        features: dataset.num_features(),
        classes: dataset.classes,
        scale,
        checksum: crc32fast::hash(&payload),
        entries,
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
    let feature_len = match (header.dtype, header.entries) {
        (Dtype::U8, None) => header.rows.checked_mul(header.features),
        (Dtype::F32, None) => header
            .rows
            .checked_mul(header.features)
            .and_then(|n| n.checked_mul(4)),
        (Dtype::Csr, Some(entries)) => header
            .rows
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| entries.checked_mul(8).and_then(|m| m.checked_add(n))),
        (Dtype::Csr, None) => return Err("a csr header needs \"entries\"".to_owned()),
        (_, Some(_)) => return Err("only a csr header has \"entries\"".to_owned()),
    }
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
        Features::Sparse { rows, .. } => {
            let entries = rows.indices.len();
            let mut bytes = Vec::with_capacity(rows.offsets.len() * 8 + entries * 8);
            for &offset in &rows.offsets {
                bytes.extend_from_slice(&(offset as u64).to_le_bytes());
            }
            for index in &rows.indices {
                bytes.extend_from_slice(&index.to_le_bytes());
            }
            for value in &rows.values {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            bytes
        }
    }
}

/// Decodes CSR features and checks that the offsets start at 0, never
/// decrease and end at `entries`, and that each row's indices increase and
/// stay below the feature count.
fn decode_csr(header: &Header, bytes: &[u8]) -> std::result::Result<Features, String> {
    let entries = header.entries.unwrap_or_default();
    let (offset_bytes, rest) = bytes.split_at((header.rows + 1) * 8);
    let (index_bytes, value_bytes) = rest.split_at(entries * 4);
    let mut offsets = Vec::with_capacity(header.rows + 1);
    for chunk in offset_bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let offset = usize::try_from(u64::from_le_bytes(word)).unwrap_or(usize::MAX);
        let previous = offsets.last().copied().unwrap_or(0);
        if offset < previous || offset > entries || (offsets.is_empty() && offset != 0) {
            return Err(format!(
                "row offset {offset} at row {} is out of order or past the {entries} entries",
                offsets.len()
            ));
        }
        offsets.push(offset);
    }
    if offsets.last() != Some(&entries) {
        return Err(format!(
            "the row offsets end before the {entries} entries the header declares"
        ));
    }
    let indices: Vec<u32> = index_bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (row, window) in offsets.windows(2).enumerate() {
        let row_indices = &indices[window[0]..window[1]];
        let increasing = row_indices.windows(2).all(|pair| pair[0] < pair[1]);
        let in_range = row_indices
            .last()
            .is_none_or(|&last| (last as usize) < header.features);
        if !(increasing && in_range) {
            return Err(format!(
                "row {row} has feature indices that do not increase or are not below {}",
                header.features
            ));
        }
    }
    let values = value_bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Features::Sparse {
        rows: SparseRows {
            offsets,
            indices,
            values,
        },
        width: header.features,
    })
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
        Dtype::Csr => decode_csr(header, bytes),
    }
}

#[cfg(test)]
mod tests;
