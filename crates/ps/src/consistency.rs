//! Consistency modes, staleness compensation and the step clock that orders
//! pushes in the bounded and sync modes. No I/O.

use std::fmt;
use std::str::FromStr;

/// When the parameter server applies a push and replies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Apply and reply to every push as it arrives.
    #[default]
    Async,
    /// Apply every push as it arrives, but delay the reply while the pusher
    /// is more than `bound` steps ahead of the slowest worker.
    Bounded { bound: u64 },
    /// Average one push from every worker that has a minibatch at a step
    /// into one update, and answer the step's pushes once it is applied.
    Sync,
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Async => f.write_str("async"),
            Self::Bounded { bound } => write!(f, "bounded:{bound}"),
            Self::Sync => f.write_str("sync"),
        }
    }
}

/// A consistency mode that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseConsistencyError {
    #[error("unknown consistency mode `{0}`: expected async, sync or bounded:S, such as bounded:2")]
    Unknown(String),
    #[error(
        "`{0}` lacks a valid staleness bound: bounded mode needs S, a whole number of steps, such as bounded:2"
    )]
    InvalidBound(String),
}

impl FromStr for Consistency {
    type Err = ParseConsistencyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "async" => Ok(Self::Async),
            "sync" => Ok(Self::Sync),
            _ if text.starts_with("bounded") => text
                .strip_prefix("bounded:")
                .and_then(|bound| bound.parse().ok())
                .map(|bound| Self::Bounded { bound })
                .ok_or_else(|| ParseConsistencyError::InvalidBound(text.to_owned())),
            _ => Err(ParseConsistencyError::Unknown(text.to_owned())),
        }
    }
}

/// Corrections applied to a gradient computed at an older θ.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Compensation {
    /// Scale each gradient by 1 / (staleness + 1).
    pub scale_by_staleness: bool,
    /// λ of delay-compensated updates: the gradient g becomes
    /// g + λ·g⊙g⊙(θ_now − θ_then), where θ_then is the θ the worker held.
    /// 0 disables it.
    pub dc_lambda: f32,
}

impl Compensation {
    /// Returns whether either correction is on.
    pub fn is_active(&self) -> bool {
        self.scale_by_staleness || self.dc_lambda != 0.0
    }
}

/// A push whose position does not fit the run's schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("worker {worker} is not part of this run, which has {workers} workers")]
    UnknownWorker { worker: u32, workers: usize },
    #[error(
        "minibatch {batch} is past the end of worker {worker}'s shard of {batches} minibatches"
    )]
    BatchOutOfShard {
        worker: u32,
        batch: u32,
        batches: u32,
    },
    #[error(
        "minibatch {batch} does not end a push: worker {worker} pushes every {push_every} minibatches and after its last"
    )]
    NotAPushPoint {
        worker: u32,
        batch: u32,
        push_every: u32,
    },
}

/// Numbers the pushes of a run by step, so that pushes of different workers
/// can be compared.
///
/// Worker `w` owns a shard of `worker_batches[w]` minibatches and pushes
/// after every `push_every` of them and after its last. Step `s` of an epoch
/// contains the pushes whose last minibatch lies in
/// `s·push_every .. (s + 1)·push_every`. A worker with a shorter shard
/// skips the last steps of each epoch; it counts as having done them once
/// its shard is done, so it never holds the others back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepClock {
    worker_batches: Vec<u32>,
    push_every: u32,
    steps_per_epoch: u64,
}

impl StepClock {
    /// Creates the clock of a run. Returns `None` when there are no workers,
    /// a worker has no minibatches or `push_every` is 0.
    pub fn new(worker_batches: Vec<u32>, push_every: u32) -> Option<Self> {
        if push_every == 0 || worker_batches.is_empty() || worker_batches.contains(&0) {
            return None;
        }
        let longest = u64::from(*worker_batches.iter().max()?);
        Some(Self {
            steps_per_epoch: longest.div_ceil(u64::from(push_every)),
            worker_batches,
            push_every,
        })
    }

    /// Returns the minibatches per epoch of each worker's shard.
    pub fn worker_batches(&self) -> &[u32] {
        &self.worker_batches
    }

    /// Returns the minibatches per push.
    pub fn push_every(&self) -> u32 {
        self.push_every
    }

    /// Number of workers in the run.
    pub fn workers(&self) -> usize {
        self.worker_batches.len()
    }

    /// Checks that `worker` exists and that `batch` ends one of its pushes.
    ///
    /// # Errors
    ///
    /// Names the part of the position that does not fit.
    pub fn check(&self, worker: u32, batch: u32) -> Result<(), ClockError> {
        let batches =
            *self
                .worker_batches
                .get(worker as usize)
                .ok_or(ClockError::UnknownWorker {
                    worker,
                    workers: self.workers(),
                })?;
        if batch >= batches {
            return Err(ClockError::BatchOutOfShard {
                worker,
                batch,
                batches,
            });
        }
        if !(batch + 1).is_multiple_of(self.push_every) && batch + 1 != batches {
            return Err(ClockError::NotAPushPoint {
                worker,
                batch,
                push_every: self.push_every,
            });
        }
        Ok(())
    }

    /// Returns the step of a push whose last minibatch is `batch` of `epoch`.
    pub fn step(&self, epoch: u32, batch: u32) -> u64 {
        u64::from(epoch) * self.steps_per_epoch + u64::from(batch / self.push_every)
    }

    /// Steps `worker` has done once its push ending at `batch` of `epoch` is
    /// in. The push that ends a shard completes the whole epoch.
    pub fn done_after(&self, worker: u32, epoch: u32, batch: u32) -> u64 {
        let last = self
            .worker_batches
            .get(worker as usize)
            .is_some_and(|&batches| batch + 1 >= batches);
        if last {
            (u64::from(epoch) + 1) * self.steps_per_epoch
        } else {
            self.step(epoch, batch) + 1
        }
    }

    /// Returns whether `worker` pushes at `step`.
    pub fn pushes_at(&self, worker: usize, step: u64) -> bool {
        let first_batch = (step % self.steps_per_epoch) * u64::from(self.push_every);
        self.worker_batches
            .get(worker)
            .is_some_and(|&batches| first_batch < u64::from(batches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for text in ["async", "sync", "bounded:0", "bounded:8"] {
            let mode: Consistency = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
        }
        for bad in ["", "bsp", "bounded", "bounded:", "bounded:-1", "bounded:x"] {
            let error = bad.parse::<Consistency>().unwrap_err();
            assert!(error.to_string().contains("bounded:2"), "{error}");
        }
    }

    #[test]
    fn shorter_shard_skips_last_step() {
        // Worker 0 has 5 minibatches, worker 1 has 4; pushes every 2.
        let clock = StepClock::new(vec![5, 4], 2).unwrap();

        assert_eq!(clock.step(0, 1), 0);
        assert_eq!(clock.step(0, 3), 1);
        assert_eq!(clock.step(0, 4), 2);
        assert_eq!(clock.step(1, 1), 3);
        assert!(clock.pushes_at(0, 2));
        assert!(!clock.pushes_at(1, 2));
        assert!(clock.pushes_at(1, 3));
        // Worker 1's push of minibatch 3 ends its shard: epoch 0 is done.
        assert_eq!(clock.done_after(1, 0, 3), 3);
        assert_eq!(clock.done_after(0, 0, 3), 2);
        assert_eq!(clock.done_after(0, 0, 4), 3);
    }

    #[test]
    fn check_rejects_positions_outside_the_schedule() {
        let clock = StepClock::new(vec![5, 4], 2).unwrap();

        assert_eq!(clock.check(0, 1), Ok(()));
        assert_eq!(clock.check(0, 4), Ok(()));
        assert_eq!(clock.check(1, 3), Ok(()));
        assert_eq!(
            clock.check(2, 1),
            Err(ClockError::UnknownWorker {
                worker: 2,
                workers: 2
            })
        );
        assert_eq!(
            clock.check(1, 4),
            Err(ClockError::BatchOutOfShard {
                worker: 1,
                batch: 4,
                batches: 4
            })
        );
        assert_eq!(
            clock.check(0, 2),
            Err(ClockError::NotAPushPoint {
                worker: 0,
                batch: 2,
                push_every: 2
            })
        );
    }

    #[test]
    fn new_rejects_empty_schedules() {
        assert!(StepClock::new(vec![], 1).is_none());
        assert!(StepClock::new(vec![3, 0], 1).is_none());
        assert!(StepClock::new(vec![3], 0).is_none());
    }
}
