//! Per-feature scaling fitted on the training split and applied to every
//! split, and to the data that `eval` and `predict` read.
//!
//! A scaled feature is `(x - offset[j]) / divisor[j]`. Standardization uses
//! the mean and the population standard deviation of the training rows,
//! min-max scaling the minimum and the range. A feature that is constant on
//! the training rows gets divisor 1, so it becomes 0 on the training rows
//! rather than NaN or infinity.

use std::fmt;
use std::str::FromStr;

use ndarray::{Array2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Features};

/// Rows converted to f32 at a time while fitting.
const FIT_CHUNK_ROWS: usize = 1024;

/// Feature scaling method, as `--scale` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMethod {
    /// Features are used as read.
    #[default]
    None,
    /// Zero mean and unit variance on the training rows.
    Standardize,
    /// The training rows' minimum to 0 and maximum to 1.
    Minmax,
}

impl ScaleMethod {
    /// Returns the name `--scale` takes.
    pub fn name(self) -> &'static str {
        match self {
            ScaleMethod::None => "none",
            ScaleMethod::Standardize => "standardize",
            ScaleMethod::Minmax => "minmax",
        }
    }
}

impl fmt::Display for ScaleMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScaleMethod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(ScaleMethod::None),
            "standardize" => Ok(ScaleMethod::Standardize),
            "minmax" => Ok(ScaleMethod::Minmax),
            _ => Err(format!(
                "unknown scaling \"{text}\"; expected none, standardize or minmax"
            )),
        }
    }
}

/// Fitted per-feature scaling: feature `j` becomes
/// `(x - offset[j]) / divisor[j]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Method the statistics come from.
    pub method: ScaleMethod,
    /// Subtracted from each feature: the mean or the minimum.
    pub offset: Vec<f32>,
    /// Each feature is divided by it after the subtraction: the standard
    /// deviation or the range, or 1 for a constant feature.
    pub divisor: Vec<f32>,
}

impl Scaling {
    /// Fits `method` on the rows of `train` in one pass, accumulating in
    /// f64. Returns `None` for [`ScaleMethod::None`].
    pub fn fit(method: ScaleMethod, train: &Dataset) -> Option<Scaling> {
        if method == ScaleMethod::None {
            return None;
        }
        let width = train.num_features();
        let mut stats = vec![ColumnStats::default(); width];
        let mut buffer = vec![0.0f32; FIT_CHUNK_ROWS * width];
        let mut start = 0;
        while start < train.len() {
            let end = (start + FIT_CHUNK_ROWS).min(train.len());
            let chunk = &mut buffer[..(end - start) * width];
            train.copy_rows_f32(start..end, chunk);
            for row in chunk.chunks_exact(width) {
                for (column, &value) in stats.iter_mut().zip(row) {
                    column.add(f64::from(value));
                }
            }
            start = end;
        }
        let (offset, divisor) = stats
            .iter()
            .map(|column| column.offset_and_divisor(method))
            .unzip();
        Some(Scaling {
            method,
            offset,
            divisor,
        })
    }

    /// Returns the number of features the scaling was fitted on.
    pub fn width(&self) -> usize {
        self.offset.len()
    }

    /// Scales every row of `values`, which is `[rows, width()]`, in place.
    ///
    /// # Panics
    ///
    /// Panics if `values` does not have `width()` columns.
    pub fn apply_in_place(&self, mut values: ArrayViewMut2<'_, f32>) {
        assert_eq!(values.ncols(), self.width(), "one column per feature");
        for mut row in values.rows_mut() {
            for ((value, &offset), &divisor) in row.iter_mut().zip(&self.offset).zip(&self.divisor)
            {
                *value = (*value - offset) / divisor;
            }
        }
    }

    /// Returns `dataset` with scaled f32 features. Byte and sparse features
    /// are converted to dense f32 first, because scaling moves the zeros
    /// that sparse rows leave out.
    ///
    /// # Panics
    ///
    /// Panics if the data set does not have `width()` features.
    pub fn apply(&self, mut dataset: Dataset) -> Dataset {
        let mut values: Array2<f32> = match dataset.features {
            Features::F32(values) => values,
            Features::U8 { .. } | Features::Sparse { .. } => dataset.to_f32(),
        };
        self.apply_in_place(values.view_mut());
        dataset.features = Features::F32(values);
        dataset
    }

    /// Serializes the scaling as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a method name and two f32 vectors always serialize")
    }
}

/// Running mean (Welford's method), variance, minimum and maximum of one
/// column.
#[derive(Debug, Clone, Copy)]
struct ColumnStats {
    count: u64,
    mean: f64,
    /// Sum of squared deviations from the running mean.
    squares: f64,
    min: f64,
    max: f64,
}

impl Default for ColumnStats {
    fn default() -> Self {
        ColumnStats {
            count: 0,
            mean: 0.0,
            squares: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl ColumnStats {
    fn add(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.squares += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    fn offset_and_divisor(&self, method: ScaleMethod) -> (f32, f32) {
        if self.count == 0 {
            return (0.0, 1.0);
        }
        let (offset, spread) = match method {
            ScaleMethod::None => (0.0, 1.0),
            ScaleMethod::Standardize => (self.mean, (self.squares / self.count as f64).sqrt()),
            ScaleMethod::Minmax => (self.min, self.max - self.min),
        };
        let spread = spread as f32;
        // A constant column, or one whose spread underflows f32, keeps divisor 1.
        let divisor = if spread > 0.0 && spread.is_finite() {
            spread
        } else {
            1.0
        };
        (offset as f32, divisor)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn dataset(values: Array2<f32>) -> Dataset {
        let rows = values.nrows();
        Dataset::regression(Features::F32(values), vec![0.0; rows]).expect("valid")
    }

    #[test]
    fn standardize_fits_mean_and_std() {
        let train = dataset(array![[1.0f32, 5.0], [3.0, 5.0], [5.0, 5.0]]);
        let scaling = Scaling::fit(ScaleMethod::Standardize, &train).expect("fitted");
        assert_eq!(scaling.offset, [3.0, 5.0]);
        let std = (8.0f64 / 3.0).sqrt() as f32;
        assert_eq!(scaling.divisor, [std, 1.0]);
        let scaled = scaling.apply(train).to_f32();
        assert_eq!(scaled.column(1).to_vec(), [0.0, 0.0, 0.0]);
        assert!((scaled[[0, 0]] + 1.0 / std * 2.0).abs() < 1e-6);
    }

    #[test]
    fn minmax_maps_range_to_unit_interval() {
        let train = dataset(array![[2.0f32, -1.0], [4.0, -1.0], [6.0, -1.0]]);
        let scaling = Scaling::fit(ScaleMethod::Minmax, &train).expect("fitted");
        assert_eq!(scaling.offset, [2.0, -1.0]);
        assert_eq!(scaling.divisor, [4.0, 1.0]);
        let scaled = scaling.apply(train).to_f32();
        assert_eq!(scaled, array![[0.0f32, 0.0], [0.5, 0.0], [1.0, 0.0]]);
    }

    #[test]
    fn byte_features_are_scaled_as_f32() {
        let values = array![[0u8], [255]];
        let features = Features::U8 {
            values,
            scale: 1.0 / 255.0,
        };
        let train = Dataset::new(features, vec![0, 1], 2).expect("valid");
        let scaling = Scaling::fit(ScaleMethod::Minmax, &train).expect("fitted");
        let scaled = scaling.apply(train);
        assert_eq!(scaled.to_f32(), array![[0.0f32], [1.0]]);
    }

    #[test]
    fn none_fits_nothing() {
        let train = dataset(array![[1.0f32]]);
        assert_eq!(Scaling::fit(ScaleMethod::None, &train), None);
    }

    #[test]
    fn method_parses_and_rejects() {
        assert_eq!("minmax".parse(), Ok(ScaleMethod::Minmax));
        assert_eq!("standardize".parse(), Ok(ScaleMethod::Standardize));
        assert_eq!(
            "zscore".parse::<ScaleMethod>(),
            Err("unknown scaling \"zscore\"; expected none, standardize or minmax".to_owned())
        );
    }

    #[test]
    fn json_round_trip() {
        let train = dataset(array![[1.0f32, 0.1], [2.0, 0.7]]);
        let scaling = Scaling::fit(ScaleMethod::Standardize, &train).expect("fitted");
        let parsed: Scaling = serde_json::from_str(&scaling.to_json()).expect("valid JSON");
        assert_eq!(parsed, scaling);
    }
}
