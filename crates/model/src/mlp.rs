//! Multilayer perceptron with ReLU hidden layers and a softmax cross-entropy loss.

use ndarray::{ArrayView2, ArrayViewMut2, Axis, s};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;

use crate::layer::{Layer, relu_in_place};
use crate::{Evaluation, ModelDescription, ModelError, Workspace, softmax};

/// Multilayer perceptron over a flat parameter vector θ. Softmax regression is the case
/// without hidden layers.
///
/// The model holds only the architecture. Parameters are passed to each call, laid out
/// as the description's tensors specify.
#[derive(Debug, Clone)]
pub struct Mlp {
    description: ModelDescription,
    layers: Vec<Layer>,
}

impl Mlp {
    /// Builds the model for a description, after checking it as
    /// [`ModelDescription::validate`] does.
    pub fn new(description: &ModelDescription) -> Result<Self, ModelError> {
        description.validate()?;
        Ok(Mlp {
            layers: Layer::from_description(description),
            description: description.clone(),
        })
    }

    /// Returns the description the model was built from.
    pub fn description(&self) -> &ModelDescription {
        &self.description
    }

    /// Returns the number of f32 elements in θ.
    pub fn num_params(&self) -> usize {
        self.description.parameters
    }

    /// Returns the number of input features.
    pub fn inputs(&self) -> usize {
        self.description.inputs
    }

    /// Returns the number of classes, which is 0 for linear regression.
    pub fn classes(&self) -> usize {
        self.description.classes
    }

    /// Returns whether the model is linear regression, whose one output is a real value.
    pub fn is_regression(&self) -> bool {
        self.description.is_regression()
    }

    pub(crate) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Draws θ from a ChaCha8 generator seeded with `seed`. Every weight and bias of a
    /// layer with `fan_in` inputs is uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in))`, the
    /// default initialisation of PyTorch's `nn.Linear`. The same seed gives the same θ.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0.0; self.num_params()];
        for layer in &self.layers {
            let bound = (layer.inputs as f32).sqrt().recip();
            let distribution =
                Uniform::new(-bound, bound).expect("1/sqrt(fan_in) is finite and positive");
            for value in &mut params[layer.range()] {
                *value = distribution.sample(&mut rng);
            }
        }
        params
    }

    /// Computes the mean cross-entropy over the minibatch and writes its gradient with
    /// respect to θ into `gradient`, overwriting every element.
    ///
    /// `x` is `[batch, inputs]` in any memory layout and `labels` has one class index per
    /// row. The workspace grows if `batch` exceeds its capacity.
    ///
    /// # Panics
    ///
    /// Panics if the model is linear regression, if the batch is empty, if `params`,
    /// `gradient`, `x` or `labels` have the wrong length or shape, or if a label is not
    /// below `classes`.
    pub fn loss_and_gradient(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        labels: &[u32],
        gradient: &mut [f32],
        workspace: &mut Workspace,
    ) -> f32 {
        assert!(
            !self.is_regression(),
            "a regression model takes real targets"
        );
        self.check_batch(params, x, labels);
        assert_eq!(
            gradient.len(),
            self.num_params(),
            "gradient length must equal the parameter count"
        );
        let rows = x.nrows();
        assert!(rows > 0, "the minibatch must not be empty");

        workspace.prepare(self, rows);
        self.forward(params, x, workspace);
        let logits = workspace.logits.slice_mut(s![..rows, ..]);
        let loss_sum = softmax::cross_entropy_backward(logits, labels, 1.0 / rows as f32);
        self.backward(params, x, workspace, gradient);
        (loss_sum / rows as f64) as f32
    }

    /// Runs the model over any number of rows, in chunks of the workspace capacity.
    /// Returns the number of rows whose predicted class differs from the label, and the
    /// cross-entropy summed over all rows. The predicted class is the index of the largest
    /// logit, and ties go to the lowest index.
    ///
    /// # Panics
    ///
    /// Panics if the model is linear regression, if `params`, `x` or `labels` have the
    /// wrong length or shape, or if a label is not below `classes`.
    pub fn evaluate(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        labels: &[u32],
        workspace: &mut Workspace,
    ) -> Evaluation {
        assert!(
            !self.is_regression(),
            "a regression model takes real targets"
        );
        self.check_batch(params, x, labels);
        workspace.prepare(self, 0);
        let chunk_rows = workspace.capacity();
        let mut evaluation = Evaluation::default();
        for (x_chunk, label_chunk) in x
            .axis_chunks_iter(Axis(0), chunk_rows)
            .zip(labels.chunks(chunk_rows))
        {
            self.forward(params, x_chunk, workspace);
            let logits = workspace.logits.slice(s![..x_chunk.nrows(), ..]);
            for (row, &label) in logits.rows().into_iter().zip(label_chunk) {
                let label = label as usize;
                evaluation.loss_sum += softmax::cross_entropy(row, label);
                if softmax::argmax(row) != label {
                    evaluation.errors += 1;
                }
            }
            evaluation.examples += x_chunk.nrows();
        }
        evaluation
    }

    /// Writes the class probabilities of each row of `x` into `out`, which is
    /// `[rows, classes]`. Rows are processed in chunks of the workspace capacity.
    ///
    /// # Panics
    ///
    /// Panics if `params`, `x` or `out` have the wrong length or shape.
    pub fn predict_proba(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        mut out: ArrayViewMut2<'_, f32>,
        workspace: &mut Workspace,
    ) {
        self.check_inputs(params, x);
        assert_eq!(
            out.dim(),
            (x.nrows(), self.classes()),
            "out must be [rows, classes]"
        );
        workspace.prepare(self, 0);
        let chunk_rows = workspace.capacity();
        let x_chunks = x.axis_chunks_iter(Axis(0), chunk_rows);
        for (x_chunk, mut out_chunk) in x_chunks.zip(out.axis_chunks_iter_mut(Axis(0), chunk_rows))
        {
            self.forward(params, x_chunk, workspace);
            out_chunk.assign(&workspace.logits.slice(s![..x_chunk.nrows(), ..]));
            softmax::softmax_rows(out_chunk);
        }
    }

    pub(crate) fn check_inputs(&self, params: &[f32], x: ArrayView2<'_, f32>) {
        assert_eq!(
            params.len(),
            self.num_params(),
            "params length must equal the parameter count"
        );
        assert_eq!(x.ncols(), self.inputs(), "x must have one column per input");
    }

    fn check_batch(&self, params: &[f32], x: ArrayView2<'_, f32>, labels: &[u32]) {
        self.check_inputs(params, x);
        assert_eq!(
            labels.len(),
            x.nrows(),
            "labels must have one entry per row of x"
        );
        debug_assert!(
            labels
                .iter()
                .all(|&label| (label as usize) < self.classes()),
            "every label must be below the number of classes"
        );
    }

    /// Computes the hidden activations and the logits of the rows of `x` into the
    /// workspace, which must hold at least `x.nrows()` rows.
    pub(crate) fn forward(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        workspace: &mut Workspace,
    ) {
        let rows = x.nrows();
        let hidden_layers = self.layers.len() - 1;
        for (index, layer) in self.layers.iter().enumerate() {
            let (previous, current) = workspace.activations.split_at_mut(index.min(hidden_layers));
            let input = match previous.last() {
                Some(activation) => activation.slice(s![..rows, ..]),
                None => x.view(),
            };
            if index < hidden_layers {
                let mut output = current[0].slice_mut(s![..rows, ..]);
                layer.forward(params, input, output.view_mut());
                relu_in_place(output);
            } else {
                layer.forward(params, input, workspace.logits.slice_mut(s![..rows, ..]));
            }
        }
    }

    /// Writes the gradient with respect to θ into `gradient`, given the forward pass of
    /// `x` and the loss gradient with respect to the logits in `workspace.logits`.
    pub(crate) fn backward(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        workspace: &mut Workspace,
        gradient: &mut [f32],
    ) {
        let rows = x.nrows();
        for (index, layer) in self.layers.iter().enumerate().rev() {
            let Workspace {
                activations,
                hidden_gradients,
                logits,
                ..
            } = &mut *workspace;
            let (lower_gradients, upper_gradients) = hidden_gradients.split_at_mut(index);
            let output_gradient = match upper_gradients.first() {
                Some(hidden_gradient) => hidden_gradient.slice(s![..rows, ..]),
                None => logits.slice(s![..rows, ..]),
            };
            let input = match index {
                0 => x.view(),
                _ => activations[index - 1].slice(s![..rows, ..]),
            };
            layer.backward_parameters(input, output_gradient, gradient);
            if let Some(input_gradient) = lower_gradients.last_mut() {
                let input_gradient = input_gradient.slice_mut(s![..rows, ..]);
                layer.backward_input_through_relu(params, output_gradient, input, input_gradient);
            }
        }
    }
}
