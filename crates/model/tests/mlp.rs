//! Behaviour of `Mlp` and `Workspace`: initialisation, evaluation, prediction, workspace
//! reuse and numerical stability.

use downpour_model::{Evaluation, Mlp, ModelDescription, ModelError, ModelSpec, Workspace};
use ndarray::{Array2, ShapeBuilder, array, s};
use rand::distr::{Distribution, Uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model(spec: &str, inputs: usize, classes: usize) -> Mlp {
    let spec: ModelSpec = spec.parse().expect("valid spec");
    let description = ModelDescription::new(&spec, inputs, classes).expect("valid dimensions");
    Mlp::new(&description).expect("description from new is valid")
}

fn random_data(rows: usize, inputs: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
    let x = Array2::from_shape_fn((rows, inputs), |_| uniform.sample(&mut rng));
    let labels = (0..rows)
        .map(|_| rng.random_range(0..classes as u32))
        .collect();
    (x, labels)
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance,
            "element {index}: {a} differs from {e} by more than {tolerance}"
        );
    }
}

#[test]
fn accessors_report_dimensions() {
    let model = model("mlp:5,4", 6, 3);
    assert_eq!(model.inputs(), 6);
    assert_eq!(model.classes(), 3);
    assert_eq!(model.num_params(), 74);
    assert_eq!(model.description().spec, "mlp:5,4");
}

#[test]
fn new_rejects_inconsistent_description() {
    let spec = ModelSpec::Mlp { hidden: vec![5] };
    let mut description = ModelDescription::new(&spec, 6, 3).expect("valid dimensions");
    description.parameters -= 1;
    let result = Mlp::new(&description);
    assert!(
        matches!(result, Err(ModelError::InvalidDescription(_))),
        "{result:?}"
    );
}

#[test]
fn init_same_seed_same_params() {
    let model = model("mlp:5,4", 6, 3);
    assert_eq!(model.init_params(7), model.init_params(7));
    assert_eq!(model.init_params(7).len(), model.num_params());
}

#[test]
fn init_different_seed_different_params() {
    let model = model("mlp:5,4", 6, 3);
    let first = model.init_params(7);
    let second = model.init_params(8);
    let equal = first.iter().zip(&second).filter(|(a, b)| a == b).count();
    assert_eq!(equal, 0, "{equal} of {} parameters coincide", first.len());
}

#[test]
fn init_within_fan_in_bound() {
    let model = model("mlp:50,20", 100, 10);
    let params = model.init_params(3);
    // Tensors come in (weight, bias) pairs, and both use the weight's fan-in.
    for pair in model.description().tensors.chunks_exact(2) {
        let fan_in = pair[0].shape[1];
        let bound = 1.0 / (fan_in as f32).sqrt();
        for tensor in pair {
            let count: usize = tensor.shape.iter().product();
            let values = &params[tensor.offset..tensor.offset + count];
            let max = values
                .iter()
                .fold(0.0f32, |max, value| max.max(value.abs()));
            assert!(
                max <= bound,
                "{}: max |value| {max} exceeds {bound}",
                tensor.name
            );
            // Ten or more uniform draws over ±bound almost surely exceed half the bound.
            assert!(
                max > bound / 2.0,
                "{}: max |value| {max} for bound {bound}",
                tensor.name
            );
        }
    }
}

#[test]
fn evaluate_counts_errors_on_hand_built_case() {
    // Softmax regression with identity weights and zero bias, so the logits equal x.
    let model = model("softmax", 3, 3);
    let params = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
    let x = array![
        [1.0f32, 0.0, 0.0],
        [0.0, 2.0, 0.0],
        [1.0, 1.0, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 0.0, 5.0],
    ];
    // Row 1 predicts class 1, not 0. Rows 2 and 3 tie between classes 0 and 1, and the
    // tie goes to class 0, so row 2 is an error and row 3 is not.
    let labels = [0u32, 0, 1, 0, 2];
    let mut workspace = Workspace::new(&model, 2);
    let evaluation = model.evaluate(&params, x.view(), &labels, &mut workspace);

    // Each row's loss is ln(sum of exp(logits)) minus the label's logit.
    let e = std::f64::consts::E;
    let row_losses = [
        (e + 2.0).ln() - 1.0,
        (e * e + 2.0).ln(),
        (2.0 * e + 1.0).ln() - 1.0,
        (2.0 * e + 1.0).ln() - 1.0,
        (e.powi(5) + 2.0).ln() - 5.0,
    ];
    let expected_loss: f64 = row_losses.iter().sum();
    assert_eq!(evaluation.examples, 5);
    assert_eq!(evaluation.errors, 2);
    assert!(
        (evaluation.loss_sum - expected_loss).abs() < 1e-6,
        "loss_sum {} expected {expected_loss}",
        evaluation.loss_sum
    );
}

#[test]
fn evaluate_empty_input() {
    let model = model("softmax", 3, 2);
    let params = model.init_params(0);
    let x = Array2::<f32>::zeros((0, 3));
    let mut workspace = Workspace::new(&model, 4);
    let evaluation = model.evaluate(&params, x.view(), &[], &mut workspace);
    assert_eq!(evaluation, Evaluation::default());
}

#[test]
fn evaluate_chunks_match_single_pass() {
    let model = model("mlp:8", 5, 4);
    let params = model.init_params(1);
    let (x, labels) = random_data(10, 5, 4, 2);
    let whole = model.evaluate(&params, x.view(), &labels, &mut Workspace::new(&model, 16));
    let chunked = model.evaluate(&params, x.view(), &labels, &mut Workspace::new(&model, 3));
    assert_eq!(chunked.examples, 10);
    assert_eq!(chunked.errors, whole.errors);
    assert!((chunked.loss_sum - whole.loss_sum).abs() < 1e-5);
}

#[test]
fn evaluate_loss_matches_training_loss() {
    let model = model("mlp:8", 5, 4);
    let params = model.init_params(1);
    let (x, labels) = random_data(10, 5, 4, 2);
    let mut workspace = Workspace::new(&model, 10);
    let mut gradient = vec![0.0; model.num_params()];
    let loss = model.loss_and_gradient(&params, x.view(), &labels, &mut gradient, &mut workspace);
    let evaluation = model.evaluate(&params, x.view(), &labels, &mut workspace);
    assert!((evaluation.mean_loss() - f64::from(loss)).abs() < 1e-6);
}

#[test]
fn predict_proba_rows_are_distributions() {
    let model = model("mlp:8", 5, 4);
    let params = model.init_params(1);
    let (x, labels) = random_data(10, 5, 4, 2);
    let mut probabilities = Array2::<f32>::zeros((10, 4));
    let mut workspace = Workspace::new(&model, 3);
    model.predict_proba(&params, x.view(), probabilities.view_mut(), &mut workspace);

    let mut errors = 0;
    for (row, &label) in probabilities.rows().into_iter().zip(&labels) {
        assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)), "{row}");
        assert!((row.sum() - 1.0).abs() < 1e-6, "{row}");
        let predicted = (0..4).fold(
            0,
            |best, class| if row[class] > row[best] { class } else { best },
        );
        if predicted != label as usize {
            errors += 1;
        }
    }
    let evaluation = model.evaluate(&params, x.view(), &labels, &mut workspace);
    assert_eq!(errors, evaluation.errors);
}

#[test]
fn predict_proba_chunks_match_single_pass() {
    let model = model("mlp:8", 5, 4);
    let params = model.init_params(1);
    let (x, _) = random_data(10, 5, 4, 2);
    let mut whole = Array2::<f32>::zeros((10, 4));
    let mut chunked = Array2::<f32>::zeros((10, 4));
    model.predict_proba(
        &params,
        x.view(),
        whole.view_mut(),
        &mut Workspace::new(&model, 10),
    );
    model.predict_proba(
        &params,
        x.view(),
        chunked.view_mut(),
        &mut Workspace::new(&model, 4),
    );
    assert_close(
        chunked.as_slice().expect("standard layout"),
        whole.as_slice().expect("standard layout"),
        1e-6,
    );
}

#[test]
fn workspace_grows_for_large_batch() {
    let model = model("mlp:8,6", 5, 3);
    let params = model.init_params(1);
    let (x, labels) = random_data(7, 5, 3, 2);
    let mut small = Workspace::new(&model, 2);
    let mut large = Workspace::new(&model, 7);
    let mut small_gradient = vec![0.0; model.num_params()];
    let mut large_gradient = vec![0.0; model.num_params()];
    let small_loss =
        model.loss_and_gradient(&params, x.view(), &labels, &mut small_gradient, &mut small);
    let large_loss =
        model.loss_and_gradient(&params, x.view(), &labels, &mut large_gradient, &mut large);
    assert_eq!(small.capacity(), 7);
    assert!((small_loss - large_loss).abs() < 1e-6);
    assert_close(&small_gradient, &large_gradient, 1e-6);
}

#[test]
fn workspace_zero_batch_holds_one_row() {
    let model = model("softmax", 3, 2);
    assert_eq!(Workspace::new(&model, 0).capacity(), 1);
}

#[test]
fn workspace_from_other_model_is_rebuilt() {
    let softmax = model("softmax", 5, 3);
    let mlp = model("mlp:8,6", 5, 3);
    let params = mlp.init_params(1);
    let (x, labels) = random_data(4, 5, 3, 2);
    let mut gradient = vec![0.0; mlp.num_params()];
    let mut expected_gradient = vec![0.0; mlp.num_params()];
    let mut foreign = Workspace::new(&softmax, 4);
    let loss = mlp.loss_and_gradient(&params, x.view(), &labels, &mut gradient, &mut foreign);
    let expected = mlp.loss_and_gradient(
        &params,
        x.view(),
        &labels,
        &mut expected_gradient,
        &mut Workspace::new(&mlp, 4),
    );
    assert!((loss - expected).abs() < 1e-6);
    assert_close(&gradient, &expected_gradient, 1e-6);
}

#[test]
fn gradient_is_fully_overwritten() {
    let model = model("mlp:8,6", 5, 3);
    let params = model.init_params(1);
    let (x, labels) = random_data(4, 5, 3, 2);
    let mut workspace = Workspace::new(&model, 4);
    let mut clean = vec![0.0; model.num_params()];
    let mut dirty = vec![f32::NAN; model.num_params()];
    model.loss_and_gradient(&params, x.view(), &labels, &mut clean, &mut workspace);
    model.loss_and_gradient(&params, x.view(), &labels, &mut dirty, &mut workspace);
    assert_eq!(clean, dirty);
}

#[test]
fn column_major_input_matches_row_major() {
    let model = model("mlp:8", 5, 3);
    let params = model.init_params(1);
    let (x, labels) = random_data(6, 5, 3, 2);
    let mut column_major = Array2::<f32>::zeros((6, 5).f());
    column_major.assign(&x);
    let mut workspace = Workspace::new(&model, 6);
    let mut expected = vec![0.0; model.num_params()];
    let mut actual = vec![0.0; model.num_params()];
    let expected_loss =
        model.loss_and_gradient(&params, x.view(), &labels, &mut expected, &mut workspace);
    let actual_loss = model.loss_and_gradient(
        &params,
        column_major.view(),
        &labels,
        &mut actual,
        &mut workspace,
    );
    assert!((actual_loss - expected_loss).abs() < 1e-6);
    assert_close(&actual, &expected, 1e-6);

    // A strided view, every second row of a larger array, gives the same result too.
    let mut padded = Array2::<f32>::zeros((12, 5));
    padded.slice_mut(s![..;2, ..]).assign(&x);
    let strided_loss = model.loss_and_gradient(
        &params,
        padded.slice(s![..;2, ..]),
        &labels,
        &mut actual,
        &mut workspace,
    );
    assert!((strided_loss - expected_loss).abs() < 1e-6);
    assert_close(&actual, &expected, 1e-6);
}

#[test]
fn large_inputs_stay_finite() {
    for spec in ["softmax", "mlp:16,8"] {
        let model = model(spec, 20, 5);
        let params = model.init_params(1);
        let (mut x, labels) = random_data(8, 20, 5, 2);
        x.mapv_inplace(|value| value * 1e4);
        let mut workspace = Workspace::new(&model, 8);
        let mut gradient = vec![0.0; model.num_params()];
        let loss =
            model.loss_and_gradient(&params, x.view(), &labels, &mut gradient, &mut workspace);
        assert!(loss.is_finite(), "{spec}: loss {loss}");
        assert!(
            loss > 100.0,
            "{spec}: logits near 1e4 should give a large loss, got {loss}"
        );
        assert!(
            gradient.iter().all(|g| g.is_finite()),
            "{spec}: gradient not finite"
        );

        let evaluation = model.evaluate(&params, x.view(), &labels, &mut workspace);
        assert!(evaluation.loss_sum.is_finite(), "{spec}: {evaluation:?}");
        let mut probabilities = Array2::<f32>::zeros((8, 5));
        model.predict_proba(&params, x.view(), probabilities.view_mut(), &mut workspace);
        for row in probabilities.rows() {
            assert!(row.iter().all(|p| p.is_finite()), "{spec}: {row}");
            assert!((row.sum() - 1.0).abs() < 1e-5, "{spec}: {row}");
        }
    }
}

#[test]
#[should_panic(expected = "the minibatch must not be empty")]
fn empty_minibatch_panics() {
    let model = model("softmax", 3, 2);
    let params = model.init_params(0);
    let mut gradient = vec![0.0; model.num_params()];
    let x = Array2::<f32>::zeros((0, 3));
    model.loss_and_gradient(
        &params,
        x.view(),
        &[],
        &mut gradient,
        &mut Workspace::new(&model, 1),
    );
}

#[test]
#[should_panic(expected = "params length must equal the parameter count")]
fn wrong_params_length_panics() {
    let model = model("softmax", 3, 2);
    let params = vec![0.0; model.num_params() + 1];
    let x = Array2::<f32>::zeros((1, 3));
    model.evaluate(&params, x.view(), &[0], &mut Workspace::new(&model, 1));
}
