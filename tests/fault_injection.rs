//! Fault injection against real processes on 127.0.0.1: a parameter server,
//! a coordinator and three async workers train a subset of the bundled
//! MNIST while the test kills or pauses one of them. Each faulty run is
//! compared with a fault-free run of the same seed and settings.
//!
//! Every scenario prints one line with the training examples used per
//! epoch, the acknowledged updates lost and the test-accuracy gap. The
//! scenarios run one at a time, because each starts five processes and
//! their timing matters.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::nodes::{Node, path_arg, refs};

const TIMEOUT: Duration = Duration::from_secs(300);

/// Training examples per epoch: the 16,000 of the subset minus the 2,000
/// held out for validation.
const TRAIN_EXAMPLES: u64 = 14_000;
const EPOCHS: usize = 10;
const WORKERS: usize = 3;

/// Largest test-accuracy difference from the fault-free run, in
/// percentage points.
const MAX_GAP_PP: f64 = 1.0;

/// Serializes the scenarios, so that one's processes do not slow another's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the MNIST subset every scenario trains on and returns its folder.
fn subset(dir: &Path) -> PathBuf {
    support::mnist_subset(&dir.join("mnist"), 16_000, 10_000)
}

/// Returns the coordinator's settings, shared by faulty and fault-free runs. The
/// run always lasts `EPOCHS` epochs, so both see the same number of
/// examples. Momentum 0.5, because three async workers at 0.9 sometimes
/// stall on this small subset.
fn coordinator_args(data: &Path, run_dir: &Path, ps: &str, seed: u64) -> Vec<String> {
    [
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--ps",
        ps,
        "--data",
        path_arg(data),
        "--validation-size",
        "2000",
        "--workers",
        &WORKERS.to_string(),
        "--model",
        "mlp:64",
        "--momentum",
        "0.5",
        "--lr",
        "0.1",
        "--eval-every",
        "40",
        "--patience",
        "1000",
        "--max-epochs",
        &EPOCHS.to_string(),
        "--lease-timeout",
        "2",
        "--seed",
        &seed.to_string(),
        "--run-dir",
        path_arg(run_dir),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// A running cluster of one parameter server, a coordinator and workers.
struct Cluster {
    ps: Node,
    ps_args: Vec<String>,
    ps_address: String,
    coordinator: Node,
    coordinator_args: Vec<String>,
    coordinator_address: String,
    workers: Vec<Node>,
    run_dir: PathBuf,
}

impl Cluster {
    /// Starts the cluster; `ps_extra` goes to the parameter server.
    fn start(data: &Path, run_dir: &Path, seed: u64, ps_extra: &[&str]) -> Self {
        let mut ps_args: Vec<String> = ["ps", "--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(ps_extra.iter().copied())
            .map(str::to_owned)
            .collect();
        let mut ps = Node::start("ps", &refs(&ps_args));
        let ps_address = ps.listening_address();
        // A restarted server listens where the workers look for it.
        ps_args[2].clone_from(&ps_address);

        let mut coordinator_args = coordinator_args(data, run_dir, &ps_address, seed);
        let mut coordinator = Node::start("coordinator", &refs(&coordinator_args));
        let coordinator_address = coordinator.listening_address();
        coordinator_args[2].clone_from(&coordinator_address);

        let workers = (0..WORKERS)
            .map(|_| Node::start("worker", &["worker", "--coordinator", &coordinator_address]))
            .collect();
        Self {
            ps,
            ps_args,
            ps_address,
            coordinator,
            coordinator_args,
            coordinator_address,
            workers,
            run_dir: run_dir.to_owned(),
        }
    }

    /// Waits for every process to exit successfully and returns the run's
    /// summary and the workers' log lines.
    fn finish(mut self, deadline: Instant) -> (Value, Vec<String>) {
        let status = self.coordinator.wait(deadline);
        assert!(
            status.success(),
            "coordinator failed:\n{}",
            self.coordinator.log.join("\n")
        );
        for worker in &mut self.workers {
            let status = worker.wait(deadline);
            assert!(
                status.success(),
                "worker failed:\n{}",
                worker.log.join("\n")
            );
        }
        let status = self.ps.wait(deadline);
        assert!(
            status.success(),
            "parameter server failed:\n{}",
            self.ps.log.join("\n")
        );
        let text = std::fs::read_to_string(self.run_dir.join("summary.json")).unwrap();
        let worker_log = self
            .workers
            .iter()
            .flat_map(|worker| worker.log.iter().cloned())
            .collect();
        (serde_json::from_str(&text).unwrap(), worker_log)
    }
}

/// Runs the cluster with no fault and returns the summary.
fn fault_free(data: &Path, dir: &Path, seed: u64) -> Value {
    let cluster = Cluster::start(data, &dir.join(format!("clean-{seed}")), seed, &[]);
    cluster.finish(Instant::now() + TIMEOUT).0
}

fn kill(node: &mut Node) {
    node.child.kill().unwrap();
    node.child.wait().unwrap();
}

fn signal(node: &Node, name: &str) {
    let pid = node.child.id().to_string();
    let status = Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {name} {pid}");
}

/// Returns a delay in `[low_ms, high_ms)` drawn from `seed`, so each seed
/// injects its fault at its own point of the run.
fn delay_for(seed: u64, low_ms: u64, high_ms: u64) -> Duration {
    // SplitMix64, one step.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    Duration::from_millis(low_ms + z % (high_ms - low_ms))
}

/// Checks what every scenario promises: the run went to its last epoch,
/// each epoch used every training example, no acknowledged update was
/// lost, and the test accuracy is within `MAX_GAP_PP` of the fault-free
/// run. Prints the scenario's line of the report.
fn check_and_report(scenario: &str, faulty: &Value, clean: &Value) {
    assert_eq!(
        faulty["stop_reason"].as_str(),
        Some("max_epochs"),
        "{scenario}"
    );
    let usage = faulty["epoch_usage"].as_array().unwrap();
    let examples: Vec<u64> = usage
        .iter()
        .map(|u| u["examples"].as_u64().unwrap())
        .collect();
    let reassigned: u64 = usage
        .iter()
        .map(|u| u["reassigned_examples"].as_u64().unwrap())
        .sum();
    let updates_lost = faulty["updates_lost"].as_u64().unwrap();
    let faulty_accuracy = faulty["test_accuracy"].as_f64().unwrap();
    let clean_accuracy = clean["test_accuracy"].as_f64().unwrap();
    let gap_pp = 100.0 * (faulty_accuracy - clean_accuracy);
    println!(
        "fault scenario {scenario}: examples per epoch {examples:?}, reassigned examples {reassigned}, updates lost {updates_lost}, test accuracy {faulty_accuracy:.4} vs fault-free {clean_accuracy:.4}, gap {gap_pp:+.2} pp"
    );

    assert_eq!(examples.len(), EPOCHS, "{scenario}: {usage:?}");
    for (epoch, &used) in examples.iter().enumerate() {
        assert_eq!(
            used, TRAIN_EXAMPLES,
            "{scenario}: epoch {epoch} did not use every example exactly once"
        );
    }
    assert_eq!(updates_lost, 0, "{scenario}: acknowledged updates lost");
    // In async mode every applied push is one update; θ is frozen at the
    // stop, so the per-worker pushes add up to the updates.
    let pushes: u64 = faulty["per_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pushes"].as_u64().unwrap())
        .sum();
    assert_eq!(faulty["updates"].as_u64().unwrap(), pushes, "{scenario}");
    assert!(
        gap_pp.abs() <= MAX_GAP_PP,
        "{scenario}: test accuracy {faulty_accuracy} is {gap_pp:+.2} pp from the fault-free run's {clean_accuracy}"
    );
}

fn leases_lost(summary: &Value) -> u64 {
    summary["per_worker"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["leases_lost"].as_u64().unwrap())
        .sum()
}

/// Kills a worker with SIGKILL at a point drawn from the seed. It loses its
/// lease, and its unfinished minibatches go to the other workers.
fn killed_worker(seed: u64) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let clean = fault_free(&data, dir.path(), seed);

    let deadline = Instant::now() + TIMEOUT;
    let mut cluster = Cluster::start(&data, &dir.path().join("faulty"), seed, &[]);
    cluster
        .coordinator
        .wait_for_line("training started", deadline);
    thread::sleep(delay_for(seed, 300, 2_500));
    let mut victim = cluster.workers.remove((seed % WORKERS as u64) as usize);
    kill(&mut victim);
    cluster
        .coordinator
        .wait_for_line("worker lease expired", deadline);
    let (faulty, _) = cluster.finish(deadline);

    assert_eq!(leases_lost(&faulty), 1);
    check_and_report(&format!("killed worker (seed {seed})"), &faulty, &clean);
}

#[test]
fn killed_worker_seed_1() {
    killed_worker(1);
}

#[test]
fn killed_worker_seed_2() {
    killed_worker(2);
}

#[test]
fn killed_worker_seed_3() {
    killed_worker(3);
}

/// A parameter server killed with SIGKILL between two checkpoints and
/// restarted with `--restore` resumes at the version of its last
/// checkpoint. The workers send it again the pushes it had acknowledged
/// after that checkpoint, so none is lost.
#[test]
fn killed_parameter_server_restores() {
    let _serial = serial();
    let seed = 42;
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let clean = fault_free(&data, dir.path(), seed);

    let deadline = Instant::now() + TIMEOUT;
    let checkpoints = dir.path().join("checkpoints");
    let mut cluster = Cluster::start(
        &data,
        &dir.path().join("faulty"),
        seed,
        &[
            "--checkpoint-dir",
            path_arg(&checkpoints),
            "--checkpoint-every",
            "50",
        ],
    );
    let written = cluster.ps.wait_for_line("version=500", deadline);
    assert!(written.contains("checkpoint written"), "{written}");
    // Pushes acknowledged after the checkpoint are what the restart loses.
    thread::sleep(Duration::from_millis(120));
    kill(&mut cluster.ps);

    let mut restore_args = cluster.ps_args.clone();
    restore_args.push("--restore".to_owned());
    cluster.ps = Node::start("ps", &refs(&restore_args));
    let line = cluster
        .ps
        .wait_for_line("restored from its checkpoint", deadline);
    let version: u64 = line
        .split("version=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(version >= 500, "{line}");
    assert_eq!(version % 50, 0, "a checkpoint every 50 updates: {line}");
    assert_eq!(cluster.ps_address, cluster.ps.listening_address());
    let (faulty, worker_log) = cluster.finish(deadline);

    // Each worker that had pushes acknowledged after the checkpoint logs
    // how many it sent again.
    let replayed: u64 = worker_log
        .iter()
        .filter(|line| line.contains("sending it the pushes it lost"))
        .filter_map(|line| line.split("replayed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(faulty["updates"].as_u64().unwrap() > version);
    check_and_report(
        &format!(
            "killed parameter server, restored at version {version}, {replayed} pushes replayed"
        ),
        &faulty,
        &clean,
    );
}

/// A coordinator killed with SIGKILL mid-run and started again with
/// `--resume` goes on with the same run: same schedule, same workers.
#[test]
fn killed_coordinator_resumes() {
    let _serial = serial();
    let seed = 7;
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let clean = fault_free(&data, dir.path(), seed);

    let deadline = Instant::now() + TIMEOUT;
    let mut cluster = Cluster::start(&data, &dir.path().join("faulty"), seed, &[]);
    cluster
        .coordinator
        .wait_for_line("epoch complete", deadline);
    thread::sleep(delay_for(seed, 100, 600));
    kill(&mut cluster.coordinator);
    // The workers keep retrying while no coordinator is listening.
    thread::sleep(Duration::from_millis(500));

    let mut resume_args = cluster.coordinator_args.clone();
    resume_args.push("--resume".to_owned());
    cluster.coordinator = Node::start("coordinator", &refs(&resume_args));
    let resumed = cluster
        .coordinator
        .wait_for_line("resuming the run", deadline);
    eprintln!("{resumed}");
    assert_eq!(
        cluster.coordinator.listening_address(),
        cluster.coordinator_address
    );
    let (faulty, _) = cluster.finish(deadline);

    assert_eq!(faulty["workers"].as_u64(), Some(WORKERS as u64));
    check_and_report("killed coordinator, resumed", &faulty, &clean);
}

/// A worker stopped with SIGSTOP for longer than its lease loses it. After
/// SIGCONT it learns so, registers again and trains on.
#[test]
fn paused_worker_registers_again() {
    let _serial = serial();
    let seed = 5;
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let clean = fault_free(&data, dir.path(), seed);

    let deadline = Instant::now() + TIMEOUT;
    let mut cluster = Cluster::start(&data, &dir.path().join("faulty"), seed, &[]);
    cluster
        .coordinator
        .wait_for_line("epoch complete", deadline);
    signal(&cluster.workers[0], "-STOP");
    cluster
        .coordinator
        .wait_for_line("worker lease expired", deadline);
    signal(&cluster.workers[0], "-CONT");
    cluster.workers[0].wait_for_line("registering again", deadline);
    let (faulty, _) = cluster.finish(deadline);

    assert!(leases_lost(&faulty) >= 1);
    check_and_report("paused worker (SIGSTOP past its lease)", &faulty, &clean);
}
