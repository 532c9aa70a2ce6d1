//! Exact Hessian-vector products of the mean cross-entropy of an [`Mlp`], by
//! forward-mode differentiation of the backward pass (Pearlmutter, "Fast
//! exact multiplication by the Hessian", Neural Computation 6(1), 1994).
//!
//! For a direction v, R{·} is the derivative d/dt at t = 0 of a quantity
//! computed at θ + t·v. Applying R to every step of the forward and backward
//! passes gives R{∇J(θ)} = H·v. ReLU is piecewise linear, so its second
//! derivative is zero away from 0 and R{relu(z)} = relu'(z)·R{z}. The product
//! is the Hessian of the linear piece that contains θ, which is the Hessian
//! of J wherever J is twice differentiable.

use ndarray::{Array2, ArrayView2, Zip};

use crate::matmul::general_mat_mul;
use crate::{Mlp, softmax};

/// Activations of one hidden layer and their directional derivatives.
struct HiddenState {
    activation: Array2<f32>,
    activation_derivative: Array2<f32>,
}

impl Mlp {
    /// Computes the mean cross-entropy J over the minibatch, writes ∇J into
    /// `gradient` and the Hessian-vector product H·`direction` into
    /// `product`, and returns J.
    ///
    /// It runs about three times the matrix products of
    /// [`loss_and_gradient`](Mlp::loss_and_gradient), and allocates its
    /// buffers on each call.
    ///
    /// # Panics
    ///
    /// Panics if the batch is empty, if `params`, `direction`, `gradient`,
    /// `product`, `x` or `labels` have the wrong length or shape, or if a
    /// label is not below `classes`.
    pub fn hessian_vector_product(
        &self,
        params: &[f32],
        direction: &[f32],
        x: ArrayView2<'_, f32>,
        labels: &[u32],
        gradient: &mut [f32],
        product: &mut [f32],
    ) -> f32 {
        let parameters = self.num_params();
        assert_eq!(
            params.len(),
            parameters,
            "params length must equal the parameter count"
        );
        assert_eq!(x.ncols(), self.inputs(), "x must have one column per input");
        assert_eq!(
            labels.len(),
            x.nrows(),
            "labels must have one entry per row of x"
        );
        for (name, length) in [
            ("direction", direction.len()),
            ("gradient", gradient.len()),
            ("product", product.len()),
        ] {
            assert_eq!(
                length, parameters,
                "{name} length must equal the parameter count"
            );
        }
        let rows = x.nrows();
        assert!(rows > 0, "the minibatch must not be empty");

        let layers = self.layers();
        let hidden_layers = layers.len() - 1;

        // Forward pass: z = a·Wᵀ + b and R{z} = R{a}·Wᵀ + a·Vᵀ + c, where
        // (V, c) is the layer's part of the direction and R{x} = 0.
        let mut hidden: Vec<HiddenState> = Vec::with_capacity(hidden_layers);
        let mut output = None;
        for (index, layer) in layers.iter().enumerate() {
            let mut z = Array2::<f32>::zeros((rows, layer.outputs));
            let mut z_derivative = Array2::<f32>::zeros((rows, layer.outputs));
            layer.forward(params, input_of(&hidden, index, x), z.view_mut());
            layer.forward(
                direction,
                input_of(&hidden, index, x),
                z_derivative.view_mut(),
            );
            if let Some(previous) = index.checked_sub(1).map(|i| &hidden[i]) {
                general_mat_mul(
                    1.0,
                    previous.activation_derivative.view(),
                    layer.weight(params).t(),
                    1.0,
                    z_derivative.view_mut(),
                );
            }
            if index < hidden_layers {
                // The same test as the backward pass: a unit whose output
                // is not positive passes no gradient and no derivative.
                z.mapv_inplace(|value| if value < 0.0 { 0.0 } else { value });
                Zip::from(&mut z_derivative)
                    .and(&z)
                    .for_each(|derivative, &value| {
                        if value <= 0.0 {
                            *derivative = 0.0;
                        }
                    });
                hidden.push(HiddenState {
                    activation: z,
                    activation_derivative: z_derivative,
                });
            } else {
                output = Some((z, z_derivative));
            }
        }
        let (logits, logits_derivative) = output.expect("an MLP has an output layer");

        // Loss: δ = (p − onehot)/n, and R{δ} = (p ⊙ R{z} − p·(pᵀR{z}))/n,
        // the softmax Jacobian applied to R{z}.
        let scale = 1.0 / rows as f32;
        let mut loss_sum = 0.0f64;
        for (row, &label) in logits.rows().into_iter().zip(labels) {
            let label = label as usize;
            assert!(
                label < self.classes(),
                "every label must be below the number of classes"
            );
            loss_sum += softmax::cross_entropy(row, label);
        }
        let mut delta = logits;
        softmax::softmax_rows(delta.view_mut());
        let mut delta_derivative = logits_derivative;
        for (mut derivative, probabilities) in
            delta_derivative.rows_mut().into_iter().zip(delta.rows())
        {
            let mean: f32 = derivative
                .iter()
                .zip(probabilities)
                .map(|(&r, &p)| r * p)
                .sum();
            derivative.zip_mut_with(&probabilities, |r, &p| *r = scale * p * (*r - mean));
        }
        for (mut row, &label) in delta.rows_mut().into_iter().zip(labels) {
            row[label as usize] -= 1.0;
            row.mapv_inplace(|value| value * scale);
        }

        // Backward pass: ∇W = δᵀ·a, ∇b = Σ δ, and their derivatives
        // R{∇W} = R{δ}ᵀ·a + δᵀ·R{a}, R{∇b} = Σ R{δ}. Below a layer,
        // δ' = (δ·W) ⊙ relu'(z') and R{δ'} = (R{δ}·W + δ·V) ⊙ relu'(z').
        for (index, layer) in layers.iter().enumerate().rev() {
            let input = input_of(&hidden, index, x);
            layer.backward_parameters(input, delta.view(), gradient);
            layer.backward_parameters(input, delta_derivative.view(), product);
            if let Some(previous) = index.checked_sub(1).map(|i| &hidden[i]) {
                let (mut weight_product, _) = layer.gradient_views(product);
                general_mat_mul(
                    1.0,
                    delta.t(),
                    previous.activation_derivative.view(),
                    1.0,
                    weight_product.view_mut(),
                );

                let activation = previous.activation.view();
                let mut below = Array2::<f32>::zeros((rows, layer.inputs));
                let mut below_derivative = Array2::<f32>::zeros((rows, layer.inputs));
                layer.backward_input_through_relu(
                    params,
                    delta.view(),
                    activation,
                    below.view_mut(),
                );
                general_mat_mul(
                    1.0,
                    delta_derivative.view(),
                    layer.weight(params),
                    0.0,
                    below_derivative.view_mut(),
                );
                general_mat_mul(
                    1.0,
                    delta.view(),
                    layer.weight(direction),
                    1.0,
                    below_derivative.view_mut(),
                );
                Zip::from(&mut below_derivative)
                    .and(&activation)
                    .for_each(|derivative, &value| {
                        if value <= 0.0 {
                            *derivative = 0.0;
                        }
                    });
                delta = below;
                delta_derivative = below_derivative;
            }
        }
        (loss_sum / rows as f64) as f32
    }
}

/// Returns the input of layer `index`: `x` for the first layer and the
/// previous hidden activation otherwise.
fn input_of<'a>(
    hidden: &'a [HiddenState],
    index: usize,
    x: ArrayView2<'a, f32>,
) -> ArrayView2<'a, f32> {
    match index.checked_sub(1) {
        Some(previous) => hidden[previous].activation.view(),
        None => x,
    }
}
