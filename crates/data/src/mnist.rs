//! Loading MNIST-style data: an images file (3-dimensional IDX of unsigned
//! bytes) paired with a labels file (1-dimensional IDX) and 10 classes.
//! Pixels stay bytes with a scale of 1/255.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;

use ndarray::Array2;

use crate::dataset::{Dataset, Features, first_label_out_of_range};
use crate::error::{DataError, Result};
use crate::idx::{IdxArray, read_idx};

/// Number of MNIST classes (the digits 0 to 9).
pub const CLASSES: usize = 10;
/// Factor that maps a pixel byte to `[0, 1]`.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// A training set and, when the source provides one, a test set.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    /// Training examples, in file order.
    pub train: Dataset,
    /// Test examples in file order, or `None` when only one file pair was given.
    pub test: Option<Dataset>,
}

/// Loads an images file (3-dimensional IDX) and its labels file
/// (1-dimensional IDX) as a data set with 10 classes. Either file may be
/// gzipped.
///
/// Each image becomes one row of `rows * columns` byte features with scale
/// 1/255.
///
/// # Errors
///
/// Any error of [`read_idx`] for either file, [`DataError::WrongDimensions`],
/// [`DataError::NoExamples`], [`DataError::CountMismatch`] or
/// [`DataError::LabelOutOfRange`] naming the labels file.
pub fn load_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let (image_array, label_array) = thread::scope(|scope| {
        let label_thread = scope.spawn(|| read_idx(labels));
        let image_array = read_idx(images);
        (image_array, join(label_thread))
    });
    let features = image_features(images, image_array?)?;
    let labels_u8 = label_values(labels, label_array?)?;

    if labels_u8.len() != features.nrows() {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            image_count: features.nrows(),
            labels: labels.to_path_buf(),
            label_count: labels_u8.len(),
        });
    }
    let label_values: Vec<u32> = labels_u8.into_iter().map(u32::from).collect();
    if let Some((index, label)) = first_label_out_of_range(&label_values, CLASSES) {
        return Err(DataError::LabelOutOfRange {
            path: Some(labels.to_path_buf()),
            index,
            label,
            classes: CLASSES,
        });
    }

    let features = Features::U8 {
        values: features,
        scale: PIXEL_SCALE,
    };
    Dataset::new(features, label_values, CLASSES)
}

/// Returns the labels file that belongs to an images file: the same folder,
/// with "images-idx3" in the file name replaced by "labels-idx1".
///
/// # Errors
///
/// [`DataError::NoLabelsPath`] when the file name is missing, is not valid
/// UTF-8, or does not contain "images-idx3".
pub fn labels_path_for(images: &Path) -> Result<PathBuf> {
    let no_labels_path = || DataError::NoLabelsPath {
        path: images.to_path_buf(),
    };
    let name = images
        .file_name()
        .and_then(OsStr::to_str)
        .ok_or_else(no_labels_path)?;
    if !name.contains("images-idx3") {
        return Err(no_labels_path());
    }
    Ok(images.with_file_name(name.replacen("images-idx3", "labels-idx1", 1)))
}

/// Loads a folder that contains `train-images-idx3-ubyte`,
/// `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`, each gzipped (with a `.gz` suffix) or not.
/// When both forms of a file exist, the uncompressed one is read. The result
/// always has a test set.
///
/// # Errors
///
/// [`DataError::MissingMnistFile`] when a file is absent in both forms, and
/// any error of [`load_pair`].
pub fn load_dir(dir: &Path) -> Result<Splits> {
    let train_images = find_file(dir, TRAIN_IMAGES)?;
    let train_labels = find_file(dir, TRAIN_LABELS)?;
    let test_images = find_file(dir, TEST_IMAGES)?;
    let test_labels = find_file(dir, TEST_LABELS)?;

    // The two pairs are independent, so the test pair loads on its own thread.
    let (train, test) = thread::scope(|scope| {
        let test_thread = scope.spawn(|| load_pair(&test_images, &test_labels));
        let train = load_pair(&train_images, &train_labels);
        (train, join(test_thread))
    });
    Ok(Splits {
        train: train?,
        test: Some(test?),
    })
}

/// Loads the data named by a `--data` argument. A folder loads as
/// [`load_dir`]. A file is taken as an images file whose labels file is found
/// with [`labels_path_for`]. That pair becomes the training set, and there is
/// no test set.
///
/// # Errors
///
/// [`DataError::Io`] when `path` does not exist or cannot be inspected, and
/// any error of [`load_dir`], [`labels_path_for`] or [`load_pair`].
pub fn load(path: &Path) -> Result<Splits> {
    let metadata = fs::metadata(path).map_err(|error| DataError::io(path, error))?;
    if metadata.is_dir() {
        return load_dir(path);
    }
    let labels = labels_path_for(path)?;
    Ok(Splits {
        train: load_pair(path, &labels)?,
        test: None,
    })
}

/// Returns `dir/name`, or `dir/name.gz` when only that exists. Existence is
/// all that is checked here, so that reading an unreadable entry (such as a
/// folder) reports the problem with that entry.
fn find_file(dir: &Path, name: &'static str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.exists() {
        return Ok(plain);
    }
    let gzipped = dir.join(format!("{name}.gz"));
    if gzipped.exists() {
        return Ok(gzipped);
    }
    Err(DataError::MissingMnistFile {
        dir: dir.to_path_buf(),
        name,
    })
}

/// Checks that an IDX array contains images and flattens each image to a row.
fn image_features(path: &Path, array: IdxArray) -> Result<Array2<u8>> {
    let &[count, rows, columns] = array.dims.as_slice() else {
        return Err(DataError::WrongDimensions {
            path: path.to_path_buf(),
            expected: 3,
            dims: array.dims,
        });
    };
    if count == 0 || rows == 0 || columns == 0 {
        return Err(DataError::NoExamples {
            path: path.to_path_buf(),
            dims: array.dims,
        });
    }
    // read_idx returns exactly count * rows * columns values, so the shape fits.
    let features = Array2::from_shape_vec((count, rows * columns), array.values)
        .expect("read_idx returns as many values as its dimensions imply");
    Ok(features)
}

fn label_values(path: &Path, array: IdxArray) -> Result<Vec<u8>> {
    if array.dims.len() != 1 {
        return Err(DataError::WrongDimensions {
            path: path.to_path_buf(),
            expected: 1,
            dims: array.dims,
        });
    }
    Ok(array.values)
}

/// Waits for a scoped thread and returns its result, resuming a panic that
/// happened in it.
fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests;
