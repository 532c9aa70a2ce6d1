//! In-memory labelled data sets: a feature matrix with one row per example,
//! and one class label or one real regression target per row.

use std::ops::Range;

use ndarray::{Array2, ArrayView2, Axis, s};

use downpour_model::Targets;

use crate::error::{DataError, Result};
use crate::formats::table::SparseRows;

/// Features of a data set, row-major `[examples, features]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// Unsigned bytes that stand for `v as f32 * scale` (MNIST pixels use a
    /// scale of 1/255). Storing bytes keeps MNIST at a quarter of its f32 size.
    U8 {
        /// Raw values.
        values: Array2<u8>,
        /// Factor that converts a raw value to its f32 feature value.
        scale: f32,
    },
    /// Features stored as f32.
    F32(Array2<f32>),
    /// Sparse rows in CSR form, as read from LIBSVM files. Entries left out
    /// are zero; every index is below `width`.
    Sparse {
        /// The rows' entries.
        rows: SparseRows,
        /// Features per row.
        width: usize,
    },
}

impl Features {
    /// Returns the number of rows (examples).
    pub fn len(&self) -> usize {
        match self {
            Features::U8 { values, .. } => values.nrows(),
            Features::F32(values) => values.nrows(),
            Features::Sparse { rows, .. } => rows.len(),
        }
    }

    /// Returns whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the number of features per row.
    pub fn num_features(&self) -> usize {
        match self {
            Features::U8 { values, .. } => values.ncols(),
            Features::F32(values) => values.ncols(),
            Features::Sparse { width, .. } => *width,
        }
    }

    fn select_rows(&self, indices: &[usize]) -> Features {
        match self {
            Features::U8 { values, scale } => Features::U8 {
                values: values.select(Axis(0), indices),
                scale: *scale,
            },
            Features::F32(values) => Features::F32(values.select(Axis(0), indices)),
            Features::Sparse { rows, width } => Features::Sparse {
                rows: rows.select(indices.iter().copied()),
                width: *width,
            },
        }
    }

    fn slice_rows(&self, rows: Range<usize>) -> Features {
        match self {
            Features::U8 { values, scale } => Features::U8 {
                values: values.slice(s![rows, ..]).to_owned(),
                scale: *scale,
            },
            Features::F32(values) => Features::F32(values.slice(s![rows, ..]).to_owned()),
            Features::Sparse {
                rows: sparse,
                width,
            } => Features::Sparse {
                rows: sparse.select(rows),
                width: *width,
            },
        }
    }
}

/// A labelled data set: features and, for classification, one class label
/// per row below `classes`. A regression data set has `classes` 0, no labels
/// and one real target per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Feature matrix with one row per example.
    pub features: Features,
    /// Class label of each row; empty for regression.
    pub labels: Vec<u32>,
    /// Number of classes. Labels lie in `0..classes`. 0 for regression.
    pub classes: usize,
    /// Regression target of each row; empty for classification.
    pub targets: Vec<f32>,
}

impl Dataset {
    /// Creates a data set after checking that there is one label per row,
    /// that every label is below `classes`, and that a byte feature scale is
    /// finite.
    ///
    /// # Errors
    ///
    /// [`DataError::RowCountMismatch`], [`DataError::LabelOutOfRange`] (naming
    /// the first bad label and its index) or [`DataError::InvalidScale`].
    pub fn new(features: Features, labels: Vec<u32>, classes: usize) -> Result<Self> {
        if features.len() != labels.len() {
            return Err(DataError::RowCountMismatch {
                rows: features.len(),
                labels: labels.len(),
            });
        }
        if let Features::U8 { scale, .. } = features
            && !scale.is_finite()
        {
            return Err(DataError::InvalidScale { scale });
        }
        if let Some((index, label)) = first_label_out_of_range(&labels, classes) {
            return Err(DataError::LabelOutOfRange {
                path: None,
                index,
                label,
                classes,
            });
        }
        Ok(Dataset {
            features,
            labels,
            classes,
            targets: Vec::new(),
        })
    }

    /// Creates a regression data set after checking that there is one
    /// finite target per row and that a byte feature scale is finite.
    ///
    /// # Errors
    ///
    /// [`DataError::RowCountMismatch`], [`DataError::NonFiniteTarget`] (naming
    /// the first bad target and its index) or [`DataError::InvalidScale`].
    pub fn regression(features: Features, targets: Vec<f32>) -> Result<Self> {
        if features.len() != targets.len() {
            return Err(DataError::RowCountMismatch {
                rows: features.len(),
                labels: targets.len(),
            });
        }
        if let Features::U8 { scale, .. } = features
            && !scale.is_finite()
        {
            return Err(DataError::InvalidScale { scale });
        }
        if let Some((index, &target)) = targets
            .iter()
            .enumerate()
            .find(|(_, target)| !target.is_finite())
        {
            return Err(DataError::NonFiniteTarget { index, target });
        }
        Ok(Dataset {
            features,
            labels: Vec::new(),
            classes: 0,
            targets,
        })
    }

    /// Returns whether the data set has real targets rather than classes.
    pub fn is_regression(&self) -> bool {
        self.classes == 0
    }

    /// Returns the targets of `rows` as the model takes them.
    ///
    /// # Panics
    ///
    /// Panics if `rows` reaches past the last row.
    pub fn targets_of(&self, rows: Range<usize>) -> Targets<'_> {
        if self.is_regression() {
            Targets::Values(&self.targets[rows])
        } else {
            Targets::Classes(&self.labels[rows])
        }
    }

    /// Returns the number of examples.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Returns whether the data set has no examples.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Returns the number of features per example.
    pub fn num_features(&self) -> usize {
        self.features.num_features()
    }

    /// Copies the feature rows `rows` into `out` as f32, applying the scale of
    /// byte features. The caller sizes `out` to exactly
    /// `rows.len() * num_features()` values.
    ///
    /// # Panics
    ///
    /// Panics if `rows` reaches past the last row. Debug builds also panic
    /// when `out` has the wrong length, and release builds then fill only the
    /// shorter of the two.
    pub fn copy_rows_f32(&self, rows: Range<usize>, out: &mut [f32]) {
        debug_assert_eq!(out.len(), rows.len() * self.num_features());
        match &self.features {
            Features::U8 { values, scale } => {
                let scale = *scale;
                copy_rows_mapped(values.slice(s![rows, ..]), out, |v| f32::from(v) * scale);
            }
            Features::F32(values) => copy_rows_mapped(values.slice(s![rows, ..]), out, |v| v),
            Features::Sparse {
                rows: sparse,
                width,
            } => sparse.densify_into(rows, *width, out),
        }
    }

    /// Returns all features as one f32 matrix, with byte features scaled.
    pub fn to_f32(&self) -> Array2<f32> {
        match &self.features {
            Features::U8 { values, scale } => {
                let scale = *scale;
                values.mapv(|v| f32::from(v) * scale)
            }
            Features::F32(values) => values.clone(),
            Features::Sparse { rows, width } => {
                let mut values = Array2::zeros((rows.len(), *width));
                if let Some(out) = values.as_slice_mut() {
                    rows.densify_into(0..rows.len(), *width, out);
                }
                values
            }
        }
    }

    /// Returns the sparse rows when the features are sparse.
    pub fn sparse_rows(&self) -> Option<&SparseRows> {
        match &self.features {
            Features::Sparse { rows, .. } => Some(rows),
            _ => None,
        }
    }

    /// Returns a new data set made of the rows at `indices`, in that order.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let pick = |values: &[u32]| -> Vec<u32> {
            match values.is_empty() {
                true => Vec::new(),
                false => indices.iter().map(|&i| values[i]).collect(),
            }
        };
        let targets = match self.targets.is_empty() {
            true => Vec::new(),
            false => indices.iter().map(|&i| self.targets[i]).collect(),
        };
        Dataset {
            features: self.features.select_rows(indices),
            labels: pick(&self.labels),
            classes: self.classes,
            targets,
        }
    }

    /// Splits the data set into its first `len() - tail` rows and its last
    /// `tail` rows, in that order.
    ///
    /// # Errors
    ///
    /// [`DataError::TailTooLarge`] when `tail >= len()`, which would leave the
    /// head empty.
    pub fn split_off_tail(self, tail: usize) -> Result<(Dataset, Dataset)> {
        let len = self.len();
        if tail >= len {
            return Err(DataError::TailTooLarge { tail, len });
        }
        let cut = len - tail;
        // Exactly one of `labels` and `targets` is empty, and slicing an empty
        // vector by a row range would be out of bounds.
        let part = |rows: Range<usize>| Dataset {
            features: self.features.slice_rows(rows.clone()),
            labels: match self.labels.is_empty() {
                true => Vec::new(),
                false => self.labels[rows.clone()].to_vec(),
            },
            classes: self.classes,
            targets: match self.targets.is_empty() {
                true => Vec::new(),
                false => self.targets[rows].to_vec(),
            },
        };
        let head = part(0..cut);
        let tail = part(cut..len);
        Ok((head, tail))
    }
}

/// Returns the index and value of the first label that is not below `classes`.
pub(crate) fn first_label_out_of_range(labels: &[u32], classes: usize) -> Option<(usize, u32)> {
    labels
        .iter()
        .enumerate()
        .find(|&(_, &label)| usize::try_from(label).map_or(true, |label| label >= classes))
        .map(|(index, &label)| (index, label))
}

/// Writes `rows` in row-major order into `out`, converting each value.
fn copy_rows_mapped<T: Copy>(rows: ArrayView2<'_, T>, out: &mut [f32], convert: impl Fn(T) -> f32) {
    match rows.as_slice() {
        // Standard-layout rows form one contiguous slice, which converts fastest.
        Some(values) => {
            for (dst, &src) in out.iter_mut().zip(values) {
                *dst = convert(src);
            }
        }
        None => {
            for (dst, &src) in out.iter_mut().zip(rows.iter()) {
                *dst = convert(src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn small_u8() -> Dataset {
        let values = array![[0u8, 255], [51, 102], [1, 2]];
        // A power-of-two scale keeps the expected f32 values exact.
        Dataset::new(Features::U8 { values, scale: 0.5 }, vec![0, 1, 2], 3).expect("valid data set")
    }

    #[test]
    fn new_rejects_count_mismatch() {
        let features = Features::F32(Array2::zeros((3, 2)));
        let error = Dataset::new(features, vec![0, 1], 2).expect_err("count mismatch");
        assert_eq!(
            error.to_string(),
            "the features hold 3 rows but there are 2 labels"
        );
    }

    #[test]
    fn new_rejects_label_out_of_range() {
        let features = Features::F32(Array2::zeros((7, 1)));
        let labels = vec![0, 1, 2, 3, 4, 12, 13];
        let error = Dataset::new(features, labels, 10).expect_err("bad label");
        assert_eq!(
            error.to_string(),
            "label 12 at index 5 is outside the class range 0..10"
        );
    }

    #[test]
    fn new_rejects_non_finite_scale() {
        let features = Features::U8 {
            values: Array2::zeros((1, 1)),
            scale: f32::NAN,
        };
        let error = Dataset::new(features, vec![0], 1).expect_err("NaN scale");
        assert_eq!(
            error.to_string(),
            "feature scale NaN is not a finite number"
        );
    }

    #[test]
    fn len_and_features() {
        let data = small_u8();
        assert_eq!(data.len(), 3);
        assert!(!data.is_empty());
        assert_eq!(data.num_features(), 2);
    }

    #[test]
    fn copy_rows_scales_bytes() {
        let data = small_u8();
        let mut out = [0.0f32; 4];
        data.copy_rows_f32(1..3, &mut out);
        assert_eq!(out, [25.5, 51.0, 0.5, 1.0]);
    }

    #[test]
    fn copy_rows_from_non_standard_layout() {
        // A transposed array is column-major, so its rows are not contiguous.
        let values = array![[1.0f32, 3.0, 5.0], [2.0, 4.0, 6.0]].reversed_axes();
        let data = Dataset::new(Features::F32(values), vec![0, 0, 0], 1).expect("valid");
        let mut out = [0.0f32; 4];
        data.copy_rows_f32(1..3, &mut out);
        assert_eq!(out, [3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn to_f32_scales_bytes() {
        let data = small_u8();
        let all = data.to_f32();
        assert_eq!(all.dim(), (3, 2));
        assert_eq!(all[[0, 1]], 127.5);
        assert_eq!(all[[1, 0]], 25.5);
    }

    #[test]
    fn select_reorders_rows_and_labels() {
        let data = small_u8();
        let picked = data.select(&[2, 0]);
        assert_eq!(picked.labels, vec![2, 0]);
        let expected = Features::U8 {
            values: array![[1u8, 2], [0, 255]],
            scale: 0.5,
        };
        assert_eq!(picked.features, expected);
        assert_eq!(picked.classes, 3);
    }

    #[test]
    fn split_off_tail_keeps_order() {
        let (head, tail) = small_u8().split_off_tail(1).expect("tail < len");
        assert_eq!(head.labels, vec![0, 1]);
        assert_eq!(tail.labels, vec![2]);
        assert_eq!(head.features.len(), 2);
        assert_eq!(tail.to_f32(), array![[0.5f32, 1.0]]);
    }

    #[test]
    fn split_off_tail_rejects_whole_set() {
        let error = small_u8().split_off_tail(3).expect_err("tail == len");
        assert_eq!(
            error.to_string(),
            "cannot split off the last 3 of 3 examples, because the held-out part \
             must be smaller than the data set"
        );
    }

    #[test]
    fn split_off_zero_tail() {
        let (head, tail) = small_u8().split_off_tail(0).expect("empty tail");
        assert_eq!(head.len(), 3);
        assert!(tail.is_empty());
        assert_eq!(tail.num_features(), 2);
    }
}
