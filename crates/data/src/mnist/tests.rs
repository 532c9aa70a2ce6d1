use std::path::{Path, PathBuf};

use ndarray::array;

use super::*;
use crate::idx::write_idx;

/// Folder of the MNIST copy bundled with the repository.
fn bundled_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

/// Writes `count` images of 2 x 3 pixels, where image `i` contains the pixels
/// `i * 6 .. i * 6 + 6`, and returns the path.
fn write_images(dir: &Path, name: &str, count: usize, gzip: bool) -> PathBuf {
    let path = dir.join(name);
    let values: Vec<u8> = (0..count * 6).map(|v| v as u8).collect();
    write_idx(&path, &[count, 2, 3], &values, gzip).expect("write images");
    path
}

fn write_labels(dir: &Path, name: &str, labels: &[u8], gzip: bool) -> PathBuf {
    let path = dir.join(name);
    write_idx(&path, &[labels.len()], labels, gzip).expect("write labels");
    path
}

fn load_error(images: &Path, labels: &Path) -> String {
    load_pair(images, labels)
        .expect_err("load should fail")
        .to_string()
}

#[test]
fn load_pair_raw_and_gzipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    for gzip in [false, true] {
        let images = write_images(dir.path(), "a-images-idx3-ubyte", 3, gzip);
        let labels = write_labels(dir.path(), "a-labels-idx1-ubyte", &[7, 0, 9], gzip);

        let data = load_pair(&images, &labels).expect("load");
        assert_eq!(data.len(), 3);
        assert_eq!(data.num_features(), 6);
        assert_eq!(data.classes, 10);
        assert_eq!(data.labels, vec![7, 0, 9]);
        let Features::U8 { values, scale } = &data.features else {
            panic!("MNIST features should stay bytes");
        };
        assert_eq!(*scale, 1.0 / 255.0);
        assert_eq!(values.row(1), array![6u8, 7, 8, 9, 10, 11]);
    }
}

#[test]
fn count_mismatch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path(), "x-images-idx3-ubyte", 3, false);
    let labels = write_labels(dir.path(), "x-labels-idx1-ubyte", &[1, 2], true);
    assert_eq!(
        load_error(&images, &labels),
        format!(
            "images file {} holds 3 images but labels file {} holds 2 labels",
            images.display(),
            labels.display()
        )
    );
}

#[test]
fn label_out_of_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path(), "x-images-idx3-ubyte", 7, false);
    let labels = write_labels(dir.path(), "y", &[0, 1, 2, 3, 4, 12, 200], false);
    assert_eq!(
        load_error(&images, &labels),
        format!(
            "{}: label 12 at index 5 is outside the class range 0..10",
            labels.display()
        )
    );
}

#[test]
fn images_need_three_dimensions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("flat");
    write_idx(&images, &[2, 6], &[0; 12], false).expect("write");
    let labels = write_labels(dir.path(), "labels", &[0, 1], false);
    assert_eq!(
        load_error(&images, &labels),
        format!(
            "{}: expected a 3-dimensional IDX array (MNIST images are 3-dimensional), \
             found dimensions 2 x 6",
            images.display()
        )
    );
}

#[test]
fn labels_need_one_dimension() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path(), "images", 2, false);
    let labels = dir.path().join("labels");
    write_idx(&labels, &[2, 1], &[0, 1], false).expect("write");
    assert_eq!(
        load_error(&images, &labels),
        format!(
            "{}: expected a 1-dimensional IDX array (MNIST labels are 1-dimensional), \
             found dimensions 2 x 1",
            labels.display()
        )
    );
}

#[test]
fn images_file_without_images() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images");
    write_idx(&images, &[0, 28, 28], &[], false).expect("write");
    let labels = write_labels(dir.path(), "labels", &[], false);
    assert_eq!(
        load_error(&images, &labels),
        format!(
            "{}: holds no examples (IDX dimensions 0 x 28 x 28)",
            images.display()
        )
    );
}

#[test]
fn images_error_reported_before_labels_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("missing-images");
    let labels = dir.path().join("missing-labels");
    assert_eq!(
        load_error(&images, &labels),
        format!(
            "{}: not found (no such file or directory)",
            images.display()
        )
    );
}

#[test]
fn labels_path_replaces_images_idx3() {
    let images = Path::new("data/mnist/train-images-idx3-ubyte.gz");
    let labels = labels_path_for(images).expect("derivable");
    assert_eq!(labels, Path::new("data/mnist/train-labels-idx1-ubyte.gz"));
}

#[test]
fn labels_path_needs_images_idx3() {
    let error = labels_path_for(Path::new("data/pixels.bin")).expect_err("not derivable");
    assert_eq!(
        error.to_string(),
        "data/pixels.bin: cannot find the labels file, because the file name does not \
         contain \"images-idx3\" (expected a name like train-images-idx3-ubyte.gz)"
    );
}

#[test]
fn load_single_file_has_no_test_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path(), "train-images-idx3-ubyte.gz", 2, true);
    write_labels(dir.path(), "train-labels-idx1-ubyte.gz", &[3, 4], true);

    let splits = load(&images).expect("load");
    assert_eq!(splits.train.labels, vec![3, 4]);
    assert!(splits.test.is_none());
}

#[test]
fn load_single_file_missing_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = write_images(dir.path(), "train-images-idx3-ubyte", 2, false);
    let error = load(&images).expect_err("labels missing");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: not found (no such file or directory)",
            dir.path().join("train-labels-idx1-ubyte").display()
        )
    );
}

#[test]
fn load_missing_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data/foo");
    let error = load(&path).expect_err("missing");
    assert_eq!(
        error.to_string(),
        format!("{}: not found (no such file or directory)", path.display())
    );
}

#[test]
fn load_dir_mixed_compression() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_images(dir.path(), "train-images-idx3-ubyte.gz", 4, true);
    write_labels(dir.path(), "train-labels-idx1-ubyte", &[0, 1, 2, 3], false);
    write_images(dir.path(), "t10k-images-idx3-ubyte", 2, false);
    write_labels(dir.path(), "t10k-labels-idx1-ubyte.gz", &[8, 9], true);

    let splits = load(dir.path()).expect("load folder");
    assert_eq!(splits.train.labels, vec![0, 1, 2, 3]);
    let test = splits.test.expect("folder has a test set");
    assert_eq!(test.labels, vec![8, 9]);
}

#[test]
fn load_dir_prefers_uncompressed_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_images(dir.path(), "train-images-idx3-ubyte", 1, false);
    write_labels(dir.path(), "train-labels-idx1-ubyte", &[5], false);
    write_labels(dir.path(), "train-labels-idx1-ubyte.gz", &[6], true);
    write_images(dir.path(), "t10k-images-idx3-ubyte", 1, false);
    write_labels(dir.path(), "t10k-labels-idx1-ubyte", &[7], false);

    let splits = load_dir(dir.path()).expect("load folder");
    assert_eq!(splits.train.labels, vec![5]);
}

#[test]
fn load_dir_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_images(dir.path(), "train-images-idx3-ubyte.gz", 1, true);
    write_labels(dir.path(), "train-labels-idx1-ubyte.gz", &[1], true);
    write_images(dir.path(), "t10k-images-idx3-ubyte.gz", 1, true);

    let error = load_dir(dir.path()).expect_err("t10k labels missing");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: not found, nor t10k-labels-idx1-ubyte without .gz (an MNIST folder needs \
             the train and t10k images and labels files)",
            dir.path().join("t10k-labels-idx1-ubyte.gz").display()
        )
    );
}

#[test]
fn load_dir_unreadable_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("train-images-idx3-ubyte");
    std::fs::create_dir(&images).expect("folder in place of a file");
    write_labels(dir.path(), "train-labels-idx1-ubyte", &[1], false);
    write_images(dir.path(), "t10k-images-idx3-ubyte", 1, false);
    write_labels(dir.path(), "t10k-labels-idx1-ubyte", &[1], false);

    let error = load_dir(dir.path()).expect_err("images entry is a folder");
    assert_eq!(
        error.to_string(),
        format!("{}: is a directory, expected a file", images.display())
    );
}

#[test]
fn bundled_mnist_labels() {
    let dir = bundled_mnist();
    let train = read_idx(&dir.join("train-labels-idx1-ubyte.gz")).expect("train labels");
    let test = read_idx(&dir.join("t10k-labels-idx1-ubyte.gz")).expect("test labels");

    assert_eq!(train.dims, vec![60000]);
    assert_eq!(test.dims, vec![10000]);
    assert_eq!(&train.values[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(&test.values[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);

    let mut per_class = [0usize; 10];
    for &label in &train.values {
        per_class[usize::from(label)] += 1;
    }
    assert_eq!(
        per_class,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
}

#[test]
fn bundled_mnist_folder() {
    let splits = load(&bundled_mnist()).expect("bundled MNIST");
    let test = splits.test.expect("folder has a test set");

    assert_eq!(splits.train.len(), 60000);
    assert_eq!(splits.train.num_features(), 784);
    assert_eq!(test.len(), 10000);
    assert_eq!(test.num_features(), 784);
    assert_eq!(splits.train.classes, 10);

    // Every image of MNIST has some ink, so no row is all zeros.
    let Features::U8 { values, .. } = &splits.train.features else {
        panic!("MNIST features should stay bytes");
    };
    assert!(
        values
            .rows()
            .into_iter()
            .all(|row| row.iter().any(|&v| v > 0))
    );
}
