//! The progress bar of `downpour train` on a terminal, and the log writer
//! that keeps log lines from tearing it.
//!
//! While a bar is shown, each log line is written above it, and the
//! per-pass progress lines (target `downpour::progress`) are left out,
//! since the bar shows the same figures. Without a terminal there is no
//! bar and every line is logged as before.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use downpour_coordinator::{CoordinatorMetrics, LatestPass};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tracing_subscriber::fmt::MakeWriter;

/// Target of the log lines that report each validation pass.
const PROGRESS_TARGET: &str = "downpour::progress";

/// Bar steps per epoch, so that the bar moves by hundredths of an epoch.
const STEPS_PER_EPOCH: f64 = 100.0;

/// The bar on screen, if any; log lines are written around it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active_bar() -> Option<ProgressBar> {
    ACTIVE_BAR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Writes log lines to standard error, above the progress bar when one is
/// shown.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogWriter;

/// One log line's writer: standard error, through the bar, or nowhere.
#[derive(Debug)]
pub(crate) enum LineWriter {
    Stderr,
    AboveBar(ProgressBar),
    Discard,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Stderr => std::io::stderr().write_all(buf)?,
            Self::AboveBar(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            Self::Discard => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        match active_bar() {
            Some(bar) => LineWriter::AboveBar(bar),
            None => LineWriter::Stderr,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        match active_bar() {
            Some(_) if meta.target() == PROGRESS_TARGET => LineWriter::Discard,
            Some(bar) => LineWriter::AboveBar(bar),
            None => LineWriter::Stderr,
        }
    }
}

/// A progress bar fed from the coordinator's metrics. Dropping it removes
/// the bar; [`ProgressDisplay::finish`] leaves its last state on screen.
#[derive(Debug)]
pub(crate) struct ProgressDisplay {
    bar: ProgressBar,
    task: JoinHandle<()>,
    metrics: CoordinatorMetrics,
    max_epochs: u32,
}

impl ProgressDisplay {
    /// Shows a bar up to `max_epochs` when standard error is a terminal,
    /// refreshed four times a second from `metrics`; returns `None`
    /// otherwise.
    pub(crate) fn start(metrics: CoordinatorMetrics, max_epochs: u32) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new((f64::from(max_epochs) * STEPS_PER_EPOCH) as u64);
        let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(format!(
            "max {max_epochs} epochs | waiting for the first validation pass"
        ));
        bar.enable_steady_tick(Duration::from_millis(250));
        *ACTIVE_BAR
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(bar.clone());

        let shown = bar.clone();
        let watched = metrics.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last = None;
            loop {
                tick.tick().await;
                let latest = watched.latest();
                if latest != last {
                    if let Some(pass) = &latest {
                        show(&shown, pass, max_epochs);
                    }
                    last = latest;
                }
            }
        });
        Some(Self {
            bar,
            task,
            metrics,
            max_epochs,
        })
    }

    /// Shows the last validation pass and leaves the bar on screen, so that
    /// it stays above the summary even for a run shorter than one refresh.
    pub(crate) fn finish(self) {
        self.task.abort();
        if let Some(pass) = self.metrics.latest() {
            show(&self.bar, &pass, self.max_epochs);
        }
        self.bar.finish();
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.task.abort();
        *ACTIVE_BAR
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

fn show(bar: &ProgressBar, pass: &LatestPass, max_epochs: u32) {
    bar.set_position((pass.epoch * STEPS_PER_EPOCH) as u64);
    bar.set_message(progress_message(pass, max_epochs));
}

/// Formats the bar's message for one validation pass.
fn progress_message(pass: &LatestPass, max_epochs: u32) -> String {
    if pass.regression {
        return format!(
            "epoch {:.2}/{max_epochs} | updates {} | val mse {:.4} (best {:.4}) | {:.0} examples/s",
            pass.epoch,
            pass.updates,
            pass.validation_metric,
            pass.best_validation_metric,
            pass.examples_per_second,
        );
    }
    format!(
        "epoch {:.2}/{max_epochs} | updates {} | val error {:.2}% (best {:.2}%) | {:.0} examples/s",
        pass.epoch,
        pass.updates,
        100.0 * pass.validation_metric,
        100.0 * pass.best_validation_metric,
        pass.examples_per_second,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shows_epoch_error_and_rate() {
        let pass = LatestPass {
            evaluations: 12,
            epoch: 3.214,
            updates: 2400,
            validation_metric: 0.0231,
            best_validation_metric: 0.021,
            regression: false,
            examples_per_second: 15912.4,
        };
        assert_eq!(
            progress_message(&pass, 50),
            "epoch 3.21/50 | updates 2400 | val error 2.31% (best 2.10%) | 15912 examples/s"
        );
    }

    #[test]
    fn message_shows_regression_mse() {
        let pass = LatestPass {
            evaluations: 3,
            epoch: 1.5,
            updates: 90,
            validation_metric: 0.2512,
            best_validation_metric: 0.25,
            regression: true,
            examples_per_second: 1000.0,
        };
        assert_eq!(
            progress_message(&pass, 20),
            "epoch 1.50/20 | updates 90 | val mse 0.2512 (best 0.2500) | 1000 examples/s"
        );
    }
}
