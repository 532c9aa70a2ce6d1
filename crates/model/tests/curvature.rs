//! The curvature probe against closed forms and finite differences, and
//! gradient clipping on a cost with a cliff.

use downpour_model::clip::{clip_by_norm, clip_by_value};
use downpour_model::curvature::{l2_norm, probe_curvature};
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

impl Quadratic {
    fn gradient(&self, theta: &[f32], out: &mut [f32]) -> f64 {
        let theta: Vec<f64> = theta.iter().map(|&v| f64::from(v)).collect();
        let mut loss = 0.0;
        for i in 0..3 {
            let row: f64 = (0..3).map(|j| self.a[i][j] * theta[j]).sum();
            out[i] = (row - self.b[i]) as f32;
            loss += 0.5 * theta[i] * row - self.b[i] * theta[i];
        }
        loss
    }
}

#[test]
fn quadratic_curvature_is_exact() {
    let quadratic = Quadratic {
        a: [[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]],
        b: [1.0, -2.0, 0.5],
    };
    let theta = [0.5f32, 0.25, -1.0];
    let learning_rate = 0.3;
    let probe = probe_curvature(&theta, learning_rate, |t, out| quadratic.gradient(t, out));

    let theta64: Vec<f64> = theta.iter().map(|&v| f64::from(v)).collect();
    let g: Vec<f64> = (0..3)
        .map(|i| (0..3).map(|j| quadratic.a[i][j] * theta64[j]).sum::<f64>() - quadratic.b[i])
        .collect();
    let gg: f64 = g.iter().map(|v| v * v).sum();
    let ghg: f64 = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .map(|(i, j)| g[i] * quadratic.a[i][j] * g[j])
        .sum();
    assert!(
        (probe.gradient_norm_squared - gg).abs() < 1e-5 * gg,
        "{probe:?}"
    );
    assert!(
        (probe.curvature - ghg).abs() < 1e-3 * ghg,
        "{probe:?} vs {ghg}"
    );
    let predicted = 0.5 * learning_rate * learning_rate * ghg - learning_rate * gg;
    assert!((probe.predicted_change - predicted).abs() < 1e-3 * predicted.abs());
    // With these values ½ε²·g'Hg < ε·g'g, so the step lowers J.
    assert!(!probe.ill_conditioned);

    let steep = probe_curvature(&theta, 1.0, |t, out| quadratic.gradient(t, out));
    assert_eq!(steep.ill_conditioned, 0.5 * ghg > gg, "{steep:?}");
    assert!(steep.ill_conditioned);
}

#[test]
fn quadratic_step_matches_prediction() {
    // For a quadratic the second-order prediction is the exact change.
    let quadratic = Quadratic {
        a: [[2.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.5]],
        b: [0.0, 0.0, 0.0],
    };
    let theta = [1.0f32, 1.0, 1.0];
    let learning_rate = 0.25;
    let probe = probe_curvature(&theta, learning_rate, |t, out| quadratic.gradient(t, out));
    let mut g = [0.0f32; 3];
    let before = quadratic.gradient(&theta, &mut g);
    let stepped: Vec<f32> = theta
        .iter()
        .zip(&g)
        .map(|(&t, &gi)| t - learning_rate as f32 * gi)
        .collect();
    let after = quadratic.gradient(&stepped, &mut [0.0; 3]);
    assert!(
        ((after - before) - probe.predicted_change).abs() < 1e-3 * probe.predicted_change.abs(),
        "{} vs {}",
        after - before,
        probe.predicted_change
    );
    assert!(probe.ill_conditioned, "a rise of the cost must be flagged");
    assert!(after > before);
}

fn mlp_and_batch(seed: u64) -> (Mlp, Vec<f32>, Array2<f32>, Vec<u32>) {
    let description =
        ModelDescription::new(&ModelSpec::Mlp { hidden: vec![8] }, 6, 3).expect("valid sizes");
    let model = Mlp::new(&description).expect("valid description");
    let params = model.init_params(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
    let x = Array2::from_shape_fn((32, 6), |_| uniform.sample(&mut rng));
    let labels = (0..32).map(|_| rng.random_range(0..3u32)).collect();
    (model, params, x, labels)
}

/// Mean cross-entropy at θ, summed in f64.
fn mean_loss(model: &Mlp, params: &[f32], x: &Array2<f32>, labels: &[u32]) -> f64 {
    let mut workspace = Workspace::new(model, x.nrows());
    model
        .evaluate(params, x.view(), labels, &mut workspace)
        .mean_loss()
}

#[test]
fn mlp_curvature_matches_second_difference() {
    for seed in [1, 2, 3] {
        let (model, params, x, labels) = mlp_and_batch(seed);
        let mut workspace = Workspace::new(&model, x.nrows());
        let probe = probe_curvature(&params, 0.1, |theta, out| {
            f64::from(model.loss_and_gradient(theta, x.view(), &labels, out, &mut workspace))
        });

        // g'Hg = ‖g‖²·u'Hu, and u'Hu is the second derivative of J along
        // u = g/‖g‖, estimated from three costs.
        let mut g = vec![0.0f32; params.len()];
        model.loss_and_gradient(&params, x.view(), &labels, &mut g, &mut workspace);
        let norm = l2_norm(&g);
        // The same step as the probe's: along a line through a ReLU
        // network J is piecewise smooth, and both differences then average
        // its second derivative over the same stretch.
        let h = probe.step;
        let along = |t: f64| -> Vec<f32> {
            params
                .iter()
                .zip(&g)
                .map(|(&p, &gi)| (f64::from(p) + t * f64::from(gi) / norm) as f32)
                .collect()
        };
        let second = (mean_loss(&model, &along(h), &x, &labels)
            - 2.0 * mean_loss(&model, &params, &x, &labels)
            + mean_loss(&model, &along(-h), &x, &labels))
            / (h * h);
        let expected = norm * norm * second;
        assert!(
            (probe.curvature - expected).abs() <= 0.05 * expected.abs() + 1e-6,
            "seed {seed}: probe {} vs second difference {expected}",
            probe.curvature
        );
        assert!((probe.gradient_norm_squared - norm * norm).abs() < 1e-9);
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
