//! Loading the examples that `eval` scores, in any supported format.

use std::path::Path;

use anyhow::Context;
use downpour_data::checkpoint::RunMetadata;
use downpour_data::formats::{ClassMap, Format, read_table};
use downpour_data::{Dataset, mnist};
use downpour_model::ModelDescription;

use crate::args::{EvalArgs, Split};

/// Loads the data `eval` scores for the checkpoint's model, and applies the
/// scaling stored in the checkpoint. For linear regression the labels of
/// CSV, LIBSVM and NumPy files are real targets. For a classifier they
/// become class ids through the class list in the checkpoint's metadata,
/// or in the `summary.json` beside a checkpoint without one.
///
/// # Errors
///
/// Fails on unreadable or malformed data, on a label that is not one of the
/// run's classes or not a number for regression, and when no class list is
/// found.
pub(crate) fn load_eval_data(
    args: &EvalArgs,
    description: &ModelDescription,
    metadata: &RunMetadata,
) -> anyhow::Result<Dataset> {
    let dataset = read_eval_data(args, description, metadata)?;
    if dataset.num_features() != description.inputs {
        anyhow::bail!(
            "{}: examples have {} features, but the checkpoint's model expects {}",
            args.data.display(),
            dataset.num_features(),
            description.inputs
        );
    }
    Ok(match &metadata.scaling {
        Some(scaling) => scaling.apply(dataset),
        None => dataset,
    })
}

fn read_eval_data(
    args: &EvalArgs,
    description: &ModelDescription,
    metadata: &RunMetadata,
) -> anyhow::Result<Dataset> {
    args.read.require_labels()?;
    if !args.data.exists() {
        anyhow::bail!(
            "--data {}: not found; pass the MNIST folder or the CSV, LIBSVM, NumPy or IDX file to score",
            args.data.display()
        );
    }
    let inputs = description.inputs;
    let (format, read) = args.read.read_options();
    let format = match format {
        Some(format) => format,
        None => Format::from_path(&args.data)?,
    };
    if format == Format::Idx && description.is_regression() {
        anyhow::bail!(
            "{}: IDX files hold class labels, but {} is a linear regression; score it on a CSV, LIBSVM or NumPy file with real targets",
            args.data.display(),
            args.checkpoint.display()
        );
    }
    if format == Format::Idx {
        let splits = mnist::load(&args.data)?;
        return Ok(match (args.split, splits.test) {
            (Split::Test, Some(test)) => test,
            (Split::Test, None) | (Split::Train, _) => splits.train,
        });
    }
    let table = read_table(&args.data, format, &read)?;
    if description.is_regression() {
        return Ok(table.to_regression_dataset(inputs)?);
    }
    let classes = checkpoint_classes(&args.checkpoint, metadata)?;
    Ok(table.to_dataset(&classes, inputs)?)
}

/// Returns the class names of a checkpoint: from its metadata, or from the
/// run summary beside a checkpoint written before the metadata held them.
pub(crate) fn checkpoint_classes(
    checkpoint: &Path,
    metadata: &RunMetadata,
) -> anyhow::Result<ClassMap> {
    match &metadata.classes {
        Some(names) => Ok(ClassMap {
            names: names.clone(),
        }),
        None => run_classes(checkpoint),
    }
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
