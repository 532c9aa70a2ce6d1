//! Plain SGD on small synthetic problems, checking that the loss and error rate fall.

use downpour_model::{Mlp, ModelDescription, ModelSpec, Workspace};
use ndarray::{Array2, s};
use rand::distr::{Distribution, Uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 32;

fn model(spec: &str, inputs: usize, classes: usize) -> Mlp {
    let spec: ModelSpec = spec.parse().expect("valid spec");
    let description = ModelDescription::new(&spec, inputs, classes).expect("valid dimensions");
    Mlp::new(&description).expect("description from new is valid")
}

/// Draws points around one well-separated centre per class: class `c` has centre 3 in
/// coordinate `c` and 0 elsewhere, plus uniform noise in ±1 on every coordinate.
fn separable_data(
    rows: usize,
    inputs: usize,
    classes: usize,
    seed: u64,
) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Uniform::new(-1.0f32, 1.0).expect("valid range");
    let labels: Vec<u32> = (0..rows)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    let x = Array2::from_shape_fn((rows, inputs), |(row, column)| {
        let centre = if column == labels[row] as usize {
            3.0
        } else {
            0.0
        };
        centre + noise.sample(&mut rng)
    });
    (x, labels)
}

/// Draws points uniform in the square [-1, 1]², labelled 1 when the coordinates have
/// the same sign. No linear classifier separates the classes.
fn xor_data(rows: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
    let x = Array2::from_shape_fn((rows, 2), |_| uniform.sample(&mut rng));
    let labels = x
        .rows()
        .into_iter()
        .map(|row| u32::from(row[0] * row[1] > 0.0))
        .collect();
    (x, labels)
}

/// Runs `steps` SGD steps over consecutive minibatches of the data and returns θ.
fn train(
    model: &Mlp,
    x: &Array2<f32>,
    labels: &[u32],
    steps: usize,
    learning_rate: f32,
) -> Vec<f32> {
    let mut params = model.init_params(1);
    let mut gradient = vec![0.0; model.num_params()];
    let mut workspace = Workspace::new(model, BATCH);
    let batches = x.nrows() / BATCH;
    for step in 0..steps {
        let start = (step % batches) * BATCH;
        let x_batch = x.slice(s![start..start + BATCH, ..]);
        let label_batch = &labels[start..start + BATCH];
        model.loss_and_gradient(&params, x_batch, label_batch, &mut gradient, &mut workspace);
        for (param, g) in params.iter_mut().zip(&gradient) {
            *param -= learning_rate * g;
        }
    }
    params
}

#[test]
fn sgd_reduces_loss_on_separable_data() {
    let (x, labels) = separable_data(640, 6, 4, 11);
    for spec in ["softmax", "mlp:16,8"] {
        let model = model(spec, 6, 4);
        let mut workspace = Workspace::new(&model, 128);
        let before = model.evaluate(&model.init_params(1), x.view(), &labels, &mut workspace);
        let params = train(&model, &x, &labels, 300, 0.1);
        let after = model.evaluate(&params, x.view(), &labels, &mut workspace);
        eprintln!(
            "{spec}: mean loss {:.4} -> {:.4}, error rate {:.4}",
            before.mean_loss(),
            after.mean_loss(),
            after.error_rate()
        );
        assert!(
            after.mean_loss() < 0.25 * before.mean_loss(),
            "{spec}: mean loss went from {} to {}",
            before.mean_loss(),
            after.mean_loss()
        );
        assert!(
            after.error_rate() < 0.02,
            "{spec}: error rate {}",
            after.error_rate()
        );
    }
}

#[test]
fn mlp_learns_xor_but_softmax_cannot() {
    let (x, labels) = xor_data(1024, 5);
    let mlp = model("mlp:32", 2, 2);
    let softmax = model("softmax", 2, 2);
    let mut workspace = Workspace::new(&mlp, 256);
    let mlp_params = train(&mlp, &x, &labels, 2000, 0.5);
    let mlp_result = mlp.evaluate(&mlp_params, x.view(), &labels, &mut workspace);
    let softmax_params = train(&softmax, &x, &labels, 2000, 0.5);
    let softmax_result = softmax.evaluate(&softmax_params, x.view(), &labels, &mut workspace);
    eprintln!(
        "xor error rate: mlp {:.4}, softmax {:.4}",
        mlp_result.error_rate(),
        softmax_result.error_rate()
    );
    assert!(
        mlp_result.error_rate() < 0.1,
        "mlp error rate {}",
        mlp_result.error_rate()
    );
    assert!(
        softmax_result.error_rate() > 0.25,
        "softmax error rate {}",
        softmax_result.error_rate()
    );
}
