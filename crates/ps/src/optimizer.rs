//! SGD with momentum, L2 weight decay and a linear learning-rate warm-up,
//! applied in place.

/// Settings of stochastic gradient descent with momentum.
///
/// The update follows the form PyTorch's `torch.optim.SGD` uses:
/// `v = momentum·v + (g + weight_decay·θ)`, then `θ = θ − ε_t·v`, where
/// ε_t is [`SgdConfig::learning_rate_at`] of the update's index t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Step size ε after the warm-up.
    pub learning_rate: f32,
    /// Momentum coefficient in [0, 1); 0 gives plain SGD.
    pub momentum: f32,
    /// L2 penalty coefficient added to the gradient; 0 disables it.
    pub weight_decay: f32,
    /// Updates over which the step size rises linearly to `learning_rate`;
    /// 0 disables the warm-up.
    pub warmup_updates: u64,
}

impl SgdConfig {
    /// Checks that every setting is finite and in range.
    ///
    /// # Errors
    ///
    /// Returns a message naming the invalid setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "learning rate must be a positive number, got {}",
                self.learning_rate
            ));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "weight decay must be zero or positive, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }

    /// Returns the step size of the update with index `update`, counted
    /// from 0: `learning_rate·(update + 1)/warmup_updates` during the
    /// warm-up, and `learning_rate` from update `warmup_updates − 1` on.
    pub fn learning_rate_at(&self, update: u64) -> f32 {
        if update >= self.warmup_updates {
            return self.learning_rate;
        }
        // f64 represents every update count below 2^53 exactly.
        let fraction = (update + 1) as f64 / self.warmup_updates as f64;
        (f64::from(self.learning_rate) * fraction) as f32
    }

    /// Applies the update with index `update` to `params` with the gradient
    /// `gradient`, updating the momentum buffer `velocity`. All three
    /// slices have one length.
    pub(crate) fn apply(
        &self,
        update: u64,
        params: &mut [f32],
        velocity: &mut [f32],
        gradient: &[f32],
    ) {
        debug_assert_eq!(params.len(), gradient.len());
        debug_assert_eq!(params.len(), velocity.len());
        let (lr, mu, wd) = (
            self.learning_rate_at(update),
            self.momentum,
            self.weight_decay,
        );
        for ((theta, v), &g) in params.iter_mut().zip(velocity.iter_mut()).zip(gradient) {
            let g = g + wd * *theta;
            *v = mu * *v + g;
            *theta -= lr * *v;
        }
    }

    /// Applies the update with index `update` to the positions `indices` of
    /// `params` only, with `values` as the gradient there.
    ///
    /// The update is lazy: a position the gradient does not list keeps its
    /// value and its momentum this step, so it is neither decayed by
    /// `weight_decay` nor moved by the momentum it carries. A listed
    /// position gets the same update as in [`SgdConfig::apply`]. Without
    /// momentum and weight decay both agree exactly.
    pub(crate) fn apply_sparse(
        &self,
        update: u64,
        params: &mut [f32],
        velocity: &mut [f32],
        indices: &[u32],
        values: &[f32],
    ) {
        debug_assert_eq!(indices.len(), values.len());
        let (lr, mu, wd) = (
            self.learning_rate_at(update),
            self.momentum,
            self.weight_decay,
        );
        for (&index, &g) in indices.iter().zip(values) {
            let (theta, v) = (&mut params[index as usize], &mut velocity[index as usize]);
            let g = g + wd * *theta;
            *v = mu * *v + g;
            *theta -= lr * *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_matches_hand_computed_steps() {
        let sgd = SgdConfig {
            learning_rate: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_updates: 0,
        };
        let mut params = [1.0f32];
        let mut velocity = [0.0f32];

        sgd.apply(0, &mut params, &mut velocity, &[1.0]);
        assert!((params[0] - 0.9).abs() < 1e-6);

        // v = 0.9·1 + 1 = 1.9, θ = 0.9 − 0.19
        sgd.apply(1, &mut params, &mut velocity, &[1.0]);
        assert!((velocity[0] - 1.9).abs() < 1e-6);
        assert!((params[0] - 0.71).abs() < 1e-6);
    }

    #[test]
    fn sparse_step_leaves_unlisted_positions() {
        let sgd = SgdConfig {
            learning_rate: 0.1,
            momentum: 0.9,
            weight_decay: 0.5,
            warmup_updates: 0,
        };
        let mut params = [1.0f32, 2.0, 3.0];
        let mut velocity = [0.5f32, 0.5, 0.5];
        let mut dense_params = params;
        let mut dense_velocity = velocity;

        sgd.apply_sparse(0, &mut params, &mut velocity, &[1], &[1.0]);
        sgd.apply(0, &mut dense_params, &mut dense_velocity, &[0.0, 1.0, 0.0]);

        assert_eq!(params[0], 1.0);
        assert_eq!(velocity[0], 0.5);
        assert_eq!(params[2], 3.0);
        assert_eq!(velocity[2], 0.5);
        // The listed position moves as in the dense step:
        // v = 0.9·0.5 + 1 + 0.5·2 = 2.45, θ = 2 − 0.245.
        assert_eq!(params[1], dense_params[1]);
        assert_eq!(velocity[1], dense_velocity[1]);
        assert!((params[1] - 1.755).abs() < 1e-6);
    }

    #[test]
    fn warmup_ramps_learning_rate_linearly() {
        let sgd = SgdConfig {
            learning_rate: 0.5,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_updates: 4,
        };
        let rates: Vec<f32> = (0..6).map(|t| sgd.learning_rate_at(t)).collect();
        assert_eq!(rates, [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]);

        let constant = SgdConfig {
            warmup_updates: 0,
            ..sgd
        };
        assert_eq!(constant.learning_rate_at(0), 0.5);
        assert_eq!(constant.learning_rate_at(u64::MAX), 0.5);
    }

    #[test]
    fn warmup_steps_use_update_index() {
        let sgd = SgdConfig {
            learning_rate: 1.0,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 2,
        };
        let mut params = [0.0f32];
        let mut velocity = [0.0f32];

        sgd.apply(0, &mut params, &mut velocity, &[1.0]);
        assert_eq!(params[0], -0.5);

        sgd.apply(1, &mut params, &mut velocity, &[1.0]);
        assert_eq!(params[0], -1.5);

        sgd.apply(7, &mut params, &mut velocity, &[1.0]);
        assert_eq!(params[0], -2.5);
    }

    #[test]
    fn weight_decay_shrinks_params_with_zero_gradient() {
        let sgd = SgdConfig {
            learning_rate: 0.5,
            momentum: 0.0,
            weight_decay: 0.1,
            warmup_updates: 0,
        };
        let mut params = [2.0f32];
        let mut velocity = [0.0f32];

        sgd.apply(0, &mut params, &mut velocity, &[0.0]);

        assert!((params[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn validate_rejects_out_of_range_settings() {
        let good = SgdConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_updates: 0,
        };
        assert!(good.validate().is_ok());
        assert!(
            SgdConfig {
                learning_rate: 0.0,
                ..good
            }
            .validate()
            .is_err()
        );
        assert!(
            SgdConfig {
                learning_rate: f32::NAN,
                ..good
            }
            .validate()
            .is_err()
        );
        assert!(
            SgdConfig {
                momentum: 1.0,
                ..good
            }
            .validate()
            .is_err()
        );
        assert!(
            SgdConfig {
                weight_decay: -1.0,
                ..good
            }
            .validate()
            .is_err()
        );
    }
}
