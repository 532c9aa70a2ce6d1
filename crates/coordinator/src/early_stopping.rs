//! Early stopping on the validation error, keeping the best θ.

/// The outcome of one validation pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The error is the lowest so far; the snapshot was kept.
    Improved,
    /// No improvement, and patience is not used up yet.
    Continue,
    /// `patience` passes in a row brought no improvement.
    Stop,
}

/// Tracks the best validation error and the snapshot it was measured at,
/// and decides when to stop.
///
/// Only a strictly lower error counts as an improvement.
#[derive(Debug)]
pub struct EarlyStopping<T> {
    patience: u32,
    best: Option<(f64, T)>,
    evaluations_since_best: u32,
}

impl<T> EarlyStopping<T> {
    /// Creates a tracker that stops after `patience` passes without
    /// improvement.
    pub fn new(patience: u32) -> Self {
        Self {
            patience,
            best: None,
            evaluations_since_best: 0,
        }
    }

    /// Creates a tracker that goes on from a saved best error and snapshot,
    /// `evaluations_since_best` passes after it.
    pub fn resume(patience: u32, best: (f64, T), evaluations_since_best: u32) -> Self {
        Self {
            patience,
            best: Some(best),
            evaluations_since_best,
        }
    }

    /// Records a validation error. `snapshot` is called only when the error
    /// improves, so a caller copies θ only when it is kept.
    pub fn observe(&mut self, error: f64, snapshot: impl FnOnce() -> T) -> Verdict {
        let improved = match &self.best {
            None => true,
            Some((best, _)) => error < *best,
        };
        if improved {
            self.best = Some((error, snapshot()));
            self.evaluations_since_best = 0;
            return Verdict::Improved;
        }
        self.evaluations_since_best += 1;
        if self.evaluations_since_best >= self.patience {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }

    /// Returns the lowest error seen, with its snapshot.
    pub fn best(&self) -> Option<(f64, &T)> {
        self.best
            .as_ref()
            .map(|(error, snapshot)| (*error, snapshot))
    }

    /// Passes since the last improvement.
    pub fn evaluations_since_best(&self) -> u32 {
        self.evaluations_since_best
    }

    /// Consumes the tracker and returns the best snapshot.
    pub fn into_best(self) -> Option<(f64, T)> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_exactly_patience_without_improvement() {
        let mut stopping = EarlyStopping::new(3);
        assert_eq!(stopping.observe(0.5, || "a"), Verdict::Improved);
        assert_eq!(stopping.observe(0.6, || "b"), Verdict::Continue);
        assert_eq!(stopping.observe(0.5, || "c"), Verdict::Continue);

        assert_eq!(stopping.observe(0.7, || "d"), Verdict::Stop);
    }

    #[test]
    fn returns_best_snapshot_not_last() {
        let mut stopping = EarlyStopping::new(2);
        stopping.observe(0.3, || vec![1.0]);
        stopping.observe(0.1, || vec![2.0]);
        stopping.observe(0.2, || vec![3.0]);
        stopping.observe(0.4, || vec![4.0]);

        let (error, best) = stopping.into_best().unwrap();

        assert_eq!(error, 0.1);
        assert_eq!(best, vec![2.0]);
    }

    #[test]
    fn improvement_resets_patience() {
        let mut stopping = EarlyStopping::new(2);
        stopping.observe(0.5, || ());
        assert_eq!(stopping.observe(0.6, || ()), Verdict::Continue);
        assert_eq!(stopping.observe(0.4, || ()), Verdict::Improved);
        assert_eq!(stopping.evaluations_since_best(), 0);
        assert_eq!(stopping.observe(0.4, || ()), Verdict::Continue);

        assert_eq!(stopping.observe(0.45, || ()), Verdict::Stop);
    }

    #[test]
    fn snapshot_is_taken_only_on_improvement() {
        let mut stopping = EarlyStopping::new(5);
        let mut copies = 0;
        for error in [0.5, 0.6, 0.4, 0.4, 0.7] {
            stopping.observe(error, || copies += 1);
        }
        assert_eq!(copies, 2);
    }
}
