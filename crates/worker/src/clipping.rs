//! Clipping of the whole gradient before it is split over the parameter
//! servers, so that `--clip-norm` bounds the norm over all of θ.

use downpour_model::clip::{clip_by_norm, clip_by_value};
use downpour_model::curvature::l2_norm;
use downpour_proto::v1::PushRecord;

/// The clipping settings a worker gets at registration; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Clipping {
    pub(crate) max_norm: f32,
    pub(crate) max_value: f32,
}

impl Clipping {
    /// Clips `gradient` in place, by value first and then by norm, and
    /// returns the record of the push with its norm before clipping. The
    /// version and staleness are filled in once the servers reply.
    pub(crate) fn apply(&self, gradient: &mut [f32]) -> PushRecord {
        let norm = l2_norm(gradient);
        let clipped_values = if self.max_value > 0.0 {
            clip_by_value(gradient, self.max_value)
        } else {
            0
        };
        let clipped_by_norm = self.max_norm > 0.0 && {
            let norm_after_values = clip_by_norm(gradient, f64::from(self.max_norm));
            norm_after_values > f64::from(self.max_norm)
        };
        PushRecord {
            gradient_norm: norm as f32,
            version: 0,
            staleness: 0,
            clipped_by_norm,
            clipped_values: u32::try_from(clipped_values).unwrap_or(u32::MAX),
            ..PushRecord::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_leaves_gradient() {
        let off = Clipping {
            max_norm: 0.0,
            max_value: 0.0,
        };
        let mut gradient = [30.0f32, -40.0];
        let record = off.apply(&mut gradient);
        assert_eq!(gradient, [30.0, -40.0]);
        assert_eq!(record.gradient_norm, 50.0);
        assert!(!record.clipped_by_norm);
        assert_eq!(record.clipped_values, 0);
    }

    #[test]
    fn both_clips_count() {
        let both = Clipping {
            max_norm: 1.0,
            max_value: 10.0,
        };
        let mut gradient = [30.0f32, -4.0];
        let record = both.apply(&mut gradient);
        assert_eq!(record.gradient_norm, (900.0f32 + 16.0).sqrt());
        assert_eq!(record.clipped_values, 1);
        assert!(record.clipped_by_norm);
        let norm = (gradient[0] * gradient[0] + gradient[1] * gradient[1]).sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{gradient:?}");
    }
}
