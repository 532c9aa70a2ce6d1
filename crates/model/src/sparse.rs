//! Softmax regression on sparse minibatches: the forward and backward pass
//! read only the stored entries of each row, and the gradient lists only the
//! positions of θ that the minibatch touched.

use ndarray::ArrayViewMut2;

use crate::{Mlp, softmax};

/// A minibatch of sparse rows in compressed sparse row (CSR) form.
///
/// Row `r` contains the entries `offsets[r]..offsets[r + 1]` of `indices` and
/// `values`, so `offsets` has one more element than there are rows. The
/// offsets may start past 0, which lets a batch view a slice of a larger
/// set of rows without copying.
#[derive(Debug, Clone, Copy)]
pub struct SparseBatch<'a> {
    /// Row boundaries into `indices` and `values`.
    pub offsets: &'a [usize],
    /// Feature index of each entry, below the model's inputs.
    pub indices: &'a [u32],
    /// Value of each entry.
    pub values: &'a [f32],
}

impl SparseBatch<'_> {
    /// Returns the number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let range = self.offsets[row]..self.offsets[row + 1];
        (&self.indices[range.clone()], &self.values[range])
    }
}

/// A gradient of θ that stores only some of its positions; every other
/// position is zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseGradient {
    /// Positions in θ, strictly increasing.
    pub indices: Vec<u32>,
    /// Gradient value at each position.
    pub values: Vec<f32>,
}

impl SparseGradient {
    /// Returns the number of stored positions.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Returns whether no position is stored.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Empties the gradient, keeping its memory.
    pub fn clear(&mut self) {
        self.indices.clear();
        self.values.clear();
    }
}

/// Buffers of the sparse pass, reused from minibatch to minibatch.
#[derive(Debug, Clone, Default)]
pub struct SparseWorkspace {
    logits: Vec<f32>,
    /// The distinct features of the minibatch, in increasing order.
    features: Vec<u32>,
    /// Per input feature, its position in `features`, or `u32::MAX` when the
    /// minibatch does not contain it. Only touched entries are set and reset.
    position: Vec<u32>,
    /// Weight gradient of the touched features, `[classes, features]`.
    weight_gradient: Vec<f32>,
}

impl Mlp {
    /// Returns whether the model can train on sparse minibatches: softmax
    /// regression, whose θ positions fit in u32.
    pub fn supports_sparse(&self) -> bool {
        self.layers().len() == 1
            && !self.is_regression()
            && u32::try_from(self.num_params()).is_ok()
    }

    /// Computes the mean cross-entropy over a sparse minibatch and writes its
    /// gradient into `gradient`, replacing what it held.
    ///
    /// The gradient lists the weights of every feature that occurs in the
    /// minibatch, for every class, then every bias, all in θ order. A feature
    /// stored with value 0 still counts as occurring.
    ///
    /// # Panics
    ///
    /// Panics if the model has hidden layers or more than `u32::MAX`
    /// parameters (see [`Mlp::supports_sparse`]), if the batch is empty, if
    /// `params` or `labels` have the wrong length, or if a feature index is
    /// not below `inputs`.
    pub fn sparse_loss_and_gradient(
        &self,
        params: &[f32],
        batch: SparseBatch<'_>,
        labels: &[u32],
        gradient: &mut SparseGradient,
        workspace: &mut SparseWorkspace,
    ) -> f32 {
        assert!(
            self.supports_sparse(),
            "sparse minibatches need softmax regression with at most u32::MAX parameters"
        );
        assert_eq!(
            params.len(),
            self.num_params(),
            "params length must equal the parameter count"
        );
        let rows = batch.rows();
        assert!(rows > 0, "the minibatch must not be empty");
        assert_eq!(labels.len(), rows, "labels must have one entry per row");
        let layer = &self.layers()[0];
        let (inputs, classes) = (layer.inputs, layer.outputs);
        let weight = &params[layer.weight_offset..layer.weight_offset + inputs * classes];
        let bias = &params[layer.weight_offset + inputs * classes..][..classes];

        // Forward: logits[r, c] = bias[c] + Σ over the row's entries of
        // weight[c, index] · value.
        let logits = &mut workspace.logits;
        logits.clear();
        logits.resize(rows * classes, 0.0);
        for row in 0..rows {
            let (indices, values) = batch.row(row);
            let out = &mut logits[row * classes..(row + 1) * classes];
            out.copy_from_slice(bias);
            for (class, logit) in out.iter_mut().enumerate() {
                let weights = &weight[class * inputs..(class + 1) * inputs];
                for (&index, &value) in indices.iter().zip(values) {
                    *logit += weights[index as usize] * value;
                }
            }
        }
        let logits_view = ArrayViewMut2::from_shape((rows, classes), &mut logits[..])
            .expect("the logits buffer has rows × classes values");
        let loss_sum = softmax::cross_entropy_backward(logits_view, labels, 1.0 / rows as f32);

        // The distinct features of the minibatch and their positions.
        let features = &mut workspace.features;
        features.clear();
        features.extend_from_slice(&batch.indices[batch.offsets[0]..batch.offsets[rows]]);
        features.sort_unstable();
        features.dedup();
        let position = &mut workspace.position;
        if position.len() != inputs {
            position.clear();
            position.resize(inputs, u32::MAX);
        }
        for (slot, &feature) in features.iter().enumerate() {
            position[feature as usize] = slot as u32;
        }

        // Backward: the weight gradient of feature f for class c sums
        // dlogits[r, c] · value over the rows that contain f.
        let touched = features.len();
        let weight_gradient = &mut workspace.weight_gradient;
        weight_gradient.clear();
        weight_gradient.resize(classes * touched, 0.0);
        let mut bias_gradient = vec![0.0f32; classes];
        for row in 0..rows {
            let (indices, values) = batch.row(row);
            let dlogits = &logits[row * classes..(row + 1) * classes];
            for (class, &dlogit) in dlogits.iter().enumerate() {
                bias_gradient[class] += dlogit;
                let out = &mut weight_gradient[class * touched..(class + 1) * touched];
                for (&index, &value) in indices.iter().zip(values) {
                    out[position[index as usize] as usize] += dlogit * value;
                }
            }
        }
        for &feature in features.iter() {
            position[feature as usize] = u32::MAX;
        }

        gradient.clear();
        gradient.indices.reserve(classes * (touched + 1));
        gradient.values.reserve(classes * (touched + 1));
        for class in 0..classes {
            let row_start = layer.weight_offset + class * inputs;
            for (&feature, &value) in features
                .iter()
                .zip(&weight_gradient[class * touched..(class + 1) * touched])
            {
                gradient.indices.push((row_start + feature as usize) as u32);
                gradient.values.push(value);
            }
        }
        let bias_start = layer.weight_offset + inputs * classes;
        for (class, &value) in bias_gradient.iter().enumerate() {
            gradient.indices.push((bias_start + class) as u32);
            gradient.values.push(value);
        }
        (loss_sum / rows as f64) as f32
    }
}
