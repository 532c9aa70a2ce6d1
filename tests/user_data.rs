//! Whole in-process clusters trained on the user-data formats: the real
//! agaricus data as LIBSVM, and a subset of the bundled MNIST written as CSV
//! with text labels and as a NumPy pair.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::fmt::Write as _;
use std::future::pending;
use std::path::{Path, PathBuf};
use std::time::Duration;

use downpour_coordinator::{CoordinatorConfig, RunSummary, prepare};
use downpour_data::checkpoint;
use downpour_data::formats::{Format, LabelColumn};
use downpour_data::mnist;
use downpour_data::scaling::ScaleMethod;
use downpour_model::ModelSpec;
use downpour_proto::auth::ClusterToken;
use downpour_worker::WorkerConfig;
use tokio::net::TcpListener;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Clusters in this file run one at a time, so that they do not starve
/// each other's workers on a small machine.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Trains a softmax regression on `data` with `workers` workers and one
/// parameter server in this process, with `adjust` applied to the settings.
async fn train(
    data: &Path,
    run_dir: &Path,
    workers: usize,
    adjust: impl FnOnce(&mut CoordinatorConfig),
) -> RunSummary {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let ps_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ps_address = ps_listener.local_addr().unwrap().to_string();
    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let mut config = CoordinatorConfig {
        data: data.to_owned(),
        model: ModelSpec::Softmax,
        workers,
        batch_size: 32,
        eval_every: 20,
        patience: 8,
        max_epochs: 20,
        ..CoordinatorConfig::with_defaults(run_dir.to_owned(), vec![ps_address])
    };
    adjust(&mut config);
    let prepared = prepare(config).unwrap();
    let token = ClusterToken::random();

    let server = tokio::spawn(downpour_ps::serve(ps_listener, token.clone(), pending()));
    let worker_tasks: Vec<_> = (0..workers)
        .map(|index| {
            let config = WorkerConfig {
                coordinator: coordinator_address.clone(),
                ps: None,
                name: format!("test-{index}"),
                connect_timeout: Duration::from_secs(10),
                token: token.clone(),
            };
            tokio::spawn(downpour_worker::run(config, pending()))
        })
        .collect();
    let summary = timeout(
        TIMEOUT,
        downpour_coordinator::run(prepared, coordinator_listener, token, pending()),
    )
    .await
    .expect("training finished in time")
    .expect("training succeeded");
    for worker in worker_tasks {
        let report = timeout(TIMEOUT, worker).await.unwrap().unwrap();
        report.expect("worker stopped cleanly");
    }
    timeout(TIMEOUT, server)
        .await
        .expect("parameter server stopped after the run")
        .unwrap()
        .unwrap();
    summary
}

fn agaricus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/agaricus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agaricus_libsvm_three_workers() {
    let dir = tempfile::tempdir().unwrap();
    let summary = train(
        &agaricus().join("agaricus.txt.train"),
        &dir.path().join("run"),
        3,
        |config| {
            config.input.format = Some(Format::Libsvm);
            config.input.test_data = Some(agaricus().join("agaricus.txt.test"));
        },
    )
    .await;

    let accuracy = summary.test_accuracy.expect("a test split");
    assert!(accuracy >= 0.99, "test accuracy {accuracy}");
    assert_eq!(summary.test_examples, 1611);
    assert_eq!(summary.splits.format, "libsvm");
    assert_eq!(summary.splits.classes, ["0", "1"]);
    assert_eq!(summary.splits.features, 126);
    assert_eq!(summary.splits.validation.source, "fraction");
    assert_eq!(summary.splits.validation.examples, 651);
    assert_eq!(summary.train_examples, 6513 - 651);
    let test = summary.splits.test.as_ref().expect("test record");
    assert_eq!(test.source, "file");

    // Every push was sparse and carried fewer values than θ holds.
    assert_eq!(summary.gradients, "sparse");
    let traffic = summary.push_traffic;
    assert!(traffic.pushes > 0, "{traffic:?}");
    assert_eq!(traffic.sparse_pushes, traffic.pushes, "{traffic:?}");
    assert!(
        traffic.values < traffic.pushes * summary.parameters as u64,
        "{traffic:?}"
    );

    // `eval` and `predict` on the saved checkpoint agree with the run.
    let checkpoint = dir.path().join("run/best.safetensors");
    let test_file = agaricus().join("agaricus.txt.test");
    let eval = run_binary(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
        "--format",
        "libsvm",
    ]);
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(eval["examples"], 1611);
    let eval_accuracy = eval["accuracy"].as_f64().unwrap();
    assert!((eval_accuracy - accuracy).abs() < 1e-12, "{eval_accuracy}");

    let predictions = dir.path().join("predictions.csv");
    run_binary(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--data",
        test_file.to_str().unwrap(),
        "--format",
        "libsvm",
        "--output",
        predictions.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&predictions).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,class,label,p_0,p_1"));
    let labels: Vec<String> = std::fs::read_to_string(&test_file)
        .unwrap()
        .lines()
        .map(|line| line.split(' ').next().unwrap().to_owned())
        .collect();
    let mut correct = 0;
    let mut rows = 0;
    for (line, label) in lines.zip(&labels) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 5, "{line}");
        let p0: f32 = fields[3].parse().unwrap();
        let p1: f32 = fields[4].parse().unwrap();
        assert!((p0 + p1 - 1.0).abs() < 1e-5, "{line}");
        let expected_class = if p1 > p0 { "1" } else { "0" };
        assert_eq!(fields[1], expected_class, "{line}");
        assert_eq!(fields[2], expected_class, "{line}");
        correct += usize::from(fields[2] == label);
        rows += 1;
    }
    assert_eq!(rows, 1611);
    let predict_accuracy = correct as f64 / 1611.0;
    assert!(
        (predict_accuracy - accuracy).abs() < 1e-12,
        "{predict_accuracy}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agaricus_dense_flag_pushes_dense() {
    let dir = tempfile::tempdir().unwrap();
    let summary = train(
        &agaricus().join("agaricus.txt.train"),
        &dir.path().join("run"),
        2,
        |config| {
            config.input.format = Some(Format::Libsvm);
            config.input.test_data = Some(agaricus().join("agaricus.txt.test"));
            config.dense = true;
        },
    )
    .await;

    let accuracy = summary.test_accuracy.expect("a test split");
    assert!(accuracy >= 0.99, "test accuracy {accuracy}");
    assert_eq!(summary.gradients, "dense");
    let traffic = summary.push_traffic;
    assert!(traffic.pushes > 0, "{traffic:?}");
    assert_eq!(traffic.sparse_pushes, 0, "{traffic:?}");
    assert_eq!(
        traffic.values,
        traffic.pushes * summary.parameters as u64,
        "{traffic:?}"
    );
}

/// Runs the `downpour` binary with `args`, checks that it succeeded and
/// returns its standard output.
fn run_binary(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_downpour"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "downpour {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const DIGIT_NAMES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Returns the first `count` bundled MNIST training images, scaled to
/// [0, 1], with their labels.
fn mnist_rows(count: usize) -> (Vec<f32>, Vec<u32>) {
    let splits = mnist::load_dir(&support::bundled_mnist()).unwrap();
    let rows: Vec<usize> = (0..count).collect();
    let subset = splits.train.select(&rows);
    (subset.to_f32().into_raw_vec_and_offset().0, subset.labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mnist_csv_with_text_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, labels) = mnist_rows(3000);
    let mut text = String::from("digit");
    for pixel in 0..784 {
        write!(text, ",p{pixel}").unwrap();
    }
    text.push_str("\r\n");
    for (row, label) in labels.iter().enumerate() {
        text.push('"');
        text.push_str(DIGIT_NAMES[*label as usize]);
        text.push('"');
        for value in &pixels[row * 784..(row + 1) * 784] {
            write!(text, ",{value:.4}").unwrap();
        }
        text.push_str("\r\n");
    }
    let path = dir.path().join("digits.csv");
    std::fs::write(&path, text).unwrap();

    let summary = train(&path, &dir.path().join("run"), 2, |config| {
        config.input.read.csv.label_column = LabelColumn::Name("digit".to_owned());
    })
    .await;

    let accuracy = summary.test_accuracy.expect("a held-out test split");
    assert!(accuracy >= 0.8, "test accuracy {accuracy}");
    assert_eq!(summary.splits.format, "csv");
    assert_eq!(
        summary.splits.classes,
        [
            "eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"
        ]
    );
    assert_eq!(summary.splits.features, 784);
    assert_eq!(summary.test_examples, 300);
    assert_eq!(summary.validation_examples, 300);
    assert_eq!(summary.train_examples, 2400);
    let test = summary.splits.test.as_ref().expect("test record");
    assert_eq!(test.source, "fraction");
    assert_eq!(test.fraction, Some(0.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mnist_npy_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, labels) = mnist_rows(3000);
    let features = dir.path().join("X_digits.npy");
    let mut writer = {
        use npyz::WriterBuilder;
        npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[3000, 784])
            .writer(std::io::BufWriter::new(
                std::fs::File::create(&features).unwrap(),
            ))
            .begin_nd()
            .unwrap()
    };
    writer.extend(pixels).unwrap();
    writer.finish().unwrap();
    let labels: Vec<i64> = labels.into_iter().map(i64::from).collect();
    npyz::to_file_1d(dir.path().join("y_digits.npy"), labels).unwrap();

    let summary = train(&features, &dir.path().join("run"), 2, |config| {
        config.input.validation_fraction = Some(0.2);
    })
    .await;

    let accuracy = summary.test_accuracy.expect("a held-out test split");
    assert!(accuracy >= 0.8, "test accuracy {accuracy}");
    assert_eq!(summary.splits.format, "npy");
    assert_eq!(summary.splits.classes.len(), 10);
    assert_eq!(summary.validation_examples, 600);
    assert_eq!(summary.test_examples, 300);
}

/// Runs `downpour train` with `args`, checks that it failed with one error
/// line and created no run directory, and returns that line.
fn train_error(dir: &Path, args: &[&str]) -> String {
    let run_dir = dir.join("run");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_downpour"))
        .arg("train")
        .args(args)
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "train succeeded with {args:?}");
    assert!(
        !stderr.contains("panicked"),
        "panic with {args:?}:\n{stderr}"
    );
    assert!(!run_dir.exists(), "a run directory was created");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    errors[0].to_owned()
}

#[test]
fn train_reports_bad_user_data() {
    let dir = tempfile::tempdir().unwrap();
    let agaricus_train = agaricus().join("agaricus.txt.train");
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "a,b,y\r\n1,2,x\r\n3,four,y\r\n").unwrap();
    let zero_based = dir.path().join("zero.svm");
    std::fs::write(&zero_based, "1 0:1 3:1\n").unwrap();

    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--data", agaricus_train.to_str().unwrap()],
            format!(
                "error: {}: cannot tell the data format from the file name; give --format idx, \
                 csv, libsvm or npy",
                agaricus_train.display()
            ),
        ),
        (
            vec!["--data", csv.to_str().unwrap()],
            format!(
                "error: {}: line 3, column 2: \"four\" is not a number; fix the value or give \
                 --fill-value",
                csv.display()
            ),
        ),
        (
            vec!["--data", zero_based.to_str().unwrap()],
            format!(
                "error: {}: line 1, column 3: index 0 in a file read as 1-based; if the file's \
                 indices count from 0, give --zero-based",
                zero_based.display()
            ),
        ),
        (
            vec![
                "--data",
                agaricus_train.to_str().unwrap(),
                "--format",
                "libsvm",
                "--validation-fraction",
                "1",
            ],
            "error: --validation-fraction must be in (0, 1), got 1".to_owned(),
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(train_error(dir.path(), &args), expected, "{args:?}");
    }
}

/// True weights, bias and per-feature spread of the generated regression
/// data: y = w·x + b + ε with ε ~ N(0, NOISE_STD²), and feature j drawn as
/// CENTERS[j] + SPREADS[j]·N(0, 1).
const TRUE_WEIGHTS: [f64; 4] = [2.0, -0.5, 0.03, 8.0];
const TRUE_BIAS: f64 = 1.5;
const CENTERS: [f64; 4] = [0.0, 10.0, -50.0, 0.5];
const SPREADS: [f64; 4] = [1.0, 4.0, 30.0, 0.2];
const NOISE_STD: f64 = 0.1;

/// SplitMix64 with Box–Muller normals, so the data needs no random crate
/// and is the same on every machine.
struct Normals(u64);

impl Normals {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits in (0, 1].
        ((z >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Writes `rows` examples of the linear relation as CSV with a header and
/// the target last, each feature shifted by `shift`, and returns the rows.
fn write_regression_csv(path: &Path, rows: usize, seed: u64, shift: f64) -> Vec<[f64; 4]> {
    let mut normals = Normals(seed);
    let mut text = String::from("x0,x1,x2,x3,y\n");
    let mut features = Vec::with_capacity(rows);
    for _ in 0..rows {
        let x: [f64; 4] =
            std::array::from_fn(|j| CENTERS[j] + SPREADS[j] * normals.normal() + shift);
        let y = TRUE_BIAS
            + x.iter().zip(TRUE_WEIGHTS).map(|(x, w)| x * w).sum::<f64>()
            + NOISE_STD * normals.normal();
        writeln!(text, "{},{},{},{},{y}", x[0], x[1], x[2], x[3]).unwrap();
        features.push(x);
    }
    std::fs::write(path, text).unwrap();
    features
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_regression_recovers_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("linear.csv");
    write_regression_csv(&data, 4000, 11, 0.0);
    let summary = train(&data, &dir.path().join("run"), 2, |config| {
        config.model = ModelSpec::Linear;
        config.scale = ScaleMethod::Standardize;
        config.learning_rate = 0.01;
        config.patience = 10;
    })
    .await;

    assert_eq!(summary.task, "regression");
    assert!(summary.splits.classes.is_empty());
    assert_eq!(summary.test_accuracy, None);
    assert_eq!(summary.best_validation_error, None);
    let noise = NOISE_STD * NOISE_STD;
    let best_mse = summary.best_validation_mse.expect("a validation MSE");
    let test_mse = summary.test_mse.expect("a test MSE");
    // The MSE of the true relation is the noise variance, 0.01. A fit from
    // 3,200 training rows comes within a few percent of it.
    assert!(best_mse < 1.3 * noise, "validation MSE {best_mse}");
    assert!(best_mse > 0.7 * noise, "validation MSE {best_mse}");
    assert!(test_mse < 1.3 * noise, "test MSE {test_mse}");

    // Undo the standardization to get the weights of the raw features.
    let checkpoint = dir.path().join("run/best.safetensors");
    let (description, params, metadata) = checkpoint::load_with_metadata(&checkpoint).unwrap();
    assert_eq!(description.spec, "linear");
    let scaling = metadata.scaling.expect("scaling in the metadata");
    assert_eq!(scaling.method, ScaleMethod::Standardize);
    let mut bias = f64::from(params[4]);
    for j in 0..4 {
        let weight = f64::from(params[j]) / f64::from(scaling.divisor[j]);
        bias -= weight * f64::from(scaling.offset[j]);
        // Tolerance in target units per standard deviation of the feature:
        // 0.02, a fifth of the noise standard deviation.
        let error = (weight - TRUE_WEIGHTS[j]).abs() * SPREADS[j];
        assert!(error < 0.02, "weight {j}: {weight} vs {}", TRUE_WEIGHTS[j]);
    }
    assert!((bias - TRUE_BIAS).abs() < 0.05, "bias {bias}");

    // `eval` and `predict` read the scaling from the checkpoint.
    let eval = run_binary(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(eval["examples"], 4000);
    let eval_mse = eval["mse"].as_f64().unwrap();
    assert!(eval_mse < 1.3 * noise, "eval MSE {eval_mse}");

    let predictions = run_binary(&[
        "predict",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let mut lines = predictions.lines();
    assert_eq!(lines.next(), Some("row,value"));
    let targets: Vec<f64> = std::fs::read_to_string(&data)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let mut squared = 0.0;
    for (line, target) in lines.zip(&targets) {
        let value: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
        squared += (value - target) * (value - target);
    }
    let predict_mse = squared / targets.len() as f64;
    assert!(
        (predict_mse - eval_mse).abs() < 1e-6,
        "predict MSE {predict_mse}, eval MSE {eval_mse}"
    );
}

#[test]
fn scaling_ignores_held_out_rows() {
    let dir = tempfile::tempdir().unwrap();
    let train_file = dir.path().join("train.csv");
    let validation_file = dir.path().join("validation.csv");
    let test_file = dir.path().join("test.csv");
    let train_rows = write_regression_csv(&train_file, 300, 1, 0.0);
    // Held-out rows shifted far away would move any statistic they entered.
    write_regression_csv(&validation_file, 100, 2, 1000.0);
    write_regression_csv(&test_file, 100, 3, -1000.0);
    for method in [ScaleMethod::Standardize, ScaleMethod::Minmax] {
        let config = CoordinatorConfig {
            data: train_file.clone(),
            model: ModelSpec::Linear,
            scale: method,
            ..CoordinatorConfig::with_defaults(
                dir.path().join(format!("run-{method}")),
                vec!["127.0.0.1:1".to_owned()],
            )
        };
        let mut config = config;
        config.input.validation_data = Some(validation_file.clone());
        config.input.test_data = Some(test_file.clone());
        let prepared = prepare(config).unwrap();
        let scaling = prepared.scaling.clone().expect("fitted scaling");
        assert_eq!(prepared.train_examples, 300);
        for j in 0..4 {
            let column: Vec<f64> = train_rows
                .iter()
                .map(|row| f64::from(row[j] as f32))
                .collect();
            let (offset, divisor) = match method {
                ScaleMethod::Minmax => {
                    let min = column.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = column.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (min, max - min)
                }
                _ => {
                    let mean = column.iter().sum::<f64>() / 300.0;
                    let variance =
                        column.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 300.0;
                    (mean, variance.sqrt())
                }
            };
            let tolerance = 1e-5 * (1.0 + offset.abs());
            let fitted = f64::from(scaling.offset[j]);
            assert!(
                (fitted - offset).abs() < tolerance,
                "{method} offset {j}: {fitted} vs {offset}"
            );
            let fitted = f64::from(scaling.divisor[j]);
            assert!(
                (fitted - divisor).abs() < 1e-5 * divisor,
                "{method} divisor {j}: {fitted} vs {divisor}"
            );
        }
        // The validation split is scaled with the training statistics, so
        // its shift of 1000 shows as 1000 / divisor.
        let first = prepared.validation.features.column(0);
        let mean = first.iter().map(|&x| f64::from(x)).sum::<f64>() / first.len() as f64;
        let expected_shift = 1000.0 / f64::from(scaling.divisor[0]);
        assert!(
            mean > 0.9 * expected_shift,
            "{method} validation mean {mean}"
        );
    }
}

#[test]
fn train_reports_bad_regression_targets() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("targets.csv");
    std::fs::write(&csv, "a,b,y\n1,2,0.5\n3,4,high\n").unwrap();
    let npy_features = dir.path().join("X_train.npy");
    let npy_labels = dir.path().join("y_train.npy");
    write_npy_f32(&npy_features, &[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    write_npy_f32(&npy_labels, &[0.5, f32::NAN], &[2]);

    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--data", csv.to_str().unwrap(), "--model", "linear"],
            format!(
                "error: {}: line 3, column 3: regression target \"high\" is not a finite \
                 number; a linear model needs a numeric target in every row (fix or drop the \
                 row, or train a classifier such as --model softmax)",
                csv.display()
            ),
        ),
        (
            vec!["--model", "linear"],
            format!(
                "error: {}: IDX files hold class labels, so they cannot train a linear \
                 regression; use a CSV, LIBSVM or NumPy file with real targets, or a classifier \
                 such as --model softmax",
                "data/mnist"
            ),
        ),
        (
            vec!["--data", csv.to_str().unwrap(), "--scale", "zscore"],
            "error: invalid value 'zscore' for '--scale <SCALE>': unknown scaling \"zscore\"; \
             expected none, standardize or minmax"
                .to_owned(),
        ),
        (
            vec![
                "--data",
                csv.to_str().unwrap(),
                "--model",
                "linear",
                "--target-accuracy",
                "0.9",
            ],
            "error: --target-accuracy applies to classifiers, but --model linear is a \
             regression; use --target-mse"
                .to_owned(),
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(train_error(dir.path(), &args), expected, "{args:?}");
    }
    // The NumPy reader rejects a NaN label for either task.
    let args = [
        "--data",
        npy_features.to_str().unwrap(),
        "--model",
        "linear",
    ];
    let error = train_error(dir.path(), &args);
    assert!(error.contains(npy_labels.to_str().unwrap()), "{error}");
    assert!(error.contains("row 1 is not a finite number"), "{error}");
}

fn write_npy_f32(path: &Path, values: &[f32], shape: &[u64]) {
    use npyz::WriterBuilder;
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut bytes)
        .begin_nd()
        .unwrap();
    writer.extend(values.iter().copied()).unwrap();
    writer.finish().unwrap();
    std::fs::write(path, bytes).unwrap();
}
