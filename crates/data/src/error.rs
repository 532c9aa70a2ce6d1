//! The error type of this crate. Every message fits on one line and starts
//! with the file it concerns when a file is involved.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Errors from reading data sets, planning shards, and reading or writing
/// shard files and checkpoints.
///
/// Variants that wrap an `io::Error` include its message in their own
/// `Display` output, so `source()` returns `None` and error chains do not
/// print the message twice.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Opening, reading or writing a file failed.
    #[error("{}: {}", path.display(), describe_io(error))]
    Io {
        /// File the operation was on.
        path: PathBuf,
        /// Error returned by the operating system.
        error: io::Error,
    },

    /// A file starts like gzip but its compressed stream is invalid.
    #[error(
        "{}: cannot decompress gzip data ({error}), the file is truncated or corrupt",
        path.display()
    )]
    Gzip {
        /// Compressed file.
        path: PathBuf,
        /// Error returned by the decompressor.
        error: io::Error,
    },

    /// The first four bytes are not an IDX magic number.
    #[error(
        "{}: not an IDX file (magic number 0x{magic:08x}, expected 0x00000801 or 0x00000803)",
        path.display()
    )]
    NotIdx {
        /// File that was read.
        path: PathBuf,
        /// First four bytes of the (decompressed) file, big-endian.
        magic: u32,
    },

    /// The IDX magic number names an element type other than unsigned bytes.
    #[error(
        "{}: IDX data type 0x{code:02x} ({}) is not supported, only unsigned bytes (0x08) are",
        path.display(),
        idx_type_name(*code)
    )]
    UnsupportedIdxType {
        /// File that was read.
        path: PathBuf,
        /// Type byte of the magic number.
        code: u8,
    },

    /// The file ends inside the IDX header.
    #[error(
        "{}: truncated: the IDX header needs {needed} bytes but the file holds {actual}",
        path.display()
    )]
    TruncatedHeader {
        /// File that was read.
        path: PathBuf,
        /// Header length in bytes, or 4 when the magic number itself is cut off.
        needed: usize,
        /// Bytes present in the (decompressed) file.
        actual: usize,
    },

    /// The file contains fewer data bytes than its IDX header declares.
    #[error(
        "{}: truncated: header declares {declared} bytes of data but the file holds {actual}",
        path.display()
    )]
    Truncated {
        /// File that was read.
        path: PathBuf,
        /// Data length in bytes that the dimensions imply.
        declared: u64,
        /// Data bytes present after the header.
        actual: u64,
    },

    /// The file contains more data bytes than its IDX header declares.
    #[error(
        "{}: the file holds more than the {declared} bytes of data its header declares",
        path.display()
    )]
    TrailingData {
        /// File that was read.
        path: PathBuf,
        /// Data length in bytes that the dimensions imply.
        declared: u64,
    },

    /// The product of the IDX dimensions does not fit in 64 bits.
    #[error(
        "{}: header declares dimensions {} whose product overflows",
        path.display(),
        DimensionList(dims)
    )]
    DimensionsOverflow {
        /// File that was read.
        path: PathBuf,
        /// Dimensions from the header.
        dims: Vec<u64>,
    },

    /// An IDX array has a different number of dimensions than the caller needs.
    #[error(
        "{}: expected a {expected}-dimensional IDX array ({}), found dimensions {}",
        path.display(),
        expected_dims_hint(*expected),
        DimensionList(dims)
    )]
    WrongDimensions {
        /// File that was read.
        path: PathBuf,
        /// Number of dimensions the caller needs.
        expected: usize,
        /// Dimensions from the header.
        dims: Vec<usize>,
    },

    /// An images file declares zero images or zero pixels per image.
    #[error(
        "{}: holds no examples (IDX dimensions {})",
        path.display(),
        DimensionList(dims)
    )]
    NoExamples {
        /// File that was read.
        path: PathBuf,
        /// Dimensions from the header.
        dims: Vec<usize>,
    },

    /// An images file and its labels file declare different example counts.
    #[error(
        "images file {} holds {image_count} images but labels file {} holds {label_count} labels",
        images.display(),
        labels.display()
    )]
    CountMismatch {
        /// Images file.
        images: PathBuf,
        /// Number of images in it.
        image_count: usize,
        /// Labels file.
        labels: PathBuf,
        /// Number of labels in it.
        label_count: usize,
    },

    /// A features file and its labels file hold different numbers of
    /// examples.
    #[error(
        "features file {} holds {feature_rows} examples but labels file {} holds {label_count} labels",
        features.display(),
        labels.display()
    )]
    ExampleCountMismatch {
        /// Features file.
        features: PathBuf,
        /// Rows in it.
        feature_rows: usize,
        /// Labels file.
        labels: PathBuf,
        /// Labels in it.
        label_count: usize,
    },

    /// A feature matrix and a label vector of different lengths were combined.
    #[error("the features hold {rows} rows but there are {labels} labels")]
    RowCountMismatch {
        /// Rows of the feature matrix.
        rows: usize,
        /// Length of the label vector.
        labels: usize,
    },

    /// A label is not below the number of classes.
    #[error(
        "{}label {label} at index {index} is outside the class range 0..{classes}",
        PathPrefix(path.as_deref())
    )]
    LabelOutOfRange {
        /// Labels file, when the labels came from one.
        path: Option<PathBuf>,
        /// Position of the label, counted from 0.
        index: usize,
        /// The offending label.
        label: u32,
        /// Number of classes. Valid labels are `0..classes`.
        classes: usize,
    },

    /// The scale of unsigned-byte features is NaN or infinite.
    #[error("feature scale {scale} is not a finite number")]
    InvalidScale {
        /// The offending scale.
        scale: f32,
    },

    /// The labels file name cannot be derived from an images file name.
    #[error(
        "{}: cannot find the labels file, because the file name does not contain \
         \"images-idx3\" (expected a name like train-images-idx3-ubyte.gz)",
        path.display()
    )]
    NoLabelsPath {
        /// Images file.
        path: PathBuf,
    },

    /// An MNIST folder lacks one of its four files, gzipped or not.
    #[error(
        "{}: not found, nor {name} without .gz (an MNIST folder needs the train and t10k \
         images and labels files)",
        dir.join(format!("{name}.gz")).display()
    )]
    MissingMnistFile {
        /// Folder that was searched.
        dir: PathBuf,
        /// File name without the `.gz` suffix.
        name: &'static str,
    },

    /// A CSV or LIBSVM file has an invalid value. CSV columns count fields
    /// from 1, and LIBSVM columns count bytes from 1.
    #[error("{}: line {line}, column {column}: {message}", path.display())]
    Syntax {
        /// File that was read.
        path: PathBuf,
        /// Line of the value, counted from 1.
        line: u64,
        /// Column of the value, counted from 1.
        column: u64,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A NumPy `.npy` file cannot be read as the array the caller needs.
    #[error("{}: {message}", path.display())]
    InvalidNpy {
        /// File that was read.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A data file holds no examples.
    #[error("{}: contains no examples", path.display())]
    EmptyFile {
        /// File that was read.
        path: PathBuf,
    },

    /// The data format cannot be told from the file name.
    #[error(
        "{}: cannot tell the data format from the file name; give --format idx, csv, \
         libsvm or npy",
        path.display()
    )]
    UnknownFormat {
        /// File whose format was requested.
        path: PathBuf,
    },

    /// The labels file of a NumPy features file cannot be derived from its name.
    #[error(
        "{}: cannot find the labels file, because the file name contains neither \
         \"features\" nor starts with \"X\" (expected train-features.npy with \
         train-labels.npy, or X_train.npy with y_train.npy)",
        path.display()
    )]
    NoNpyLabelsPath {
        /// Features file.
        path: PathBuf,
    },

    /// A label of a validation, test or scored file is not a class of the
    /// training file.
    #[error(
        "{}: {location}: label \"{label}\" is not a class of the training file, \
         whose classes are {classes}",
        path.display()
    )]
    UnknownLabel {
        /// File that was read.
        path: PathBuf,
        /// Line and column, or row, of the label.
        location: String,
        /// The label text.
        label: String,
        /// The training classes, comma-separated.
        classes: String,
    },

    /// Regression was requested on IDX data, whose labels are classes.
    #[error(
        "{}: IDX files hold class labels, so they cannot train a linear regression; \
         use a CSV, LIBSVM or NumPy file with real targets, or a classifier such as \
         --model softmax",
        path.display()
    )]
    RegressionOnIdx {
        /// The IDX file or folder.
        path: PathBuf,
    },

    /// A regression target is not a finite number.
    #[error(
        "{}: {location}: regression target \"{label}\" is not a finite number; \
         a linear model needs a numeric target in every row (fix or drop the row, \
         or train a classifier such as --model softmax)",
        path.display()
    )]
    InvalidTarget {
        /// File that was read.
        path: PathBuf,
        /// Line and column, or row, of the target.
        location: String,
        /// The target text.
        label: String,
    },

    /// A regression target in memory is NaN or infinite.
    #[error("regression target {target} at index {index} is not a finite number")]
    NonFiniteTarget {
        /// Position of the target, counted from 0.
        index: usize,
        /// The offending target.
        target: f32,
    },

    /// Two files of one run have different numbers of features.
    #[error(
        "{}: has {found} features per example but the training file has {expected}",
        path.display()
    )]
    FeatureCountMismatch {
        /// File whose width differs.
        path: PathBuf,
        /// Features per example of the training file.
        expected: usize,
        /// Features per example of this file.
        found: usize,
    },

    /// The validation tail of an IDX training file leaves no training
    /// examples.
    #[error(
        "--validation-size {validation} leaves no training examples: the training file holds \
         {examples}"
    )]
    ValidationSizeTooLarge {
        /// Requested validation examples.
        validation: usize,
        /// Examples in the training file.
        examples: usize,
    },

    /// A fraction of the training file to hold out is out of range.
    #[error("{flag} must be in (0, 1), got {value}")]
    InvalidFraction {
        /// Command-line flag that set it.
        flag: &'static str,
        /// The value given.
        value: f64,
    },

    /// The held-out fractions leave too few training examples.
    #[error(
        "{}: holding out {held_out} of {len} examples leaves no training examples; lower \
         --validation-fraction or --test-fraction",
        path.display()
    )]
    HoldOutTooLarge {
        /// Training file.
        path: PathBuf,
        /// Examples held out.
        held_out: usize,
        /// Examples in the file.
        len: usize,
    },

    /// A held-out tail is not smaller than the data set it is cut from.
    #[error(
        "cannot split off the last {tail} of {len} examples, because the held-out part \
         must be smaller than the data set"
    )]
    TailTooLarge {
        /// Requested number of held-out rows.
        tail: usize,
        /// Rows in the data set.
        len: usize,
    },

    /// A shard plan was requested for zero shards.
    #[error("the number of shards must be at least 1")]
    ZeroShards,

    /// A shard plan or minibatch was requested with a batch size of zero.
    #[error("the batch size must be at least 1")]
    ZeroBatchSize,

    /// The training set has fewer minibatches than there are shards.
    #[error(
        "{examples} training examples make only {batches} minibatches of {batch_size}, \
         too few for {shards} shards. Use fewer shards or a smaller batch size"
    )]
    TooFewBatches {
        /// Training examples to be cut into shards.
        examples: usize,
        /// Rows per minibatch.
        batch_size: usize,
        /// Minibatches the examples make, counting a final partial one.
        batches: usize,
        /// Requested number of shards.
        shards: usize,
    },

    /// Bytes that should hold a shard are malformed.
    #[error("{}invalid shard data: {reason}", PathPrefix(path.as_deref()))]
    InvalidShard {
        /// Shard file, when the bytes came from one.
        path: Option<PathBuf>,
        /// Description of the problem.
        reason: String,
    },

    /// A checkpoint cannot be written or read back as the model it describes.
    #[error("{}: invalid checkpoint: {reason}", path.display())]
    InvalidCheckpoint {
        /// Checkpoint file, or its folder when the file name is invalid.
        path: PathBuf,
        /// Description of the problem.
        reason: String,
    },

    /// A model description in a checkpoint or in `model.json` is invalid.
    /// The model crate's message already starts with "invalid model".
    #[error("{}: {error}", path.display())]
    InvalidModelDescription {
        /// File the description came from, or the checkpoint being written.
        path: PathBuf,
        /// Error from parsing or validating the description.
        error: downpour_model::ModelError,
    },
}

/// The `Result` type of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &Path, error: io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Describes an I/O error in lower case without the "(os error N)" suffix
/// for the kinds a user is most likely to meet.
pub(crate) fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "not found (no such file or directory)".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::IsADirectory => "is a directory, expected a file".to_owned(),
        io::ErrorKind::NotADirectory => "a component of the path is not a directory".to_owned(),
        _ => error.to_string(),
    }
}

fn idx_type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "16-bit integer",
        0x0c => "32-bit integer",
        0x0d => "32-bit float",
        0x0e => "64-bit float",
        _ => "unknown type",
    }
}

fn expected_dims_hint(expected: usize) -> &'static str {
    match expected {
        1 => "MNIST labels are 1-dimensional",
        3 => "MNIST images are 3-dimensional",
        _ => "IDX",
    }
}

/// Formats dimensions as `60000 x 28 x 28`.
struct DimensionList<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for DimensionList<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, dim) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" x ")?;
            }
            write!(f, "{dim}")?;
        }
        Ok(())
    }
}

/// Formats an optional path as `path: `, or as nothing.
struct PathPrefix<'a>(Option<&'a Path>);

impl fmt::Display for PathPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}: ", path.display()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_not_found_message() {
        let error = DataError::io(
            Path::new("data/foo"),
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(
            error.to_string(),
            "data/foo: not found (no such file or directory)"
        );
    }

    #[test]
    fn label_error_without_path() {
        let error = DataError::LabelOutOfRange {
            path: None,
            index: 5,
            label: 12,
            classes: 10,
        };
        assert_eq!(
            error.to_string(),
            "label 12 at index 5 is outside the class range 0..10"
        );
    }

    #[test]
    fn dimension_list_format() {
        assert_eq!(
            DimensionList(&[60000, 28, 28]).to_string(),
            "60000 x 28 x 28"
        );
        assert_eq!(DimensionList::<u64>(&[]).to_string(), "");
    }
}
