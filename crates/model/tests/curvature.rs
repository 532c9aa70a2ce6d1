//! The curvature probe against closed forms and finite differences, and
//! gradient clipping on a cost with a cliff.

use downpour_model::clip::{clip_by_norm, clip_by_value};
use downpour_model::curvature::{MinibatchObjective, Objective, l2_norm, probe_curvature};
use downpour_model::{Mlp, ModelDescription, ModelSpec, Workspace};
use ndarray::Array2;
use rand::distr::{Distribution, Uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// J(θ) = ½θ'Aθ − b'θ with a symmetric A, so ∇J = Aθ − b and H = A.
struct Quadratic {
    a: [[f64; 3]; 3],
    b: [f64; 3],
}

impl Objective for Quadratic {
    fn loss_and_gradient(&mut self, theta: &[f32], out: &mut [f32]) -> f64 {
        let theta: Vec<f64> = theta.iter().map(|&v| f64::from(v)).collect();
        let mut loss = 0.0;
        for i in 0..3 {
            let row: f64 = (0..3).map(|j| self.a[i][j] * theta[j]).sum();
            out[i] = (row - self.b[i]) as f32;
            loss += 0.5 * theta[i] * row - self.b[i] * theta[i];
        }
        loss
    }

    fn hessian_vector_product(&mut self, _: &[f32], direction: &[f32], out: &mut [f32]) {
        for (row, value) in self.a.iter().zip(out.iter_mut()) {
            let product: f64 = row
                .iter()
                .zip(direction)
                .map(|(&a, &v)| a * f64::from(v))
                .sum();
            *value = product as f32;
        }
    }
}

/// Returns g'g and g'Ag of the quadratic at θ, in f64.
fn quadratic_terms(quadratic: &Quadratic, theta: &[f32; 3]) -> (f64, f64) {
    let theta64: Vec<f64> = theta.iter().map(|&v| f64::from(v)).collect();
    let g: Vec<f64> = (0..3)
        .map(|i| (0..3).map(|j| quadratic.a[i][j] * theta64[j]).sum::<f64>() - quadratic.b[i])
        .collect();
    let gg: f64 = g.iter().map(|v| v * v).sum();
    let ghg: f64 = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .map(|(i, j)| g[i] * quadratic.a[i][j] * g[j])
        .sum();
    (gg, ghg)
}

#[test]
fn quadratic_curvature_is_exact() {
    let mut quadratic = Quadratic {
        a: [[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]],
        b: [1.0, -2.0, 0.5],
    };
    let theta = [0.5f32, 0.25, -1.0];
    let learning_rate = 0.3;
    let probe = probe_curvature(&theta, learning_rate, 0.0, &mut quadratic);

    let (gg, ghg) = quadratic_terms(&quadratic, &theta);
    assert!(
        (probe.gradient_norm_squared - gg).abs() < 1e-6 * gg,
        "{probe:?}"
    );
    assert!(
        (probe.curvature - ghg).abs() < 1e-6 * ghg,
        "{probe:?} vs {ghg}"
    );
    let predicted = 0.5 * learning_rate * learning_rate * ghg - learning_rate * gg;
    assert!((probe.predicted_change - predicted).abs() < 1e-6 * predicted.abs());
    // With these values ½ε²·g'Hg < ε·g'g, so the step lowers J.
    assert!(!probe.ill_conditioned);

    let steep = probe_curvature(&theta, 1.0, 0.0, &mut quadratic);
    assert_eq!(steep.ill_conditioned, 0.5 * ghg > gg, "{steep:?}");
    assert!(steep.ill_conditioned);
}

#[test]
fn quadratic_with_weight_decay_is_exact() {
    // J + ½λ‖θ‖² is the quadratic with A + λI.
    let a = [[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]];
    let b = [1.0, -2.0, 0.5];
    let weight_decay = 0.25;
    let theta = [0.5f32, 0.25, -1.0];
    let probe = probe_curvature(&theta, 0.3, weight_decay, &mut Quadratic { a, b });

    let mut decayed = a;
    for (i, row) in decayed.iter_mut().enumerate() {
        row[i] += weight_decay;
    }
    let (gg, ghg) = quadratic_terms(&Quadratic { a: decayed, b }, &theta);
    assert!(
        (probe.gradient_norm_squared - gg).abs() < 1e-6 * gg,
        "{probe:?}"
    );
    assert!(
        (probe.curvature - ghg).abs() < 1e-6 * ghg,
        "{probe:?} vs {ghg}"
    );
}

#[test]
fn quadratic_step_matches_prediction() {
    // For a quadratic the second-order prediction is the exact change.
    let mut quadratic = Quadratic {
        a: [[2.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.5]],
        b: [0.0, 0.0, 0.0],
    };
    let theta = [1.0f32, 1.0, 1.0];
    let learning_rate = 0.25;
    let probe = probe_curvature(&theta, learning_rate, 0.0, &mut quadratic);
    let mut g = [0.0f32; 3];
    let before = quadratic.loss_and_gradient(&theta, &mut g);
    let stepped: Vec<f32> = theta
        .iter()
        .zip(&g)
        .map(|(&t, &gi)| t - learning_rate as f32 * gi)
        .collect();
    let after = quadratic.loss_and_gradient(&stepped, &mut [0.0; 3]);
    assert!(
        ((after - before) - probe.predicted_change).abs() < 1e-5 * probe.predicted_change.abs(),
        "{} vs {}",
        after - before,
        probe.predicted_change
    );
    assert!(probe.ill_conditioned, "a rise of the cost must be flagged");
    assert!(after > before);
}

fn mlp_and_batch(hidden: &[usize], seed: u64) -> (Mlp, Vec<f32>, Array2<f32>, Vec<u32>) {
    let spec = if hidden.is_empty() {
        ModelSpec::Softmax
    } else {
        ModelSpec::Mlp {
            hidden: hidden.to_vec(),
        }
    };
    let description = ModelDescription::new(&spec, 6, 3).expect("valid sizes");
    let model = Mlp::new(&description).expect("valid description");
    let params = model.init_params(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
    let x = Array2::from_shape_fn((32, 6), |_| uniform.sample(&mut rng));
    let labels = (0..32).map(|_| rng.random_range(0..3u32)).collect();
    (model, params, x, labels)
}

/// Returns θ + t·v, computed in f64 and rounded to f32.
fn shifted(params: &[f32], direction: &[f32], t: f64) -> Vec<f32> {
    params
        .iter()
        .zip(direction)
        .map(|(&p, &v)| (f64::from(p) + t * f64::from(v)) as f32)
        .collect()
}

/// Finite-difference step of the checks below. On these models a step of
/// 1e-3 along a unit direction crosses no ReLU kink at the seeds used, and
/// the f32 gradients then differ by far more than their rounding.
const STEP: f64 = 1e-3;

#[test]
fn mlp_hessian_product_matches_gradient_difference() {
    for hidden in [&[][..], &[8], &[8, 5]] {
        for seed in [1, 2, 3] {
            let (model, params, x, labels) = mlp_and_batch(hidden, seed);
            let mut workspace = Workspace::new(&model, x.nrows());
            let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
            let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
            let raw: Vec<f32> = (0..params.len())
                .map(|_| uniform.sample(&mut rng))
                .collect();
            let norm = l2_norm(&raw);
            let direction: Vec<f32> = raw.iter().map(|&v| (f64::from(v) / norm) as f32).collect();

            let mut gradient = vec![0.0f32; params.len()];
            let mut product = vec![0.0f32; params.len()];
            let loss = model.hessian_vector_product(
                &params,
                &direction,
                x.view(),
                &labels,
                &mut gradient,
                &mut product,
            );
            let mut expected_gradient = vec![0.0f32; params.len()];
            let expected_loss = model.loss_and_gradient(
                &params,
                x.view(),
                &labels,
                &mut expected_gradient,
                &mut workspace,
            );
            assert!((loss - expected_loss).abs() <= 1e-6 * expected_loss.abs());
            for (a, b) in gradient.iter().zip(&expected_gradient) {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "{hidden:?} seed {seed}: gradient {a} vs {b}"
                );
            }

            // H·v ≈ (∇J(θ + h·v) − ∇J(θ − h·v)) / 2h, compared as vectors.
            let mut plus = vec![0.0f32; params.len()];
            let mut minus = vec![0.0f32; params.len()];
            let forward = shifted(&params, &direction, STEP);
            let backward = shifted(&params, &direction, -STEP);
            model.loss_and_gradient(&forward, x.view(), &labels, &mut plus, &mut workspace);
            model.loss_and_gradient(&backward, x.view(), &labels, &mut minus, &mut workspace);
            let difference: Vec<f32> = plus
                .iter()
                .zip(&minus)
                .map(|(&p, &m)| ((f64::from(p) - f64::from(m)) / (2.0 * STEP)) as f32)
                .collect();
            let error: Vec<f32> = product
                .iter()
                .zip(&difference)
                .map(|(a, b)| a - b)
                .collect();
            let relative = l2_norm(&error) / l2_norm(&difference);
            assert!(
                relative < 1e-2,
                "{hidden:?} seed {seed}: ‖Hv − difference‖ / ‖difference‖ = {relative}"
            );
        }
    }
}

#[test]
fn mlp_probe_matches_gradient_difference() {
    for seed in [1, 2, 3] {
        let (model, params, x, labels) = mlp_and_batch(&[8, 5], seed);
        let mut workspace = Workspace::new(&model, x.nrows());
        let mut objective = MinibatchObjective {
            model: &model,
            features: x.view(),
            labels: &labels,
            workspace: &mut workspace,
        };
        let probe = probe_curvature(&params, 0.1, 0.0, &mut objective);

        // g'Hg = ‖g‖²·u'Hu with u = g/‖g‖, and u'Hu is the derivative of
        // u'∇J along u, estimated from a central difference of gradients.
        let mut g = vec![0.0f32; params.len()];
        objective.loss_and_gradient(&params, &mut g);
        let norm = l2_norm(&g);
        let unit: Vec<f32> = g.iter().map(|&v| (f64::from(v) / norm) as f32).collect();
        let mut plus = vec![0.0f32; params.len()];
        let mut minus = vec![0.0f32; params.len()];
        objective.loss_and_gradient(&shifted(&params, &unit, STEP), &mut plus);
        objective.loss_and_gradient(&shifted(&params, &unit, -STEP), &mut minus);
        let along: f64 = unit
            .iter()
            .zip(plus.iter().zip(&minus))
            .map(|(&u, (&p, &m))| f64::from(u) * (f64::from(p) - f64::from(m)))
            .sum::<f64>()
            / (2.0 * STEP);
        let expected = norm * norm * along;
        assert!(
            (probe.curvature - expected).abs() <= 1e-2 * expected.abs(),
            "seed {seed}: probe {} vs gradient difference {expected}",
            probe.curvature
        );
        assert!((probe.gradient_norm_squared - norm * norm).abs() < 1e-9);
        let predicted = 0.5 * 0.1 * 0.1 * probe.curvature - 0.1 * norm * norm;
        assert!((probe.predicted_change - predicted).abs() < 1e-12);
    }
}

/// J(x, y) = ½(x² + y²) in a valley for x ≤ 1, and a wall of slope
/// `WALL_SLOPE` in x beyond it.
const WALL_SLOPE: f32 = 1000.0;

fn cliff_gradient(theta: &[f32]) -> [f32; 2] {
    let wall = if theta[0] > 1.0 { WALL_SLOPE } else { 0.0 };
    [theta[0] + wall, theta[1]]
}

fn sgd_step(theta: &[f32; 2], gradient: &[f32; 2], learning_rate: f32) -> [f32; 2] {
    [
        theta[0] - learning_rate * gradient[0],
        theta[1] - learning_rate * gradient[1],
    ]
}

#[test]
fn clipping_keeps_theta_near_cliff() {
    // θ is just past the edge of the valley, on the wall.
    let theta = [1.01f32, 0.5];
    let learning_rate = 0.1;

    let unclipped = sgd_step(&theta, &cliff_gradient(&theta), learning_rate);
    let thrown = ((unclipped[0] - theta[0]).powi(2) + (unclipped[1] - theta[1]).powi(2)).sqrt();
    assert!(thrown > 50.0, "the unclipped step moves θ by {thrown}");

    let mut by_norm = cliff_gradient(&theta);
    let norm = clip_by_norm(&mut by_norm, 1.0);
    assert!(norm > 1000.0);
    let clipped = sgd_step(&theta, &by_norm, learning_rate);
    let moved = ((clipped[0] - theta[0]).powi(2) + (clipped[1] - theta[1]).powi(2)).sqrt();
    assert!(
        moved <= 0.1 + 1e-6,
        "the norm-clipped step moves θ by {moved}"
    );
    assert!(clipped[0] < 1.0, "θ must land back in the valley");

    let mut by_value = cliff_gradient(&theta);
    assert_eq!(clip_by_value(&mut by_value, 1.0), 1);
    let clipped = sgd_step(&theta, &by_value, learning_rate);
    let moved = ((clipped[0] - theta[0]).powi(2) + (clipped[1] - theta[1]).powi(2)).sqrt();
    assert!(moved < 0.2, "the value-clipped step moves θ by {moved}");
}
