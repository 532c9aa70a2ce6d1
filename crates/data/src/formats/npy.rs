//! Reading NumPy `.npy` arrays: a 2-dimensional features array
//! `[examples, features]` of float32, float64 or uint8, and a 1-dimensional
//! labels array in a second file.
//!
//! The `npyz` crate parses the header. Values are read one at a time from a
//! buffered file, and the file's length is checked against the header first,
//! so a truncated file or one with trailing bytes fails before any value is
//! read.

use std::fs::File;
use std::io::{self, BufReader, Seek};
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar};

use crate::error::{DataError, Result};
use crate::formats::table::{LabelPosition, RawFeatures, RawTable};

/// Returns the labels file of a features file: `features` in the file name
/// becomes `labels` (`train-features.npy` gives `train-labels.npy`), or a
/// leading `X` becomes `y` (`X_train.npy` gives `y_train.npy`).
///
/// # Errors
///
/// [`DataError::NoNpyLabelsPath`] when the name fits neither rule.
pub fn labels_path_for(features: &Path) -> Result<PathBuf> {
    let name = features
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    if let Some(start) = name.rfind("features") {
        let mut labels = name.to_owned();
        labels.replace_range(start..start + "features".len(), "labels");
        return Ok(features.with_file_name(labels));
    }
    if let Some(rest) = name.strip_prefix('X') {
        return Ok(features.with_file_name(format!("y{rest}")));
    }
    Err(DataError::NoNpyLabelsPath {
        path: features.to_path_buf(),
    })
}

/// Reads a features file and its labels file into a table of dense rows.
/// Labels are kept as text: integers in decimal, floats in their shortest
/// exact form.
///
/// # Errors
///
/// [`DataError::Io`] when a file cannot be read, [`DataError::InvalidNpy`]
/// for a file that is not a `.npy` array of the needed shape and type, or
/// whose length disagrees with its header, [`DataError::ExampleCountMismatch`]
/// when the two files hold different numbers of examples, and
/// [`DataError::EmptyFile`] when they hold none.
pub fn read_npy_pair(features: &Path, labels: &Path) -> Result<RawTable> {
    let (values, rows, width) = read_features(features)?;
    let label_text = read_labels(labels)?;
    if label_text.len() != rows {
        return Err(DataError::ExampleCountMismatch {
            features: features.to_path_buf(),
            feature_rows: rows,
            labels: labels.to_path_buf(),
            label_count: label_text.len(),
        });
    }
    if rows == 0 {
        return Err(DataError::EmptyFile {
            path: features.to_path_buf(),
        });
    }
    Ok(RawTable {
        path: labels.to_path_buf(),
        features: RawFeatures::Dense { values, width },
        positions: (0..rows).map(LabelPosition::Row).collect(),
        labels: label_text,
    })
}

/// An opened `.npy` file whose length matches its header.
struct CheckedNpy {
    path: PathBuf,
    file: NpyFile<BufReader<File>>,
    /// Shape from the header.
    shape: Vec<u64>,
    /// Type string from the header, such as `<f4`.
    descr: String,
    type_char: TypeChar,
    /// Bytes per value.
    size: u64,
}

impl CheckedNpy {
    fn open(path: &Path) -> Result<CheckedNpy> {
        let invalid = |message: String| DataError::InvalidNpy {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|error| DataError::io(path, error))?;
        let file_len = file
            .metadata()
            .map_err(|error| DataError::io(path, error))?
            .len();
        let mut reader = BufReader::new(file);
        let header = NpyHeader::from_reader(&mut reader)
            .map_err(|error| invalid(format!("not a valid .npy file: {error}")))?;
        let header_len = reader
            .stream_position()
            .map_err(|error| DataError::io(path, error))?;
        let file = NpyFile::with_header(header, reader);

        let DType::Plain(type_str) = file.dtype() else {
            return Err(invalid(
                "structured arrays are not supported; save a plain numeric array".to_owned(),
            ));
        };
        let shape = file.shape().to_vec();
        let size = type_str.num_bytes().unwrap_or(0) as u64;
        let declared = shape
            .iter()
            .try_fold(size, |total, &dim| total.checked_mul(dim))
            .ok_or_else(|| invalid(format!("shape {shape:?} is too large")))?;
        let actual = file_len.saturating_sub(header_len);
        if actual < declared {
            return Err(invalid(format!(
                "truncated: the header declares {declared} bytes of data but the file holds {actual}"
            )));
        }
        if actual > declared {
            return Err(invalid(format!(
                "the file holds {actual} bytes of data but its header declares {declared}"
            )));
        }
        Ok(CheckedNpy {
            path: path.to_path_buf(),
            descr: type_str.to_string(),
            type_char: type_str.type_char(),
            size,
            shape,
            file,
        })
    }

    fn invalid(&self, message: String) -> DataError {
        DataError::InvalidNpy {
            path: self.path.clone(),
            message,
        }
    }

    /// Reads every value in file order.
    fn values<T: npyz::Deserialize>(self) -> Result<Vec<T>> {
        let path = self.path.clone();
        let reader = self
            .file
            .data::<T>()
            .map_err(|error| DataError::InvalidNpy {
                path: path.clone(),
                message: error.to_string(),
            })?;
        reader
            .collect::<io::Result<Vec<T>>>()
            .map_err(|error| DataError::io(&path, error))
    }
}

/// Reads a 2-dimensional features array as row-major f32 values, with its
/// row count and width.
fn read_features(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let npy = CheckedNpy::open(path)?;
    let &[rows, width] = npy.shape.as_slice() else {
        return Err(npy.invalid(format!(
            "expected a 2-dimensional features array [examples, features], found shape {:?}",
            npy.shape
        )));
    };
    let (Ok(rows), Ok(width)) = (usize::try_from(rows), usize::try_from(width)) else {
        return Err(npy.invalid(format!("shape {:?} is too large", npy.shape)));
    };
    if width == 0 {
        return Err(npy.invalid("the features array has 0 columns".to_owned()));
    }
    let fortran = npy.file.order() == Order::Fortran;
    let values: Vec<f32> = match (npy.type_char, npy.size) {
        (TypeChar::Float, 4) => npy.values::<f32>()?,
        // Conversion to f32 rounds, and values beyond the f32 range become
        // infinite, which the finiteness check below rejects.
        (TypeChar::Float, 8) => npy
            .values::<f64>()?
            .into_iter()
            .map(|value| value as f32)
            .collect(),
        (TypeChar::Uint, 1) => npy.values::<u8>()?.into_iter().map(f32::from).collect(),
        _ => {
            return Err(npy.invalid(format!(
                "features of type {} are not supported; save them as float32, float64 or uint8",
                npy.descr
            )));
        }
    };
    let values = if fortran {
        transpose(&values, rows, width)
    } else {
        values
    };
    if let Some(position) = values.iter().position(|value| !value.is_finite()) {
        return Err(DataError::InvalidNpy {
            path: path.to_path_buf(),
            message: format!(
                "the value at row {}, column {} is not a finite f32 number",
                position / width,
                position % width
            ),
        });
    }
    Ok((values, rows, width))
}

/// Reads a labels array of shape `[examples]` or `[examples, 1]` as text.
fn read_labels(path: &Path) -> Result<Vec<String>> {
    let npy = CheckedNpy::open(path)?;
    if !matches!(npy.shape.as_slice(), [_] | [_, 1]) {
        return Err(npy.invalid(format!(
            "expected a 1-dimensional labels array [examples], found shape {:?}",
            npy.shape
        )));
    }
    fn text<T: ToString>(values: Vec<T>) -> Vec<String> {
        values.iter().map(T::to_string).collect()
    }
    let labels = match (npy.type_char, npy.size) {
        (TypeChar::Int, 1) => text(npy.values::<i8>()?),
        (TypeChar::Int, 2) => text(npy.values::<i16>()?),
        (TypeChar::Int, 4) => text(npy.values::<i32>()?),
        (TypeChar::Int, 8) => text(npy.values::<i64>()?),
        (TypeChar::Uint, 1) => text(npy.values::<u8>()?),
        (TypeChar::Uint, 2) => text(npy.values::<u16>()?),
        (TypeChar::Uint, 4) => text(npy.values::<u32>()?),
        (TypeChar::Uint, 8) => text(npy.values::<u64>()?),
        (TypeChar::Float, 4) => text(npy.values::<f32>()?),
        (TypeChar::Float, 8) => text(npy.values::<f64>()?),
        (TypeChar::Bool, 1) => npy
            .values::<bool>()?
            .into_iter()
            .map(|value| u8::from(value).to_string())
            .collect(),
        _ => {
            return Err(npy.invalid(format!(
                "labels of type {} are not supported; save them as integers, floats or booleans",
                npy.descr
            )));
        }
    };
    if let Some(row) = labels
        .iter()
        .position(|label| !label.parse::<f64>().is_ok_and(f64::is_finite))
    {
        return Err(DataError::InvalidNpy {
            path: path.to_path_buf(),
            message: format!("the label at row {row} is not a finite number"),
        });
    }
    Ok(labels)
}

/// Converts column-major values of a `rows` x `width` array to row-major.
fn transpose(values: &[f32], rows: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; values.len()];
    for column in 0..width {
        for row in 0..rows {
            out[row * width + column] = values[column * rows + row];
        }
    }
    out
}
