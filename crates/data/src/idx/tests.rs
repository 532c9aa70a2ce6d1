use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("write to Vec");
    encoder.finish().expect("finish gzip")
}

/// Returns IDX header bytes with the given magic number and dimensions.
fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write test file");
    path
}

fn message(path: &Path) -> String {
    read_idx(path).expect_err("read should fail").to_string()
}

#[test]
fn raw_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a-idx3-ubyte");
    let values: Vec<u8> = (0..24).collect();
    write_idx(&path, &[2, 3, 4], &values, false).expect("write");

    let bytes = fs::read(&path).expect("read back");
    assert_eq!(&bytes[..4], &[0, 0, 8, 3]);
    assert_eq!(bytes.len(), 16 + 24);

    let array = read_idx(&path).expect("read");
    assert_eq!(array.dims, vec![2, 3, 4]);
    assert_eq!(array.values, values);
}

#[test]
fn gzip_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("labels-idx1-ubyte.gz");
    let values: Vec<u8> = (0..200).map(|i| (i % 10) as u8).collect();
    write_idx(&path, &[200], &values, true).expect("write");

    let bytes = fs::read(&path).expect("read back");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);

    let array = read_idx(&path).expect("read");
    assert_eq!(array.dims, vec![200]);
    assert_eq!(array.values, values);
}

#[test]
fn gzip_detected_by_content_not_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idx = header(0x0000_0802, &[2, 2]);
    idx.extend_from_slice(&[1, 2, 3, 4]);

    let gzipped = write_file(dir.path(), "plain-name", &gzip(&idx));
    let raw = write_file(dir.path(), "raw-but-named.gz", &idx);

    for path in [gzipped, raw] {
        let array = read_idx(&path).expect("read");
        assert_eq!(array.dims, vec![2, 2]);
        assert_eq!(array.values, vec![1, 2, 3, 4]);
    }
}

#[test]
fn multi_member_gzip_is_one_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idx = header(0x0000_0801, &[4]);
    idx.extend_from_slice(&[9, 8, 7, 6]);
    let mut bytes = gzip(&idx[..6]);
    bytes.extend_from_slice(&gzip(&idx[6..]));
    let path = write_file(dir.path(), "split.gz", &bytes);

    let array = read_idx(&path).expect("read");
    assert_eq!(array.values, vec![9, 8, 7, 6]);
}

#[test]
fn wrong_magic_number() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(dir.path(), "x", &header(0x1234_5678, &[1]));
    assert_eq!(
        message(&path),
        format!(
            "{}: not an IDX file (magic number 0x12345678, expected 0x00000801 or 0x00000803)",
            path.display()
        )
    );
}

#[test]
fn wrong_magic_number_gzipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(dir.path(), "x.gz", &gzip(b"<html>not idx</html>"));
    assert_eq!(
        message(&path),
        format!(
            "{}: not an IDX file (magic number 0x3c68746d, expected 0x00000801 or 0x00000803)",
            path.display()
        )
    );
}

#[test]
fn zero_dimensions_is_not_idx() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(dir.path(), "x", &header(0x0000_0800, &[]));
    assert!(message(&path).contains("not an IDX file (magic number 0x00000800"));
}

#[test]
fn unsupported_element_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = header(0x0000_0d01, &[1]);
    bytes.extend_from_slice(&1.0f32.to_be_bytes());
    let path = write_file(dir.path(), "floats", &bytes);
    assert_eq!(
        message(&path),
        format!(
            "{}: IDX data type 0x0d (32-bit float) is not supported, \
             only unsigned bytes (0x08) are",
            path.display()
        )
    );
}

#[test]
fn empty_file_is_truncated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(dir.path(), "empty", &[]);
    assert_eq!(
        message(&path),
        format!(
            "{}: truncated: the IDX header needs 4 bytes but the file holds 0",
            path.display()
        )
    );
}

#[test]
fn truncated_dimensions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = &header(0x0000_0803, &[60000, 28, 28])[..10];
    let raw = write_file(dir.path(), "raw", bytes);
    let gzipped = write_file(dir.path(), "gz", &gzip(bytes));

    for path in [raw, gzipped] {
        assert_eq!(
            message(&path),
            format!(
                "{}: truncated: the IDX header needs 16 bytes but the file holds 10",
                path.display()
            )
        );
    }
}

#[test]
fn truncated_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = header(0x0000_0803, &[60000, 28, 28]);
    bytes.extend_from_slice(&[0u8; 1000]);
    let raw = write_file(dir.path(), "train-images-idx3-ubyte", &bytes);
    let gzipped = write_file(dir.path(), "train-images-idx3-ubyte.gz", &gzip(&bytes));

    for path in [raw, gzipped] {
        assert_eq!(
            message(&path),
            format!(
                "{}: truncated: header declares 47040000 bytes of data but the file holds 1000",
                path.display()
            )
        );
    }
}

#[test]
fn huge_dimensions_do_not_allocate() {
    // 2^64 - 2^33 + 1 bytes declared: allocating that much would abort.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = header(0x0000_0802, &[u32::MAX, u32::MAX]);
    bytes.extend_from_slice(&[7u8; 10]);
    let raw = write_file(dir.path(), "raw", &bytes);
    let gzipped = write_file(dir.path(), "gz", &gzip(&bytes));

    for path in [raw, gzipped] {
        assert_eq!(
            message(&path),
            format!(
                "{}: truncated: header declares 18446744065119617025 bytes of data \
                 but the file holds 10",
                path.display()
            )
        );
    }
}

#[test]
fn overflowing_dimensions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_file(dir.path(), "x", &header(0x0000_0803, &[u32::MAX; 3]));
    assert_eq!(
        message(&path),
        format!(
            "{}: header declares dimensions 4294967295 x 4294967295 x 4294967295 \
             whose product overflows",
            path.display()
        )
    );
}

#[test]
fn trailing_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = header(0x0000_0801, &[3]);
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    let raw = write_file(dir.path(), "raw", &bytes);
    let gzipped = write_file(dir.path(), "gz", &gzip(&bytes));

    for path in [raw, gzipped] {
        assert_eq!(
            message(&path),
            format!(
                "{}: the file holds more than the 3 bytes of data its header declares",
                path.display()
            )
        );
    }
}

#[test]
fn corrupt_gzip_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut idx = header(0x0000_0801, &[5000]);
    idx.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
    let compressed = gzip(&idx);
    let path = write_file(dir.path(), "cut.gz", &compressed[..compressed.len() / 2]);

    let text = message(&path);
    assert!(
        text.starts_with(&format!(
            "{}: cannot decompress gzip data (",
            path.display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("), the file is truncated or corrupt"),
        "{text}"
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("foo");
    assert_eq!(
        message(&path),
        format!("{}: not found (no such file or directory)", path.display())
    );
}

#[test]
fn directory_is_unreadable() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        message(dir.path()),
        format!("{}: is a directory, expected a file", dir.path().display())
    );
}

#[test]
fn write_rejects_inconsistent_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x");

    let wrong_count = write_idx(&path, &[2, 2], &[0; 3], false).expect_err("3 != 4");
    assert_eq!(wrong_count.kind(), io::ErrorKind::InvalidInput);

    let no_dims = write_idx(&path, &[], &[], false).expect_err("no dims");
    assert_eq!(no_dims.kind(), io::ErrorKind::InvalidInput);

    let too_many = write_idx(&path, &[1; 256], &[0], false).expect_err("256 dims");
    assert_eq!(too_many.kind(), io::ErrorKind::InvalidInput);
}
