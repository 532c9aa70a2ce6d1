//! Examples as read from a CSV, LIBSVM or NumPy file, before their labels
//! become class ids.

use std::ops::Range;
use std::path::PathBuf;

use ndarray::Array2;

use crate::dataset::{Dataset, Features};
use crate::error::{DataError, Result};
use crate::formats::classes::ClassMap;

/// Position of a row's label in its file, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelPosition {
    /// Line and column of a text file, both counted from 1.
    Text {
        /// Line, counted from 1.
        line: u64,
        /// Column, counted from 1.
        column: u64,
    },
    /// Row of a labels array, counted from 0.
    Row(usize),
}

impl std::fmt::Display for LabelPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelPosition::Text { line, column } => write!(f, "line {line}, column {column}"),
            LabelPosition::Row(row) => write!(f, "row {row}"),
        }
    }
}

/// Sparse rows in compressed sparse row (CSR) form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRows {
    /// Row `i` contains entries `offsets[i]..offsets[i + 1]`; one more offset
    /// than there are rows.
    pub offsets: Vec<usize>,
    /// Feature index of each entry, counted from 0 and increasing within a
    /// row.
    pub indices: Vec<u32>,
    /// Value of each entry.
    pub values: Vec<f32>,
}

impl SparseRows {
    /// Returns empty rows, ready for [`SparseRows::push_row`].
    pub fn new() -> Self {
        SparseRows {
            offsets: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Appends one row.
    pub fn push_row(&mut self, indices: &[u32], values: &[f32]) {
        self.indices.extend_from_slice(indices);
        self.values.extend_from_slice(values);
        self.offsets.push(self.indices.len());
    }

    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Returns whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the smallest width that fits every index: the largest index
    /// plus 1, or 0 without entries.
    pub fn min_width(&self) -> usize {
        self.indices
            .iter()
            .max()
            .map_or(0, |&index| index as usize + 1)
    }

    /// Returns the indices and values of row `row`.
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let range = self.offsets[row]..self.offsets[row + 1];
        (&self.indices[range.clone()], &self.values[range])
    }

    /// Returns the rows at `rows`, in that order.
    ///
    /// # Panics
    ///
    /// Panics if a row is out of range.
    pub fn select(&self, rows: impl IntoIterator<Item = usize>) -> SparseRows {
        let mut selected = SparseRows::new();
        for row in rows {
            let (indices, values) = self.row(row);
            selected.push_row(indices, values);
        }
        selected
    }

    /// Writes the rows `rows` into `out` as dense rows `width` wide, with
    /// zeros where a row has no entry. The caller sizes `out` to
    /// `rows.len() * width` values, and every index must be below `width`.
    pub fn densify_into(&self, rows: Range<usize>, width: usize, out: &mut [f32]) {
        out.fill(0.0);
        for (position, row) in rows.enumerate() {
            let dense = &mut out[position * width..(position + 1) * width];
            let (indices, values) = self.row(row);
            for (&index, &value) in indices.iter().zip(values) {
                dense[index as usize] = value;
            }
        }
    }
}

/// Feature values of a [`RawTable`].
#[derive(Debug, Clone, PartialEq)]
pub enum RawFeatures {
    /// Row-major values, `width` per row.
    Dense {
        /// Values, row after row.
        values: Vec<f32>,
        /// Features per row.
        width: usize,
    },
    /// Sparse rows, whose width is set when the table becomes a data set.
    Sparse(SparseRows),
}

/// Examples of one file: features, the label text of each row and where
/// each label sits in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTable {
    /// File the rows came from.
    pub path: PathBuf,
    /// Feature values.
    pub features: RawFeatures,
    /// Label text of each row.
    pub labels: Vec<String>,
    /// Position of each row's label.
    pub positions: Vec<LabelPosition>,
}

impl RawTable {
    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Returns the features per row: the width of dense rows, or the
    /// smallest width that fits every index of sparse rows.
    pub fn width(&self) -> usize {
        match &self.features {
            RawFeatures::Dense { width, .. } => *width,
            RawFeatures::Sparse(rows) => rows.min_width(),
        }
    }

    /// Builds a data set with features `width` wide and the class ids of
    /// `classes`. Dense rows become f32 features, and sparse rows stay
    /// sparse.
    ///
    /// # Errors
    ///
    /// [`DataError::FeatureCountMismatch`] when dense rows are not `width`
    /// wide or a sparse index is at or past `width`, and
    /// [`DataError::UnknownLabel`] for a label `classes` does not contain.
    pub fn to_dataset(&self, classes: &ClassMap, width: usize) -> Result<Dataset> {
        let features = match &self.features {
            RawFeatures::Sparse(rows) if rows.min_width() <= width => Features::Sparse {
                rows: rows.clone(),
                width,
            },
            _ => Features::F32(self.to_features(width)?),
        };
        let labels = self.class_ids(classes)?;
        Dataset::new(features, labels, classes.len())
    }

    /// Builds a regression data set with f32 features `width` wide and the
    /// label of each row parsed as a real target.
    ///
    /// # Errors
    ///
    /// The errors of [`RawTable::to_features`], and
    /// [`DataError::InvalidTarget`] for the first label that is not a finite
    /// number.
    pub fn to_regression_dataset(&self, width: usize) -> Result<Dataset> {
        let features = self.to_features(width)?;
        let targets = self.targets()?;
        Dataset::regression(Features::F32(features), targets)
    }

    /// Returns every row's label parsed as a finite real number, rounded to
    /// the nearest f32.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidTarget`] for the first label that is not a finite
    /// number, naming its file and line and column, or row.
    pub fn targets(&self) -> Result<Vec<f32>> {
        self.labels
            .iter()
            .zip(&self.positions)
            .map(|(label, position)| {
                let value = label.trim().parse::<f64>().ok();
                match value.map(|value| value as f32) {
                    Some(value) if value.is_finite() => Ok(value),
                    _ => Err(DataError::InvalidTarget {
                        path: self.path.clone(),
                        location: position.to_string(),
                        label: label.clone(),
                    }),
                }
            })
            .collect()
    }

    /// Returns the features as an f32 matrix `width` wide, with sparse rows
    /// filled in with zeros.
    ///
    /// # Errors
    ///
    /// [`DataError::FeatureCountMismatch`] when dense rows are not `width`
    /// wide or a sparse index is at or past `width`.
    pub fn to_features(&self, width: usize) -> Result<Array2<f32>> {
        if self.width() > width
            || matches!(self.features, RawFeatures::Dense { width: own, .. } if own != width)
        {
            return Err(DataError::FeatureCountMismatch {
                path: self.path.clone(),
                expected: width,
                found: self.width(),
            });
        }
        let values = match &self.features {
            RawFeatures::Dense { values, .. } => values.clone(),
            RawFeatures::Sparse(rows) => densify(rows, width),
        };
        Array2::from_shape_vec((self.len(), width), values).map_err(|_| {
            DataError::RowCountMismatch {
                rows: self.len(),
                labels: self.labels.len(),
            }
        })
    }

    /// Returns the class id of every row's label.
    ///
    /// # Errors
    ///
    /// [`DataError::UnknownLabel`] for the first label `classes` does not
    /// contain.
    pub fn class_ids(&self, classes: &ClassMap) -> Result<Vec<u32>> {
        self.labels
            .iter()
            .zip(&self.positions)
            .map(|(label, position)| {
                classes
                    .class_of(label)
                    .ok_or_else(|| DataError::UnknownLabel {
                        path: self.path.clone(),
                        location: position.to_string(),
                        label: label.clone(),
                        classes: classes.names.join(", "),
                    })
            })
            .collect()
    }
}

fn densify(rows: &SparseRows, width: usize) -> Vec<f32> {
    let mut values = vec![0.0f32; rows.len() * width];
    rows.densify_into(0..rows.len(), width, &mut values);
    values
}
