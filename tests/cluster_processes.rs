//! The roles as separate OS processes, started the way the README shows:
//! `downpour ps`, `downpour coordinator` and two `downpour worker`, on
//! 127.0.0.1 with ports chosen by the OS.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(300);

/// The cluster token every process gets through DOWNPOUR_TOKEN.
const TOKEN: &str = "test-token-0123456789";

/// A child process whose standard error is collected line by line.
struct Node {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Node {
    fn start(name: &'static str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_downpour"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("DOWNPOUR_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start downpour");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for the "... listening address=HOST:PORT" line and returns the
    /// address.
    fn listening_address(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            self.log.push(line.clone());
            if line.contains("listening")
                && let Some(rest) = line.split("address=").nth(1)
            {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        panic!(
            "{} never reported its address:\n{}",
            self.name,
            self.log.join("\n")
        );
    }

    /// Waits for a log line that contains `text` and returns it.
    fn wait_for_line(&mut self, text: &str, deadline: Instant) -> String {
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            self.log.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
        panic!(
            "{} never logged {text:?}:\n{}",
            self.name,
            self.log.join("\n")
        );
    }

    fn wait(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.log.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("poll child") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                    self.log.push(line);
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit in time:\n{}",
                    self.name,
                    self.log.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

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

/// A parameter server killed with SIGKILL mid-run and restarted with
/// `--restore` resumes at the version of its last checkpoint, the workers
/// and the coordinator retry until it is back, and the run finishes.
#[test]
fn parameter_server_resumes_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 1_000);
    let run_dir = dir.path().join("run");
    let checkpoints = dir.path().join("checkpoints");
    let ps_args = |address: &str| {
        vec![
            "ps".to_owned(),
            "--listen".to_owned(),
            address.to_owned(),
            "--checkpoint-dir".to_owned(),
            path_arg(&checkpoints).to_owned(),
            "--checkpoint-every".to_owned(),
            "50".to_owned(),
        ]
    };
    let first_args = ps_args("127.0.0.1:0");
    let mut ps = Node::start("ps", &refs(&first_args));
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
            "1000",
            "--max-epochs",
            "12",
            "--run-dir",
            path_arg(&run_dir),
        ],
    );
    let coordinator_address = coordinator.listening_address();
    let mut workers: Vec<Node> = (0..2)
        .map(|_| Node::start("worker", &["worker", "--coordinator", &coordinator_address]))
        .collect();

    let deadline = Instant::now() + TIMEOUT;
    let written = ps.wait_for_line("version=150", deadline);
    assert!(written.contains("checkpoint written"), "{written}");
    ps.child.kill().unwrap();
    ps.child.wait().unwrap();

    let mut restore_args = ps_args(&ps_address);
    restore_args.push("--restore".to_owned());
    let mut restored = Node::start("ps", &refs(&restore_args));
    let line = restored.wait_for_line("restored from its checkpoint", deadline);
    let version: u64 = line
        .split("version=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(version >= 150, "{line}");
    assert_eq!(
        version % 50,
        0,
        "a checkpoint is written every 50 updates: {line}"
    );

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
    let status = restored.wait(deadline);
    assert!(
        status.success(),
        "restored server failed:\n{}",
        restored.log.join("\n")
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["stop_reason"].as_str(), Some("max_epochs"));
    assert!(summary["updates"].as_u64().unwrap() > version);
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.80, "test accuracy {accuracy}");
}

/// Starts a parameter server, a coordinator for `workers` async workers
/// and the workers, on 127.0.0.1, and returns them.
fn start_cluster(
    data: &Path,
    run_dir: &Path,
    workers: usize,
    extra: &[&str],
) -> (Node, Node, Vec<Node>) {
    let mut ps = Node::start("ps", &["ps", "--listen", "127.0.0.1:0"]);
    let ps_address = ps.listening_address();
    let workers_arg = workers.to_string();
    let mut args = vec![
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--ps",
        &ps_address,
        "--data",
        path_arg(data),
        "--validation-size",
        "1000",
        "--workers",
        &workers_arg,
        "--model",
        "mlp:64",
        "--eval-every",
        "40",
        "--patience",
        "1000",
        "--run-dir",
        path_arg(run_dir),
    ];
    args.extend_from_slice(extra);
    let mut coordinator = Node::start("coordinator", &args);
    let coordinator_address = coordinator.listening_address();
    let nodes = (0..workers)
        .map(|_| Node::start("worker", &["worker", "--coordinator", &coordinator_address]))
        .collect();
    (ps, coordinator, nodes)
}

fn read_summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

/// A worker killed with SIGKILL mid-run loses its lease, and its unfinished
/// minibatches go to the other workers. Every finished epoch still uses
/// every training example, and the run ends.
#[test]
fn killed_worker_loses_lease() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 1_000);
    // Momentum 0.5, because three asynchronous workers at 0.9 sometimes
    // stall on this small subset.
    let extra = [
        "--max-epochs",
        "6",
        "--lease-timeout",
        "1",
        "--momentum",
        "0.5",
    ];
    let deadline = Instant::now() + TIMEOUT;

    let clean_dir = dir.path().join("clean");
    let (mut ps, mut coordinator, mut workers) = start_cluster(&data, &clean_dir, 3, &extra);
    assert!(
        coordinator.wait(deadline).success(),
        "{}",
        coordinator.log.join("\n")
    );
    for worker in &mut workers {
        assert!(worker.wait(deadline).success(), "{}", worker.log.join("\n"));
    }
    assert!(ps.wait(deadline).success());
    let clean = read_summary(&clean_dir);

    let run_dir = dir.path().join("faulty");
    let (mut ps, mut coordinator, mut workers) = start_cluster(&data, &run_dir, 3, &extra);
    coordinator.wait_for_line("epoch complete", deadline);
    // Mid-epoch, a worker most likely has a range it has not finished.
    thread::sleep(Duration::from_millis(150));
    let mut victim = workers.remove(0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let expired = coordinator.wait_for_line("worker lease expired", deadline);
    eprintln!("{expired}");
    assert!(
        coordinator.wait(deadline).success(),
        "{}",
        coordinator.log.join("\n")
    );
    for worker in &mut workers {
        assert!(worker.wait(deadline).success(), "{}", worker.log.join("\n"));
    }
    assert!(ps.wait(deadline).success());
    let faulty = read_summary(&run_dir);

    assert_eq!(faulty["stop_reason"].as_str(), Some("max_epochs"));
    let usage = faulty["epoch_usage"].as_array().unwrap();
    assert_eq!(usage.len(), 6, "{usage:?}");
    for (epoch, used) in usage.iter().enumerate() {
        assert_eq!(
            used["examples"].as_u64(),
            Some(5_000),
            "epoch {epoch} did not use every example once: {used}"
        );
    }
    let reassigned: u64 = usage
        .iter()
        .map(|u| u["reassigned_examples"].as_u64().unwrap())
        .sum();
    let leases_lost: u64 = faulty["per_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["leases_lost"].as_u64().unwrap())
        .sum();
    assert_eq!(leases_lost, 1);
    let gap = clean["test_accuracy"].as_f64().unwrap() - faulty["test_accuracy"].as_f64().unwrap();
    eprintln!(
        "killed worker: examples per epoch {:?}, reassigned examples {reassigned}, updates lost 0, accuracy gap {:.4}",
        usage
            .iter()
            .map(|u| u["examples"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        gap
    );
    assert!(
        faulty["test_accuracy"].as_f64().unwrap() >= 0.80,
        "{}",
        faulty["test_accuracy"]
    );
}

/// A worker stopped with SIGSTOP for longer than its lease loses it. After
/// SIGCONT the coordinator reports the lost lease, the worker registers
/// again, and the run finishes with every process exiting cleanly.
#[test]
fn paused_worker_registers_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 1_000);
    let run_dir = dir.path().join("run");
    let deadline = Instant::now() + TIMEOUT;
    let (mut ps, mut coordinator, mut workers) = start_cluster(
        &data,
        &run_dir,
        3,
        &["--max-epochs", "8", "--lease-timeout", "1"],
    );

    coordinator.wait_for_line("epoch complete", deadline);
    let pid = workers[0].child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    coordinator.wait_for_line("worker lease expired", deadline);
    signal("-CONT");
    workers[0].wait_for_line("registering again", deadline);

    assert!(
        coordinator.wait(deadline).success(),
        "{}",
        coordinator.log.join("\n")
    );
    for worker in &mut workers {
        assert!(worker.wait(deadline).success(), "{}", worker.log.join("\n"));
    }
    assert!(ps.wait(deadline).success());
    let summary = read_summary(&run_dir);
    assert_eq!(summary["stop_reason"].as_str(), Some("max_epochs"));
    let usage = summary["epoch_usage"].as_array().unwrap();
    assert!(
        usage.iter().all(|u| u["examples"].as_u64() == Some(5_000)),
        "{usage:?}"
    );
}
