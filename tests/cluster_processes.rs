//! The roles as separate OS processes, started the way the README shows:
//! `downpour ps`, `downpour coordinator` and two `downpour worker`, on
//! 127.0.0.1 with ports chosen by the OS.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::nodes::{Node, path_arg};

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn separate_processes_train_mnist_subset() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 2_000);
    let run_dir = dir.path().join("run");

    let mut ps = Node::start("ps", &["ps", "--listen", "127.0.0.1:0"]);
    let ps_address = ps.listening_address();
    let mut coordinator = Node::start(
        "coordinator",
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--ps",
            &ps_address,
            "--data",
            path_arg(&data),
            "--validation-size",
            "1000",
            "--workers",
            "2",
            "--model",
            "mlp:64",
            "--eval-every",
            "40",
            "--patience",
            "5",
            "--max-epochs",
            "10",
            "--run-dir",
            path_arg(&run_dir),
        ],
    );
    let coordinator_address = coordinator.listening_address();
    let mut workers: Vec<Node> = ["worker-a", "worker-b"]
        .into_iter()
        .map(|name| {
            Node::start(
                "worker",
                &[
                    "worker",
                    "--coordinator",
                    &coordinator_address,
                    "--name",
                    name,
                ],
            )
        })
        .collect();

    let deadline = Instant::now() + TIMEOUT;
    let status = coordinator.wait(deadline);
    assert!(
        status.success(),
        "coordinator failed:\n{}",
        coordinator.log.join("\n")
    );
    for worker in &mut workers {
        let status = worker.wait(deadline);
        assert!(
            status.success(),
            "worker failed:\n{}",
            worker.log.join("\n")
        );
    }
    let status = ps.wait(deadline);
    assert!(
        status.success(),
        "parameter server failed:\n{}",
        ps.log.join("\n")
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!(
        accuracy >= 0.80,
        "test accuracy {accuracy} after {} epochs, stopped by {}",
        summary["epochs"],
        summary["stop_reason"]
    );
    assert_eq!(summary["workers"].as_u64(), Some(2));
    let per_worker = summary["per_worker"].as_array().unwrap();
    let names: Vec<&str> = per_worker
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"worker-a") && names.contains(&"worker-b"),
        "{names:?}"
    );
    let pushes: Vec<u64> = per_worker
        .iter()
        .map(|w| w["pushes"].as_u64().unwrap())
        .collect();
    assert!(
        pushes.iter().all(|&p| p > 0),
        "pushes per worker {pushes:?}"
    );
    // In async mode every applied push is one update, and θ is frozen at
    // the stop, so the per-worker pushes add up to the updates.
    assert_eq!(
        summary["updates"].as_u64().unwrap(),
        pushes.iter().sum::<u64>()
    );
    let stop_reason = summary["stop_reason"].as_str().unwrap();
    assert!(
        ["early_stopping", "max_epochs"].contains(&stop_reason),
        "{stop_reason}"
    );
    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    assert_eq!(
        events.lines().count() as u64,
        summary["evaluations"].as_u64().unwrap()
    );

    // `downpour eval` on the saved best θ reproduces the test accuracy.
    let output = Command::new(env!("CARGO_BIN_EXE_downpour"))
        .args(["eval", "--checkpoint"])
        .arg(run_dir.join("best.safetensors"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let scored: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(scored["accuracy"].as_f64(), Some(accuracy));
    assert_eq!(scored["examples"].as_u64(), Some(2_000));
}
