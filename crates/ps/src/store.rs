//! θ, its optimizer state, the consistency rules and the push accounting,
//! with no I/O.

use std::collections::{BTreeMap, HashMap};

use crate::consistency::{ClockError, Compensation, Consistency, StepClock};
use crate::optimizer::SgdConfig;

/// A rejected `Init` or push. θ is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("initial parameters are empty")]
    EmptyParams,
    #[error("initial parameters hold a non-finite value at index {index}")]
    NonFiniteParams { index: usize },
    #[error("invalid optimizer settings: {0}")]
    InvalidOptimizer(String),
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
    #[error("gradient holds {actual} values but θ holds {expected}")]
    WrongLength { expected: usize, actual: usize },
    #[error("invalid sparse gradient: {0}")]
    InvalidIndices(String),
    #[error("gradient holds a non-finite value at index {index}")]
    NonFiniteGradient { index: usize },
    #[error("push was computed at version {version}, but the server is only at {current}")]
    FutureVersion { version: u64, current: u64 },
    #[error("push reports a non-finite loss")]
    NonFiniteLoss,
    #[error("push out of place: {0}")]
    Clock(#[from] ClockError),
    #[error("push belongs to step {step}, but the server is collecting step {current}")]
    WrongStep { step: u64, current: u64 },
    #[error("worker {worker} already pushed for step {step}")]
    DuplicatePush { worker: u32, step: u64 },
    #[error(
        "training diverged at update {version}: θ holds non-finite values; lower the learning rate (--lr)"
    )]
    Diverged { version: u64 },
}

/// Counters summed over every applied push.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushTotals {
    /// Training examples behind the applied gradients.
    pub examples: u64,
    /// Sum of the mean losses of the applied pushes.
    pub loss_sum: f64,
    /// Applied pushes.
    pub pushes: u64,
    /// Updates of θ: one per push, except in sync mode, where one update
    /// averages the pushes of a step.
    pub updates: u64,
    /// Sum of the staleness of every push.
    pub staleness_sum: u64,
    /// Largest staleness seen.
    pub max_staleness: u64,
    /// Number of pushes per staleness value.
    pub staleness_counts: BTreeMap<u64, u64>,
    /// Applied pushes per worker id.
    pub pushes_by_worker: BTreeMap<u32, u64>,
    /// Pushes acknowledged again without being applied, because their
    /// sequence number had been applied already.
    pub duplicates: u64,
}

impl PushTotals {
    fn count(&mut self, worker_id: u32, examples: u32, loss: f32, staleness: u64) {
        self.examples += u64::from(examples);
        self.loss_sum += f64::from(loss);
        self.pushes += 1;
        self.staleness_sum += staleness;
        self.max_staleness = self.max_staleness.max(staleness);
        *self.staleness_counts.entry(staleness).or_default() += 1;
        *self.pushes_by_worker.entry(worker_id).or_default() += 1;
    }
}

/// One gradient pushed by a worker.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub worker_id: u32,
    /// Per-worker sequence number, counting from 1; 0 for a push that
    /// does not take part in duplicate detection.
    pub sequence: u64,
    /// Version of θ the gradient was computed at.
    pub version: u64,
    /// Mean gradient over the pushed minibatches: every value of θ, or with
    /// `indices` the values at those positions only.
    pub gradient: &'a [f32],
    /// Positions in θ of the values of a sparse gradient, strictly
    /// increasing; every other position of the gradient is zero. `None` for
    /// a dense gradient.
    pub indices: Option<&'a [u32]>,
    pub examples: u32,
    /// Mean loss over the pushed examples.
    pub loss: f32,
    /// Epoch of the last minibatch in the push.
    pub epoch: u32,
    /// Shard index of the last minibatch in the push.
    pub batch: u32,
}

/// The outcome of an accepted push, and when its reply may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Applied to θ. In bounded mode the reply waits until
    /// [`ParamStore::min_done`] reaches `done − bound`.
    Applied {
        /// Version after the push.
        version: u64,
        /// Versions applied between the θ the gradient came from and this
        /// push.
        staleness: u64,
        /// Steps the pusher has done, or 0 without a step clock.
        done: u64,
    },
    /// Held for the other pushes of `step` (sync mode). The reply waits
    /// until the version reaches `ready_at`, the pusher's next step, so
    /// that it carries every update before that step, including steps that
    /// only longer shards take part in.
    Held {
        step: u64,
        ready_at: u64,
        staleness: u64,
    },
    /// Training has stopped; the push was dropped.
    Stopped,
    /// The worker sent this sequence number before and it was applied (or
    /// held for its step); it is acknowledged and not applied again. The
    /// answer waits until the version reaches `ready_at`, 0 for at once.
    Duplicate { ready_at: u64 },
}

/// A push held for the rest of its step.
#[derive(Debug, Clone, Copy)]
struct Held {
    examples: u32,
    loss: f32,
    staleness: u64,
    /// The worker's sequence record before this push, which a checkpoint
    /// keeps, since a held push is not applied yet.
    previous_sequence: Option<(u64, u64)>,
}

/// The pushes collected for the current step in sync mode, one slot per
/// worker, with a gradient buffer per worker that is reused every step.
#[derive(Debug)]
struct Round {
    held: Vec<Option<Held>>,
    gradients: Vec<Vec<f32>>,
}

/// θ, the momentum buffer, the version counter and the push totals of one
/// run, with the rules of its consistency mode.
#[derive(Debug)]
pub struct ParamStore {
    run_id: String,
    params: Vec<f32>,
    velocity: Vec<f32>,
    sgd: SgdConfig,
    version: u64,
    totals: PushTotals,
    /// Version at which θ first held a non-finite value.
    diverged_at: Option<u64>,
    consistency: Consistency,
    compensation: Compensation,
    clock: Option<StepClock>,
    /// Steps each worker has done (bounded mode).
    done: Vec<u64>,
    round: Option<Round>,
    /// The θ last sent to each worker, kept for delay compensation.
    sent: HashMap<u32, Vec<f32>>,
    /// Per worker, the highest sequence number accepted and the version its
    /// answer waited for.
    sequences: HashMap<u32, (u64, u64)>,
    /// The gradient after compensation, or the step's average.
    scratch: Vec<f32>,
    stopped: bool,
}

impl ParamStore {
    /// Creates an asynchronous store at version 0 holding `params`.
    ///
    /// # Errors
    ///
    /// Rejects empty or non-finite parameters and invalid optimizer settings.
    pub fn new(run_id: String, params: Vec<f32>, sgd: SgdConfig) -> Result<Self, StoreError> {
        if params.is_empty() {
            return Err(StoreError::EmptyParams);
        }
        if let Some(index) = params.iter().position(|v| !v.is_finite()) {
            return Err(StoreError::NonFiniteParams { index });
        }
        sgd.validate().map_err(StoreError::InvalidOptimizer)?;
        let velocity = vec![0.0; params.len()];
        Ok(Self {
            run_id,
            scratch: vec![0.0; params.len()],
            params,
            velocity,
            sgd,
            version: 0,
            totals: PushTotals::default(),
            diverged_at: None,
            consistency: Consistency::Async,
            compensation: Compensation::default(),
            clock: None,
            done: Vec::new(),
            round: None,
            sent: HashMap::new(),
            sequences: HashMap::new(),
            stopped: false,
        })
    }

    /// Sets the consistency mode. Bounded and sync modes need the step
    /// clock; with a clock, pushes from unknown workers or out of the
    /// schedule are rejected in every mode.
    ///
    /// # Errors
    ///
    /// Rejects bounded or sync mode without a clock.
    pub fn with_consistency(
        mut self,
        consistency: Consistency,
        clock: Option<StepClock>,
    ) -> Result<Self, StoreError> {
        if consistency != Consistency::Async && clock.is_none() {
            return Err(StoreError::InvalidSchedule(format!(
                "{consistency} mode needs the number of minibatches of every worker"
            )));
        }
        let workers = clock.as_ref().map_or(0, StepClock::workers);
        self.done = vec![0; workers];
        self.round = (consistency == Consistency::Sync).then(|| Round {
            held: vec![None; workers],
            gradients: vec![Vec::new(); workers],
        });
        self.consistency = consistency;
        self.clock = clock;
        Ok(self)
    }

    /// Sets the corrections for stale gradients.
    ///
    /// # Errors
    ///
    /// Rejects a negative or non-finite λ.
    pub fn with_compensation(mut self, compensation: Compensation) -> Result<Self, StoreError> {
        if !(compensation.dc_lambda.is_finite() && compensation.dc_lambda >= 0.0) {
            return Err(StoreError::InvalidOptimizer(format!(
                "delay compensation λ must be zero or positive, got {}",
                compensation.dc_lambda
            )));
        }
        self.compensation = compensation;
        Ok(self)
    }

    /// Identifier of the run the store was initialised for.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Current θ.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Number of updates applied so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Totals over every applied push.
    pub fn totals(&self) -> &PushTotals {
        &self.totals
    }

    /// Returns the consistency mode.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// Returns the steps done by the slowest worker (bounded mode), or `u64::MAX`
    /// when no worker is behind.
    pub fn min_done(&self) -> u64 {
        self.done.iter().copied().min().unwrap_or(u64::MAX)
    }

    /// Returns whether training has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Stops training: later pushes are dropped, and so are the pushes held
    /// for an unfinished sync step.
    pub fn stop(&mut self) {
        self.stopped = true;
        if let Some(round) = &mut self.round {
            round.held.fill(None);
        }
    }

    /// Checks that `worker_id` belongs to the run, when the run's workers
    /// are known.
    ///
    /// # Errors
    ///
    /// Rejects a worker id outside the step clock.
    pub fn check_worker(&self, worker_id: u32) -> Result<(), StoreError> {
        match &self.clock {
            Some(clock) if worker_id as usize >= clock.workers() => {
                Err(StoreError::Clock(ClockError::UnknownWorker {
                    worker: worker_id,
                    workers: clock.workers(),
                }))
            }
            _ => Ok(()),
        }
    }

    /// Returns the highest sequence number of `worker_id` accepted so far,
    /// or 0 before its first numbered push.
    pub fn applied_sequence(&self, worker_id: u32) -> u64 {
        self.sequences
            .get(&worker_id)
            .map_or(0, |&(sequence, _)| sequence)
    }

    /// Records that `worker_id` now has the current θ, when delay
    /// compensation uses it.
    pub fn record_sent(&mut self, worker_id: u32) {
        if self.compensation.dc_lambda == 0.0 {
            return;
        }
        let sent = self.sent.entry(worker_id).or_default();
        sent.clear();
        sent.extend_from_slice(&self.params);
    }

    /// Validates a push and applies it, or keeps it for its sync step.
    ///
    /// # Errors
    ///
    /// Rejects a gradient of the wrong length or with a non-finite value, a
    /// non-finite loss, a version the server has not reached yet, and a
    /// position outside the schedule. θ is untouched on error.
    pub fn apply_push(&mut self, push: Push<'_>) -> Result<Accepted, StoreError> {
        if let Some(version) = self.diverged_at {
            return Err(StoreError::Diverged { version });
        }
        if self.stopped {
            return Ok(Accepted::Stopped);
        }
        if let Some(&(last, ready_at)) = self.sequences.get(&push.worker_id)
            && push.sequence != 0
            && push.sequence <= last
        {
            self.totals.duplicates += 1;
            return Ok(Accepted::Duplicate { ready_at });
        }
        match push.indices {
            None if push.gradient.len() != self.params.len() => {
                return Err(StoreError::WrongLength {
                    expected: self.params.len(),
                    actual: push.gradient.len(),
                });
            }
            None => {}
            Some(indices) => check_indices(indices, push.gradient.len(), self.params.len())?,
        }
        if push.version > self.version {
            return Err(StoreError::FutureVersion {
                version: push.version,
                current: self.version,
            });
        }
        if !push.loss.is_finite() {
            return Err(StoreError::NonFiniteLoss);
        }
        if !all_finite(push.gradient) {
            let entry = push.gradient.iter().position(|v| !v.is_finite());
            let entry = entry.unwrap_or_default();
            let index = push
                .indices
                .map_or(entry, |indices| indices[entry] as usize);
            return Err(StoreError::NonFiniteGradient { index });
        }
        match &self.clock {
            // In async mode a worker may train on the shard of a worker
            // that lost its lease, so only its id is checked.
            Some(_) if self.consistency == Consistency::Async => {
                self.check_worker(push.worker_id)?;
            }
            Some(clock) => clock.check(push.worker_id, push.batch)?,
            None => {}
        }
        let staleness = self.version - push.version;

        if self.consistency == Consistency::Sync {
            return self.hold(push, staleness);
        }

        let compensated = self.compensate(push, staleness);
        let gradient = if compensated {
            &self.scratch[..push.gradient.len()]
        } else {
            push.gradient
        };
        match push.indices {
            None => self
                .sgd
                .apply(self.version, &mut self.params, &mut self.velocity, gradient),
            Some(indices) => {
                self.sgd.apply_sparse(
                    self.version,
                    &mut self.params,
                    &mut self.velocity,
                    indices,
                    gradient,
                );
            }
        }
        self.version += 1;
        self.totals
            .count(push.worker_id, push.examples, push.loss, staleness);
        self.totals.updates = self.version;
        self.record_sequence(push.worker_id, push.sequence, 0);
        let done = match &self.clock {
            Some(clock) if self.consistency != Consistency::Async => {
                let done = clock.done_after(push.worker_id, push.epoch, push.batch);
                let slot = &mut self.done[push.worker_id as usize];
                *slot = (*slot).max(done);
                done
            }
            _ => 0,
        };
        self.check_finite()?;
        Ok(Accepted::Applied {
            version: self.version,
            staleness,
            done,
        })
    }

    /// Writes the corrected gradient of `push` into the start of
    /// `self.scratch`, one value per value of `push.gradient`, and returns
    /// true, or returns false when no correction applies.
    fn compensate(&mut self, push: Push<'_>, staleness: u64) -> bool {
        let Compensation {
            scale_by_staleness,
            dc_lambda,
        } = self.compensation;
        let sent = self
            .sent
            .get(&push.worker_id)
            .filter(|_| dc_lambda != 0.0 && staleness > 0);
        let scale = scale_by_staleness && staleness > 0;
        if sent.is_none() && !scale {
            return false;
        }
        let scratch = &mut self.scratch[..push.gradient.len()];
        scratch.copy_from_slice(push.gradient);
        if let Some(then) = sent {
            match push.indices {
                None => {
                    for ((g, &now), &then) in scratch.iter_mut().zip(&self.params).zip(then) {
                        *g += dc_lambda * *g * *g * (now - then);
                    }
                }
                // An untouched position has g = 0, so its correction is 0.
                Some(indices) => {
                    for (g, &index) in scratch.iter_mut().zip(indices) {
                        let index = index as usize;
                        *g += dc_lambda * *g * *g * (self.params[index] - then[index]);
                    }
                }
            }
        }
        if scale {
            let factor = 1.0 / (staleness as f32 + 1.0);
            scratch.iter_mut().for_each(|g| *g *= factor);
        }
        true
    }

    /// Holds a sync push and applies the step once every worker that has a
    /// minibatch at it has pushed.
    fn hold(&mut self, push: Push<'_>, staleness: u64) -> Result<Accepted, StoreError> {
        let clock = self.clock.as_ref().expect("sync mode always has a clock");
        let round = self.round.as_mut().expect("sync mode always has a round");
        let step = clock.step(push.epoch, push.batch);
        if step != self.version {
            return Err(StoreError::WrongStep {
                step,
                current: self.version,
            });
        }
        let worker = push.worker_id as usize;
        if round.held[worker].is_some() {
            return Err(StoreError::DuplicatePush {
                worker: push.worker_id,
                step,
            });
        }
        // A sync step averages dense gradients, so a sparse push is
        // scattered into a dense buffer here.
        let held = &mut round.gradients[worker];
        held.clear();
        match push.indices {
            None => held.extend_from_slice(push.gradient),
            Some(indices) => {
                held.resize(self.params.len(), 0.0);
                for (&index, &value) in indices.iter().zip(push.gradient) {
                    held[index as usize] = value;
                }
            }
        }
        round.held[worker] = Some(Held {
            examples: push.examples,
            loss: push.loss,
            staleness,
            previous_sequence: self.sequences.get(&push.worker_id).copied(),
        });

        let ready_at = clock.done_after(push.worker_id, push.epoch, push.batch);
        let complete =
            (0..clock.workers()).all(|w| round.held[w].is_some() || !clock.pushes_at(w, step));
        if complete {
            self.apply_round()?;
        }
        Ok(Accepted::Held {
            step,
            ready_at,
            staleness,
        })
    }

    /// Applies the average of the held gradients, weighted by their
    /// examples and summed in worker order, so that the result does not
    /// depend on the order the pushes arrived in.
    fn apply_round(&mut self) -> Result<(), StoreError> {
        let round = self.round.as_mut().expect("sync mode always has a round");
        let examples: u64 = round
            .held
            .iter()
            .flatten()
            .map(|held| u64::from(held.examples))
            .sum();
        let weight_total = examples.max(1) as f32;
        self.scratch.fill(0.0);
        for (held, gradient) in round.held.iter().zip(&round.gradients) {
            let Some(held) = held else { continue };
            let weight = held.examples as f32 / weight_total;
            for (sum, &g) in self.scratch.iter_mut().zip(gradient) {
                *sum += weight * g;
            }
        }
        for (worker, held) in round.held.iter_mut().enumerate() {
            if let Some(held) = held.take() {
                self.totals
                    .count(worker as u32, held.examples, held.loss, held.staleness);
            }
        }
        self.sgd.apply(
            self.version,
            &mut self.params,
            &mut self.velocity,
            &self.scratch,
        );
        self.version += 1;
        self.totals.updates = self.version;
        self.check_finite()
    }

    /// Remembers that `sequence` of `worker_id` was accepted.
    fn record_sequence(&mut self, worker_id: u32, sequence: u64, ready_at: u64) {
        if sequence != 0 {
            self.sequences.insert(worker_id, (sequence, ready_at));
        }
    }

    /// Finite gradients can still overflow θ when the learning rate is too
    /// large; every later push is rejected from then on.
    fn check_finite(&mut self) -> Result<(), StoreError> {
        if !all_finite(&self.params) {
            self.diverged_at = Some(self.version);
            return Err(StoreError::Diverged {
                version: self.version,
            });
        }
        Ok(())
    }
}

/// The name under which a checkpoint's metadata is stored.
const CHECKPOINT_KEY: &str = "downpour.ps";
/// Version of the checkpoint layout; a checkpoint of another is refused.
const CHECKPOINT_FORMAT: u32 = 1;

/// Everything in a checkpoint apart from θ and the momentum buffer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CheckpointMeta {
    format: u32,
    run_id: String,
    version: u64,
    learning_rate: f32,
    momentum: f32,
    weight_decay: f32,
    /// Absent from checkpoints written before the warm-up existed.
    #[serde(default)]
    warmup_updates: u64,
    consistency: String,
    worker_batches: Vec<u32>,
    push_every: u32,
    scale_by_staleness: bool,
    dc_lambda: f32,
    done: Vec<u64>,
    /// Per worker: the highest applied sequence number and the version its
    /// answer waited for.
    sequences: Vec<(u32, u64, u64)>,
    examples: u64,
    loss_sum: f64,
    pushes: u64,
    staleness_sum: u64,
    max_staleness: u64,
    staleness_counts: Vec<(u64, u64)>,
    pushes_by_worker: Vec<(u32, u64)>,
    duplicates: u64,
    diverged_at: Option<u64>,
    /// CRC-32 of θ's bytes followed by the momentum buffer's.
    crc32: u32,
}

/// A checkpoint that cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a parameter-server checkpoint: {0}")]
    Format(String),
    #[error("the checkpoint is inconsistent: {0}")]
    Inconsistent(String),
}

impl ParamStore {
    /// Returns, per worker, the highest applied sequence number and the
    /// version its step completes at, as a checkpoint records them: a sync
    /// push held for an unfinished step does not count.
    pub fn checkpoint_sequences(&self) -> Vec<(u32, u64, u64)> {
        let held_previous: HashMap<u32, Option<(u64, u64)>> = self
            .round
            .iter()
            .flat_map(|round| round.held.iter().enumerate())
            .filter_map(|(worker, held)| held.map(|h| (worker as u32, h.previous_sequence)))
            .collect();
        let mut sequences: Vec<(u32, u64, u64)> = self
            .sequences
            .iter()
            .filter_map(|(&worker, &record)| {
                let record = match held_previous.get(&worker) {
                    Some(previous) => (*previous)?,
                    None => record,
                };
                Some((worker, record.0, record.1))
            })
            .collect();
        sequences.sort_unstable();
        sequences
    }

    /// Encodes θ, the momentum buffer, the version, the settings, the
    /// applied sequence numbers and the totals as a safetensors file. A
    /// sync push held for an unfinished step is left out: it was never
    /// acknowledged, and its worker sends it again.
    pub fn encode_checkpoint(&self) -> Vec<u8> {
        let sequences = self.checkpoint_sequences();
        let meta = CheckpointMeta {
            format: CHECKPOINT_FORMAT,
            run_id: self.run_id.clone(),
            version: self.version,
            learning_rate: self.sgd.learning_rate,
            momentum: self.sgd.momentum,
            weight_decay: self.sgd.weight_decay,
            warmup_updates: self.sgd.warmup_updates,
            consistency: self.consistency.to_string(),
            worker_batches: self
                .clock
                .as_ref()
                .map_or_else(Vec::new, |c| c.worker_batches().to_vec()),
            push_every: self.clock.as_ref().map_or(1, StepClock::push_every),
            scale_by_staleness: self.compensation.scale_by_staleness,
            dc_lambda: self.compensation.dc_lambda,
            done: self.done.clone(),
            sequences,
            examples: self.totals.examples,
            loss_sum: self.totals.loss_sum,
            pushes: self.totals.pushes,
            staleness_sum: self.totals.staleness_sum,
            max_staleness: self.totals.max_staleness,
            staleness_counts: self.totals.staleness_counts.clone().into_iter().collect(),
            pushes_by_worker: self.totals.pushes_by_worker.clone().into_iter().collect(),
            duplicates: self.totals.duplicates,
            diverged_at: self.diverged_at,
            crc32: tensor_crc(&self.params, &self.velocity),
        };
        let metadata = HashMap::from([(
            CHECKPOINT_KEY.to_owned(),
            serde_json::to_string(&meta).expect("checkpoint metadata serializes"),
        )]);
        let shape = vec![self.params.len()];
        let tensors = [
            (
                "theta",
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytemuck::cast_slice(&self.params),
                )
                .expect("θ matches its shape"),
            ),
            (
                "velocity",
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape,
                    bytemuck::cast_slice(&self.velocity),
                )
                .expect("the momentum buffer matches its shape"),
            ),
        ];
        safetensors::serialize(tensors, Some(metadata)).expect("in-memory serialization succeeds")
    }

    /// Restores a store from [`ParamStore::encode_checkpoint`]'s bytes.
    ///
    /// # Errors
    ///
    /// Rejects bytes that are not such a checkpoint, a layout of another
    /// format version, and contents that do not fit together.
    pub fn decode_checkpoint(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let format = |e: &dyn std::fmt::Display| CheckpointError::Format(e.to_string());
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format(&e))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(CHECKPOINT_KEY))
            .ok_or_else(|| format(&"no parameter-server metadata"))?;
        let meta: CheckpointMeta = serde_json::from_str(meta).map_err(|e| format(&e))?;
        if meta.format != CHECKPOINT_FORMAT {
            return Err(CheckpointError::Format(format!(
                "layout version {}, but this build reads version {CHECKPOINT_FORMAT}",
                meta.format
            )));
        }

        let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format(&e))?;
        let read = |name: &str| -> Result<Vec<f32>, CheckpointError> {
            let view = tensors.tensor(name).map_err(|e| format(&e))?;
            if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 1 {
                return Err(CheckpointError::Format(format!(
                    "tensor {name} is not a vector of f32"
                )));
            }
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };

        let params = read("theta")?;
        let velocity = read("velocity")?;
        if tensor_crc(&params, &velocity) != meta.crc32 {
            return Err(CheckpointError::Inconsistent(
                "θ or the momentum buffer does not match the checksum written with them".to_owned(),
            ));
        }
        if velocity.len() != params.len() {
            return Err(CheckpointError::Inconsistent(format!(
                "θ contains {} values but the momentum buffer {}",
                params.len(),
                velocity.len()
            )));
        }

        let inconsistent = |e: &dyn std::fmt::Display| CheckpointError::Inconsistent(e.to_string());
        let sgd = SgdConfig {
            learning_rate: meta.learning_rate,
            momentum: meta.momentum,
            weight_decay: meta.weight_decay,
            warmup_updates: meta.warmup_updates,
        };
        let consistency: Consistency = meta.consistency.parse().map_err(|e| inconsistent(&e))?;
        let clock = if meta.worker_batches.is_empty() {
            None
        } else {
            Some(
                StepClock::new(meta.worker_batches, meta.push_every)
                    .ok_or_else(|| inconsistent(&"invalid worker schedule"))?,
            )
        };

        let mut store = Self::new(meta.run_id, params, sgd)
            .map_err(|e| inconsistent(&e))?
            .with_consistency(consistency, clock)
            .map_err(|e| inconsistent(&e))?
            .with_compensation(Compensation {
                scale_by_staleness: meta.scale_by_staleness,
                dc_lambda: meta.dc_lambda,
            })
            .map_err(|e| inconsistent(&e))?;

        if !meta.done.is_empty() && meta.done.len() != store.done.len() {
            return Err(inconsistent(&"progress of another number of workers"));
        }
        if !meta.done.is_empty() {
            store.done = meta.done;
        }

        store.velocity = velocity;
        store.version = meta.version;
        store.diverged_at = meta.diverged_at;
        store.sequences = meta
            .sequences
            .into_iter()
            .map(|(worker, sequence, ready_at)| (worker, (sequence, ready_at)))
            .collect();
        store.totals = PushTotals {
            examples: meta.examples,
            loss_sum: meta.loss_sum,
            pushes: meta.pushes,
            updates: meta.version,
            staleness_sum: meta.staleness_sum,
            max_staleness: meta.max_staleness,
            staleness_counts: meta.staleness_counts.into_iter().collect(),
            pushes_by_worker: meta.pushes_by_worker.into_iter().collect(),
            duplicates: meta.duplicates,
        };
        Ok(store)
    }
}

/// CRC-32 of the little-endian bytes of `params` followed by `velocity`.
fn tensor_crc(params: &[f32], velocity: &[f32]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if cfg!(target_endian = "little") {
        hasher.update(bytemuck::cast_slice(params));
        hasher.update(bytemuck::cast_slice(velocity));
    } else {
        for value in params.iter().chain(velocity) {
            hasher.update(&value.to_le_bytes());
        }
    }
    hasher.finalize()
}

/// Returns whether every value is finite. The loop has no early exit, so it
/// compiles to vector instructions.
/// Checks that a sparse gradient has one index per value, and that its
/// indices increase strictly and stay below `len`, the length of θ.
fn check_indices(indices: &[u32], values: usize, len: usize) -> Result<(), StoreError> {
    if indices.len() != values {
        return Err(StoreError::InvalidIndices(format!(
            "{} indices but {values} values",
            indices.len()
        )));
    }
    if let Some(pair) = indices.windows(2).position(|pair| pair[0] >= pair[1]) {
        return Err(StoreError::InvalidIndices(format!(
            "index {} at entry {} follows index {}; indices must increase strictly",
            indices[pair + 1],
            pair + 1,
            indices[pair]
        )));
    }
    if let Some(&last) = indices.last()
        && last as usize >= len
    {
        return Err(StoreError::InvalidIndices(format!(
            "index {last} is past the {len} values of θ"
        )));
    }
    Ok(())
}

fn all_finite(values: &[f32]) -> bool {
    // An f32 is infinite or NaN exactly when its exponent bits are all set.
    const EXPONENT: u32 = 0x7f80_0000;
    let non_finite = values.iter().fold(0u32, |acc, v| {
        acc | u32::from(v.to_bits() & EXPONENT == EXPONENT)
    });
    non_finite == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ParamStore {
        let sgd = SgdConfig {
            learning_rate: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 0,
        };
        ParamStore::new("run".into(), vec![1.0, 2.0], sgd).unwrap()
    }

    fn push(version: u64, gradient: &[f32]) -> Push<'_> {
        Push {
            worker_id: 7,
            sequence: 0,
            version,
            gradient,
            indices: None,
            examples: 64,
            loss: 0.5,
            epoch: 0,
            batch: 0,
        }
    }

    fn sparse<'a>(version: u64, indices: &'a [u32], values: &'a [f32]) -> Push<'a> {
        Push {
            indices: Some(indices),
            ..push(version, values)
        }
    }

    fn applied(outcome: Accepted) -> (u64, u64) {
        match outcome {
            Accepted::Applied {
                version, staleness, ..
            } => (version, staleness),
            other => panic!("push was not applied: {other:?}"),
        }
    }

    #[test]
    fn push_applies_step_and_bumps_version() {
        let mut store = store();

        let outcome = store.apply_push(push(0, &[2.0, -2.0])).unwrap();

        assert_eq!(
            outcome,
            Accepted::Applied {
                version: 1,
                staleness: 0,
                done: 0
            }
        );
        assert_eq!(store.params(), &[0.0, 3.0]);
        assert_eq!(store.totals().examples, 64);
        assert_eq!(store.totals().pushes_by_worker.get(&7), Some(&1));
    }

    #[test]
    fn staleness_counts_versions_since_pull() {
        let mut store = store();
        for _ in 0..3 {
            store
                .apply_push(push(store.version(), &[0.0, 0.0]))
                .unwrap();
        }

        let outcome = store.apply_push(push(1, &[0.0, 0.0])).unwrap();

        assert_eq!(applied(outcome), (4, 2));
        assert_eq!(store.totals().staleness_sum, 2);
        assert_eq!(
            store.totals().staleness_counts,
            BTreeMap::from([(0, 3), (2, 1)])
        );
        assert_eq!(store.totals().max_staleness, 2);
    }

    #[test]
    fn bad_pushes_leave_params_untouched() {
        let mut store = store();
        let cases: [(Push<'_>, StoreError); 4] = [
            (
                push(0, &[1.0]),
                StoreError::WrongLength {
                    expected: 2,
                    actual: 1,
                },
            ),
            (
                push(0, &[1.0, f32::NAN]),
                StoreError::NonFiniteGradient { index: 1 },
            ),
            (
                push(5, &[1.0, 1.0]),
                StoreError::FutureVersion {
                    version: 5,
                    current: 0,
                },
            ),
            (
                Push {
                    loss: f32::INFINITY,
                    ..push(0, &[1.0, 1.0])
                },
                StoreError::NonFiniteLoss,
            ),
        ];

        for (bad, expected) in cases {
            assert_eq!(store.apply_push(bad), Err(expected));
        }
        assert_eq!(store.params(), &[1.0, 2.0]);
        assert_eq!(store.version(), 0);
        assert_eq!(store.totals().pushes, 0);
    }

    #[test]
    fn sparse_push_moves_listed_positions_only() {
        let sgd = SgdConfig {
            learning_rate: 0.5,
            momentum: 0.9,
            weight_decay: 0.1,
            warmup_updates: 0,
        };
        let mut store = ParamStore::new("run".into(), vec![1.0, 2.0, 3.0, 4.0], sgd).unwrap();

        store.apply_push(sparse(0, &[1, 3], &[1.0, -1.0])).unwrap();
        let after_first = store.params().to_vec();
        // θ₁: v = 1 + 0.1·2 = 1.2, θ = 2 − 0.6; θ₃: v = −1 + 0.4, θ = 4 + 0.3.
        assert_eq!(after_first[0], 1.0);
        assert!((after_first[1] - 1.4).abs() < 1e-6);
        assert_eq!(after_first[2], 3.0);
        assert!((after_first[3] - 4.3).abs() < 1e-6);

        // Momentum carried by θ₁ and θ₃ moves them only when listed again.
        store.apply_push(sparse(1, &[0], &[0.0])).unwrap();
        assert_eq!(store.params()[1..], after_first[1..]);
        assert!((store.params()[0] - 0.95).abs() < 1e-6);
        assert_eq!(store.version(), 2);
    }

    #[test]
    fn sparse_push_rejects_bad_indices() {
        let mut store = store();
        let cases: [(&[u32], &[f32], &str); 4] = [
            (&[0], &[1.0, 1.0], "1 indices but 2 values"),
            (&[1, 0], &[1.0, 1.0], "index 0 at entry 1 follows index 1"),
            (&[0, 0], &[1.0, 1.0], "index 0 at entry 1 follows index 0"),
            (&[2], &[1.0], "index 2 is past the 2 values of θ"),
        ];
        for (indices, values, reason) in cases {
            let error = store.apply_push(sparse(0, indices, values)).unwrap_err();
            assert!(
                matches!(&error, StoreError::InvalidIndices(message) if message.contains(reason)),
                "{indices:?}: {error}"
            );
        }
        assert_eq!(
            store.apply_push(sparse(0, &[0, 1], &[1.0, f32::NAN])),
            Err(StoreError::NonFiniteGradient { index: 1 })
        );
        assert_eq!(store.params(), &[1.0, 2.0]);
        assert_eq!(store.version(), 0);
    }

    #[test]
    fn sparse_push_without_entries_bumps_version() {
        let mut store = store();
        let outcome = store.apply_push(sparse(0, &[], &[])).unwrap();
        assert_eq!(applied(outcome), (1, 0));
        assert_eq!(store.params(), &[1.0, 2.0]);
    }

    #[test]
    fn overflowing_step_marks_divergence() {
        let sgd = SgdConfig {
            learning_rate: 4.0,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 0,
        };
        let mut store = ParamStore::new("run".into(), vec![1.0, 2.0], sgd).unwrap();

        let error = store.apply_push(push(0, &[f32::MAX, 0.0])).unwrap_err();
        assert_eq!(error, StoreError::Diverged { version: 1 });

        let later = store.apply_push(push(1, &[0.0, 0.0])).unwrap_err();
        assert_eq!(later, StoreError::Diverged { version: 1 });
        assert_eq!(store.version(), 1);
    }

    #[test]
    fn all_finite_finds_nan_and_inf() {
        let mut values = vec![1.0f32; 1000];
        assert!(all_finite(&values));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            values[777] = bad;
            assert!(!all_finite(&values), "{bad} went unnoticed");
        }
        assert!(all_finite(&[f32::MAX, f32::MIN_POSITIVE, -0.0, 1e-45]));
    }

    #[test]
    fn new_rejects_bad_initial_params() {
        let sgd = SgdConfig {
            learning_rate: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 0,
        };
        assert_eq!(
            ParamStore::new("r".into(), vec![], sgd).unwrap_err(),
            StoreError::EmptyParams
        );
        assert_eq!(
            ParamStore::new("r".into(), vec![0.0, f32::INFINITY], sgd).unwrap_err(),
            StoreError::NonFiniteParams { index: 1 }
        );
    }

    fn sync_store(worker_batches: Vec<u32>) -> ParamStore {
        let clock = StepClock::new(worker_batches, 1).unwrap();
        store()
            .with_consistency(Consistency::Sync, Some(clock))
            .unwrap()
    }

    fn at(worker_id: u32, batch: u32, gradient: &[f32], examples: u32) -> Push<'_> {
        Push {
            worker_id,
            batch,
            examples,
            ..push(batch.into(), gradient)
        }
    }

    #[test]
    fn sync_step_averages_by_examples() {
        let mut store = sync_store(vec![2, 2]);

        let first = store.apply_push(at(1, 0, &[4.0, 0.0], 32)).unwrap();
        assert_eq!(
            first,
            Accepted::Held {
                step: 0,
                ready_at: 1,
                staleness: 0
            }
        );
        assert_eq!(store.version(), 0);
        assert_eq!(store.params(), &[1.0, 2.0]);

        store.apply_push(at(0, 0, &[1.0, 3.0], 96)).unwrap();

        // Mean gradient (96·[1, 3] + 32·[4, 0]) / 128 = [1.75, 2.25].
        assert_eq!(store.version(), 1);
        assert_eq!(store.params(), &[1.0 - 0.5 * 1.75, 2.0 - 0.5 * 2.25]);
        assert_eq!(store.totals().pushes, 2);
        assert_eq!(store.totals().updates, 1);
        assert_eq!(store.totals().examples, 128);
    }

    #[test]
    fn sync_step_scatters_sparse_pushes() {
        let mut store = sync_store(vec![2, 2]);
        let dense = [1.0f32, 3.0];
        store.apply_push(at(0, 0, &dense, 96)).unwrap();
        store
            .apply_push(Push {
                indices: Some(&[0]),
                ..at(1, 0, &[4.0], 32)
            })
            .unwrap();
        let mut reference = sync_store(vec![2, 2]);
        reference.apply_push(at(0, 0, &dense, 96)).unwrap();
        reference.apply_push(at(1, 0, &[4.0, 0.0], 32)).unwrap();
        assert_eq!(store.version(), 1);
        assert_eq!(store.params(), reference.params());
    }

    #[test]
    fn sync_ignores_arrival_order() {
        let gradients = [[0.3f32, -0.7], [1.1, 0.2], [-0.4, 0.9]];
        let mut results = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut store = sync_store(vec![1, 1, 1]);
            for worker in order {
                store
                    .apply_push(at(worker, 0, &gradients[worker as usize], 64))
                    .unwrap();
            }
            results.push(store.params().to_vec());
        }
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
    }

    #[test]
    fn sync_skips_workers_whose_shard_is_done() {
        // Worker 1 has one minibatch less, so step 1 holds worker 0 alone,
        // and worker 1's answer waits for it: its next step is step 2.
        let mut store = sync_store(vec![2, 1]);
        store.apply_push(at(0, 0, &[0.0, 0.0], 64)).unwrap();
        let last = store.apply_push(at(1, 0, &[0.0, 0.0], 64)).unwrap();
        assert_eq!(
            last,
            Accepted::Held {
                step: 0,
                ready_at: 2,
                staleness: 0
            }
        );

        store.apply_push(at(0, 1, &[1.0, 1.0], 64)).unwrap();

        assert_eq!(store.version(), 2);
    }

    #[test]
    fn sync_rejects_out_of_step_pushes() {
        let mut store = sync_store(vec![2, 2]);
        store.apply_push(at(0, 0, &[1.0, 1.0], 64)).unwrap();

        assert_eq!(
            store.apply_push(at(0, 0, &[1.0, 1.0], 64)),
            Err(StoreError::DuplicatePush { worker: 0, step: 0 })
        );
        assert_eq!(
            store.apply_push(Push {
                version: 0,
                ..at(1, 1, &[1.0, 1.0], 64)
            }),
            Err(StoreError::WrongStep {
                step: 1,
                current: 0
            })
        );
        assert!(matches!(
            store.apply_push(at(2, 0, &[1.0, 1.0], 64)),
            Err(StoreError::Clock(ClockError::UnknownWorker { .. }))
        ));
    }

    #[test]
    fn stop_drops_held_and_later_pushes() {
        let mut store = sync_store(vec![2, 2]);
        store.apply_push(at(0, 0, &[1.0, 1.0], 64)).unwrap();

        store.stop();

        assert_eq!(
            store.apply_push(at(1, 0, &[1.0, 1.0], 64)),
            Ok(Accepted::Stopped)
        );
        assert_eq!(store.version(), 0);
        assert_eq!(store.totals().pushes, 0);
    }

    #[test]
    fn bounded_tracks_the_slowest_worker() {
        let clock = StepClock::new(vec![3, 2], 1).unwrap();
        let mut store = store()
            .with_consistency(Consistency::Bounded { bound: 1 }, Some(clock))
            .unwrap();
        assert_eq!(store.min_done(), 0);

        let outcome = store.apply_push(at(0, 0, &[0.0, 0.0], 64)).unwrap();
        assert!(matches!(outcome, Accepted::Applied { done: 1, .. }));
        assert_eq!(store.min_done(), 0);

        store
            .apply_push(Push {
                version: 1,
                ..at(1, 0, &[0.0, 0.0], 64)
            })
            .unwrap();
        assert_eq!(store.min_done(), 1);
        // Worker 1's second push ends its shard and so the epoch.
        store
            .apply_push(Push {
                version: 2,
                ..at(1, 1, &[0.0, 0.0], 64)
            })
            .unwrap();
        assert_eq!(store.min_done(), 1);
    }

    #[test]
    fn staleness_scaling_divides_the_step() {
        let mut store = store()
            .with_compensation(Compensation {
                scale_by_staleness: true,
                dc_lambda: 0.0,
            })
            .unwrap();
        store.apply_push(push(0, &[0.0, 0.0])).unwrap();

        // Staleness 1: the gradient [2, -2] is halved before the step.
        store.apply_push(push(0, &[2.0, -2.0])).unwrap();

        assert_eq!(store.params(), &[0.5, 2.5]);
    }

    #[test]
    fn delay_compensation_uses_sent_theta() {
        let mut store = store()
            .with_compensation(Compensation {
                scale_by_staleness: false,
                dc_lambda: 0.5,
            })
            .unwrap();
        store.record_sent(7);
        // Another worker moves θ from [1, 2] to [0, 3].
        store
            .apply_push(Push {
                worker_id: 8,
                ..push(0, &[2.0, -2.0])
            })
            .unwrap();

        store.apply_push(push(0, &[1.0, 2.0])).unwrap();

        // g + λ·g²·(θ_now − θ_then) = [1 + 0.5·1·(−1), 2 + 0.5·4·1] = [0.5, 4].
        assert_eq!(store.params(), &[0.0 - 0.5 * 0.5, 3.0 - 0.5 * 4.0]);
    }

    #[test]
    fn compensation_of_sparse_push() {
        let compensated = || {
            let mut store = store()
                .with_compensation(Compensation {
                    scale_by_staleness: true,
                    dc_lambda: 0.5,
                })
                .unwrap();
            store.record_sent(7);
            // Another worker moves θ from [1, 2] to [0, 3].
            store
                .apply_push(Push {
                    worker_id: 8,
                    ..push(0, &[2.0, -2.0])
                })
                .unwrap();
            store
        };
        let mut sparse_store = compensated();
        sparse_store.apply_push(sparse(0, &[1], &[2.0])).unwrap();

        // θ₁: (g + λ·g²·(θ_now − θ_then)) / (staleness + 1) = (2 + 0.5·4·1) / 2.
        assert_eq!(sparse_store.params(), &[0.0, 3.0 - 0.5 * 2.0]);
        let mut dense_store = compensated();
        dense_store.apply_push(push(0, &[0.0, 2.0])).unwrap();
        assert_eq!(sparse_store.params(), dense_store.params());
    }

    #[test]
    fn repeated_sequence_is_acknowledged_once() {
        let mut store = store();
        let first = Push {
            sequence: 1,
            ..push(0, &[2.0, -2.0])
        };

        store.apply_push(first).unwrap();
        let again = store.apply_push(first).unwrap();

        assert_eq!(again, Accepted::Duplicate { ready_at: 0 });
        assert_eq!(store.version(), 1);
        assert_eq!(store.params(), &[0.0, 3.0]);
        assert_eq!(store.totals().pushes, 1);
        assert_eq!(store.totals().duplicates, 1);
        let next = Push {
            sequence: 2,
            ..push(1, &[0.0, 0.0])
        };
        assert!(matches!(
            store.apply_push(next).unwrap(),
            Accepted::Applied { version: 2, .. }
        ));
    }

    #[test]
    fn checkpoint_round_trip_restores_every_part() {
        let mut store = store();
        store
            .apply_push(Push {
                sequence: 1,
                ..push(0, &[2.0, -2.0])
            })
            .unwrap();

        let restored = ParamStore::decode_checkpoint(&store.encode_checkpoint()).unwrap();

        assert_eq!(restored.params(), store.params());
        assert_eq!(restored.velocity, store.velocity);
        assert_eq!(restored.version(), 1);
        assert_eq!(restored.run_id(), "run");
        assert_eq!(restored.totals(), store.totals());
        let mut restored = restored;
        let again = Push {
            sequence: 1,
            ..push(0, &[2.0, -2.0])
        };
        assert_eq!(
            restored.apply_push(again).unwrap(),
            Accepted::Duplicate { ready_at: 0 }
        );
    }

    #[test]
    fn warmup_continues_after_restore() {
        let sgd = SgdConfig {
            learning_rate: 0.4,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 4,
        };
        let mut uninterrupted = ParamStore::new("run".into(), vec![0.0], sgd).unwrap();
        let mut first_half = ParamStore::new("run".into(), vec![0.0], sgd).unwrap();
        for version in 0..2 {
            uninterrupted.apply_push(push(version, &[1.0])).unwrap();
            first_half.apply_push(push(version, &[1.0])).unwrap();
        }

        let mut restored = ParamStore::decode_checkpoint(&first_half.encode_checkpoint()).unwrap();
        for version in 2..5 {
            uninterrupted.apply_push(push(version, &[1.0])).unwrap();
            restored.apply_push(push(version, &[1.0])).unwrap();
        }

        // Steps of 0.1, 0.2, 0.3, 0.4 and 0.4.
        assert!((uninterrupted.params()[0] + 1.4).abs() < 1e-6);
        assert_eq!(restored.params(), uninterrupted.params());
    }

    #[test]
    fn corrupt_checkpoints_are_refused() {
        let bytes = store().encode_checkpoint();

        assert!(ParamStore::decode_checkpoint(b"not a checkpoint").is_err());
        assert!(ParamStore::decode_checkpoint(&bytes[..bytes.len() - 3]).is_err());
        let mut header = bytes.clone();
        header[9] ^= 0xff;
        assert!(ParamStore::decode_checkpoint(&header).is_err());
        let mut data = bytes.clone();
        let last = data.len() - 1;
        data[last] ^= 0x01;
        assert!(matches!(
            ParamStore::decode_checkpoint(&data),
            Err(CheckpointError::Inconsistent(_))
        ));
    }
}
