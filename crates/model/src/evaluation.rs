//! Error counts and summed loss from evaluating a model on labelled examples.

/// Error count and summed cross-entropy over a set of examples.
///
/// Evaluations of disjoint sets combine with [`Evaluation::merge`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Evaluation {
    /// Number of examples evaluated.
    pub examples: usize,
    /// Number of examples whose predicted class differs from the label.
    pub errors: usize,
    /// Sum of the per-example cross-entropy in nats.
    pub loss_sum: f64,
}

impl Evaluation {
    /// Returns the fraction of examples misclassified, or NaN if there are no examples.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.examples as f64
    }

    /// Returns the fraction of examples classified correctly, or NaN if there are no examples.
    pub fn accuracy(&self) -> f64 {
        (self.examples - self.errors) as f64 / self.examples as f64
    }

    /// Returns the mean cross-entropy per example, or NaN if there are no examples.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.examples as f64
    }

    /// Adds the counts and loss of `other`, an evaluation of a disjoint set of examples.
    pub fn merge(&mut self, other: &Evaluation) {
        self.examples += other.examples;
        self.errors += other.errors;
        self.loss_sum += other.loss_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_mean_loss() {
        let evaluation = Evaluation {
            examples: 8,
            errors: 2,
            loss_sum: 4.0,
        };
        assert_eq!(evaluation.error_rate(), 0.25);
        assert_eq!(evaluation.accuracy(), 0.75);
        assert_eq!(evaluation.mean_loss(), 0.5);
    }

    #[test]
    fn empty_evaluation_is_nan() {
        let empty = Evaluation::default();
        assert!(empty.error_rate().is_nan());
        assert!(empty.accuracy().is_nan());
        assert!(empty.mean_loss().is_nan());
    }

    #[test]
    fn merge_adds_fields() {
        let mut total = Evaluation {
            examples: 3,
            errors: 1,
            loss_sum: 1.5,
        };
        total.merge(&Evaluation {
            examples: 5,
            errors: 0,
            loss_sum: 0.5,
        });
        assert_eq!(
            total,
            Evaluation {
                examples: 8,
                errors: 1,
                loss_sum: 2.0,
            }
        );
        total.merge(&Evaluation::default());
        assert_eq!(total.examples, 8);
    }
}
