//! Cost of the server's apply step: `ParamStore::apply_push` with a gradient of 235,146
//! values (the 784-256-128-10 model), learning rate 0.05 and momentum 0.9.
//!
//! Criterion reports elements per second, where an element is one parameter updated.
//! Every push comes from version 0, so staleness grows by one per push, as it would for
//! a worker that never pulls.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use downpour_ps::{ParamStore, Push, SgdConfig};

const PARAMETERS: usize = 235_146;

fn apply_step(criterion: &mut Criterion) {
    let sgd = SgdConfig {
        learning_rate: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        warmup_updates: 0,
    };
    let params: Vec<f32> = (0..PARAMETERS)
        .map(|index| ((index % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    // Alternating signs keep θ bounded however many pushes the benchmark applies.
    let gradients: [Vec<f32>; 2] = [1.0f32, -1.0].map(|sign| {
        (0..PARAMETERS)
            .map(|index| sign * ((index % 97) as f32 - 48.0) * 1e-5)
            .collect()
    });
    let mut store = ParamStore::new("bench".into(), params, sgd).expect("valid store");

    let mut group = criterion.benchmark_group("apply_step");
    group.throughput(Throughput::Elements(PARAMETERS as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let mut pushes = 0usize;
    group.bench_function("momentum_0.9_235146_values", |bencher| {
        bencher.iter(|| {
            pushes += 1;
            let push = Push {
                worker_id: 0,
                sequence: 0,
                version: 0,
                gradient: black_box(&gradients[pushes % 2]),
                indices: None,
                examples: 64,
                loss: 2.3,
                epoch: 0,
                batch: 0,
            };
            store.apply_push(push).expect("finite push is applied")
        })
    });
    group.finish();
}

criterion_group!(benches, apply_step);
criterion_main!(benches);
