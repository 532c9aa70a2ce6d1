//! Measures whether flushing subnormal floats to zero speeds up the gradient step late in
//! training, where tiny softmax probabilities and gradients can produce subnormals.
//!
//! The bench first trains the 784-256-128-10 model on the bundled MNIST training set
//! (batch 64, learning rate 0.05, momentum 0.9, the defaults of `downpour train`) on one
//! thread, keeping θ after 0, 1 and `EPOCHS` epochs. It prints how many subnormal values
//! the gradient of each θ contains over the benched batches. Then it times
//! `Mlp::loss_and_gradient` at each θ over the same batches, once with the default
//! floating-point environment and once with the x86-64 MXCSR flags FTZ (flush results
//! to zero) and DAZ (read subnormal inputs as zero) set.
//!
//! Run with `cargo bench -p downpour-model --bench flush_to_zero`. A whole run, training
//! included, took about 45 s on a 2-core AMD EPYC virtual machine.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use downpour_model::{Mlp, ModelDescription, ModelSpec, Workspace};
use ndarray::{Array2, s};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 64;
const LEARNING_RATE: f32 = 0.05;
const MOMENTUM: f32 = 0.9;
const EPOCHS: usize = 10;
/// Batches that each timed iteration cycles through, taken from the training set.
const BENCH_BATCHES: usize = 32;

/// Sets FTZ and DAZ in MXCSR for the current thread and restores the previous flags
/// when dropped.
#[cfg(target_arch = "x86_64")]
struct FlushToZero {
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
impl FlushToZero {
    /// MXCSR bit 15, flush-to-zero.
    const FTZ: u32 = 1 << 15;
    /// MXCSR bit 6, denormals-are-zero.
    const DAZ: u32 = 1 << 6;

    // `_mm_getcsr` and `_mm_setcsr` are deprecated because LLVM assumes the default
    // floating-point environment. Here the flags only change subnormal results and
    // inputs to zero, which is the effect under test.
    #[allow(deprecated)]
    fn enable() -> Self {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        // SAFETY: SSE is part of the x86-64 baseline, and setting FTZ and DAZ changes
        // no memory.
        unsafe {
            let saved = _mm_getcsr();
            _mm_setcsr(saved | Self::FTZ | Self::DAZ);
            FlushToZero { saved }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for FlushToZero {
    #[allow(deprecated)]
    fn drop(&mut self) {
        // SAFETY: restores the flags read in `enable` on the same thread.
        unsafe { std::arch::x86_64::_mm_setcsr(self.saved) }
    }
}

struct Training {
    model: Mlp,
    x: Array2<f32>,
    labels: Vec<u32>,
}

impl Training {
    fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
        let splits = downpour_data::mnist::load_dir(&dir).expect("bundled MNIST loads");
        let spec: ModelSpec = "mlp:256,128".parse().expect("valid spec");
        let description = ModelDescription::new(&spec, splits.train.num_features(), 10)
            .expect("valid dimensions");
        Training {
            model: Mlp::new(&description).expect("description from new is valid"),
            x: splits.train.to_f32(),
            labels: splits.train.labels.clone(),
        }
    }

    /// Trains with SGD and momentum from a seeded θ and returns θ after each epoch
    /// listed in `keep`, with epoch 0 being the initial θ.
    fn snapshots(&self, keep: &[usize]) -> Vec<(usize, Vec<f32>)> {
        let mut params = self.model.init_params(1);
        let mut velocity = vec![0.0f32; params.len()];
        let mut gradient = vec![0.0f32; params.len()];
        let mut workspace = Workspace::new(&self.model, BATCH);
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut batch_x = Array2::zeros((BATCH, self.x.ncols()));
        let mut batch_labels = vec![0u32; BATCH];

        let mut snapshots = Vec::new();
        let last = keep.iter().copied().max().unwrap_or(0);
        for epoch in 0..=last {
            if keep.contains(&epoch) {
                snapshots.push((epoch, params.clone()));
            }
            if epoch == last {
                break;
            }

            order.shuffle(&mut rng);
            let mut loss_sum = 0.0f64;
            for rows in order.chunks_exact(BATCH) {
                for (slot, &row) in rows.iter().enumerate() {
                    batch_x.row_mut(slot).assign(&self.x.row(row));
                    batch_labels[slot] = self.labels[row];
                }
                loss_sum += f64::from(self.model.loss_and_gradient(
                    &params,
                    batch_x.view(),
                    &batch_labels,
                    &mut gradient,
                    &mut workspace,
                ));
                for ((theta, v), &g) in params.iter_mut().zip(&mut velocity).zip(&gradient) {
                    *v = MOMENTUM * *v + g;
                    *theta -= LEARNING_RATE * *v;
                }
            }
            let batches = order.len() / BATCH;
            println!(
                "epoch {}: mean training loss {:.4}",
                epoch + 1,
                loss_sum / batches as f64
            );
        }
        snapshots
    }
}

/// Returns how many values of the gradients over the benched batches are subnormal.
fn subnormal_gradient_values(training: &Training, params: &[f32]) -> usize {
    let mut gradient = vec![0.0f32; params.len()];
    let mut workspace = Workspace::new(&training.model, BATCH);
    let mut count = 0;
    for batch in 0..BENCH_BATCHES {
        let rows = batch * BATCH..(batch + 1) * BATCH;
        training.model.loss_and_gradient(
            params,
            training.x.slice(s![rows.clone(), ..]),
            &training.labels[rows],
            &mut gradient,
            &mut workspace,
        );
        count += gradient.iter().filter(|value| value.is_subnormal()).count();
    }
    count
}

fn flush_to_zero(criterion: &mut Criterion) {
    let training = Training::load();
    let snapshots = training.snapshots(&[0, 1, EPOCHS]);
    for (epoch, params) in &snapshots {
        println!(
            "epoch {epoch}: {} subnormal gradient values in {BENCH_BATCHES} batches of {} values",
            subnormal_gradient_values(&training, params),
            params.len()
        );
    }

    let mut group = criterion.benchmark_group("flush_to_zero");
    group.throughput(Throughput::Elements((BATCH * BENCH_BATCHES) as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(30);
    let mut gradient = vec![0.0f32; training.model.num_params()];
    let mut workspace = Workspace::new(&training.model, BATCH);
    for (epoch, params) in &snapshots {
        let mut run_batches = || {
            for batch in 0..BENCH_BATCHES {
                let rows = batch * BATCH..(batch + 1) * BATCH;
                black_box(training.model.loss_and_gradient(
                    black_box(params),
                    training.x.slice(s![rows.clone(), ..]),
                    &training.labels[rows],
                    &mut gradient,
                    &mut workspace,
                ));
            }
        };
        group.bench_function(format!("epoch_{epoch}/default"), |bencher| {
            bencher.iter(&mut run_batches)
        });
        #[cfg(target_arch = "x86_64")]
        group.bench_function(format!("epoch_{epoch}/ftz_daz"), |bencher| {
            let _flags = FlushToZero::enable();
            bencher.iter(&mut run_batches)
        });
    }
    group.finish();
}

criterion_group!(benches, flush_to_zero);
criterion_main!(benches);
