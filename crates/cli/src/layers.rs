//! Layered settings. Every flag of every subcommand can also come from a
//! `DOWNPOUR_<FLAG>` environment variable and from a TOML file named by
//! `--config` (or `DOWNPOUR_CONFIG`). A flag on the command line wins over
//! the environment, and the environment over the file.
//!
//! The layering works on the clap command that the derive in `args.rs`
//! builds, so a new flag gets its environment variable and file key
//! without code here. The environment variable is the flag's name in upper
//! case with `-` as `_`. The file key is the flag's name without the
//! dashes, and `-` and `_` are interchangeable in it.
//!
//! A file value becomes the flag's default, which clap uses only when
//! neither the command line nor the environment sets the flag.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::{BoolishValueParser, Resettable};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::args::Cli;

/// Prefix of every environment variable that sets a flag.
pub(crate) const ENV_PREFIX: &str = "DOWNPOUR_";

/// Flags that only the command line sets.
const COMMAND_LINE_ONLY: &[&str] = &["help", "version", "print_config"];

/// Flags that a config file cannot set.
const NOT_IN_FILE: &[&str] = &["help", "version", "print_config", "config"];

/// An invalid or unreadable config file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigFileError(String);

/// The parsed command line, with the settings report when `--print-config`
/// was given.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) cli: Cli,
    pub(crate) printed_config: Option<String>,
}

/// The outcome of [`parse`] that is not a command to run.
#[derive(Debug)]
pub(crate) enum ParseFailure {
    /// A usage error, or `--help` and `--version`, which clap prints itself.
    Clap(clap::Error),
    Config(ConfigFileError),
}

/// Returns the environment variable that sets the flag with this id.
pub(crate) fn env_name(id: &str) -> String {
    format!("{ENV_PREFIX}{}", id.to_ascii_uppercase().replace('-', "_"))
}

/// Builds the command line of every subcommand, with an environment
/// variable for each flag.
pub(crate) fn command_with_env() -> Command {
    Cli::command()
        .mut_args(with_env)
        .mut_subcommands(|sub| sub.mut_args(with_env))
}

fn with_env(arg: Arg) -> Arg {
    let id = arg.get_id().as_str().to_owned();
    if arg.is_positional() || COMMAND_LINE_ONLY.contains(&id.as_str()) {
        return arg;
    }
    let arg = arg.env(env_name(&id));
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        // Environment variables of switches take yes/no, on/off, 1/0 as
        // well as true/false.
        arg.value_parser(BoolishValueParser::new())
    } else {
        arg
    }
}

/// Parses `argv` with the environment and the config file as lower layers.
///
/// # Errors
///
/// Returns clap's error for invalid flags, `--help` and `--version`, and a
/// [`ConfigFileError`] naming the file and key for an invalid config file.
pub(crate) fn parse(argv: Vec<OsString>) -> Result<Parsed, ParseFailure> {
    let mut command = command_with_env();
    let (subcommand, config_path) = scan(&argv);
    let mut from_file = BTreeSet::new();
    if let (Some(subcommand), Some(path)) = (&subcommand, &config_path)
        && command.find_subcommand(subcommand).is_some()
    {
        let values = read_file(&command, subcommand, path).map_err(ParseFailure::Config)?;
        from_file = values.keys().cloned().collect();
        command = command.mut_subcommand(subcommand, |sub| {
            sub.mut_args(|arg| match values.get(arg.get_id().as_str()) {
                Some(values) => file_default(arg, values),
                None => arg,
            })
        });
    }

    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(ParseFailure::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(ParseFailure::Clap)?;
    let printed_config = cli.print_config.then(|| {
        matches
            .subcommand()
            .map_or_else(String::new, |(name, sub_matches)| {
                let sub = command.find_subcommand(name).unwrap_or(&command);
                render_settings(sub, sub_matches, &from_file, config_path.as_deref())
            })
    });
    Ok(Parsed {
        cli,
        printed_config,
    })
}

/// Returns the subcommand and the config file named on the command line
/// or in `DOWNPOUR_CONFIG`, read before clap parses the whole line.
fn scan(argv: &[OsString]) -> (Option<String>, Option<PathBuf>) {
    let mut subcommand = None;
    let mut config = None;
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        } else if text == "--config" {
            config = args.next().map(PathBuf::from);
        } else if let Some(path) = text.strip_prefix("--config=") {
            config = Some(PathBuf::from(path));
        } else if subcommand.is_none() && !text.starts_with('-') {
            subcommand = Some(text.into_owned());
        }
    }
    let config = config.or_else(|| {
        std::env::var_os(env_name("config"))
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    });
    (subcommand, config)
}

/// Reads the config file and returns, per flag id of `subcommand`, the
/// values the file sets. Keys at the top level apply to every subcommand
/// that has the flag. Keys in a table named after a subcommand apply to it
/// alone and win over the top level.
fn read_file(
    command: &Command,
    subcommand: &str,
    path: &Path,
) -> Result<BTreeMap<String, Vec<String>>, ConfigFileError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigFileError(format!("--config {shown}: cannot read the file: {error}"))
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|error| ConfigFileError(format!("--config {shown}: invalid TOML: {error}")))?;
    let roles: Vec<&str> = command.get_subcommands().map(Command::get_name).collect();
    let Some(role) = command.find_subcommand(subcommand) else {
        return Ok(BTreeMap::new());
    };

    let mut values = BTreeMap::new();
    let mut role_table = None;
    for (key, value) in &table {
        // `ps` names both a subcommand and the coordinator's flag, so a
        // table is a subcommand's settings and any other value a flag.
        if let toml::Value::Table(inner) = value {
            if !roles.contains(&key.as_str()) {
                return Err(unknown_key(&shown, key, None));
            }
            if key == subcommand {
                role_table = Some(inner);
            }
            continue;
        }
        let id = key.replace('-', "_");
        if let Some(arg) = find_arg(role, &id) {
            values.insert(id, file_values(arg, value, &shown, key)?);
        } else if !roles
            .iter()
            .filter_map(|name| command.find_subcommand(name))
            .any(|other| find_arg(other, &id).is_some())
        {
            return Err(unknown_key(&shown, key, None));
        }
    }
    for (key, value) in role_table.into_iter().flatten() {
        let id = key.replace('-', "_");
        let arg = find_arg(role, &id).ok_or_else(|| unknown_key(&shown, key, Some(subcommand)))?;
        let key = format!("[{subcommand}] {key}");
        values.insert(id, file_values(arg, value, &shown, &key)?);
    }
    Ok(values)
}

fn find_arg<'a>(command: &'a Command, id: &str) -> Option<&'a Arg> {
    if NOT_IN_FILE.contains(&id) {
        return None;
    }
    command
        .get_arguments()
        .find(|arg| arg.get_id() == id && !arg.is_positional())
}

fn unknown_key(path: &std::path::Display<'_>, key: &str, role: Option<&str>) -> ConfigFileError {
    let message = match role {
        Some(role) => format!(
            "{path}: [{role}] {key}: not a setting of `downpour {role}`; `downpour {role} --help` lists them"
        ),
        None => format!(
            "{path}: {key}: not a setting of any subcommand; keys are flag names without the dashes, such as batch_size, at the top level or in a [coordinator], [ps], [worker], [train] or [eval] table"
        ),
    };
    ConfigFileError(message)
}

/// Converts a file value to the flag's textual values and checks them with
/// the flag's own parser, so a bad value is reported with the file and key.
fn file_values(
    arg: &Arg,
    value: &toml::Value,
    path: &std::path::Display<'_>,
    key: &str,
) -> Result<Vec<String>, ConfigFileError> {
    let invalid = |reason: &str| ConfigFileError(format!("{path}: {key} = {value}: {reason}"));
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            toml::Value::Boolean(flag) => Ok(vec![flag.to_string()]),
            _ => Err(invalid("expected true or false")),
        };
    }
    let texts = match (value, arg.get_value_delimiter()) {
        (toml::Value::Array(items), Some(_)) => items
            .iter()
            .map(scalar_text)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("expected an array of strings or numbers"))?,
        (toml::Value::Array(_), None) => return Err(invalid("expected one value, not an array")),
        (scalar, delimiter) => {
            let text = scalar_text(scalar)
                .ok_or_else(|| invalid("expected a string, a number or a boolean"))?;
            match delimiter {
                Some(delimiter) => text.split(delimiter).map(str::to_owned).collect(),
                None => vec![text],
            }
        }
    };
    check_values(arg, &texts).map_err(|reason| invalid(&reason))?;
    Ok(texts)
}

fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Runs the flag's value parser on `texts` alone.
fn check_values(arg: &Arg, texts: &[String]) -> Result<(), String> {
    let Some(long) = arg.get_long() else {
        return Ok(());
    };
    let probe = arg
        .clone()
        .env(None)
        .required(false)
        .requires(Resettable::Reset)
        .conflicts_with(Resettable::Reset)
        .default_value(None);
    let argv = texts.iter().map(|text| format!("--{long}={text}"));
    match Command::new("downpour")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from(argv)
    {
        Ok(_) => Ok(()),
        Err(error) => Err(first_error_line(&error)),
    }
}

/// Returns clap's message without the usage lines.
fn first_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty() && !line.starts_with("Usage:") && !line.starts_with("For more")
        })
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}

fn file_default(arg: Arg, values: &[String]) -> Arg {
    // A required flag that the file sets is no longer required on the
    // command line, because clap ignores defaults of required flags.
    arg.required(false).default_values(values.to_vec())
}

/// Renders the settings a subcommand runs with as TOML that `--config`
/// reads back, with each value's source as a comment.
fn render_settings(
    command: &Command,
    matches: &ArgMatches,
    from_file: &BTreeSet<String>,
    config_path: Option<&Path>,
) -> String {
    let mut out = format!(
        "# Settings of `downpour {}` and where each one comes from.\n",
        command.get_name()
    );
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_positional() || NOT_IN_FILE.contains(&id) {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else {
            out.push_str(&format!("# {id} is not set\n"));
            continue;
        };
        let texts: Vec<String> = raw
            .map(|text| text.to_string_lossy().into_owned())
            .collect();
        let value = if matches!(arg.get_action(), ArgAction::SetTrue) {
            toml::Value::Boolean(matches.get_flag(id))
        } else if arg.get_value_delimiter().is_some() {
            toml::Value::Array(texts.iter().map(|text| typed_value(text)).collect())
        } else {
            typed_value(&texts.join(","))
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => {
                format!("command line (--{})", arg.get_long().unwrap_or_default())
            }
            Some(ValueSource::EnvVariable) => format!("environment ({})", env_name(id)),
            _ if from_file.contains(id) => format!(
                "file ({})",
                config_path.map_or_else(String::new, |path| path.display().to_string())
            ),
            _ => "default".to_owned(),
        };
        out.push_str(&format!("{id} = {value}  # {source}\n"));
    }
    out
}

/// Returns an integer or float when `text` reads back as exactly that
/// number, and a string otherwise.
fn typed_value(text: &str) -> toml::Value {
    if let Ok(number) = text.parse::<i64>()
        && number.to_string() == text
    {
        return toml::Value::Integer(number);
    }
    if let Ok(number) = text.parse::<f64>()
        && number.is_finite()
        && number.to_string() == text
    {
        return toml::Value::Float(number);
    }
    toml::Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn scan_finds_subcommand_and_config() {
        let (sub, config) = scan(&os(&[
            "downpour", "--config", "a.toml", "worker", "--name", "x",
        ]));
        assert_eq!(sub.as_deref(), Some("worker"));
        assert_eq!(config, Some(PathBuf::from("a.toml")));

        let (sub, config) = scan(&os(&["downpour", "ps", "--config=b.toml"]));
        assert_eq!(sub.as_deref(), Some("ps"));
        assert_eq!(config, Some(PathBuf::from("b.toml")));
    }

    #[test]
    fn env_names_follow_flag_ids() {
        assert_eq!(env_name("batch_size"), "DOWNPOUR_BATCH_SIZE");
        assert_eq!(env_name("lease-timeout"), "DOWNPOUR_LEASE_TIMEOUT");
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        let command = command_with_env();
        for sub in command.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || COMMAND_LINE_ONLY.contains(&id) {
                    continue;
                }
                let env = arg.get_env().map(|env| env.to_string_lossy().into_owned());
                assert_eq!(env, Some(env_name(id)), "{} --{id}", sub.get_name());
            }
        }
    }

    #[test]
    fn typed_values_read_back() {
        assert_eq!(typed_value("64"), toml::Value::Integer(64));
        assert_eq!(typed_value("0.05"), toml::Value::Float(0.05));
        assert_eq!(typed_value("007"), toml::Value::String("007".into()));
        assert_eq!(
            typed_value("127.0.0.1:7000"),
            toml::Value::String("127.0.0.1:7000".into())
        );
    }
}
