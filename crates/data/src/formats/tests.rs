use std::path::{Path, PathBuf};

use ndarray::array;

use super::csv_file::{CsvRows, read_csv};
use super::libsvm::read_libsvm;
use super::npy::{labels_path_for, read_npy_pair};
use super::*;

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

fn dense(table: &RawTable) -> (Vec<f32>, usize) {
    match &table.features {
        RawFeatures::Dense { values, width } => (values.clone(), *width),
        RawFeatures::Sparse(_) => panic!("expected dense features"),
    }
}

fn csv_options(edit: impl FnOnce(&mut CsvOptions)) -> CsvOptions {
    let mut options = CsvOptions::default();
    edit(&mut options);
    options
}

#[test]
fn csv_well_formed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    // (contents, options, expected features, width, labels, label lines)
    type Case = (
        &'static str,
        CsvOptions,
        Vec<f32>,
        usize,
        Vec<&'static str>,
        Vec<u64>,
    );
    let cases: Vec<Case> = vec![
        (
            "a,b,label\n1,2,x\n3,4.5,y\n",
            CsvOptions::default(),
            vec![1.0, 2.0, 3.0, 4.5],
            2,
            vec!["x", "y"],
            vec![2, 3],
        ),
        (
            "\"a\",\"b\",\"kind\"\r\n\"1.5\",2,\"cat, big\"\r\n-3,1e2,dog\r\n",
            CsvOptions::default(),
            vec![1.5, 2.0, -3.0, 100.0],
            2,
            vec!["cat, big", "dog"],
            vec![2, 3],
        ),
        (
            "7;1;2\n8;3;4\n",
            csv_options(|o| {
                o.header = false;
                o.delimiter = b';';
                o.label_column = LabelColumn::Number(1);
            }),
            vec![1.0, 2.0, 3.0, 4.0],
            2,
            vec!["7", "8"],
            vec![1, 2],
        ),
        (
            "x1,species,x2\n0.5,setosa,1\n\n 2 , virginica , 3 \n",
            csv_options(|o| o.label_column = LabelColumn::Name("species".to_owned())),
            vec![0.5, 1.0, 2.0, 3.0],
            2,
            vec!["setosa", "virginica"],
            vec![2, 4],
        ),
        (
            "a,b,y\n1,,0\nNA,?,1\nabc,2,0\n",
            csv_options(|o| o.fill_value = Some(-1.0)),
            vec![1.0, -1.0, -1.0, -1.0, -1.0, 2.0],
            2,
            vec!["0", "1", "0"],
            vec![2, 3, 4],
        ),
        (
            "a,\"note\nover two lines\",y\n1,2,0\n",
            CsvOptions::default(),
            vec![1.0, 2.0],
            2,
            vec!["0"],
            vec![3],
        ),
    ];
    for (index, (contents, options, features, width, labels, lines)) in
        cases.into_iter().enumerate()
    {
        let path = write(dir.path(), &format!("good{index}.csv"), contents.as_bytes());
        let table = read_csv(&path, &options).unwrap_or_else(|e| panic!("case {index}: {e}"));
        assert_eq!(dense(&table), (features, width), "case {index}");
        assert_eq!(table.labels, labels, "case {index}");
        let table_lines: Vec<u64> = table
            .positions
            .iter()
            .map(|position| match position {
                table::LabelPosition::Text { line, .. } => *line,
                table::LabelPosition::Row(_) => panic!("text position expected"),
            })
            .collect();
        assert_eq!(table_lines, lines, "case {index}");
    }
}

#[test]
fn csv_malformed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: Vec<(&str, CsvOptions, &str)> = vec![
        (
            "a,b,y\n1,abc,0\n",
            CsvOptions::default(),
            "line 2, column 2: \"abc\" is not a number; fix the value or give --fill-value",
        ),
        (
            "a,b,y\n1,2,0\n1,,0\n",
            CsvOptions::default(),
            "line 3, column 2: missing value \"\"; give --fill-value to replace missing values",
        ),
        (
            "a,b,y\r\n1,2,0\r\nNA,2,0\r\n",
            CsvOptions::default(),
            "line 3, column 1: missing value \"NA\"; give --fill-value to replace missing values",
        ),
        (
            "a,b,y\n1,inf,0\n",
            CsvOptions::default(),
            "line 2, column 2: \"inf\" is not a finite number; fix the value or give --fill-value",
        ),
        (
            "a,b,y\n1,2,0\n1,2\n",
            CsvOptions::default(),
            "line 3, column 3: the row has 2 fields but the first row has 3",
        ),
        (
            "a,b,y\n1,2,0,9\n",
            CsvOptions::default(),
            "line 2, column 4: the row has 4 fields but the first row has 3",
        ),
        (
            "a,b,y\n1,2,\n",
            CsvOptions::default(),
            "line 2, column 3: missing label; fill it in or drop the row",
        ),
        (
            "a,b,y\n1,2,0\n",
            csv_options(|o| o.label_column = LabelColumn::Name("z".to_owned())),
            "line 1, column 1: no column is named \"z\"; the header names a, b, y",
        ),
        (
            "1,2,0\n",
            csv_options(|o| {
                o.header = false;
                o.label_column = LabelColumn::Number(4);
            }),
            "line 1, column 1: label column 4 does not exist, because the row has 3 columns",
        ),
        (
            "1,2,0\n",
            csv_options(|o| {
                o.header = false;
                o.label_column = LabelColumn::Name("y".to_owned());
            }),
            "line 1, column 1: the label column is named \"y\" but the file is read without a \
             header; give the column number instead",
        ),
        (
            "a;b;y\n1;2;0\n",
            CsvOptions::default(),
            "line 2, column 1: the row has one field, but a label and at least one feature are \
             needed; check the delimiter",
        ),
        (
            "a,\"b\nc\",y\n1,2,0\n1,x,0\n",
            CsvOptions::default(),
            "line 4, column 2: \"x\" is not a number; fix the value or give --fill-value",
        ),
        ("a,b,y\n", CsvOptions::default(), "contains no examples"),
        ("", CsvOptions::default(), "contains no examples"),
    ];
    for (index, (contents, options, message)) in cases.into_iter().enumerate() {
        let path = write(dir.path(), &format!("bad{index}.csv"), contents.as_bytes());
        let error = read_csv(&path, &options).expect_err(contents);
        assert_eq!(
            error.to_string(),
            format!("{}: {message}", path.display()),
            "case {index}"
        );
    }
}

#[test]
fn csv_invalid_utf8_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "bytes.csv", b"a,b,y\n1,\xff,0\n");
    let error = read_csv(&path, &CsvOptions::default()).expect_err("invalid UTF-8");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: line 2, column 2: the field is not valid UTF-8",
            path.display()
        )
    );
}

#[test]
fn csv_rows_stream_from_reader() {
    let text = "a,y\n1,0\n2,1\n3,0\n";
    let options = CsvOptions::default();
    let mut rows =
        CsvRows::new(Path::new("stream.csv"), text.as_bytes(), &options).expect("valid header");
    let first = rows.next().expect("one row").expect("valid row");
    assert_eq!(first.features, [1.0]);
    assert_eq!(first.line, 2);
    assert_eq!(rows.count(), 2);
}

#[test]
fn label_column_parsing() {
    assert_eq!("last".parse::<LabelColumn>(), Ok(LabelColumn::Last));
    assert_eq!("3".parse::<LabelColumn>(), Ok(LabelColumn::Number(3)));
    assert_eq!(
        "kind".parse::<LabelColumn>(),
        Ok(LabelColumn::Name("kind".to_owned()))
    );
    assert_eq!(
        "0".parse::<LabelColumn>(),
        Err("label column numbers count from 1, got 0".to_owned())
    );
}

fn sparse(table: &RawTable) -> &SparseRows {
    match &table.features {
        RawFeatures::Sparse(rows) => rows,
        RawFeatures::Dense { .. } => panic!("expected sparse features"),
    }
}

#[test]
fn libsvm_well_formed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    // (contents, zero-based, labels, rows as (indices, values), width)
    type Row = (Vec<u32>, Vec<f32>);
    type Case = (&'static str, bool, Vec<&'static str>, Vec<Row>, usize);
    let cases: Vec<Case> = vec![
        (
            "+1 1:0.5 3:2\n-1 2:1 # a comment\n\n# a comment line\n",
            false,
            vec!["+1", "-1"],
            vec![(vec![0, 2], vec![0.5, 2.0]), (vec![1], vec![1.0])],
            3,
        ),
        (
            "2 qid:7 1:1 4:-2.5e-1\r\n0 qid:7\r\n",
            false,
            vec!["2", "0"],
            vec![(vec![0, 3], vec![1.0, -0.25]), (vec![], vec![])],
            4,
        ),
        (
            "1\t0:1\t5:3\n0 1:1\n",
            true,
            vec!["1", "0"],
            vec![(vec![0, 5], vec![1.0, 3.0]), (vec![1], vec![1.0])],
            6,
        ),
    ];
    for (index, (contents, zero_based, labels, rows, width)) in cases.into_iter().enumerate() {
        let path = write(dir.path(), &format!("good{index}.svm"), contents.as_bytes());
        let table = read_libsvm(&path, LibsvmOptions { zero_based })
            .unwrap_or_else(|e| panic!("case {index}: {e}"));
        assert_eq!(table.labels, labels, "case {index}");
        let sparse = sparse(&table);
        assert_eq!(sparse.len(), rows.len(), "case {index}");
        for (row, (indices, values)) in rows.iter().enumerate() {
            assert_eq!(
                sparse.row(row),
                (indices.as_slice(), values.as_slice()),
                "case {index} row {row}"
            );
        }
        assert_eq!(table.width(), width, "case {index}");
    }
}

#[test]
fn libsvm_malformed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: Vec<(&str, bool, &str)> = vec![
        (
            "1 0:1 2:1\n",
            false,
            "line 1, column 3: index 0 in a file read as 1-based; if the file's indices count \
             from 0, give --zero-based",
        ),
        (
            "1 1:1\n\n0 3:1 2:1\n",
            false,
            "line 3, column 7: index 2 follows index 3; indices must increase within a line",
        ),
        (
            "1 2:1 2:3\n",
            false,
            "line 1, column 7: index 2 appears twice in the line",
        ),
        (
            "1 1:1 1:3\n",
            true,
            "line 1, column 7: index 1 appears twice in the line",
        ),
        (
            "abc 1:1\n",
            false,
            "line 1, column 1: label \"abc\" is not a number",
        ),
        (
            "1 1:x\n",
            false,
            "line 1, column 5: value \"x\" of index 1 is not a finite number",
        ),
        (
            "1 1:nan\n",
            false,
            "line 1, column 5: value \"nan\" of index 1 is not a finite number",
        ),
        (
            "1 1:1 7\n",
            false,
            "line 1, column 7: expected INDEX:VALUE, found \"7\"",
        ),
        (
            "# header\n1 -1:2\n",
            false,
            "line 2, column 3: index \"-1\" is not a non-negative integer",
        ),
        (
            "1 4294967296:1\n",
            false,
            "line 1, column 3: index \"4294967296\" is not a non-negative integer",
        ),
        ("\n# only a comment\n", false, "contains no examples"),
    ];
    for (index, (contents, zero_based, message)) in cases.into_iter().enumerate() {
        let path = write(dir.path(), &format!("bad{index}.svm"), contents.as_bytes());
        let error = read_libsvm(&path, LibsvmOptions { zero_based }).expect_err(contents);
        assert_eq!(
            error.to_string(),
            format!("{}: {message}", path.display()),
            "case {index}"
        );
    }
}

#[test]
fn libsvm_invalid_utf8_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "bytes.svm", b"1 1:1\n0 2:\xff\n");
    let error = read_libsvm(&path, LibsvmOptions::default()).expect_err("invalid UTF-8");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: line 2, column 1: the line is not valid UTF-8",
            path.display()
        )
    );
}

/// Builds a version 1.0 `.npy` file.
fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let fortran = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn le_bytes_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_bytes_f64(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_bytes_i64(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn npy_well_formed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let features_f32 = le_bytes_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // The same 2 x 3 array stored column by column.
    let features_fortran = le_bytes_f64(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    // (features file, labels file, expected features, expected labels)
    type Case = (Vec<u8>, Vec<u8>, Vec<f32>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            npy_bytes("<f4", false, &[2, 3], &features_f32),
            npy_bytes("<i8", false, &[2], &le_bytes_i64(&[3, -1])),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec!["3", "-1"],
        ),
        (
            npy_bytes("<f8", true, &[2, 3], &features_fortran),
            npy_bytes("|u1", false, &[2, 1], &[0, 9]),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec!["0", "9"],
        ),
        (
            npy_bytes("|u1", false, &[2, 3], &[0, 128, 255, 1, 2, 3]),
            npy_bytes("<f4", false, &[2], &le_bytes_f32(&[0.5, 1.0])),
            vec![0.0, 128.0, 255.0, 1.0, 2.0, 3.0],
            vec!["0.5", "1"],
        ),
        (
            npy_bytes(">f4", false, &[2, 3], &{
                let mut bytes = features_f32.clone();
                bytes.chunks_mut(4).for_each(<[u8]>::reverse);
                bytes
            }),
            npy_bytes("|b1", false, &[2], &[1, 0]),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec!["1", "0"],
        ),
    ];
    for (index, (features, labels, values, label_text)) in cases.into_iter().enumerate() {
        let features_path = write(dir.path(), &format!("good{index}-features.npy"), &features);
        let labels_path = write(dir.path(), &format!("good{index}-labels.npy"), &labels);
        let table = read_npy_pair(&features_path, &labels_path)
            .unwrap_or_else(|e| panic!("case {index}: {e}"));
        assert_eq!(dense(&table), (values, 3), "case {index}");
        assert_eq!(table.labels, label_text, "case {index}");
    }
}

#[test]
fn npy_written_by_npyz_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let features_path = dir.path().join("X_train.npy");
    let labels_path = labels_path_for(&features_path).expect("labels path");
    assert_eq!(labels_path, dir.path().join("y_train.npy"));

    let values = [0.25f32, -1.0, 3.5, 8.0];
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[2, 2])
            .writer(&mut bytes)
            .begin_nd()
            .expect("npy writer");
        writer.extend(values).expect("write values");
        writer.finish().expect("finish npy");
    }
    std::fs::write(&features_path, &bytes).expect("write features");
    npyz::to_file_1d(&labels_path, [1u16, 0]).expect("write labels");

    let table = read_npy_pair(&features_path, &labels_path).expect("valid pair");
    assert_eq!(dense(&table), (values.to_vec(), 2));
    assert_eq!(table.labels, ["1", "0"]);
}

#[test]
fn npy_malformed_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good_features = npy_bytes("<f4", false, &[2, 1], &le_bytes_f32(&[1.0, 2.0]));
    let good_labels = npy_bytes("<i8", false, &[2], &le_bytes_i64(&[0, 1]));
    // (features, labels, which file the message names, message)
    let cases: Vec<(Vec<u8>, Vec<u8>, &str, &str)> = vec![
        (
            npy_bytes("<f4", false, &[2, 1], &le_bytes_f32(&[1.0])),
            good_labels.clone(),
            "features",
            "truncated: the header declares 8 bytes of data but the file holds 4",
        ),
        (
            npy_bytes("<f4", false, &[2, 1], &le_bytes_f32(&[1.0, 2.0, 3.0])),
            good_labels.clone(),
            "features",
            "the file holds 12 bytes of data but its header declares 8",
        ),
        (
            npy_bytes("<f4", false, &[2], &le_bytes_f32(&[1.0, 2.0])),
            good_labels.clone(),
            "features",
            "expected a 2-dimensional features array [examples, features], found shape [2]",
        ),
        (
            npy_bytes("<i4", false, &[2, 1], &[0; 8]),
            good_labels.clone(),
            "features",
            "features of type <i4 are not supported; save them as float32, float64 or uint8",
        ),
        (
            npy_bytes("<f4", false, &[2, 1], &le_bytes_f32(&[1.0, f32::NAN])),
            good_labels.clone(),
            "features",
            "the value at row 1, column 0 is not a finite f32 number",
        ),
        (
            npy_bytes("<f8", false, &[2, 1], &le_bytes_f64(&[1.0, 1e300])),
            good_labels.clone(),
            "features",
            "the value at row 1, column 0 is not a finite f32 number",
        ),
        (
            npy_bytes("<f4", false, &[2, 0], &[]),
            good_labels.clone(),
            "features",
            "the features array has 0 columns",
        ),
        (
            good_features.clone(),
            npy_bytes("<i8", false, &[1, 2], &le_bytes_i64(&[0, 1])),
            "labels",
            "expected a 1-dimensional labels array [examples], found shape [1, 2]",
        ),
        (
            good_features.clone(),
            npy_bytes("<f8", false, &[2], &le_bytes_f64(&[0.0, f64::INFINITY])),
            "labels",
            "the label at row 1 is not a finite number",
        ),
        (
            good_features.clone(),
            npy_bytes("<c8", false, &[2], &[0; 16]),
            "labels",
            "labels of type <c8 are not supported; save them as integers, floats or booleans",
        ),
    ];
    for (index, (features, labels, named, message)) in cases.into_iter().enumerate() {
        let features_path = write(dir.path(), &format!("bad{index}-features.npy"), &features);
        let labels_path = write(dir.path(), &format!("bad{index}-labels.npy"), &labels);
        let error = read_npy_pair(&features_path, &labels_path).expect_err(message);
        let path = if named == "features" {
            &features_path
        } else {
            &labels_path
        };
        assert_eq!(
            error.to_string(),
            format!("{}: {message}", path.display()),
            "case {index}"
        );
    }
}

#[test]
fn npy_count_mismatch_and_bad_header() {
    let dir = tempfile::tempdir().expect("temp dir");
    let features = write(
        dir.path(),
        "a-features.npy",
        &npy_bytes("<f4", false, &[2, 1], &le_bytes_f32(&[1.0, 2.0])),
    );
    let labels = write(
        dir.path(),
        "a-labels.npy",
        &npy_bytes("<i8", false, &[3], &le_bytes_i64(&[0, 1, 0])),
    );
    let error = read_npy_pair(&features, &labels).expect_err("3 labels for 2 rows");
    assert_eq!(
        error.to_string(),
        format!(
            "features file {} holds 2 examples but labels file {} holds 3 labels",
            features.display(),
            labels.display()
        )
    );

    let text = write(dir.path(), "b-features.npy", b"1,2,3\n");
    let error = read_npy_pair(&text, &labels).expect_err("not npy");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: not a valid .npy file: ", text.display())),
        "{error}"
    );

    let error = labels_path_for(Path::new("data/train.npy")).expect_err("no rule");
    assert_eq!(
        error.to_string(),
        "data/train.npy: cannot find the labels file, because the file name contains neither \
         \"features\" nor starts with \"X\" (expected train-features.npy with train-labels.npy, \
         or X_train.npy with y_train.npy)"
    );
}

#[test]
fn format_from_path() {
    let cases = [
        ("iris.csv", Ok(Format::Csv)),
        ("IRIS.TSV", Ok(Format::Csv)),
        ("X_train.npy", Ok(Format::Npy)),
        ("a9a.libsvm", Ok(Format::Libsvm)),
        ("news.svm", Ok(Format::Libsvm)),
        ("train-images-idx3-ubyte.gz", Ok(Format::Idx)),
        ("agaricus.txt.train", Err(())),
    ];
    for (name, expected) in cases {
        let result = Format::from_path(Path::new(name)).map_err(|_| ());
        assert_eq!(result, expected, "{name}");
    }
    let error = Format::from_path(Path::new("agaricus.txt.train")).expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "agaricus.txt.train: cannot tell the data format from the file name; give --format idx, \
         csv, libsvm or npy"
    );
}

#[test]
fn table_to_dataset_maps_classes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let train = write(dir.path(), "train.svm", b"+1 2:1\n-1 1:1\n+1 1:2 3:1\n");
    let test = write(dir.path(), "test.svm", b"-1 1:1\n0 2:1\n");
    let train = read_libsvm(&train, LibsvmOptions::default()).expect("valid");
    let classes = ClassMap::fit(train.labels.iter().map(String::as_str));
    assert_eq!(classes.names, ["-1", "1"]);
    let dataset = train.to_dataset(&classes, 4).expect("fits");
    assert_eq!(dataset.labels, [1, 0, 1]);
    assert!(dataset.sparse_rows().is_some(), "LIBSVM rows stay sparse");
    assert_eq!(dataset.num_features(), 4);
    assert_eq!(
        dataset.to_f32(),
        array![
            [0.0, 1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [2.0, 0.0, 1.0, 0.0]
        ]
    );
    let error = train
        .to_dataset(&classes, 2)
        .expect_err("index 3 needs width 3");
    assert!(matches!(error, DataError::FeatureCountMismatch { .. }));

    let test_table = read_libsvm(&test, LibsvmOptions::default()).expect("valid");
    let error = test_table
        .to_dataset(&classes, 4)
        .expect_err("label 0 is unknown");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: line 2, column 1: label \"0\" is not a class of the training file, whose \
             classes are -1, 1",
            test.display()
        )
    );
}

fn csv_spec(dir: &Path, rows: usize) -> SplitSpec {
    let mut text = String::from("x,y\n");
    for row in 0..rows {
        text.push_str(&format!(
            "{row},{}\n",
            if row % 2 == 0 { "even" } else { "odd" }
        ));
    }
    let path = write(dir, "numbers.csv", text.as_bytes());
    SplitSpec::new(path, 7)
}

fn first_features(dataset: &crate::Dataset) -> Vec<f32> {
    dataset.to_f32().column(0).to_vec()
}

#[test]
fn splits_hold_out_seeded_fractions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = csv_spec(dir.path(), 100);
    let loaded = load_splits(&spec).expect("valid splits");
    assert_eq!(loaded.train.len(), 80);
    assert_eq!(loaded.validation.len(), 10);
    assert_eq!(loaded.test.as_ref().map(crate::Dataset::len), Some(10));
    assert_eq!(loaded.record.classes, ["even", "odd"]);
    assert_eq!(loaded.record.validation.source, "fraction");
    assert_eq!(loaded.record.validation.seed, Some(7));
    assert_eq!(loaded.record.train.source, "remainder");

    // Every row lands in exactly one split.
    let mut all: Vec<f32> = [&loaded.train, &loaded.validation]
        .into_iter()
        .chain(loaded.test.as_ref())
        .flat_map(first_features)
        .collect();
    all.sort_by(f32::total_cmp);
    let expected: Vec<f32> = (0..100).map(|row| row as f32).collect();
    assert_eq!(all, expected);

    // The same seed gives the same splits, another seed others.
    let again = load_splits(&spec).expect("valid splits");
    assert_eq!(
        first_features(&again.validation),
        first_features(&loaded.validation)
    );
    let other = load_splits(&SplitSpec { seed: 8, ..spec }).expect("valid splits");
    assert_ne!(
        first_features(&other.validation),
        first_features(&loaded.validation)
    );
}

#[test]
fn splits_use_given_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = csv_spec(dir.path(), 20);
    spec.input.test_data = Some(write(dir.path(), "test.csv", b"x,y\n5,odd\n"));
    spec.input.validation_fraction = Some(0.25);
    let loaded = load_splits(&spec).expect("valid splits");
    assert_eq!(loaded.train.len(), 15);
    assert_eq!(loaded.validation.len(), 5);
    let test = loaded.test.expect("test file");
    assert_eq!(test.labels, [1]);
    let record = loaded.record.test.expect("test record");
    assert_eq!(record.source, "file");
    assert_eq!(record.examples, 1);
}

#[test]
fn splits_reject_bad_fractions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = csv_spec(dir.path(), 10);
    spec.input.validation_fraction = Some(1.5);
    let error = load_splits(&spec).expect_err("fraction above 1");
    assert_eq!(
        error.to_string(),
        "--validation-fraction must be in (0, 1), got 1.5"
    );
    spec.input.validation_fraction = Some(0.5);
    spec.input.test_fraction = Some(0.5);
    let error = load_splits(&spec).expect_err("nothing left");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: holding out 10 of 10 examples leaves no training examples; lower \
             --validation-fraction or --test-fraction",
            spec.data.display()
        )
    );
}

#[test]
fn agaricus_reads_as_libsvm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/agaricus");
    let mut spec = SplitSpec::new(root.join("agaricus.txt.train"), 42);
    spec.input.format = Some(Format::Libsvm);
    spec.input.test_data = Some(root.join("agaricus.txt.test"));
    let loaded = load_splits(&spec).expect("agaricus loads");
    assert_eq!(loaded.record.classes, ["0", "1"]);
    assert_eq!(loaded.record.features, 126);
    assert_eq!(loaded.train.len() + loaded.validation.len(), 6513);
    assert_eq!(loaded.test.as_ref().map(crate::Dataset::len), Some(1611));
}
