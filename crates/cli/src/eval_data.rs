//! Loading the examples that `eval` scores, in any supported format.

use std::path::Path;

use anyhow::Context;
use downpour_data::formats::{ClassMap, Format, read_table};
use downpour_data::{Dataset, mnist};

use crate::args::{EvalArgs, Split};

/// Loads the data `eval` scores for a model with `inputs` features. Labels
/// of CSV, LIBSVM and NumPy files become class ids through the class list
/// in the `summary.json` beside the checkpoint.
///
/// # Errors
///
/// Fails on unreadable or malformed data, on a label that is not one of the
/// run's classes, and when no run summary lists the classes.
pub(crate) fn load_eval_data(args: &EvalArgs, inputs: usize) -> anyhow::Result<Dataset> {
    let (format, read) = args.read.read_options();
    let format = match format {
        Some(format) => format,
        None => Format::from_path(&args.data)?,
    };
    if format == Format::Idx {
        let splits = mnist::load(&args.data)?;
        return Ok(match (args.split, splits.test) {
            (Split::Test, Some(test)) => test,
            (Split::Test, None) | (Split::Train, _) => splits.train,
        });
    }
    let classes = run_classes(&args.checkpoint)?;
    let table = read_table(&args.data, format, &read)?;
    Ok(table.to_dataset(&classes, inputs)?)
}

/// Reads the class names from the run summary next to a checkpoint.
pub(crate) fn run_classes(checkpoint: &Path) -> anyhow::Result<ClassMap> {
    let summary_path = checkpoint.with_file_name("summary.json");
    let text = std::fs::read_to_string(&summary_path).with_context(|| {
        format!(
            "{}: cannot read the run summary, which lists the classes of the checkpoint's run",
            summary_path.display()
        )
    })?;
    let summary: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid JSON", summary_path.display()))?;
    let names = summary["splits"]["classes"]
        .as_array()
        .and_then(|names| {
            names
                .iter()
                .map(|name| name.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .with_context(|| {
            format!(
                "{}: the summary has no class list (splits.classes)",
                summary_path.display()
            )
        })?;
    Ok(ClassMap { names })
}
