//! Gradient clipping, the guard against cliffs in the cost: where the cost
//! rises steeply next to a flat region, one unclipped gradient step can
//! throw θ far from where it was.

use crate::curvature::l2_norm;

/// Rescales `gradient` to Euclidean norm `max_norm` when its norm is above
/// it, keeping its direction. Returns the norm before clipping.
pub fn clip_by_norm(gradient: &mut [f32], max_norm: f64) -> f64 {
    let norm = l2_norm(gradient);
    if norm > max_norm {
        let scale = (max_norm / norm) as f32;
        gradient.iter_mut().for_each(|value| *value *= scale);
    }
    norm
}

/// Clamps every value of `gradient` to `[-limit, limit]` and returns how
/// many values were changed. NaN values are left alone.
pub fn clip_by_value(gradient: &mut [f32], limit: f32) -> u64 {
    let mut clipped = 0;
    for value in gradient.iter_mut() {
        if value.abs() > limit {
            *value = value.clamp(-limit, limit);
            clipped += 1;
        }
    }
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_clip_keeps_direction() {
        let mut gradient = [3.0f32, 4.0];
        let norm = clip_by_norm(&mut gradient, 1.0);
        assert_eq!(norm, 5.0);
        assert!((gradient[0] - 0.6).abs() < 1e-7);
        assert!((gradient[1] - 0.8).abs() < 1e-7);
    }

    #[test]
    fn norm_clip_leaves_small_gradient() {
        let mut gradient = [0.3f32, 0.4];
        assert!((clip_by_norm(&mut gradient, 1.0) - 0.5).abs() < 1e-7);
        assert_eq!(gradient, [0.3, 0.4]);
    }

    #[test]
    fn value_clip_counts_changes() {
        let mut gradient = [-5.0f32, 0.5, 2.0, -1.0];
        assert_eq!(clip_by_value(&mut gradient, 1.0), 2);
        assert_eq!(gradient, [-1.0, 0.5, 1.0, -1.0]);
    }
}
