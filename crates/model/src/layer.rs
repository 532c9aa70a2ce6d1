//! Fully connected layers as views into the flat parameter vector θ.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

use crate::ModelDescription;
use crate::matmul::general_mat_mul;

/// Location of one layer's weight `[outputs, inputs]` and bias `[outputs]` in θ.
/// The bias directly follows the weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layer {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) weight_offset: usize,
}

impl Layer {
    /// Reads the layers from a validated description, whose tensors alternate weight and bias.
    pub(crate) fn from_description(description: &ModelDescription) -> Vec<Layer> {
        description
            .tensors
            .chunks_exact(2)
            .map(|pair| {
                let (weight, bias) = (&pair[0], &pair[1]);
                debug_assert_eq!(
                    bias.offset,
                    weight.offset + weight.shape[0] * weight.shape[1]
                );
                Layer {
                    inputs: weight.shape[1],
                    outputs: weight.shape[0],
                    weight_offset: weight.offset,
                }
            })
            .collect()
    }

    fn weight_len(&self) -> usize {
        self.outputs * self.inputs
    }

    /// Returns the range of θ that contains the weight followed by the bias.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.weight_offset..self.weight_offset + self.weight_len() + self.outputs
    }

    pub(crate) fn weight<'a>(&self, params: &'a [f32]) -> ArrayView2<'a, f32> {
        let start = self.weight_offset;
        let values = &params[start..start + self.weight_len()];
        ArrayView2::from_shape((self.outputs, self.inputs), values)
            .expect("the weight slice has outputs * inputs elements")
    }

    pub(crate) fn bias<'a>(&self, params: &'a [f32]) -> ArrayView1<'a, f32> {
        let start = self.weight_offset + self.weight_len();
        ArrayView1::from(&params[start..start + self.outputs])
    }

    /// Splits this layer's part of `gradient` into the weight and bias gradients.
    pub(crate) fn gradient_views<'a>(
        &self,
        gradient: &'a mut [f32],
    ) -> (ArrayViewMut2<'a, f32>, ArrayViewMut1<'a, f32>) {
        let (weight, bias) = gradient[self.range()].split_at_mut(self.weight_len());
        let weight = ArrayViewMut2::from_shape((self.outputs, self.inputs), weight)
            .expect("the weight slice has outputs * inputs elements");
        (weight, ArrayViewMut1::from(bias))
    }

    /// Computes `output = input · Wᵀ + b` for `input` of shape `[rows, inputs]`.
    pub(crate) fn forward(
        &self,
        params: &[f32],
        input: ArrayView2<'_, f32>,
        mut output: ArrayViewMut2<'_, f32>,
    ) {
        output.assign(&self.bias(params));
        general_mat_mul(1.0, input, self.weight(params).t(), 1.0, output);
    }

    /// Writes `dL/dW = output_gradientᵀ · input` and `dL/db` (the column sums of
    /// `output_gradient`) into this layer's part of `gradient`.
    pub(crate) fn backward_parameters(
        &self,
        input: ArrayView2<'_, f32>,
        output_gradient: ArrayView2<'_, f32>,
        gradient: &mut [f32],
    ) {
        let (weight_gradient, mut bias_gradient) = self.gradient_views(gradient);
        general_mat_mul(1.0, output_gradient.t(), input, 0.0, weight_gradient);
        bias_gradient.fill(0.0);
        for row in output_gradient.rows() {
            bias_gradient += &row;
        }
    }

    /// Writes `dL/d(input) = output_gradient · W` into `input_gradient`, zeroed where the
    /// ReLU output `activation` is not positive.
    pub(crate) fn backward_input_through_relu(
        &self,
        params: &[f32],
        output_gradient: ArrayView2<'_, f32>,
        activation: ArrayView2<'_, f32>,
        mut input_gradient: ArrayViewMut2<'_, f32>,
    ) {
        general_mat_mul(
            1.0,
            output_gradient,
            self.weight(params),
            0.0,
            input_gradient.view_mut(),
        );
        Zip::from(&mut input_gradient)
            .and(&activation)
            .for_each(|gradient, &value| {
                if value <= 0.0 {
                    *gradient = 0.0;
                }
            });
    }
}

/// Applies ReLU in place. NaN stays NaN, so a diverged model shows NaN losses.
pub(crate) fn relu_in_place(mut values: ArrayViewMut2<'_, f32>) {
    values.mapv_inplace(|value| if value < 0.0 { 0.0 } else { value });
}
