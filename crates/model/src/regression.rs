//! Linear regression on the mean squared error, and calls that take either kind of
//! target.

use ndarray::{Array2, ArrayView2, Axis, s};

use crate::curvature::Objective;
use crate::{Evaluation, Mlp, Workspace};

/// Targets of a minibatch or evaluation set: class ids for a classifier, real values for
/// linear regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Targets<'a> {
    /// One class id per row.
    Classes(&'a [u32]),
    /// One real value per row.
    Values(&'a [f32]),
}

impl Targets<'_> {
    /// Returns the number of rows the targets cover.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(labels) => labels.len(),
            Targets::Values(values) => values.len(),
        }
    }

    /// Returns whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Mlp {
    /// Computes the mean squared error `mean((ŷ - y)²)` over the minibatch and writes its
    /// gradient with respect to θ into `gradient`, overwriting every element.
    ///
    /// # Panics
    ///
    /// Panics if the model is not linear regression, if the batch is empty, or if
    /// `params`, `gradient`, `x` or `targets` have the wrong length or shape.
    pub fn squared_error_and_gradient(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        targets: &[f32],
        gradient: &mut [f32],
        workspace: &mut Workspace,
    ) -> f32 {
        self.check_regression_batch(params, x, targets);
        assert_eq!(
            gradient.len(),
            self.num_params(),
            "gradient length must equal the parameter count"
        );
        let rows = x.nrows();
        assert!(rows > 0, "the minibatch must not be empty");

        workspace.prepare(self, rows);
        self.forward(params, x, workspace);
        // The loss gradient with respect to each prediction is 2 (ŷ - y) / rows, written
        // over the prediction for the backward pass.
        let scale = 2.0 / rows as f32;
        let mut loss_sum = 0.0f64;
        let mut outputs = workspace.logits.slice_mut(s![..rows, 0]);
        for (output, &target) in outputs.iter_mut().zip(targets) {
            let residual = *output - target;
            loss_sum += f64::from(residual) * f64::from(residual);
            *output = scale * residual;
        }
        self.backward(params, x, workspace, gradient);
        (loss_sum / rows as f64) as f32
    }

    /// Runs the model over any number of rows, in chunks of the workspace capacity, and
    /// returns the summed squared error in `loss_sum`. `errors` stays 0, so
    /// [`Evaluation::mean_loss`] is the mean squared error.
    ///
    /// # Panics
    ///
    /// Panics if the model is not linear regression, or if `params`, `x` or `targets`
    /// have the wrong length or shape.
    pub fn evaluate_regression(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        targets: &[f32],
        workspace: &mut Workspace,
    ) -> Evaluation {
        self.check_regression_batch(params, x, targets);
        workspace.prepare(self, 0);
        let chunk_rows = workspace.capacity();
        let mut evaluation = Evaluation::default();
        for (x_chunk, target_chunk) in x
            .axis_chunks_iter(Axis(0), chunk_rows)
            .zip(targets.chunks(chunk_rows))
        {
            self.forward(params, x_chunk, workspace);
            let outputs = workspace.logits.slice(s![..x_chunk.nrows(), 0]);
            for (&output, &target) in outputs.iter().zip(target_chunk) {
                let residual = f64::from(output) - f64::from(target);
                evaluation.loss_sum += residual * residual;
            }
            evaluation.examples += x_chunk.nrows();
        }
        evaluation
    }

    /// Writes the predicted value of each row of `x` into `out`.
    ///
    /// # Panics
    ///
    /// Panics if the model is not linear regression, or if `params`, `x` or `out` have
    /// the wrong length or shape.
    pub fn predict_values(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        out: &mut [f32],
        workspace: &mut Workspace,
    ) {
        self.check_regression_batch(params, x, out);
        workspace.prepare(self, 0);
        let chunk_rows = workspace.capacity();
        for (x_chunk, out_chunk) in x
            .axis_chunks_iter(Axis(0), chunk_rows)
            .zip(out.chunks_mut(chunk_rows))
        {
            self.forward(params, x_chunk, workspace);
            let outputs = workspace.logits.slice(s![..x_chunk.nrows(), 0]);
            for (value, &output) in out_chunk.iter_mut().zip(outputs.iter()) {
                *value = output;
            }
        }
    }

    /// Computes the mean loss and its gradient with the loss of the model's task: the
    /// cross-entropy of class targets or the squared error of real targets.
    ///
    /// # Panics
    ///
    /// Panics if the kind of `targets` does not match the model, and in the cases of
    /// [`Mlp::loss_and_gradient`] and [`Mlp::squared_error_and_gradient`].
    pub fn loss_and_gradient_for(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        targets: Targets<'_>,
        gradient: &mut [f32],
        workspace: &mut Workspace,
    ) -> f32 {
        match targets {
            Targets::Classes(labels) => {
                self.loss_and_gradient(params, x, labels, gradient, workspace)
            }
            Targets::Values(values) => {
                self.squared_error_and_gradient(params, x, values, gradient, workspace)
            }
        }
    }

    /// Evaluates the model with the loss of its task, as [`Mlp::evaluate`] or
    /// [`Mlp::evaluate_regression`] does.
    ///
    /// # Panics
    ///
    /// Panics if the kind of `targets` does not match the model, and in the cases of
    /// those two functions.
    pub fn evaluate_for(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        targets: Targets<'_>,
        workspace: &mut Workspace,
    ) -> Evaluation {
        match targets {
            Targets::Classes(labels) => self.evaluate(params, x, labels, workspace),
            Targets::Values(values) => self.evaluate_regression(params, x, values, workspace),
        }
    }

    /// Writes the Hessian-vector product H·`direction` of the mean squared
    /// error into `product`. The loss is quadratic in θ, so H = (2/n)·AᵀA
    /// with A = [x 1], and H·v = (2/n)·Aᵀ(A·v), where A·v is the model's
    /// output at θ = v.
    ///
    /// # Panics
    ///
    /// Panics if the model is not linear regression, if the batch is empty,
    /// or if `direction`, `product` or `x` have the wrong length or shape.
    pub fn squared_error_hessian_vector_product(
        &self,
        direction: &[f32],
        x: ArrayView2<'_, f32>,
        product: &mut [f32],
    ) {
        let rows = x.nrows();
        self.check_regression_batch(direction, x, &vec![0.0; rows]);
        assert_eq!(
            product.len(),
            self.num_params(),
            "product length must equal the parameter count"
        );
        assert!(rows > 0, "the minibatch must not be empty");
        let [layer] = self.layers() else {
            unreachable!("a linear regression has exactly one layer");
        };
        let mut output_derivative = Array2::<f32>::zeros((rows, 1));
        layer.forward(direction, x, output_derivative.view_mut());
        output_derivative.mapv_inplace(|value| value * 2.0 / rows as f32);
        layer.backward_parameters(x, output_derivative.view(), product);
    }

    fn check_regression_batch(&self, params: &[f32], x: ArrayView2<'_, f32>, targets: &[f32]) {
        assert!(
            self.is_regression(),
            "a classifier takes class ids, not real targets"
        );
        self.check_inputs(params, x);
        assert_eq!(
            targets.len(),
            x.nrows(),
            "targets must have one entry per row of x"
        );
    }
}

/// The mean squared error of a fixed minibatch, as the curvature probe
/// takes it.
#[derive(Debug)]
pub struct RegressionObjective<'a> {
    pub model: &'a Mlp,
    pub features: ArrayView2<'a, f32>,
    pub targets: &'a [f32],
    pub workspace: &'a mut Workspace,
}

impl Objective for RegressionObjective<'_> {
    fn loss_and_gradient(&mut self, params: &[f32], gradient: &mut [f32]) -> f64 {
        let loss = self.model.squared_error_and_gradient(
            params,
            self.features,
            self.targets,
            gradient,
            self.workspace,
        );
        f64::from(loss)
    }

    fn hessian_vector_product(&mut self, _params: &[f32], direction: &[f32], product: &mut [f32]) {
        self.model
            .squared_error_hessian_vector_product(direction, self.features, product);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;
    use crate::{ModelDescription, ModelSpec};

    fn linear(inputs: usize) -> Mlp {
        let description =
            ModelDescription::new(&ModelSpec::Linear, inputs, 0).expect("valid linear model");
        Mlp::new(&description).expect("valid model")
    }

    #[test]
    fn squared_error_and_gradient_by_hand() {
        let model = linear(2);
        // θ = [w0, w1, b]
        let params = [1.0f32, -2.0, 0.5];
        let x = array![[1.0f32, 0.0], [0.0, 1.0]];
        let targets = [2.0f32, -1.0];
        let mut gradient = vec![0.0; 3];
        let mut workspace = Workspace::new(&model, 2);
        let loss = model.squared_error_and_gradient(
            &params,
            x.view(),
            &targets,
            &mut gradient,
            &mut workspace,
        );
        // Predictions 1.5 and -1.5, residuals -0.5 and -0.5.
        assert_eq!(loss, 0.25);
        // d/dw0 = 2/2 · (-0.5 · 1), d/dw1 = 2/2 · (-0.5 · 1), d/db = 2/2 · (-1.0)
        assert_eq!(gradient, vec![-0.5, -0.5, -1.0]);
    }

    #[test]
    fn evaluate_regression_sums_squares() {
        let model = linear(1);
        let params = [2.0f32, 1.0];
        let x = array![[0.0f32], [1.0], [2.0]];
        let targets = [1.0f32, 4.0, 5.0];
        let mut workspace = Workspace::new(&model, 2);
        let evaluation = model.evaluate_regression(&params, x.view(), &targets, &mut workspace);
        assert_eq!(evaluation.examples, 3);
        assert_eq!(evaluation.errors, 0);
        assert_eq!(evaluation.loss_sum, 1.0);
        let mut predictions = [0.0f32; 3];
        model.predict_values(&params, x.view(), &mut predictions, &mut workspace);
        assert_eq!(predictions, [1.0, 3.0, 5.0]);
    }

    #[test]
    fn hessian_product_by_hand() {
        let model = linear(1);
        let x = array![[1.0f32], [3.0]];
        // H = (2/2)·[[1+9, 1+3], [1+3, 2]] = [[10, 4], [4, 2]].
        let mut product = [0.0f32; 2];
        model.squared_error_hessian_vector_product(&[1.0, -1.0], x.view(), &mut product);
        assert_eq!(product, [6.0, 2.0]);
    }

    #[test]
    fn targets_dispatch_to_the_task_loss() {
        let model = linear(1);
        let params = [1.0f32, 0.0];
        let x = array![[3.0f32]];
        let mut gradient = vec![0.0; 2];
        let mut workspace = Workspace::new(&model, 1);
        let loss = model.loss_and_gradient_for(
            &params,
            x.view(),
            Targets::Values(&[1.0]),
            &mut gradient,
            &mut workspace,
        );
        assert_eq!(loss, 4.0);
        assert_eq!(Targets::Values(&[1.0]).len(), 1);
        assert!(Targets::Classes(&[]).is_empty());
    }
}
