use ndarray::array;

use crate::formats::table::SparseRows;

use super::*;

fn u8_dataset() -> Dataset {
    let values = array![[0u8, 1, 2], [3, 4, 5], [250, 251, 255], [9, 9, 9]];
    Dataset::new(
        Features::U8 {
            values,
            scale: 1.0 / 255.0,
        },
        vec![3, 0, 9, 1],
        10,
    )
    .expect("valid data set")
}

fn f32_dataset() -> Dataset {
    let values = array![[0.5f32, -1.25], [f32::MAX, f32::MIN_POSITIVE], [0.0, -0.0]];
    Dataset::new(Features::F32(values), vec![1, 0, 1], 2).expect("valid data set")
}

/// Builds shard bytes from a raw header and payload.
fn assemble(header: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn decode_error(bytes: &[u8]) -> String {
    decode(bytes).expect_err("decode should fail").to_string()
}

#[test]
fn round_trip_u8() {
    let data = u8_dataset();
    let bytes = encode(&data);
    assert!(bytes.starts_with(b"DPSHARD1"));
    assert_eq!(decode(&bytes).expect("decode"), data);
}

#[test]
fn round_trip_f32() {
    let data = f32_dataset();
    assert_eq!(decode(&encode(&data)).expect("decode"), data);
}

#[test]
fn round_trip_non_standard_layout() {
    let values = array![[1u8, 2, 3], [4, 5, 6]].reversed_axes();
    let data = Dataset::new(Features::U8 { values, scale: 0.5 }, vec![0, 1, 0], 2)
        .expect("valid data set");
    let decoded = decode(&encode(&data)).expect("decode");
    assert_eq!(decoded, data);
    assert_eq!(decoded.to_f32().row(0), array![0.5f32, 2.0]);
}

#[test]
fn round_trip_empty() {
    let data = Dataset::new(Features::F32(Array2::zeros((0, 4))), vec![], 3).expect("valid");
    let decoded = decode(&encode(&data)).expect("decode");
    assert!(decoded.is_empty());
    assert_eq!(decoded.num_features(), 4);
    assert_eq!(decoded.classes, 3);
}

#[test]
fn layout_matches_format() {
    let data = u8_dataset();
    let bytes = encode(&data);
    let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[12..12 + header_len]).expect("JSON header");
    let payload = &bytes[12 + header_len..];

    assert_eq!(header["version"], 1);
    assert_eq!(header["dtype"], "u8");
    assert_eq!(header["rows"], 4);
    assert_eq!(header["features"], 3);
    assert_eq!(header["classes"], 10);
    assert_eq!(header["checksum"], crc32fast::hash(payload));
    assert_eq!(payload.len(), 12 + 16);
    assert_eq!(&payload[..3], &[0, 1, 2]);
    assert_eq!(&payload[12..16], &3u32.to_le_bytes());
}

#[test]
fn every_truncation_is_rejected() {
    for data in [u8_dataset(), f32_dataset()] {
        let bytes = encode(&data);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
    }
}

#[test]
fn payload_corruption_is_rejected() {
    let bytes = encode(&u8_dataset());
    let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    for position in 12 + header_len..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[position] ^= 0x10;
        let text = decode_error(&corrupt);
        assert!(
            text.contains("checksum mismatch"),
            "byte {position}: {text}"
        );
    }
}

#[test]
fn any_single_byte_change_never_panics() {
    let bytes = encode(&f32_dataset());
    for position in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= flip;
            // A changed header digit may still decode (say, another class
            // count); the point is that nothing panics.
            let _ = decode(&corrupt);
        }
    }
}

#[test]
fn garbage_is_rejected() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in [0, 1, 7, 8, 12, 100, 4096] {
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(decode(&garbage).is_err(), "{len} random bytes");
        let mut prefixed = MAGIC.to_vec();
        prefixed.extend_from_slice(&garbage);
        assert!(decode(&prefixed).is_err(), "magic plus {len} random bytes");
    }
}

#[test]
fn missing_magic() {
    assert_eq!(
        decode_error(b"PK\x03\x04 not a shard"),
        "invalid shard data: missing the DPSHARD1 magic bytes"
    );
}

#[test]
fn header_length_past_end() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(b"{}");
    assert_eq!(
        decode_error(&bytes),
        "invalid shard data: the header length is 4294967295 bytes but only 2 bytes follow"
    );
}

#[test]
fn header_not_json() {
    let text = decode_error(&assemble("{rows: 3", &[]));
    assert!(
        text.starts_with("invalid shard data: the header is not valid JSON ("),
        "{text}"
    );
}

#[test]
fn unsupported_version() {
    let header = r#"{"version":2,"layout":"columns"}"#;
    assert_eq!(
        decode_error(&assemble(header, &[])),
        "invalid shard data: unsupported version 2, expected 1"
    );
}

#[test]
fn unknown_dtype() {
    let header =
        r#"{"version":1,"dtype":"f64","rows":0,"features":1,"classes":2,"scale":1.0,"checksum":0}"#;
    let text = decode_error(&assemble(header, &[]));
    assert!(
        text.starts_with("invalid shard data: invalid header ("),
        "{text}"
    );
    assert!(text.contains("unknown variant `f64`"), "{text}");
}

#[test]
fn huge_declared_rows() {
    let header = format!(
        r#"{{"version":1,"dtype":"f32","rows":{},"features":784,"classes":10,"scale":1.0,"checksum":0}}"#,
        usize::MAX / 2
    );
    assert_eq!(
        decode_error(&assemble(&header, &[0; 64])),
        format!(
            "invalid shard data: the header declares {} rows of 784 features, \
             too large to address",
            usize::MAX / 2
        )
    );

    let header = r#"{"version":1,"dtype":"u8","rows":1000000000,"features":784,"classes":10,"scale":1.0,"checksum":0}"#;
    assert_eq!(
        decode_error(&assemble(header, &[0; 64])),
        "invalid shard data: the header declares 788000000000 payload bytes but 64 follow it"
    );
}

#[test]
fn regression_round_trip() {
    let values = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let data = Dataset::regression(Features::F32(values), vec![-0.5, 1.0e-3, 7.25]).expect("valid");
    let decoded = decode(&encode(&data)).expect("regression shard decodes");
    assert!(decoded.is_regression());
    assert!(decoded.labels.is_empty());
    assert_eq!(decoded, data);
}

#[test]
fn label_outside_classes() {
    let data = Dataset {
        features: Features::F32(Array2::zeros((2, 1))),
        labels: vec![1, 12],
        classes: 10,
        targets: Vec::new(),
    };
    assert_eq!(
        decode_error(&encode(&data)),
        "invalid shard data: label 12 at index 1 is outside the class range 0..10"
    );
}

#[test]
fn non_finite_scale_is_rejected() {
    let data = Dataset {
        features: Features::U8 {
            values: Array2::zeros((1, 1)),
            scale: f32::INFINITY,
        },
        labels: vec![0],
        classes: 1,
        targets: Vec::new(),
    };
    let text = decode_error(&encode(&data));
    assert!(
        text.starts_with("invalid shard data: invalid header ("),
        "{text}"
    );
}

#[test]
fn file_round_trip_and_error_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shard-0.bin");
    let data = u8_dataset();
    write(&path, &data).expect("write shard");
    assert_eq!(read(&path).expect("read shard"), data);

    std::fs::write(&path, b"DPSHARD1").expect("overwrite");
    assert_eq!(
        read(&path).expect_err("truncated").to_string(),
        format!(
            "{}: invalid shard data: 8 bytes are too short for the header length",
            path.display()
        )
    );

    let missing = dir.path().join("missing.bin");
    assert_eq!(
        read(&missing).expect_err("missing").to_string(),
        format!(
            "{}: not found (no such file or directory)",
            missing.display()
        )
    );
}

fn csr_dataset() -> Dataset {
    let mut rows = SparseRows::new();
    rows.push_row(&[0, 4], &[1.0, -2.5]);
    rows.push_row(&[], &[]);
    rows.push_row(&[1, 2, 5], &[0.5, 0.25, 3.0]);
    Dataset::new(Features::Sparse { rows, width: 6 }, vec![1, 0, 1], 2).expect("valid data set")
}

/// Builds CSR shard bytes from offsets, indices and values, with a header
/// that declares `features` features.
fn csr_shard(offsets: &[u64], indices: &[u32], values: &[f32], features: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    offsets
        .iter()
        .for_each(|o| payload.extend_from_slice(&o.to_le_bytes()));
    indices
        .iter()
        .for_each(|i| payload.extend_from_slice(&i.to_le_bytes()));
    values
        .iter()
        .for_each(|v| payload.extend_from_slice(&v.to_le_bytes()));
    let rows = offsets.len() - 1;
    for _ in 0..rows {
        payload.extend_from_slice(&0u32.to_le_bytes());
    }
    let header = format!(
        r#"{{"version":1,"dtype":"csr","rows":{rows},"features":{features},"classes":2,"scale":1.0,"checksum":{},"entries":{}}}"#,
        crc32fast::hash(&payload),
        indices.len()
    );
    assemble(&header, &payload)
}

#[test]
fn round_trip_csr() {
    let data = csr_dataset();
    let decoded = decode(&encode(&data)).expect("decode");
    assert_eq!(decoded, data);
    assert_eq!(
        decoded.to_f32().row(2),
        array![0.0f32, 0.5, 0.25, 0.0, 0.0, 3.0]
    );
    let picked = data.select(&[2, 0]);
    assert_eq!(picked.sparse_rows().expect("sparse").row(0).0, &[1, 2, 5]);
    assert_eq!(picked.labels, vec![1, 1]);
}

#[test]
fn csr_copy_rows_densifies() {
    let mut out = [9.0f32; 12];
    csr_dataset().copy_rows_f32(0..2, &mut out);
    assert_eq!(
        out,
        [1.0, 0.0, 0.0, 0.0, -2.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn bad_csr_is_rejected() {
    let cases = [
        (csr_shard(&[1, 1], &[0], &[1.0], 3), "row offset 1 at row 0"),
        (
            csr_shard(&[0, 2, 1], &[0, 1], &[1.0, 1.0], 3),
            "row offset 1 at row 2",
        ),
        (
            csr_shard(&[0, 1], &[0, 1], &[1.0, 1.0], 3),
            "the row offsets end before the 2 entries",
        ),
        (
            csr_shard(&[0, 2], &[1, 0], &[1.0, 1.0], 3),
            "row 0 has feature indices that do not increase",
        ),
        (
            csr_shard(&[0, 1], &[3], &[1.0], 3),
            "row 0 has feature indices that do not increase or are not below 3",
        ),
    ];
    for (bytes, expected) in cases {
        let message = decode_error(&bytes);
        assert!(message.contains(expected), "{message}");
    }
    assert!(decode(&csr_shard(&[0, 1], &[2], &[1.0], 3)).is_ok());
}
