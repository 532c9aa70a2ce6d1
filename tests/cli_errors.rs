//! Bad input ends `downpour train` with a one-line error that names the file
//! or flag, a non-zero exit status, no panic, and no run directory.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use downpour_data::idx;

/// Writes a valid, small MNIST-shaped folder (raw IDX, 100 training and 20
/// test examples) and returns its path.
fn small_mnist(dir: &Path) -> PathBuf {
    let data = dir.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    for (prefix, count) in [("train", 100usize), ("t10k", 20)] {
        let pixels: Vec<u8> = (0..count * 28 * 28).map(|i| (i % 251) as u8).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        idx::write_idx(
            &data.join(format!("{prefix}-images-idx3-ubyte")),
            &[count, 28, 28],
            &pixels,
            false,
        )
        .unwrap();
        idx::write_idx(
            &data.join(format!("{prefix}-labels-idx1-ubyte")),
            &[count],
            &labels,
            false,
        )
        .unwrap();
    }
    data
}

/// Runs `downpour train` with `args` and checks the failure; returns the
/// error line.
fn train_fails(dir: &Path, args: &[&str]) -> String {
    let run_dir = dir.join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_downpour"))
        .arg("train")
        .args(args)
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--validation-size")
        .arg("10")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success(), "train succeeded with {args:?}");
    assert!(
        !stderr.contains("panicked"),
        "panic with {args:?}:\n{stderr}"
    );
    assert!(
        !run_dir.exists(),
        "a run directory was created with {args:?}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    errors[0].to_owned()
}

fn assert_mentions(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            line.to_lowercase().contains(&part.to_lowercase()),
            "{line:?} does not mention {part:?}"
        );
    }
}

#[test]
fn missing_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");

    let line = train_fails(dir.path(), &["--data", missing.to_str().unwrap()]);

    assert_mentions(&line, &[missing.to_str().unwrap(), "not found"]);
}

#[test]
fn label_column_none_in_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("flowers.csv");
    std::fs::write(&data, "width,height,kind\n1,2,rose\n3,4,tulip\n").unwrap();

    let line = train_fails(
        dir.path(),
        &["--data", data.to_str().unwrap(), "--label-column", "none"],
    );

    assert_mentions(&line, &["--label-column none", "downpour predict"]);
}

#[test]
fn single_class_training_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("roses.csv");
    std::fs::write(&data, "width,height,kind\n1,2,rose\n3,4,rose\n5,6,rose\n").unwrap();

    let line = train_fails(
        dir.path(),
        &[
            "--data",
            data.to_str().unwrap(),
            "--model",
            "softmax",
            "--validation-fraction",
            "0.34",
            "--test-fraction",
            "0.34",
        ],
    );

    assert_mentions(
        &line,
        &[data.to_str().unwrap(), "1 class", "--label-column"],
    );
}

#[test]
fn unreadable_images_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let images = data.join("train-images-idx3-ubyte");
    std::fs::remove_file(&images).unwrap();
    std::fs::create_dir(&images).unwrap();

    let line = train_fails(dir.path(), &["--data", data.to_str().unwrap()]);

    assert_mentions(&line, &[images.to_str().unwrap()]);
}

#[test]
fn wrong_magic_number() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let images = data.join("train-images-idx3-ubyte");
    std::fs::write(&images, [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1]).unwrap();

    let line = train_fails(dir.path(), &["--data", data.to_str().unwrap()]);

    assert_mentions(&line, &[images.to_str().unwrap(), "magic", "0x12345678"]);
}

#[test]
fn truncated_images_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let images = data.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() / 2]).unwrap();

    let line = train_fails(dir.path(), &["--data", data.to_str().unwrap()]);

    assert_mentions(&line, &[images.to_str().unwrap(), "truncated"]);
}

#[test]
fn image_and_label_counts_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let labels = data.join("train-labels-idx1-ubyte");
    idx::write_idx(&labels, &[99], &[0; 99], false).unwrap();

    let line = train_fails(dir.path(), &["--data", data.to_str().unwrap()]);

    assert_mentions(&line, &[labels.to_str().unwrap(), "100", "99"]);
}

#[test]
fn label_outside_class_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let labels = data.join("train-labels-idx1-ubyte");
    let mut values = vec![3u8; 100];
    values[42] = 12;
    idx::write_idx(&labels, &[100], &values, false).unwrap();

    let line = train_fails(dir.path(), &["--data", data.to_str().unwrap()]);

    assert_mentions(&line, &[labels.to_str().unwrap(), "12", "42"]);
}

#[test]
fn unknown_model_spec() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());

    let line = train_fails(
        dir.path(),
        &["--data", data.to_str().unwrap(), "--model", "mlp:abc"],
    );

    assert_mentions(&line, &["--model", "mlp:abc"]);
}

#[test]
fn zero_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());

    let line = train_fails(
        dir.path(),
        &["--data", data.to_str().unwrap(), "--workers", "0"],
    );

    assert_mentions(&line, &["--workers", "at least 1"]);
}

#[test]
fn test_split_of_other_shape() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let pixels = vec![0u8; 20 * 28 * 14];
    idx::write_idx(
        &data.join("t10k-images-idx3-ubyte"),
        &[20, 28, 14],
        &pixels,
        false,
    )
    .unwrap();

    let line = train_fails(dir.path(), &["--data", data.to_str().unwrap()]);

    assert_mentions(&line, &[data.to_str().unwrap(), "392", "784"]);
}

#[test]
fn model_too_large_for_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());

    let line = train_fails(
        dir.path(),
        &[
            "--data",
            data.to_str().unwrap(),
            "--model",
            "mlp:100000,100000",
        ],
    );

    assert_mentions(&line, &["--model mlp:100000,100000", "parameters", "GiB"]);
}

#[test]
fn invalid_consistency_and_transport_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_mnist(dir.path());
    let data = data.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["--consistency", "bounded"],
            &["--consistency", "bounded:2"],
        ),
        (
            &["--consistency", "sync", "--fetch-every", "2"],
            &["--fetch-every", "sync"],
        ),
        (&["--push-every", "0"], &["--push-every", "0"]),
        (&["--fetch-every", "0"], &["--fetch-every", "0"]),
        (&["--dc-lambda", "-1"], &["--dc-lambda", "-1"]),
        (&["--target-accuracy", "1.5"], &["--target-accuracy", "1.5"]),
    ];

    for (flags, mentions) in cases {
        let mut args = vec!["--data", data];
        args.extend_from_slice(flags);
        let line = train_fails(dir.path(), &args);
        assert_mentions(&line, mentions);
    }
}

#[test]
fn roles_without_a_token_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short-token");
    std::fs::write(&short, "tiny\n").unwrap();
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["ps", "--listen", "127.0.0.1:0"],
            &["DOWNPOUR_TOKEN", "--token-file"],
        ),
        (
            &["worker", "--coordinator", "127.0.0.1:9"],
            &["DOWNPOUR_TOKEN"],
        ),
        (
            &["coordinator", "--listen", "127.0.0.1:0"],
            &["DOWNPOUR_TOKEN"],
        ),
        (
            &[
                "ps",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                short.to_str().unwrap(),
            ],
            &["short-token", "shorter than 16"],
        ),
    ];

    for (args, mentions) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_downpour"))
            .args(args)
            .env_remove("DOWNPOUR_TOKEN")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no error line for {args:?}:\n{stderr}"));
        assert_mentions(line, mentions);
    }
}
