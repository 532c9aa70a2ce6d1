//! Every setting of every subcommand comes from a flag, a `DOWNPOUR_*`
//! environment variable or a `--config` TOML file, and a flag wins over
//! the environment, which wins over the file. `--print-config` reports the
//! value each setting ends up with and its source.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const ROLES: [&str; 5] = ["train", "coordinator", "ps", "worker", "eval"];

/// Three distinct valid values per setting: the file's, the environment's
/// and the command line's. Switches take true, then false, then the bare
/// flag, which is true.
fn layer_values(key: &str) -> Option<[&'static str; 3]> {
    let values = match key {
        "data" => ["\"file/data\"", "env/data", "flag/data"],
        "model" => ["\"softmax\"", "mlp:10", "mlp:20,10"],
        "workers" => ["3", "4", "5"],
        "batch_size" => ["8", "16", "32"],
        "lr" => ["0.1", "0.2", "0.3"],
        "momentum" => ["0.5", "0.6", "0.7"],
        "weight_decay" => ["0.001", "0.002", "0.003"],
        "warmup_updates" => ["100", "200", "300"],
        "seed" => ["1", "2", "3"],
        "eval_every" => ["10", "20", "30"],
        "patience" => ["1", "2", "3"],
        "target_accuracy" => ["0.9", "0.95", "0.97"],
        "target_mse" => ["0.1", "0.2", "0.3"],
        "scale" => ["\"standardize\"", "minmax", "none"],
        "max_epochs" => ["1", "2", "3"],
        "validation_size" => ["100", "200", "300"],
        "batches_per_work" => ["1", "2", "3"],
        "consistency" => ["\"bounded:1\"", "bounded:2", "bounded:3"],
        "staleness_scaling" | "push_bf16" | "dense" | "restore" | "resume" | "tensorboard"
        | "no_header" | "zero_based" => ["true", "false", ""],
        "clip_norm" | "clip_value" => ["1.5", "2.5", "3.5"],
        "checkpoint_seconds" => ["5.5", "6.5", "7.5"],
        "metrics_addr" => ["\"127.0.0.1:7\"", "127.0.0.1:8", "127.0.0.1:9"],
        "format" => ["\"csv\"", "libsvm", "npy"],
        "label_column" => ["\"price\"", "label", "target"],
        "delimiter" => ["\";\"", "tab", "|"],
        "fill_value" => ["1.5", "2.5", "-3.5"],
        "test_data" => ["\"file/test\"", "env/test", "flag/test"],
        "validation_data" => ["\"file/val\"", "env/val", "flag/val"],
        "test_fraction" | "validation_fraction" => ["0.1", "0.2", "0.3"],
        "dc_lambda" => ["0.1", "0.2", "0.3"],
        "push_every" | "fetch_every" => ["2", "3", "4"],
        "lease_timeout" => ["5.5", "6.5", "7.5"],
        "piece_mib" => ["1", "2", "3"],
        "run_dir" => ["\"file/run\"", "env/run", "flag/run"],
        "ps_shards" => ["2", "3", "4"],
        "listen" => ["\"127.0.0.1:1\"", "127.0.0.1:2", "127.0.0.1:3"],
        "ps" => ["[\"file:1\", \"file:2\"]", "env:1,env:2", "flag:1"],
        "coordinator" => ["\"file:7000\"", "env:7000", "flag:7000"],
        "name" => ["\"file-worker\"", "env-worker", "flag-worker"],
        "connect_timeout" => ["1", "2", "3"],
        "health_listen" => ["\"127.0.0.1:4\"", "127.0.0.1:5", "127.0.0.1:6"],
        "checkpoint_dir" => ["\"file/ckpt\"", "env/ckpt", "flag/ckpt"],
        "checkpoint_every" => ["10", "20", "30"],
        "checkpoint" => [
            "\"file.safetensors\"",
            "env.safetensors",
            "flag.safetensors",
        ],
        "split" => ["\"train\"", "test", "train"],
        "token_file" => ["\"file/token\"", "env/token", "flag/token"],
        "tls_ca" => ["\"file/ca.pem\"", "env/ca.pem", "flag/ca.pem"],
        "tls_cert" => ["\"file/cert.pem\"", "env/cert.pem", "flag/cert.pem"],
        "tls_key" => ["\"file/key.pem\"", "env/key.pem", "flag/key.pem"],
        _ => return None,
    };
    Some(values)
}

/// One setting as `--print-config` reports it.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    value: Option<toml::Value>,
    source: String,
}

fn run(args: &[String], env: &[(String, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_downpour"));
    command.env_clear().args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// Runs `downpour ROLE --print-config` and parses its report.
fn settings(role: &str, flags: &[String], env: &[(String, String)]) -> BTreeMap<String, Setting> {
    let mut args = vec![role.to_owned()];
    args.extend_from_slice(flags);
    args.push("--print-config".to_owned());
    let output = run(&args, env);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut settings = BTreeMap::new();
    for line in stdout.lines().skip(1) {
        if let Some(rest) = line.strip_prefix("# ") {
            let key = rest.strip_suffix(" is not set").unwrap();
            settings.insert(
                key.to_owned(),
                Setting {
                    value: None,
                    source: "unset".to_owned(),
                },
            );
            continue;
        }
        let (assignment, source) = line.rsplit_once("  # ").unwrap();
        let table: toml::Table = assignment.parse().unwrap();
        let (key, value) = table.into_iter().next().unwrap();
        let source = source.split(' ').next().unwrap().to_owned();
        settings.insert(
            key,
            Setting {
                value: Some(value),
                source,
            },
        );
    }
    settings
}

fn env_name(key: &str) -> String {
    format!("DOWNPOUR_{}", key.to_ascii_uppercase())
}

/// Returns the value that `text`, as the environment or a flag gives it,
/// reads back as in the report.
fn expected(text: &str, default: &toml::Value) -> toml::Value {
    if let toml::Value::Boolean(_) = default {
        return toml::Value::Boolean(matches!(text, "" | "true"));
    }
    if let toml::Value::Array(_) = default {
        return toml::Value::Array(
            text.split(',')
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        );
    }
    let line = format!("x = {text}");
    line.parse::<toml::Table>()
        .ok()
        .and_then(|table| table.get("x").cloned())
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn flag_args(key: &str, text: &str, default: Option<&toml::Value>) -> Vec<String> {
    let flag = format!("--{}", key.replace('_', "-"));
    match default {
        Some(toml::Value::Boolean(_)) => match text {
            "" | "true" => vec![flag],
            _ => Vec::new(),
        },
        _ => vec![flag, text.to_owned()],
    }
}

#[test]
fn every_setting_layers_flag_over_env_over_file() {
    let dir = tempfile::tempdir().unwrap();
    for role in ROLES {
        // `eval` requires --checkpoint, so its default report needs one.
        let base: Vec<String> = if role == "eval" {
            vec!["--checkpoint".into(), "base.safetensors".into()]
        } else {
            Vec::new()
        };
        let defaults = settings(role, &base, &[]);
        assert!(!defaults.is_empty(), "{role}: no settings reported");

        let mut file = String::new();
        let mut env = Vec::new();
        let mut flags = Vec::new();
        let mut checked = BTreeMap::new();
        for (key, setting) in &defaults {
            let values = match layer_values(key) {
                Some([file, env, flag]) => [file.to_owned(), env.to_owned(), flag.to_owned()],
                None => panic!(
                    "{role} {key}: no test values; give it three valid values in layer_values"
                ),
            };
            // The type of a setting without a default shows in its file value.
            let kind = setting.value.clone().unwrap_or_else(|| {
                let mut table: toml::Table = format!("x = {}", values[0]).parse().unwrap();
                table.remove("x").unwrap()
            });
            file.push_str(&format!("{key} = {}\n", values[0]));
            env.push((env_name(key), values[1].clone()));
            flags.extend(flag_args(key, &values[2], setting.value.as_ref()));
            checked.insert(key.clone(), (values, kind));
        }
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, &file).unwrap();
        let config = vec!["--config".to_owned(), path.display().to_string()];

        let from_file = settings(role, &config, &[]);
        let from_env = settings(role, &config, &env);
        let mut all_flags = config.clone();
        all_flags.extend(flags.iter().cloned());
        let from_flags = settings(role, &all_flags, &env);

        for (key, ([file_text, env_text, flag_text], kind)) in &checked {
            let file_value: toml::Value = format!("x = {file_text}")
                .parse::<toml::Table>()
                .unwrap()
                .remove("x")
                .unwrap();
            let got = &from_file[key];
            assert_eq!(got.source, "file", "{role} {key}: {got:?}");
            assert_eq!(
                got.value.as_ref(),
                Some(&file_value),
                "{role} {key} from the file"
            );

            let got = &from_env[key];
            assert_eq!(got.source, "environment", "{role} {key}: {got:?}");
            assert_eq!(
                got.value.as_ref(),
                Some(&expected(env_text, kind)),
                "{role} {key} from {}",
                env_name(key)
            );

            let got = &from_flags[key];
            let flag_source = if flag_text.is_empty() || !matches!(kind, toml::Value::Boolean(_)) {
                "command"
            } else {
                "environment"
            };
            assert_eq!(got.source, flag_source, "{role} {key}: {got:?}");
            assert_eq!(
                got.value.as_ref(),
                Some(&expected(flag_text, kind)),
                "{role} {key} from the command line"
            );
        }
    }
}

#[test]
fn role_table_beats_top_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(
        &path,
        "batch_size = 8\nlisten = \"127.0.0.1:9\"\n[coordinator]\nbatch_size = 9\n[ps]\nlisten = \"127.0.0.1:10\"\n",
    )
    .unwrap();
    let config = vec!["--config".to_owned(), path.display().to_string()];

    let coordinator = settings("coordinator", &config, &[]);
    assert_eq!(
        coordinator["batch_size"].value,
        Some(toml::Value::Integer(9))
    );
    assert_eq!(
        coordinator["listen"].value,
        Some(toml::Value::String("127.0.0.1:9".into()))
    );
    let train = settings("train", &config, &[]);
    assert_eq!(train["batch_size"].value, Some(toml::Value::Integer(8)));
    let ps = settings("ps", &config, &[]);
    assert_eq!(
        ps["listen"].value,
        Some(toml::Value::String("127.0.0.1:10".into()))
    );

    // DOWNPOUR_CONFIG names the file when --config does not.
    let env = vec![("DOWNPOUR_CONFIG".to_owned(), path.display().to_string())];
    let coordinator = settings("coordinator", &[], &env);
    assert_eq!(
        coordinator["batch_size"].value,
        Some(toml::Value::Integer(9))
    );
}

/// Runs `downpour ROLE --config FILE` with `text` as the file and returns
/// standard error of the failed run.
fn config_error(dir: &Path, role: &str, text: &str) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let output = run(
        &[
            role.to_owned(),
            "--config".to_owned(),
            path.display().to_string(),
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{role} with {text:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_config_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = config_error(dir.path(), "ps", "bogus = 1\n");
    assert!(stderr.contains("bogus: not a setting"), "{stderr}");
    let stderr = config_error(dir.path(), "coordinator", "batch_size = \"many\"\n");
    assert!(stderr.contains("batch_size = \"many\""), "{stderr}");
    assert!(stderr.contains("invalid digit"), "{stderr}");
    let stderr = config_error(dir.path(), "ps", "[ps]\nbatch_size = 3\n");
    assert!(
        stderr.contains("[ps] batch_size: not a setting of `downpour ps`"),
        "{stderr}"
    );
    let stderr = config_error(dir.path(), "train", "push_bf16 = \"maybe\"\n");
    assert!(stderr.contains("expected true or false"), "{stderr}");
    let stderr = config_error(dir.path(), "train", "model = [1, 2]\n");
    assert!(stderr.contains("not an array"), "{stderr}");
    let stderr = config_error(dir.path(), "worker", "name = [\n");
    assert!(stderr.contains("invalid TOML"), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");

    let output = run(
        &["ps".into(), "--config".into(), "missing.toml".into()],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("--config missing.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn file_and_env_settings_reach_worker() {
    // Nothing listens on this port: the worker dials the coordinator the
    // file names, for the time the environment sets, and gives up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.toml");
    std::fs::write(
        &path,
        format!("[worker]\ncoordinator = \"{address}\"\nconnect_timeout = 30\n"),
    )
    .unwrap();
    let output = run(
        &[
            "worker".into(),
            "--config".into(),
            path.display().to_string(),
        ],
        &[
            ("DOWNPOUR_TOKEN".into(), "0123456789abcdef0123".into()),
            ("DOWNPOUR_CONNECT_TIMEOUT".into(), "1".into()),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("could not reach the coordinator at {address}")),
        "{stderr}"
    );
}
