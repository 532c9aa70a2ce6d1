//! The ill-conditioning check of SGD: the curvature of the cost along the
//! gradient, and the second-order prediction of what one gradient step does.
//!
//! For a step θ − ε·g, the second-order Taylor expansion of the cost J
//! predicts the change ½ε²·g'Hg − ε·g'g, where H is the Hessian of J at θ.
//! When ½ε²·g'Hg exceeds ε·g'g the step is predicted to raise the cost even
//! though it follows the negative gradient: the learning rate is too large
//! for the curvature along g (Goodfellow, Bengio and Courville, Deep
//! Learning, 2016, section 8.2.1).

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::{Mlp, Workspace};

/// A cost whose gradient and Hessian-vector products the probe can compute.
pub trait Objective {
    /// Writes ∇J(θ) into `gradient` and returns J(θ).
    fn loss_and_gradient(&mut self, params: &[f32], gradient: &mut [f32]) -> f64;

    /// Writes the Hessian-vector product H(θ)·`direction` into `product`.
    fn hessian_vector_product(&mut self, params: &[f32], direction: &[f32], product: &mut [f32]);
}

/// The outcome of the check at one θ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvatureProbe {
    /// Cost on the probe's examples: J(θ) + ½λ‖θ‖² for weight decay λ.
    pub loss: f64,
    /// g'g, the squared gradient norm.
    pub gradient_norm_squared: f64,
    /// g'Hg, the curvature of J along g times ‖g‖².
    pub curvature: f64,
    /// ε, the learning rate of the predicted step.
    pub learning_rate: f64,
    /// ½ε²·g'Hg − ε·g'g, the second-order prediction of the change in J
    /// after the step θ − ε·g.
    pub predicted_change: f64,
    /// Whether ½ε²·g'Hg > ε·g'g, so that the step is predicted to raise J.
    pub ill_conditioned: bool,
}

impl CurvatureProbe {
    /// Builds the probe from g'g and g'Hg measured at θ.
    pub fn new(loss: f64, gradient_norm_squared: f64, curvature: f64, learning_rate: f64) -> Self {
        let first_order = learning_rate * gradient_norm_squared;
        let second_order = 0.5 * learning_rate * learning_rate * curvature;
        Self {
            loss,
            gradient_norm_squared,
            curvature,
            learning_rate,
            predicted_change: second_order - first_order,
            ill_conditioned: second_order > first_order,
        }
    }
}

/// Returns the Euclidean norm of `values`, summed in f64.
pub fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&value| f64::from(value) * f64::from(value))
        .sum::<f64>()
        .sqrt()
}

/// Measures g'g and g'Hg at `params` for the step size `learning_rate`.
///
/// The cost is `objective` plus the L2 penalty ½λ‖θ‖² of `weight_decay` λ,
/// the cost whose gradient g + λθ the parameter server applies, so the
/// probe uses g + λθ as the gradient and H + λI as the Hessian. g'Hg comes
/// from one exact Hessian-vector product along g.
pub fn probe_curvature(
    params: &[f32],
    learning_rate: f64,
    weight_decay: f64,
    objective: &mut impl Objective,
) -> CurvatureProbe {
    let mut g = vec![0.0f32; params.len()];
    let mut loss = objective.loss_and_gradient(params, &mut g);
    if weight_decay != 0.0 {
        loss += 0.5 * weight_decay * l2_norm(params).powi(2);
        for (gi, &theta) in g.iter_mut().zip(params) {
            *gi = (f64::from(*gi) + weight_decay * f64::from(theta)) as f32;
        }
    }
    let gradient_norm_squared = l2_norm(&g).powi(2);
    if gradient_norm_squared == 0.0 || !gradient_norm_squared.is_finite() {
        return CurvatureProbe::new(loss, gradient_norm_squared, 0.0, learning_rate);
    }

    let mut product = vec![0.0f32; params.len()];
    objective.hessian_vector_product(params, &g, &mut product);
    let curvature = g
        .iter()
        .zip(&product)
        .map(|(&gi, &hg)| f64::from(gi) * f64::from(hg))
        .sum::<f64>()
        + weight_decay * gradient_norm_squared;
    CurvatureProbe::new(loss, gradient_norm_squared, curvature, learning_rate)
}

/// The mean cross-entropy of an [`Mlp`] on a fixed minibatch.
#[derive(Debug)]
pub struct MinibatchObjective<'a> {
    pub model: &'a Mlp,
    pub features: ArrayView2<'a, f32>,
    pub labels: &'a [u32],
    pub workspace: &'a mut Workspace,
}

impl Objective for MinibatchObjective<'_> {
    fn loss_and_gradient(&mut self, params: &[f32], gradient: &mut [f32]) -> f64 {
        let loss = self.model.loss_and_gradient(
            params,
            self.features,
            self.labels,
            gradient,
            self.workspace,
        );
        f64::from(loss)
    }

    fn hessian_vector_product(&mut self, params: &[f32], direction: &[f32], product: &mut [f32]) {
        let mut gradient = vec![0.0f32; params.len()];
        self.model.hessian_vector_product(
            params,
            direction,
            self.features,
            self.labels,
            &mut gradient,
            product,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_follows_predicted_change() {
        let rising = CurvatureProbe::new(1.0, 1.0, 50.0, 0.1);
        assert!((rising.predicted_change - (0.25 - 0.1)).abs() < 1e-12);
        assert!(rising.ill_conditioned);
        let falling = CurvatureProbe::new(1.0, 1.0, 10.0, 0.1);
        assert!((falling.predicted_change - (0.05 - 0.1)).abs() < 1e-12);
        assert!(!falling.ill_conditioned);
    }

    /// J = 3 everywhere, with a zero gradient and Hessian.
    struct Flat;

    impl Objective for Flat {
        fn loss_and_gradient(&mut self, _: &[f32], gradient: &mut [f32]) -> f64 {
            gradient.fill(0.0);
            3.0
        }

        fn hessian_vector_product(&mut self, _: &[f32], _: &[f32], product: &mut [f32]) {
            product.fill(0.0);
        }
    }

    #[test]
    fn zero_gradient_has_zero_curvature() {
        let probe = probe_curvature(&[1.0, 2.0], 0.1, 0.0, &mut Flat);
        assert_eq!(probe.curvature, 0.0);
        assert_eq!(probe.gradient_norm_squared, 0.0);
        assert!(!probe.ill_conditioned);
    }

    #[test]
    fn weight_decay_adds_penalty() {
        // With λ = 0.5 at θ = (1, 2): g = λθ = (0.5, 1), H = λI.
        let probe = probe_curvature(&[1.0, 2.0], 0.1, 0.5, &mut Flat);
        assert!((probe.loss - (3.0 + 0.25 * 5.0)).abs() < 1e-12);
        assert!((probe.gradient_norm_squared - 1.25).abs() < 1e-12);
        assert!((probe.curvature - 0.5 * 1.25).abs() < 1e-12);
    }
}
