//! Checks analytic gradients against central finite differences of the loss.

use downpour_model::{Mlp, ModelDescription, ModelSpec, Workspace};
use ndarray::Array2;
use rand::distr::{Distribution, Uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INPUTS: usize = 6;
const CLASSES: usize = 3;
const BATCH: usize = 16;

/// Finite-difference step. The forward pass runs in f32, so the loss carries a rounding
/// error of about 1e-7 near a loss of 1. A central difference divides that error by twice
/// the step, giving up to about 5e-5 here. The truncation error, about step² / 6 times the
/// third derivative, is near 2e-7. A step of 1e-2 would also work numerically but moves
/// ReLU pre-activations across zero for many more coordinates.
const STEP: f32 = 1e-3;

/// Allowed absolute difference between analytic and numeric derivatives. The largest
/// difference measured over the seeds below is about 1e-5, ten times below this bound.
/// The largest derivatives are 0.1 to 0.5, so even a 1% error in one of them exceeds it.
const TOLERANCE: f64 = 1e-4;

fn model(spec: ModelSpec) -> Mlp {
    let description = ModelDescription::new(&spec, INPUTS, CLASSES).expect("valid dimensions");
    Mlp::new(&description).expect("description from new is valid")
}

fn random_batch(seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
    let x = Array2::from_shape_fn((BATCH, INPUTS), |_| uniform.sample(&mut rng));
    let labels = (0..BATCH)
        .map(|_| rng.random_range(0..CLASSES as u32))
        .collect();
    (x, labels)
}

/// Reference forward pass in f64, written with plain loops, that returns the mean
/// cross-entropy and whether each hidden pre-activation is positive.
fn reference_forward(
    model: &Mlp,
    params: &[f32],
    x: &Array2<f32>,
    labels: &[u32],
) -> (f64, Vec<bool>) {
    let description = model.description();
    let mut widths = vec![description.inputs];
    widths.extend(&description.hidden);
    widths.push(description.classes);
    let layer_count = widths.len() - 1;
    let mut relu_pattern = Vec::new();
    let mut loss_sum = 0.0;
    for (row, &label) in labels.iter().enumerate() {
        let mut values: Vec<f64> = x.row(row).iter().map(|&v| f64::from(v)).collect();
        for layer in 0..layer_count {
            let (fan_in, fan_out) = (widths[layer], widths[layer + 1]);
            let weight = &description.tensors[2 * layer];
            let bias = &description.tensors[2 * layer + 1];
            let mut next = vec![0.0; fan_out];
            for (out, value) in next.iter_mut().enumerate() {
                *value = f64::from(params[bias.offset + out]);
                for (input, &previous) in values.iter().enumerate() {
                    *value += f64::from(params[weight.offset + out * fan_in + input]) * previous;
                }
            }
            if layer + 1 < layer_count {
                relu_pattern.extend(next.iter().map(|&value| value > 0.0));
                next.iter_mut().for_each(|value| *value = value.max(0.0));
            }
            values = next;
        }
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = values.iter().map(|value| (value - max).exp()).sum();
        loss_sum += sum.ln() + max - values[label as usize];
    }
    (loss_sum / labels.len() as f64, relu_pattern)
}

/// Summary of one gradient check.
struct CheckResult {
    max_error: f64,
    /// Coordinates compared.
    checked: usize,
    /// Coordinates compared whose analytic derivative is not zero. A ReLU unit that is
    /// inactive on every row gives its incoming weights a zero derivative, which also
    /// matches a gradient computation that forgot them, so only these count as evidence.
    nonzero: usize,
    /// Coordinates not compared because a ±STEP perturbation flips a ReLU.
    skipped: usize,
}

/// Compares every coordinate of the analytic gradient with a central difference of the
/// model's own loss, skipping coordinates whose ±STEP perturbation flips a ReLU.
fn check_gradient(model: &Mlp, seed: u64) -> CheckResult {
    let params = model.init_params(seed);
    let (x, labels) = random_batch(seed + 1000);
    let mut workspace = Workspace::new(model, BATCH);
    let mut gradient = vec![0.0; model.num_params()];
    let loss = model.loss_and_gradient(&params, x.view(), &labels, &mut gradient, &mut workspace);

    let (reference_loss, base_pattern) = reference_forward(model, &params, &x, &labels);
    assert!(
        (f64::from(loss) - reference_loss).abs() < 1e-5,
        "model loss {loss} differs from the f64 reference {reference_loss}"
    );

    let mut result = CheckResult {
        max_error: 0.0,
        checked: 0,
        nonzero: 0,
        skipped: 0,
    };
    for index in 0..params.len() {
        let mut plus = params.clone();
        plus[index] += STEP;
        let mut minus = params.clone();
        minus[index] -= STEP;
        let plus_pattern = reference_forward(model, &plus, &x, &labels).1;
        let minus_pattern = reference_forward(model, &minus, &x, &labels).1;
        if plus_pattern != base_pattern || minus_pattern != base_pattern {
            result.skipped += 1;
            continue;
        }
        let loss_plus = model
            .evaluate(&plus, x.view(), &labels, &mut workspace)
            .mean_loss();
        let loss_minus = model
            .evaluate(&minus, x.view(), &labels, &mut workspace)
            .mean_loss();
        // Divides by the step actually taken after f32 rounding of the parameters.
        let numeric = (loss_plus - loss_minus) / f64::from(plus[index] - minus[index]);
        let analytic = f64::from(gradient[index]);
        let error = (analytic - numeric).abs();
        assert!(
            error <= TOLERANCE,
            "parameter {index}: analytic {analytic}, numeric {numeric}, difference {error}"
        );
        result.max_error = result.max_error.max(error);
        result.checked += 1;
        if analytic != 0.0 {
            result.nonzero += 1;
        }
    }
    result
}

#[test]
fn softmax_gradient_matches_finite_differences() {
    let model = model(ModelSpec::Softmax);
    for seed in [1, 2] {
        let result = check_gradient(&model, seed);
        assert_eq!(result.skipped, 0, "softmax regression has no ReLU");
        assert_eq!(result.nonzero, model.num_params());
    }
}

#[test]
fn mlp_gradient_matches_finite_differences() {
    let model = model(ModelSpec::Mlp { hidden: vec![5, 4] });
    let seeds = 1..=12u64;
    let mut total = 0;
    let mut nonzero = 0;
    let mut max_error = 0.0f64;
    for seed in seeds {
        let result = check_gradient(&model, seed);
        total += model.num_params();
        nonzero += result.nonzero;
        max_error = max_error.max(result.max_error);
    }
    eprintln!("mlp:5,4 max difference {max_error:e}, {nonzero} of {total} coordinates nonzero");
    // Some seeds leave whole layers inactive on the batch, so the check runs over several
    // seeds and requires most coordinates to have been compared with a nonzero derivative.
    assert!(
        3 * nonzero >= 2 * total,
        "only {nonzero} of {total} coordinates had a nonzero derivative and were compared"
    );
}

#[test]
fn single_hidden_layer_gradient_matches() {
    let model = model(ModelSpec::Mlp { hidden: vec![7] });
    let result = check_gradient(&model, 4);
    assert!(
        10 * result.nonzero >= 9 * model.num_params(),
        "only {} of {} coordinates had a nonzero derivative and were compared",
        result.nonzero,
        model.num_params()
    );
}
