//! The epoch schedule: which ranges of minibatches go to which worker, and
//! when an epoch and the run end. No I/O.
//!
//! Each worker owns one shard. Within an epoch it receives its shard's
//! minibatches in order, as ranges of at most `batches_per_work`. An epoch
//! ends when every shard's minibatches are complete; until then a worker
//! that finished its own shard waits.

/// A contiguous range of minibatches of one shard in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkRange {
    pub epoch: u32,
    pub shard: u32,
    pub first_batch: u32,
    pub batch_count: u32,
}

/// The reply to a worker that requests work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Work(WorkRange),
    /// Nothing to do until the other shards finish the epoch.
    Wait,
    /// Training is over, for the given reason.
    Stop(String),
}

/// A completion report that does not match the schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("shard {shard} does not exist; the run has {shards} shards")]
    UnknownShard { shard: u32, shards: usize },
    #[error("range is for epoch {reported}, but the current epoch is {current}")]
    WrongEpoch { reported: u32, current: u32 },
    #[error("minibatches {first}..{end} of shard {shard} were not handed out in this epoch")]
    NotAssigned { shard: u32, first: u32, end: u64 },
}

/// The effect of a completed range on the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The epoch goes on.
    InEpoch,
    /// The epoch ended and the next one started.
    EpochDone { finished_epoch: u32 },
    /// The last epoch ended.
    AllEpochsDone,
    /// The range was reported complete before: a retried report whose reply
    /// was lost. Nothing changed.
    AlreadyComplete,
}

#[derive(Debug, Clone)]
struct ShardProgress {
    batches: u32,
    /// Next minibatch to hand out.
    next: u32,
    /// Minibatches reported complete.
    done: u32,
}

/// The saved form of a [`WorkSchedule`]: per shard, the next minibatch to
/// hand out and the minibatches complete in the current epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleState {
    pub epoch: u32,
    pub next: Vec<u32>,
    pub done: Vec<u32>,
    pub stop_reason: Option<String>,
}

/// The schedule of one run.
#[derive(Debug, Clone)]
pub struct WorkSchedule {
    shards: Vec<ShardProgress>,
    epoch: u32,
    max_epochs: u32,
    batches_per_work: u32,
    stop_reason: Option<String>,
}

impl WorkSchedule {
    /// Creates a schedule for shards holding `batches_per_shard`
    /// minibatches each, starting at epoch 0.
    pub fn new(batches_per_shard: &[u32], max_epochs: u32, batches_per_work: u32) -> Self {
        let shards = batches_per_shard
            .iter()
            .map(|&batches| ShardProgress {
                batches,
                next: 0,
                done: 0,
            })
            .collect();
        Self {
            shards,
            epoch: 0,
            max_epochs,
            batches_per_work: batches_per_work.max(1),
            stop_reason: None,
        }
    }

    /// Current epoch, counted from 0.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Minibatches completed in the current epoch, over all shards.
    pub fn batches_done_in_epoch(&self) -> u64 {
        self.shards.iter().map(|s| u64::from(s.done)).sum()
    }

    /// Returns why the run stopped, once it has.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// Ends the run: every later request gets [`Assignment::Stop`].
    pub fn stop(&mut self, reason: &str) {
        if self.stop_reason.is_none() {
            self.stop_reason = Some(reason.to_owned());
        }
    }

    /// Returns the first minibatch of `shard` not yet reported complete in
    /// this epoch.
    pub fn first_undone(&self, shard: u32) -> u32 {
        self.shards.get(shard as usize).map_or(0, |p| p.done)
    }

    /// Returns the minibatches of `shard` that were handed out but not
    /// completed to the pool, so that they are handed out again, and
    /// returns how many there were.
    pub fn release(&mut self, shard: u32) -> u32 {
        let Some(progress) = self.shards.get_mut(shard as usize) else {
            return 0;
        };
        let released = progress.next - progress.done;
        progress.next = progress.done;
        released
    }

    /// Returns the schedule's state, for saving to disk.
    pub fn state(&self) -> ScheduleState {
        ScheduleState {
            epoch: self.epoch,
            next: self.shards.iter().map(|s| s.next).collect(),
            done: self.shards.iter().map(|s| s.done).collect(),
            stop_reason: self.stop_reason.clone(),
        }
    }

    /// Puts the schedule at a saved state.
    ///
    /// # Errors
    ///
    /// Rejects a state for another number of shards or with more
    /// minibatches than a shard holds, which means it belongs to another
    /// run.
    pub fn restore(&mut self, state: &ScheduleState) -> Result<(), String> {
        let shards = self.shards.len();
        if state.next.len() != shards || state.done.len() != shards {
            return Err(format!(
                "the saved schedule has {} shards, but this run has {shards}",
                state.next.len()
            ));
        }
        for (index, (shard, (&next, &done))) in self
            .shards
            .iter()
            .zip(state.next.iter().zip(&state.done))
            .enumerate()
        {
            if done > next || next > shard.batches {
                return Err(format!(
                    "the saved schedule has minibatches {done}..{next} of shard {index}, which holds {}",
                    shard.batches
                ));
            }
        }
        if state.epoch > self.max_epochs {
            return Err(format!(
                "the saved schedule is at epoch {}, past the limit of {}",
                state.epoch, self.max_epochs
            ));
        }
        for (shard, (&next, &done)) in self
            .shards
            .iter_mut()
            .zip(state.next.iter().zip(&state.done))
        {
            shard.next = next;
            shard.done = done;
        }
        self.epoch = state.epoch;
        self.stop_reason.clone_from(&state.stop_reason);
        Ok(())
    }

    /// Hands out the next range of `shard`'s minibatches.
    pub fn next_work(&mut self, shard: u32) -> Assignment {
        if let Some(reason) = &self.stop_reason {
            return Assignment::Stop(reason.clone());
        }
        let Some(progress) = self.shards.get_mut(shard as usize) else {
            return Assignment::Wait;
        };
        if progress.next >= progress.batches {
            return Assignment::Wait;
        }
        let batch_count = self.batches_per_work.min(progress.batches - progress.next);
        let range = WorkRange {
            epoch: self.epoch,
            shard,
            first_batch: progress.next,
            batch_count,
        };
        progress.next += batch_count;
        Assignment::Work(range)
    }

    /// Records a range as complete and advances the epoch when every shard
    /// is done.
    ///
    /// # Errors
    ///
    /// Rejects a range for another epoch, an unknown shard, or minibatches
    /// that were not handed out.
    pub fn complete(&mut self, range: WorkRange) -> Result<Progress, ScheduleError> {
        let shards = self.shards.len();
        let progress =
            self.shards
                .get_mut(range.shard as usize)
                .ok_or(ScheduleError::UnknownShard {
                    shard: range.shard,
                    shards,
                })?;
        let end = u64::from(range.first_batch) + u64::from(range.batch_count);
        let within_shard = range.batch_count > 0 && end <= u64::from(progress.batches);
        // Every range of the previous epoch is complete, and so is a range
        // of this one that ends before the first minibatch not yet done.
        let completed_before = (range.epoch + 1 == self.epoch)
            || (range.epoch == self.epoch && end <= u64::from(progress.done));
        if within_shard && completed_before {
            return Ok(Progress::AlreadyComplete);
        }
        if range.epoch != self.epoch {
            return Err(ScheduleError::WrongEpoch {
                reported: range.epoch,
                current: self.epoch,
            });
        }
        // A shard's one worker completes its ranges in the order they were
        // handed out, so the next report must start where the last ended.
        if range.batch_count == 0
            || end > u64::from(progress.next)
            || range.first_batch != progress.done
        {
            return Err(ScheduleError::NotAssigned {
                shard: range.shard,
                first: range.first_batch,
                end,
            });
        }
        progress.done += range.batch_count;

        if self.shards.iter().any(|s| s.done < s.batches) {
            return Ok(Progress::InEpoch);
        }
        let finished_epoch = self.epoch;
        self.epoch += 1;
        for shard in &mut self.shards {
            shard.next = 0;
            shard.done = 0;
        }
        if self.epoch >= self.max_epochs {
            self.stop("max_epochs");
            return Ok(Progress::AllEpochsDone);
        }
        Ok(Progress::EpochDone { finished_epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(assignment: Assignment) -> WorkRange {
        match assignment {
            Assignment::Work(range) => range,
            other => panic!("expected work, got {other:?}"),
        }
    }

    #[test]
    fn ranges_cover_each_shard_in_order() {
        let mut schedule = WorkSchedule::new(&[5, 4], 1, 2);

        let mut covered = [Vec::new(), Vec::new()];
        for shard in 0..2 {
            while let Assignment::Work(range) = schedule.next_work(shard) {
                covered[shard as usize]
                    .extend(range.first_batch..range.first_batch + range.batch_count);
            }
        }

        assert_eq!(covered[0], vec![0, 1, 2, 3, 4]);
        assert_eq!(covered[1], vec![0, 1, 2, 3]);
    }

    #[test]
    fn epoch_advances_when_every_shard_is_done() {
        let mut schedule = WorkSchedule::new(&[2, 2], 3, 2);
        let first = work(schedule.next_work(0));
        let second = work(schedule.next_work(1));

        assert_eq!(schedule.complete(first), Ok(Progress::InEpoch));
        assert_eq!(schedule.next_work(0), Assignment::Wait);
        assert_eq!(
            schedule.complete(second),
            Ok(Progress::EpochDone { finished_epoch: 0 })
        );

        assert_eq!(schedule.epoch(), 1);
        assert_eq!(work(schedule.next_work(0)).epoch, 1);
    }

    #[test]
    fn last_epoch_stops_the_run() {
        let mut schedule = WorkSchedule::new(&[1], 1, 4);
        let range = work(schedule.next_work(0));

        assert_eq!(schedule.complete(range), Ok(Progress::AllEpochsDone));

        assert_eq!(
            schedule.next_work(0),
            Assignment::Stop("max_epochs".to_owned())
        );
    }

    #[test]
    fn bad_completions_are_rejected() {
        let mut schedule = WorkSchedule::new(&[4], 2, 2);
        let range = work(schedule.next_work(0));

        let unknown = WorkRange { shard: 3, ..range };
        assert!(matches!(
            schedule.complete(unknown),
            Err(ScheduleError::UnknownShard { .. })
        ));
        let wrong_epoch = WorkRange { epoch: 1, ..range };
        assert!(matches!(
            schedule.complete(wrong_epoch),
            Err(ScheduleError::WrongEpoch { .. })
        ));
        let not_out = WorkRange {
            first_batch: 2,
            ..range
        };
        assert!(matches!(
            schedule.complete(not_out),
            Err(ScheduleError::NotAssigned { .. })
        ));

        assert_eq!(schedule.complete(range), Ok(Progress::InEpoch));
        assert_eq!(schedule.batches_done_in_epoch(), 2);
        let beyond = WorkRange {
            first_batch: 2,
            batch_count: 3,
            ..range
        };
        assert!(matches!(
            schedule.complete(beyond),
            Err(ScheduleError::NotAssigned { .. })
        ));
    }

    #[test]
    fn repeated_completion_is_acknowledged_once() {
        let mut schedule = WorkSchedule::new(&[4, 2], 3, 2);
        let range = work(schedule.next_work(0));
        assert_eq!(schedule.complete(range), Ok(Progress::InEpoch));

        assert_eq!(schedule.complete(range), Ok(Progress::AlreadyComplete));
        assert_eq!(schedule.batches_done_in_epoch(), 2);

        let rest = work(schedule.next_work(0));
        let other = work(schedule.next_work(1));
        schedule.complete(rest).unwrap();
        assert_eq!(
            schedule.complete(other),
            Ok(Progress::EpochDone { finished_epoch: 0 })
        );
        assert_eq!(schedule.complete(other), Ok(Progress::AlreadyComplete));
        assert_eq!(schedule.batches_done_in_epoch(), 0);
    }

    #[test]
    fn state_round_trips() {
        let mut schedule = WorkSchedule::new(&[5, 3], 4, 2);
        let first = work(schedule.next_work(0));
        schedule.complete(first).unwrap();
        work(schedule.next_work(0));
        let state = schedule.state();

        let mut restored = WorkSchedule::new(&[5, 3], 4, 2);
        restored.restore(&state).unwrap();

        assert_eq!(restored.state(), state);
        assert_eq!(restored.first_undone(0), 2);
        let mut other_run = WorkSchedule::new(&[5], 4, 2);
        assert!(other_run.restore(&state).is_err());
        let mut shorter = WorkSchedule::new(&[1, 3], 4, 2);
        assert!(shorter.restore(&state).is_err());
    }

    #[test]
    fn stop_is_sticky_and_keeps_first_reason() {
        let mut schedule = WorkSchedule::new(&[4], 2, 2);
        schedule.stop("early_stopping");
        schedule.stop("max_epochs");

        assert_eq!(
            schedule.next_work(0),
            Assignment::Stop("early_stopping".to_owned())
        );
    }

    #[test]
    fn released_ranges_are_handed_out_again() {
        let mut schedule = WorkSchedule::new(&[10], 2, 4);
        let first = work(schedule.next_work(0));
        schedule.complete(first).unwrap();
        let lost = work(schedule.next_work(0));

        assert_eq!(schedule.release(0), 4);

        let again = work(schedule.next_work(0));
        assert_eq!(again, lost);
        assert_eq!(schedule.release(1), 0);
    }
}
