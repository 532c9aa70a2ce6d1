//! Throughput of one worker's gradient step: `Mlp::loss_and_gradient` on the default
//! model 784-256-128-10 at batch 64, on one thread.
//!
//! Criterion reports elements per second, where an element is one training example.
//! The products of one example cost about 1.01 MFLOP (2 FLOPs per multiply-add of the
//! forward and both backward products), so 1000 elements/s is about 1.01 GFLOP/s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use downpour_model::{Mlp, ModelDescription, ModelSpec, Workspace};
use ndarray::Array2;
use rand::distr::{Distribution, Uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INPUTS: usize = 784;
const CLASSES: usize = 10;
const BATCH: usize = 64;

/// Draws a batch that resembles scaled MNIST pixels: about 80% of the values are 0 and
/// the rest are uniform in (0, 1].
fn mnist_like_batch(rng: &mut ChaCha8Rng) -> (Array2<f32>, Vec<u32>) {
    let pixel = Uniform::new_inclusive(0.0f32, 1.0).expect("valid range");
    let x = Array2::from_shape_fn((BATCH, INPUTS), |_| {
        if rng.random_bool(0.2) {
            pixel.sample(rng)
        } else {
            0.0
        }
    });
    let labels = (0..BATCH)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    (x, labels)
}

fn gradient_step(criterion: &mut Criterion) {
    let spec: ModelSpec = "mlp:256,128".parse().expect("valid spec");
    let description = ModelDescription::new(&spec, INPUTS, CLASSES).expect("valid dimensions");
    let model = Mlp::new(&description).expect("description from new is valid");
    let params = model.init_params(1);
    let mut gradient = vec![0.0; model.num_params()];
    let mut workspace = Workspace::new(&model, BATCH);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (x, labels) = mnist_like_batch(&mut rng);

    let mut group = criterion.benchmark_group("gradient_step");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("mlp_784_256_128_10_batch_64", |bencher| {
        bencher.iter(|| {
            model.loss_and_gradient(
                black_box(&params),
                black_box(x.view()),
                black_box(&labels),
                &mut gradient,
                &mut workspace,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, gradient_step);
criterion_main!(benches);
