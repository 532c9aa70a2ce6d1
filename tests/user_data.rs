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
use downpour_data::formats::{Format, LabelColumn};
use downpour_data::mnist;
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
