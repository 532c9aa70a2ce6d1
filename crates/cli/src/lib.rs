//! The `downpour` command line: one subcommand per role, `train` for a
//! whole cluster in one process, and `eval` for saved checkpoints.

mod args;
mod commands;
mod eval_data;
mod input_args;
mod layers;
mod metrics;
mod predict;
mod progress;

use std::io::IsTerminal;

pub use args::Cli;

/// Parses the command line, runs the subcommand and returns the process
/// exit status. Errors are printed as one line on standard error.
pub fn main() -> i32 {
    let cli = match layers::parse(std::env::args_os().collect()) {
        Ok(layers::Parsed {
            printed_config: Some(settings),
            ..
        }) => {
            print!("{settings}");
            return 0;
        }
        Ok(parsed) => parsed.cli,
        Err(layers::ParseFailure::Clap(error)) => error.exit(),
        Err(layers::ParseFailure::Config(error)) => {
            eprintln!("error: {error}");
            return 2;
        }
    };
    install_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    }
}

/// Logs to standard error at `info`, or at the levels `RUST_LOG` sets,
/// around the progress bar of `train` when one is shown.
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(progress::LogWriter)
        .init();
}
