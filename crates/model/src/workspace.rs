//! Preallocated activation and gradient buffers for forward and backward passes.

use ndarray::Array2;

use crate::Mlp;

/// Buffers for the forward and backward pass of one model over up to `capacity` rows.
///
/// Reusing a workspace keeps this crate's code from allocating per minibatch.
/// [`Mlp::loss_and_gradient`] reallocates the workspace for a larger minibatch, while
/// [`Mlp::evaluate`] and [`Mlp::predict_proba`] process larger inputs in chunks of the
/// capacity. A workspace passed with a model of other layer widths is reallocated for
/// that model.
///
/// NOTE: the matrix products use the `gemm` crate 0.19, which allocates inside every
/// product, so a training step still allocates there.
#[derive(Debug)]
pub struct Workspace {
    /// Output width of every layer: the hidden widths, then the number of classes.
    widths: Vec<usize>,
    capacity: usize,
    /// ReLU outputs of each hidden layer, `[capacity, width]`.
    pub(crate) activations: Vec<Array2<f32>>,
    /// Loss gradient with respect to each hidden layer's output, `[capacity, width]`.
    pub(crate) hidden_gradients: Vec<Array2<f32>>,
    /// Logits, which the backward pass overwrites with the loss gradient, `[capacity, classes]`.
    pub(crate) logits: Array2<f32>,
}

impl Workspace {
    /// Allocates buffers for `model` and minibatches of up to `max_batch` rows.
    /// A `max_batch` of 0 allocates for one row.
    pub fn new(model: &Mlp, max_batch: usize) -> Self {
        Self::allocate(output_widths(model), max_batch.max(1))
    }

    /// Returns the number of rows the buffers hold, which is how many rows
    /// [`Mlp::evaluate`] and [`Mlp::predict_proba`] process per chunk.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn allocate(widths: Vec<usize>, capacity: usize) -> Self {
        let (classes, hidden) = widths.split_last().expect("a model has at least one layer");
        let buffers = || -> Vec<Array2<f32>> {
            hidden
                .iter()
                .map(|&width| Array2::zeros((capacity, width)))
                .collect()
        };
        Workspace {
            activations: buffers(),
            hidden_gradients: buffers(),
            logits: Array2::zeros((capacity, *classes)),
            capacity,
            widths,
        }
    }

    /// Reallocates unless the buffers match `model` and hold at least `rows` rows.
    pub(crate) fn prepare(&mut self, model: &Mlp, rows: usize) {
        let matches_model = self.widths.len() == model.layers().len()
            && self
                .widths
                .iter()
                .zip(model.layers())
                .all(|(&width, layer)| width == layer.outputs);
        if !matches_model || rows > self.capacity {
            *self = Self::allocate(output_widths(model), rows.max(self.capacity));
        }
    }
}

fn output_widths(model: &Mlp) -> Vec<usize> {
    model.layers().iter().map(|layer| layer.outputs).collect()
}
