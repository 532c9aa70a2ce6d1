//! Training, validation and test splits for any format: each held-out split
//! comes from its own file or from a seeded fraction of the training file,
//! and [`SplitsRecord`] states which.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::formats::{ClassMap, Format, RawTable, ReadOptions, read_table};
use crate::{mnist, shuffle};

/// Fraction of a non-IDX training file held out for validation or test
/// when neither a file nor a fraction is given.
pub const DEFAULT_HOLD_OUT_FRACTION: f64 = 0.1;

/// Added to the run's seed for the hold-out permutation, so that it differs
/// from the one-time shuffle of the training set.
const HOLD_OUT_SEED_OFFSET: u64 = 0x686f_6c64;

/// Reader settings and the sources of the held-out splits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputOptions {
    /// Format of every file, or `None` to detect it from each file name.
    pub format: Option<Format>,
    /// Reader options.
    pub read: ReadOptions,
    /// File of validation examples.
    pub validation_data: Option<PathBuf>,
    /// File of test examples.
    pub test_data: Option<PathBuf>,
    /// Fraction of the training file to hold out for validation.
    pub validation_fraction: Option<f64>,
    /// Fraction of the training file to hold out for test.
    pub test_fraction: Option<f64>,
}

/// The data source and its split settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSpec {
    /// Training file, or an MNIST folder.
    pub data: PathBuf,
    /// Format, reader options, split files and fractions.
    pub input: InputOptions,
    /// Examples taken from the end of an IDX training file for validation
    /// when neither a validation file nor a fraction is given.
    pub validation_size: usize,
    /// Seed of the hold-out permutation.
    pub seed: u64,
    /// Whether labels are real regression targets rather than classes. IDX
    /// data has classes only.
    pub regression: bool,
}

impl SplitSpec {
    /// Returns a spec for `data` with defaults: the format from the file
    /// name, no split files or fractions, and MNIST's 10,000 validation
    /// examples.
    pub fn new(data: PathBuf, seed: u64) -> Self {
        SplitSpec {
            data,
            input: InputOptions::default(),
            validation_size: 10_000,
            seed,
            regression: false,
        }
    }
}

/// The origin of one split, as recorded in the run summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitRecord {
    /// `file` (all of `path`), `fraction` (a seeded `fraction` of the
    /// training file), `tail` (the last examples of the training file) or
    /// `remainder` (the training file without the held-out examples).
    pub source: &'static str,
    /// File the examples came from.
    pub path: String,
    /// Fraction of the training file, for `fraction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Seed of the hold-out permutation, for `fraction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Examples in the split.
    pub examples: usize,
}

/// The data format, the classes and the origin of each split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitsRecord {
    /// `idx`, `csv`, `libsvm` or `npy`.
    pub format: String,
    /// `classification` or `regression`.
    pub task: String,
    /// Label text of each class, in class-id order; empty for regression.
    pub classes: Vec<String>,
    /// Features per example.
    pub features: usize,
    pub train: SplitRecord,
    pub validation: SplitRecord,
    pub test: Option<SplitRecord>,
}

/// The three splits and their record.
#[derive(Debug, Clone)]
pub struct LoadedSplits {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Option<Dataset>,
    pub record: SplitsRecord,
}

/// Reads the training file and any split files, and holds out what is
/// missing.
///
/// For IDX data the test split is the folder's `t10k` files unless
/// `--test-data` is given, and without a validation file or fraction the
/// last `validation_size` examples are held out. For other formats a
/// missing split file without a fraction holds out
/// [`DEFAULT_HOLD_OUT_FRACTION`].
///
/// # Errors
///
/// Any reader error, [`DataError::InvalidFraction`],
/// [`DataError::HoldOutTooLarge`], [`DataError::TailTooLarge`],
/// [`DataError::FeatureCountMismatch`] or [`DataError::UnknownLabel`].
pub fn load_splits(spec: &SplitSpec) -> Result<LoadedSplits> {
    check_fraction("--validation-fraction", spec.input.validation_fraction)?;
    check_fraction("--test-fraction", spec.input.test_fraction)?;
    let format = match spec.input.format {
        Some(format) => format,
        None => Format::from_path(&spec.data)?,
    };
    let loaded = match format {
        Format::Idx if spec.regression => {
            return Err(DataError::RegressionOnIdx {
                path: spec.data.clone(),
            });
        }
        Format::Idx => load_idx(spec)?,
        _ => load_tables(spec, format)?,
    };
    hold_out(spec, format, loaded)
}

/// Data sets read from files, before any hold-out.
struct Loaded {
    train: Dataset,
    validation: Option<Dataset>,
    test: Option<(Dataset, PathBuf)>,
    class_names: Vec<String>,
}

fn load_idx(spec: &SplitSpec) -> Result<Loaded> {
    let splits = mnist::load(&spec.data)?;
    let validation = spec
        .input
        .validation_data
        .as_deref()
        .map(load_idx_file)
        .transpose()?;
    let test = match &spec.input.test_data {
        Some(path) => Some((load_idx_file(path)?, path.clone())),
        None => splits.test.map(|test| (test, spec.data.clone())),
    };
    for (dataset, path) in validation
        .iter()
        .zip(spec.input.validation_data.iter())
        .chain(test.iter().map(|(dataset, path)| (dataset, path)))
    {
        if dataset.num_features() != splits.train.num_features() {
            return Err(DataError::FeatureCountMismatch {
                path: path.clone(),
                expected: splits.train.num_features(),
                found: dataset.num_features(),
            });
        }
    }
    Ok(Loaded {
        class_names: (0..splits.train.classes).map(|c| c.to_string()).collect(),
        train: splits.train,
        validation,
        test,
    })
}

/// Loads an IDX folder's test split or an images file with its labels.
fn load_idx_file(path: &Path) -> Result<Dataset> {
    let splits = mnist::load(path)?;
    Ok(splits.test.unwrap_or(splits.train))
}

fn load_tables(spec: &SplitSpec, format: Format) -> Result<Loaded> {
    let read = |path: &Path| {
        let format = match spec.input.format {
            Some(format) => format,
            None => Format::from_path(path)?,
        };
        read_table(path, format, &spec.input.read)
    };
    let train = read_table(&spec.data, format, &spec.input.read)?;
    let validation = spec
        .input
        .validation_data
        .as_deref()
        .map(read)
        .transpose()?;
    let test = spec.input.test_data.as_deref().map(read).transpose()?;

    let tables: Vec<&RawTable> = [Some(&train), validation.as_ref(), test.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let width = tables.iter().map(|table| table.width()).max().unwrap_or(0);
    let classes = match spec.regression {
        true => ClassMap { names: Vec::new() },
        false => ClassMap::fit(train.labels.iter().map(String::as_str)),
    };
    let to_dataset = |table: &RawTable| match spec.regression {
        true => table.to_regression_dataset(width),
        false => table.to_dataset(&classes, width),
    };
    Ok(Loaded {
        train: to_dataset(&train)?,
        validation: validation.as_ref().map(to_dataset).transpose()?,
        test: match (&test, &spec.input.test_data) {
            (Some(table), Some(path)) => Some((to_dataset(table)?, path.clone())),
            _ => None,
        },
        class_names: classes.names,
    })
}

/// Holds out the splits that no file provides, and records how each split
/// was made.
fn hold_out(spec: &SplitSpec, format: Format, loaded: Loaded) -> Result<LoadedSplits> {
    let Loaded {
        train,
        validation,
        test,
        class_names,
    } = loaded;
    let data_path = spec.data.display().to_string();
    let fraction_for = |has_file: bool, given: Option<f64>| match (has_file, given) {
        (true, _) => None,
        (false, Some(fraction)) => Some(fraction),
        (false, None) if format == Format::Idx => None,
        (false, None) => Some(DEFAULT_HOLD_OUT_FRACTION),
    };
    let validation_fraction = fraction_for(validation.is_some(), spec.input.validation_fraction);
    let test_fraction = fraction_for(test.is_some(), spec.input.test_fraction);
    let use_tail = validation.is_none() && validation_fraction.is_none();

    let file_len = train.len();
    let count = |fraction: Option<f64>| {
        fraction.map_or(0, |fraction| {
            ((file_len as f64 * fraction).round() as usize).max(1)
        })
    };
    let test_count = count(test_fraction);
    let validation_count = count(validation_fraction);
    let tail = if use_tail { spec.validation_size } else { 0 };
    if use_tail && tail >= file_len {
        return Err(DataError::ValidationSizeTooLarge {
            validation: tail,
            examples: file_len,
        });
    }
    let held_out = test_count + validation_count + tail;
    if held_out >= file_len {
        return Err(DataError::HoldOutTooLarge {
            path: spec.data.clone(),
            held_out,
            len: file_len,
        });
    }

    let fraction_record = |fraction: f64, examples: usize| SplitRecord {
        source: "fraction",
        path: data_path.clone(),
        fraction: Some(fraction),
        seed: Some(spec.seed),
        examples,
    };
    let file_record = |path: &Path, examples: usize| SplitRecord {
        source: "file",
        path: path.display().to_string(),
        fraction: None,
        seed: None,
        examples,
    };

    let (rest, tail_set) = train.split_off_tail(tail)?;
    // One permutation of the rows left after the tail: its first rows go to
    // the test split and the next ones to validation. Each split keeps file
    // order.
    let order = shuffle::permutation(rest.len(), spec.seed.wrapping_add(HOLD_OUT_SEED_OFFSET));
    let sorted = |rows: &[usize]| {
        let mut rows = rows.to_vec();
        rows.sort_unstable();
        rows
    };
    let test_rows = sorted(&order[..test_count]);
    let validation_rows = sorted(&order[test_count..test_count + validation_count]);
    let train_rows = sorted(&order[test_count + validation_count..]);

    let test = match (test, test_fraction) {
        (Some((dataset, path)), _) => {
            let record = file_record(&path, dataset.len());
            Some((dataset, record))
        }
        (None, Some(fraction)) => Some((
            rest.select(&test_rows),
            fraction_record(fraction, test_count),
        )),
        (None, None) => None,
    };
    let validation = match (validation, validation_fraction) {
        (Some(dataset), _) => {
            let path = spec.input.validation_data.as_deref().unwrap_or(&spec.data);
            let record = file_record(path, dataset.len());
            (dataset, record)
        }
        (None, Some(fraction)) => (
            rest.select(&validation_rows),
            fraction_record(fraction, validation_count),
        ),
        (None, None) => {
            let record = SplitRecord {
                source: "tail",
                path: data_path.clone(),
                fraction: None,
                seed: None,
                examples: tail_set.len(),
            };
            (tail_set, record)
        }
    };
    let train = if held_out > tail {
        rest.select(&train_rows)
    } else {
        rest
    };
    let train_record = SplitRecord {
        source: if held_out > 0 { "remainder" } else { "file" },
        path: data_path,
        fraction: None,
        seed: None,
        examples: train.len(),
    };
    let record = SplitsRecord {
        format: format.name().to_owned(),
        task: match spec.regression {
            true => "regression",
            false => "classification",
        }
        .to_owned(),
        classes: class_names,
        features: train.num_features(),
        train: train_record,
        validation: validation.1,
        test: test.as_ref().map(|(_, record)| record.clone()),
    };
    Ok(LoadedSplits {
        train,
        validation: validation.0,
        test: test.map(|(dataset, _)| dataset),
        record,
    })
}

fn check_fraction(flag: &'static str, value: Option<f64>) -> Result<()> {
    match value {
        Some(value) if !(value > 0.0 && value < 1.0) => {
            Err(DataError::InvalidFraction { flag, value })
        }
        _ => Ok(()),
    }
}
