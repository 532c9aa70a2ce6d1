//! The `predict` subcommand: class probabilities, or the predicted value of
//! a linear regression, of a saved checkpoint for every example of a data
//! file, written as CSV.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use anyhow::Context;
use downpour_data::checkpoint::{self, RunMetadata};
use downpour_data::formats::{ClassMap, Format, read_table};
use downpour_data::mnist;
use downpour_model::{Mlp, Workspace};
use ndarray::Array2;

use crate::args::{PredictArgs, Split};
use crate::eval_data::checkpoint_classes;

/// Writes one CSV row per example, starting with its row number from 0. A
/// classifier's row goes on with the predicted class id, that class's label
/// text, and the probability of each class in columns named `p_<label>`. A
/// linear regression's row goes on with the predicted value in a column
/// named `value`. Features are scaled with the scaling in the checkpoint's
/// metadata.
///
/// # Errors
///
/// Fails on an unreadable checkpoint or data file, on data whose width
/// differs from the model's inputs, and when the output cannot be written.
pub(crate) fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    let (description, params, metadata) = checkpoint::load_with_metadata(&args.checkpoint)?;
    let model = Mlp::new(&description)
        .with_context(|| format!("{}: invalid model description", args.checkpoint.display()))?;
    let (mut features, classes) = load_features(args, &model, &metadata)?;
    if let Some(scaling) = &metadata.scaling {
        scaling.apply_in_place(features.view_mut());
    }
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(File::create(path).with_context(|| {
            format!("{}: failed to create the output file", path.display())
        })?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let mut workspace = Workspace::new(&model, 1000);
    let written = if model.is_regression() {
        let mut values = vec![0.0f32; features.nrows()];
        model.predict_values(&params, features.view(), &mut values, &mut workspace);
        write_values(sink, &values)
    } else {
        let probabilities = predict_classes(&model, &params, &features, &classes, args)?;
        write_predictions(sink, &classes, &probabilities)
    };
    match written {
        // A reader such as `head` that stops early is not an error.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("failed to write the predictions"),
    }
}

/// Returns the class probabilities of every row of `features`.
fn predict_classes(
    model: &Mlp,
    params: &[f32],
    features: &Array2<f32>,
    classes: &ClassMap,
    args: &PredictArgs,
) -> anyhow::Result<Array2<f32>> {
    if classes.len() != model.classes() {
        anyhow::bail!(
            "the run summary of {} lists {} classes, but the checkpoint's model has {}",
            args.checkpoint.display(),
            classes.len(),
            model.classes()
        );
    }

    let mut probabilities = Array2::<f32>::zeros((features.nrows(), model.classes()));
    let mut workspace = Workspace::new(model, 1000);
    model.predict_proba(
        params,
        features.view(),
        probabilities.view_mut(),
        &mut workspace,
    );
    Ok(probabilities)
}

fn write_values(sink: Box<dyn Write>, values: &[f32]) -> io::Result<()> {
    let mut writer = csv::Writer::from_writer(sink);
    writer
        .write_record(["row", "value"])
        .map_err(into_io_error)?;
    for (row, value) in values.iter().enumerate() {
        writer
            .write_record([row.to_string(), value.to_string()])
            .map_err(into_io_error)?;
    }
    writer.flush()
}

/// Unwraps the I/O error inside a CSV write error, so that a closed pipe
/// keeps its kind and is not reported as a failure.
fn into_io_error(error: csv::Error) -> io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => io::Error::other(format!("{other:?}")),
    }
}

fn write_predictions(
    sink: Box<dyn Write>,
    classes: &ClassMap,
    probabilities: &Array2<f32>,
) -> io::Result<()> {
    let mut writer = csv::Writer::from_writer(sink);
    let mut header = vec!["row".to_owned(), "class".to_owned(), "label".to_owned()];
    header.extend(classes.names.iter().map(|name| format!("p_{name}")));
    writer.write_record(&header).map_err(into_io_error)?;
    for (row, probabilities) in probabilities.rows().into_iter().enumerate() {
        let (class, _) =
            probabilities
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (class, &p)| {
                    if p > best.1 { (class, p) } else { best }
                });
        let mut record = vec![
            row.to_string(),
            class.to_string(),
            classes.names[class].clone(),
        ];
        record.extend(probabilities.iter().map(f32::to_string));
        writer.write_record(&record).map_err(into_io_error)?;
    }
    writer.flush()
}

/// Loads the features to predict and the class names of the checkpoint's
/// run: from its metadata or `summary.json`, or the digits 0 to 9 for IDX
/// data. A linear regression has no classes.
fn load_features(
    args: &PredictArgs,
    model: &Mlp,
    metadata: &RunMetadata,
) -> anyhow::Result<(Array2<f32>, ClassMap)> {
    let (format, read) = args.read.read_options();
    let format = match format {
        Some(format) => format,
        None => Format::from_path(&args.data)?,
    };
    if format == Format::Idx {
        let splits = mnist::load(&args.data)?;
        let dataset = match (args.split, splits.test) {
            (Split::Test, Some(test)) => test,
            (Split::Test, None) | (Split::Train, _) => splits.train,
        };
        if dataset.num_features() != model.inputs() {
            anyhow::bail!(
                "{}: examples have {} features, but the checkpoint's model expects {}",
                args.data.display(),
                dataset.num_features(),
                model.inputs()
            );
        }
        let classes = match checkpoint_classes(&args.checkpoint, metadata) {
            Ok(classes) => classes,
            Err(_) => ClassMap {
                names: (0..model.classes())
                    .map(|class| class.to_string())
                    .collect(),
            },
        };
        return Ok((dataset.to_f32(), classes));
    }
    let classes = match model.is_regression() {
        true => ClassMap { names: Vec::new() },
        false => checkpoint_classes(&args.checkpoint, metadata)?,
    };
    let table = read_table(&args.data, format, &read)?;
    Ok((table.to_features(model.inputs())?, classes))
}
