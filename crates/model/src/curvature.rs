//! The ill-conditioning check of SGD: the curvature of the cost along the
//! gradient, and the second-order prediction of what one gradient step does.
//!
//! For a step θ − ε·g, the second-order Taylor expansion of the cost J
//! predicts the change ½ε²·g'Hg − ε·g'g, where H is the Hessian of J at θ.
//! When ½ε²·g'Hg exceeds ε·g'g the step is predicted to raise the cost even
//! though it follows the negative gradient: the learning rate is too large
//! for the curvature along g (Goodfellow, Bengio and Courville, Deep
//! Learning, 2016, section 8.2.1).

use serde::{Deserialize, Serialize};

/// Length of the central finite-difference step along the unit gradient
/// direction, relative to max(1, ‖θ‖).
///
/// g'Hg is estimated as ‖g‖²·u'(∇J(θ + h·u) − ∇J(θ − h·u)) / (2h) with
/// u = g/‖g‖ and h = `RELATIVE_STEP`·max(1, ‖θ‖). The error of the central
/// difference is O(h²) for a smooth cost and zero for a quadratic. For a
/// ReLU network the step also averages the curvature over the activation
/// kinks it crosses. With f32 parameters, a step of 1e-3·‖θ‖ moves each of
/// the 0.27 M values of the default MLP by about 2e-6·‖θ‖, well above f32
/// rounding of θ.
pub const RELATIVE_STEP: f64 = 1e-3;

/// The outcome of the check at one θ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvatureProbe {
    /// Cost J(θ) on the probe's examples.
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
    /// Length h of the finite-difference step in θ.
    pub step: f64,
}

impl CurvatureProbe {
    /// Builds the probe from g'g and g'Hg measured at θ.
    pub fn new(
        loss: f64,
        gradient_norm_squared: f64,
        curvature: f64,
        learning_rate: f64,
        step: f64,
    ) -> Self {
        let first_order = learning_rate * gradient_norm_squared;
        let second_order = 0.5 * learning_rate * learning_rate * curvature;
        Self {
            loss,
            gradient_norm_squared,
            curvature,
            learning_rate,
            predicted_change: second_order - first_order,
            ill_conditioned: second_order > first_order,
            step,
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
/// `gradient(θ, out)` writes ∇J(θ) into `out` and returns J(θ). It is
/// called three times: at θ and at θ ± h·g/‖g‖, with h as
/// [`RELATIVE_STEP`] describes. A zero gradient gives g'Hg = 0.
pub fn probe_curvature(
    params: &[f32],
    learning_rate: f64,
    mut gradient: impl FnMut(&[f32], &mut [f32]) -> f64,
) -> CurvatureProbe {
    let mut g = vec![0.0f32; params.len()];
    let loss = gradient(params, &mut g);
    let norm = l2_norm(&g);
    let step = RELATIVE_STEP * l2_norm(params).max(1.0);
    if norm == 0.0 || !norm.is_finite() {
        return CurvatureProbe::new(loss, norm * norm, 0.0, learning_rate, step);
    }

    let shifted = |sign: f64| -> Vec<f32> {
        params
            .iter()
            .zip(&g)
            .map(|(&theta, &gi)| (f64::from(theta) + sign * step * f64::from(gi) / norm) as f32)
            .collect()
    };
    let (plus, minus) = (shifted(1.0), shifted(-1.0));
    let mut g_plus = vec![0.0f32; params.len()];
    let mut g_minus = vec![0.0f32; params.len()];
    gradient(&plus, &mut g_plus);
    gradient(&minus, &mut g_minus);
    // Rounding θ ± h·u to f32 makes the displacement d = θ₊ − θ₋ differ
    // slightly from 2h·u, so the curvature is taken along the d actually
    // used: g'Hg ≈ ‖g‖²·d'(∇J(θ₊) − ∇J(θ₋)) / d'd, exact for a quadratic.
    let mut d_dot_difference = 0.0f64;
    let mut d_dot_d = 0.0f64;
    for i in 0..params.len() {
        let d = f64::from(plus[i]) - f64::from(minus[i]);
        d_dot_difference += d * (f64::from(g_plus[i]) - f64::from(g_minus[i]));
        d_dot_d += d * d;
    }
    let curvature = if d_dot_d > 0.0 {
        norm * norm * d_dot_difference / d_dot_d
    } else {
        0.0
    };
    CurvatureProbe::new(loss, norm * norm, curvature, learning_rate, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_follows_predicted_change() {
        let rising = CurvatureProbe::new(1.0, 1.0, 50.0, 0.1, 1e-3);
        assert!((rising.predicted_change - (0.25 - 0.1)).abs() < 1e-12);
        assert!(rising.ill_conditioned);
        let falling = CurvatureProbe::new(1.0, 1.0, 10.0, 0.1, 1e-3);
        assert!((falling.predicted_change - (0.05 - 0.1)).abs() < 1e-12);
        assert!(!falling.ill_conditioned);
    }

    #[test]
    fn zero_gradient_has_zero_curvature() {
        let probe = probe_curvature(&[1.0, 2.0], 0.1, |_, out| {
            out.fill(0.0);
            3.0
        });
        assert_eq!(probe.curvature, 0.0);
        assert_eq!(probe.gradient_norm_squared, 0.0);
        assert!(!probe.ill_conditioned);
    }
}
