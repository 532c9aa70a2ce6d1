//! The IDX array format used by MNIST, raw or gzipped.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, a type byte and the
//! number of dimensions), one big-endian u32 per dimension, then the values in
//! row-major order. Only the unsigned-byte type (0x08) is supported. Gzip is
//! detected by the `1f 8b` magic bytes, not by the file name.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::{DataError, Result};

/// Type byte of unsigned-byte IDX arrays.
const TYPE_U8: u8 = 0x08;
/// Type bytes defined by the IDX format, supported or not.
const KNOWN_TYPES: [u8; 6] = [0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Values in row-major order, as many as the product of `dims`.
    pub values: Vec<u8>,
}

/// Reads an unsigned-byte IDX file, gzipped or not.
///
/// The whole file is read into memory first. The data length that the header
/// declares is checked against the bytes actually present before the data is
/// copied, so a header with huge dimensions cannot cause a huge allocation.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read, [`DataError::Gzip`] for a
/// corrupt gzip stream, [`DataError::NotIdx`], [`DataError::UnsupportedIdxType`],
/// [`DataError::TruncatedHeader`], [`DataError::Truncated`],
/// [`DataError::TrailingData`] or [`DataError::DimensionsOverflow`].
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = fs::read(path).map_err(|error| DataError::io(path, error))?;
    parse_idx(path, bytes)
}

/// Parses the bytes of an IDX file, gzipped or not, as [`read_idx`] does;
/// `path` only names the file in errors.
///
/// # Errors
///
/// As [`read_idx`], apart from reading the file.
pub fn parse_idx(path: &Path, bytes: Vec<u8>) -> Result<IdxArray> {
    if bytes.starts_with(&GZIP_MAGIC) {
        read_gzipped(path, &bytes)
    } else {
        read_raw(path, bytes)
    }
}

/// Writes an unsigned-byte IDX file, gzipped when `gzip` is true.
///
/// # Errors
///
/// Returns `InvalidInput` when `dims` is empty or longer than 255, when a
/// dimension exceeds `u32::MAX`, or when the product of `dims` differs from
/// `values.len()`. Returns other I/O errors from creating or writing the file.
pub fn write_idx(path: &Path, dims: &[usize], values: &[u8], gzip: bool) -> io::Result<()> {
    let header = encode_header(dims, values.len())?;
    let file = io::BufWriter::new(fs::File::create(path)?);
    if gzip {
        let mut encoder = GzEncoder::new(file, Compression::default());
        encoder.write_all(&header)?;
        encoder.write_all(values)?;
        encoder.finish()?.flush()
    } else {
        let mut file = file;
        file.write_all(&header)?;
        file.write_all(values)?;
        file.flush()
    }
}

fn encode_header(dims: &[usize], value_count: usize) -> io::Result<Vec<u8>> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    let ndims = u8::try_from(dims.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid(format!("IDX needs 1 to 255 dimensions, got {}", dims.len())))?;
    let product = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if product != Some(value_count) {
        return Err(invalid(format!(
            "IDX dimensions {dims:?} do not match {value_count} values"
        )));
    }

    let mut header = vec![0, 0, TYPE_U8, ndims];
    for &dim in dims {
        let dim = u32::try_from(dim)
            .map_err(|_| invalid(format!("IDX dimension {dim} exceeds u32::MAX")))?;
        header.extend_from_slice(&dim.to_be_bytes());
    }
    Ok(header)
}

/// Header fields parsed from the first bytes of a file.
struct Header {
    dims: Vec<usize>,
    /// Header length in bytes.
    len: usize,
    /// Data length in bytes that the dimensions imply.
    data_len: u64,
}

/// Checks the magic number and returns the number of dimensions.
fn parse_magic(path: &Path, magic: [u8; 4]) -> Result<usize> {
    let [zero0, zero1, code, ndims] = magic;
    if zero0 != 0 || zero1 != 0 || ndims == 0 || !KNOWN_TYPES.contains(&code) {
        return Err(DataError::NotIdx {
            path: path.to_path_buf(),
            magic: u32::from_be_bytes(magic),
        });
    }
    if code != TYPE_U8 {
        return Err(DataError::UnsupportedIdxType {
            path: path.to_path_buf(),
            code,
        });
    }
    Ok(usize::from(ndims))
}

/// Parses the dimensions that follow the magic number.
fn parse_dims(path: &Path, dim_bytes: &[u8]) -> Result<Header> {
    let raw_dims: Vec<u64> = dim_bytes
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let overflow = || DataError::DimensionsOverflow {
        path: path.to_path_buf(),
        dims: raw_dims.clone(),
    };
    let data_len = raw_dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    // The data must be addressable in memory once it is read.
    usize::try_from(data_len).map_err(|_| overflow())?;
    // Each dimension came from a u32, which fits in usize on 32- and 64-bit targets.
    let dims = raw_dims.iter().map(|&d| d as usize).collect();
    Ok(Header {
        dims,
        len: 4 + dim_bytes.len(),
        data_len,
    })
}

fn read_raw(path: &Path, mut bytes: Vec<u8>) -> Result<IdxArray> {
    let truncated_header = |needed| DataError::TruncatedHeader {
        path: path.to_path_buf(),
        needed,
        actual: bytes.len(),
    };
    let magic: [u8; 4] = match bytes.first_chunk() {
        Some(magic) => *magic,
        None => return Err(truncated_header(4)),
    };
    let ndims = parse_magic(path, magic)?;
    let header_len = 4 + 4 * ndims;
    let dim_bytes = bytes
        .get(4..header_len)
        .ok_or_else(|| truncated_header(header_len))?;
    let header = parse_dims(path, dim_bytes)?;

    check_data_len(path, &header, (bytes.len() - header.len) as u64)?;
    bytes.drain(..header.len);
    Ok(IdxArray {
        dims: header.dims,
        values: bytes,
    })
}

fn read_gzipped(path: &Path, compressed: &[u8]) -> Result<IdxArray> {
    let gzip_error = |error| DataError::Gzip {
        path: path.to_path_buf(),
        error,
    };
    let mut decoder = MultiGzDecoder::new(compressed);

    let mut magic = [0u8; 4];
    let got = read_up_to(&mut decoder, &mut magic).map_err(gzip_error)?;
    if got < magic.len() {
        return Err(DataError::TruncatedHeader {
            path: path.to_path_buf(),
            needed: 4,
            actual: got,
        });
    }
    let ndims = parse_magic(path, magic)?;
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut decoder, &mut dim_bytes).map_err(gzip_error)?;
    if got < dim_bytes.len() {
        return Err(DataError::TruncatedHeader {
            path: path.to_path_buf(),
            needed: 4 + dim_bytes.len(),
            actual: 4 + got,
        });
    }
    let header = parse_dims(path, &dim_bytes)?;

    // Reading at most one byte past the declared length detects trailing
    // data without decompressing an arbitrarily long stream. The vector grows
    // with the data actually decompressed, never to the declared length.
    let mut values = Vec::new();
    decoder
        .take(header.data_len.saturating_add(1))
        .read_to_end(&mut values)
        .map_err(gzip_error)?;
    check_data_len(path, &header, values.len() as u64)?;
    Ok(IdxArray {
        dims: header.dims,
        values,
    })
}

fn check_data_len(path: &Path, header: &Header, actual: u64) -> Result<()> {
    if actual < header.data_len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            declared: header.data_len,
            actual,
        });
    }
    if actual > header.data_len {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            declared: header.data_len,
        });
    }
    Ok(())
}

/// Fills `buf` from `reader` until it is full or the stream ends, and returns
/// the number of bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests;
