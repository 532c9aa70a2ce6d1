//! `downpour train` shows a progress bar on a terminal and plain log lines
//! without one. The terminal is a pseudo-terminal from util-linux's
//! `script`, which Debian installs on every system.

mod support;

use std::path::Path;
use std::process::Command;

/// Arguments of a short run on `data` into `run_dir`.
fn train_args(data: &Path, run_dir: &Path) -> Vec<String> {
    [
        "train",
        "--data",
        &data.display().to_string(),
        "--model",
        "mlp:16",
        "--validation-size",
        "500",
        "--eval-every",
        "10",
        "--max-epochs",
        "1",
        "--run-dir",
        &run_dir.display().to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// Quotes `arg` for a POSIX shell.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[test]
fn terminal_gets_a_progress_bar() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = support::mnist_subset(&dir.path().join("mnist"), 1_500, 100);
    let mut command_line = vec![quote(env!("CARGO_BIN_EXE_downpour"))];
    command_line.extend(
        train_args(&data, &dir.path().join("run"))
            .iter()
            .map(|arg| quote(arg)),
    );
    // -e returns the command's exit status and -q leaves out script's own
    // start and end lines; the typescript goes to /dev/null.
    let output = Command::new("script")
        .args(["-qec", &command_line.join(" "), "/dev/null"])
        .output()
        .expect("run script");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "train failed:\n{screen}");
    assert!(
        screen.contains("/1 | updates"),
        "no progress bar in:\n{screen}"
    );
    assert!(screen.contains("examples/s"), "{screen}");
    // The per-pass log lines, which carry the training loss, give way to
    // the bar.
    assert!(!screen.contains("train loss"), "{screen}");
    assert!(screen.contains("test accuracy"), "no summary in:\n{screen}");
}

#[test]
fn pipe_gets_plain_log_lines() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = support::mnist_subset(&dir.path().join("mnist"), 1_500, 100);
    let output = Command::new(env!("CARGO_BIN_EXE_downpour"))
        .args(train_args(&data, &dir.path().join("run")))
        .output()
        .expect("run downpour");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "train failed:\n{stderr}");
    assert!(
        stderr.contains("train loss"),
        "no progress lines in:\n{stderr}"
    );
    assert!(!stderr.contains("/1 | updates"), "a bar in:\n{stderr}");
}
