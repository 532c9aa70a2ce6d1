//! Checkpoints of the flat parameter vector θ as safetensors files.
//!
//! Each tensor of the model description is stored as one F32 tensor under its
//! own name and shape, such as `layers.0.weight` with shape `[out, in]`. The
//! `safetensors` crate that writes the file is also the core of the Python
//! `safetensors` package, whose loaders therefore return one array per tensor.
//! The description is stored twice: as JSON in the safetensors metadata under
//! [`METADATA_KEY`], and as [`DESCRIPTION_FILE`] in the same folder.
//!
//! The metadata also contains what `predict` and `eval` need to read new data
//! the way the run read its own: the task under [`TASK_KEY`]
//! (`classification` or `regression`), the class names in class-id order as
//! a JSON array under [`CLASSES_KEY`] (classifiers only), and the fitted
//! [`Scaling`] as JSON under [`SCALING_KEY`] (runs with `--scale` only).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use downpour_model::{ModelDescription, TensorInfo};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{DataError, Result, describe_io};
use crate::scaling::Scaling;

/// Settings of the run's data, stored in the checkpoint's metadata besides
/// the model description.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetadata {
    /// Class names in class-id order, for a classifier whose run recorded
    /// them.
    pub classes: Option<Vec<String>>,
    /// Feature scaling fitted on the training split.
    pub scaling: Option<Scaling>,
}

/// Safetensors metadata key whose value is the model description as JSON.
pub const METADATA_KEY: &str = "downpour.model";
/// Safetensors metadata key whose value is `classification` or `regression`.
pub const TASK_KEY: &str = "downpour.task";
/// Safetensors metadata key whose value is the class names as a JSON array.
pub const CLASSES_KEY: &str = "downpour.classes";
/// Safetensors metadata key whose value is the feature scaling as JSON.
pub const SCALING_KEY: &str = "downpour.scaling";
/// Name of the description file written next to each checkpoint.
pub const DESCRIPTION_FILE: &str = "model.json";

/// Writes `<dir>/<stem>.safetensors` with one F32 tensor per tensor of the
/// description and the description in its metadata, then writes
/// `<dir>/model.json`. Each file is written atomically: to a temporary file
/// in `dir`, synced, then renamed over the target. Returns the path of the
/// safetensors file.
///
/// # Errors
///
/// [`DataError::InvalidCheckpoint`] when `stem` is not a plain file name or
/// `params` does not have the declared number of parameters,
/// [`DataError::InvalidModelDescription`] when the description fails
/// validation, and [`DataError::Io`] when writing fails.
pub fn save(
    dir: &Path,
    stem: &str,
    description: &ModelDescription,
    params: &[f32],
) -> Result<PathBuf> {
    save_with_metadata(dir, stem, description, params, &RunMetadata::default())
}

/// Writes a checkpoint as [`save`] does, with the task, classes and scaling
/// of `run` in the safetensors metadata.
///
/// # Errors
///
/// Those of [`save`], and [`DataError::InvalidCheckpoint`] when the scaling
/// does not have one entry per model input.
pub fn save_with_metadata(
    dir: &Path,
    stem: &str,
    description: &ModelDescription,
    params: &[f32],
    run: &RunMetadata,
) -> Result<PathBuf> {
    check_stem(dir, stem)?;
    let path = dir.join(format!("{stem}.safetensors"));
    let invalid = |reason: String| DataError::InvalidCheckpoint {
        path: path.clone(),
        reason,
    };

    description
        .validate()
        .map_err(|error| DataError::InvalidModelDescription {
            path: path.clone(),
            error,
        })?;
    if params.len() != description.parameters {
        return Err(invalid(format!(
            "the model description declares {} parameters but {} values were given",
            description.parameters,
            params.len()
        )));
    }

    if let Some(scaling) = &run.scaling
        && (scaling.width() != description.inputs || scaling.divisor.len() != scaling.width())
    {
        return Err(invalid(format!(
            "the scaling has {} offsets and {} divisors but the model has {} inputs",
            scaling.width(),
            scaling.divisor.len(),
            description.inputs
        )));
    }
    let bytes = encode(description, params, run).map_err(invalid)?;
    write_atomic(&path, &bytes).map_err(|error| DataError::io(&path, error))?;

    let sidecar = dir.join(DESCRIPTION_FILE);
    let mut json = description.to_json();
    json.push('\n');
    write_atomic(&sidecar, json.as_bytes()).map_err(|error| DataError::io(&sidecar, error))?;
    Ok(path)
}

/// Reads a checkpoint written by [`save`] and returns its description and θ.
///
/// The description comes from the safetensors metadata, or from `model.json`
/// in the same folder when the metadata lacks it. Every tensor the
/// description lists must be present with dtype F32 and the listed shape, and
/// the file must contain no other tensors.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read,
/// [`DataError::InvalidModelDescription`] naming the file the description
/// came from, and [`DataError::InvalidCheckpoint`] for a malformed file or a
/// tensor that does not match the description.
pub fn load(path: &Path) -> Result<(ModelDescription, Vec<f32>)> {
    let (description, params, _) = load_with_metadata(path)?;
    Ok((description, params))
}

/// Reads a checkpoint as [`load`] does, and the classes and scaling in its
/// metadata. A checkpoint written by [`save`] has neither.
///
/// # Errors
///
/// Those of [`load`], and [`DataError::InvalidCheckpoint`] when the classes
/// or scaling metadata is not valid JSON of its form or does not fit the
/// model.
pub fn load_with_metadata(path: &Path) -> Result<(ModelDescription, Vec<f32>, RunMetadata)> {
    let bytes = fs::read(path).map_err(|error| DataError::io(path, error))?;
    let invalid = |reason: String| DataError::InvalidCheckpoint {
        path: path.to_path_buf(),
        reason,
    };

    check_data_offsets(&bytes).map_err(invalid)?;
    let not_safetensors = |error: safetensors::SafeTensorError| {
        invalid(format!("not a valid safetensors file ({error})"))
    };
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let entries = metadata.metadata().as_ref();
    let stored = entries.and_then(|entries| entries.get(METADATA_KEY));
    let description = match stored {
        Some(json) => ModelDescription::from_json(json).map_err(|error| {
            DataError::InvalidModelDescription {
                path: path.to_path_buf(),
                error,
            }
        })?,
        None => read_sidecar(path)?,
    };

    // θ is allocated only once the file is known to be large enough for it.
    let declared_bytes = description.parameters.checked_mul(4);
    if declared_bytes.is_none_or(|needed| needed > bytes.len()) {
        return Err(invalid(format!(
            "the model description declares {} parameters, more than the {}-byte file holds",
            description.parameters,
            bytes.len()
        )));
    }

    let tensors = SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    check_no_extra_tensors(&tensors, &description).map_err(invalid)?;
    let mut params = vec![0.0f32; description.parameters];
    for info in &description.tensors {
        copy_tensor(&tensors, info, &mut params).map_err(invalid)?;
    }
    let run = entries
        .map(|entries| read_run_metadata(entries, &description))
        .transpose()
        .map_err(invalid)?
        .unwrap_or_default();
    Ok((description, params, run))
}

/// Parses the classes and scaling entries and checks them against the model.
fn read_run_metadata(
    entries: &HashMap<String, String>,
    description: &ModelDescription,
) -> std::result::Result<RunMetadata, String> {
    let classes: Option<Vec<String>> = entries
        .get(CLASSES_KEY)
        .map(|json| serde_json::from_str(json))
        .transpose()
        .map_err(|error| {
            format!("the \"{CLASSES_KEY}\" metadata is not a JSON list of names ({error})")
        })?;
    if let Some(classes) = &classes
        && classes.len() != description.classes
    {
        return Err(format!(
            "the \"{CLASSES_KEY}\" metadata lists {} classes but the model has {}",
            classes.len(),
            description.classes
        ));
    }
    let scaling: Option<Scaling> = entries
        .get(SCALING_KEY)
        .map(|json| serde_json::from_str(json))
        .transpose()
        .map_err(|error| {
            format!("the \"{SCALING_KEY}\" metadata is not valid scaling JSON ({error})")
        })?;
    if let Some(scaling) = &scaling
        && (scaling.width() != description.inputs || scaling.divisor.len() != scaling.width())
    {
        return Err(format!(
            "the \"{SCALING_KEY}\" metadata has {} offsets and {} divisors but the model has {} inputs",
            scaling.width(),
            scaling.divisor.len(),
            description.inputs
        ));
    }
    Ok(RunMetadata { classes, scaling })
}

/// Rejects stems that are empty or would place the file outside `dir`.
fn check_stem(dir: &Path, stem: &str) -> Result<()> {
    let plain = !stem.is_empty()
        && stem != "."
        && stem != ".."
        && !stem.contains(['/', '\\'])
        && Path::new(stem).file_name() == Some(stem.as_ref());
    if plain {
        return Ok(());
    }
    Err(DataError::InvalidCheckpoint {
        path: dir.to_path_buf(),
        reason: format!("the name \"{stem}\" is not a plain file name without folders"),
    })
}

/// Serializes θ as safetensors bytes with the description, the task and
/// the run's classes and scaling in the metadata.
fn encode(
    description: &ModelDescription,
    params: &[f32],
    run: &RunMetadata,
) -> std::result::Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(params.len() * 4);
    for value in params {
        data.extend_from_slice(&value.to_le_bytes());
    }

    let mut views = Vec::with_capacity(description.tensors.len());
    for info in &description.tensors {
        let range = byte_range(info)
            .filter(|range| range.end <= data.len())
            .ok_or_else(|| format!("tensor \"{}\" lies outside θ", info.name))?;
        let view = TensorView::new(Dtype::F32, info.shape.clone(), &data[range])
            .map_err(|error| format!("tensor \"{}\": {error}", info.name))?;
        views.push((info.name.as_str(), view));
    }

    let json = serde_json::to_string(description)
        .map_err(|error| format!("cannot serialize the model description ({error})"))?;
    let task = match description.is_regression() {
        true => "regression",
        false => "classification",
    };
    let mut metadata = HashMap::from([
        (METADATA_KEY.to_owned(), json),
        (TASK_KEY.to_owned(), task.to_owned()),
    ]);
    if let Some(classes) = &run.classes {
        let json = serde_json::to_string(classes)
            .map_err(|error| format!("cannot serialize the class names ({error})"))?;
        metadata.insert(CLASSES_KEY.to_owned(), json);
    }
    if let Some(scaling) = &run.scaling {
        metadata.insert(SCALING_KEY.to_owned(), scaling.to_json());
    }
    safetensors::serialize(views, Some(metadata))
        .map_err(|error| format!("cannot encode as safetensors ({error})"))
}

/// Returns the byte range of a tensor in the little-endian bytes of θ, or
/// `None` on overflow.
fn byte_range(info: &TensorInfo) -> Option<std::ops::Range<usize>> {
    let elements = info
        .shape
        .iter()
        .try_fold(1usize, |acc, &dim| acc.checked_mul(dim))?;
    let start = info.offset.checked_mul(4)?;
    let end = start.checked_add(elements.checked_mul(4)?)?;
    Some(start..end)
}

/// Rejects tensors whose declared end lies past the data in the file.
///
/// NOTE: `SafeTensors::read_metadata` in safetensors 0.8.0 adds the declared
/// data length to the header length without an overflow check. Offsets that
/// total close to `u64::MAX` make that addition panic in builds with overflow
/// checks, such as debug builds. Bounding every offset by the file length
/// first rules this out. Headers that this function cannot parse are left
/// for safetensors to reject.
fn check_data_offsets(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Ok(());
    };
    let Some(header_len) = usize::try_from(u64::from_le_bytes(*len_bytes))
        .ok()
        .filter(|&len| len <= rest.len())
    else {
        return Ok(());
    };
    let (header, data) = rest.split_at(header_len);
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice(header) else {
        return Ok(());
    };

    for (name, entry) in &entries {
        let end = entry
            .get("data_offsets")
            .and_then(|offsets| offsets.get(1))
            .and_then(serde_json::Value::as_u64);
        if let Some(end) = end
            && end > data.len() as u64
        {
            return Err(format!(
                "tensor \"{name}\" ends at byte {end}, past the {} bytes of tensor data",
                data.len()
            ));
        }
    }
    Ok(())
}

/// Reads the description from `model.json` next to a checkpoint that has no
/// description in its metadata.
fn read_sidecar(path: &Path) -> Result<ModelDescription> {
    let sidecar = path.with_file_name(DESCRIPTION_FILE);
    let json = fs::read_to_string(&sidecar).map_err(|error| DataError::InvalidCheckpoint {
        path: path.to_path_buf(),
        reason: format!(
            "the file has no \"{METADATA_KEY}\" metadata, and {}: {}",
            sidecar.display(),
            describe_io(&error)
        ),
    })?;
    ModelDescription::from_json(&json).map_err(|error| DataError::InvalidModelDescription {
        path: sidecar,
        error,
    })
}

fn check_no_extra_tensors(
    tensors: &SafeTensors<'_>,
    description: &ModelDescription,
) -> std::result::Result<(), String> {
    let mut names = tensors.names();
    names.sort_unstable();
    for name in names {
        if !description.tensors.iter().any(|info| info.name == name) {
            return Err(format!("tensor \"{name}\" is not in the model description"));
        }
    }
    Ok(())
}

/// Checks one tensor against the description and copies it into θ.
fn copy_tensor(
    tensors: &SafeTensors<'_>,
    info: &TensorInfo,
    params: &mut [f32],
) -> std::result::Result<(), String> {
    let name = &info.name;
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor \"{name}\" is missing"))?;
    if view.dtype() != Dtype::F32 {
        return Err(format!(
            "tensor \"{name}\" has dtype {}, expected F32",
            view.dtype()
        ));
    }
    if view.shape() != info.shape.as_slice() {
        return Err(format!(
            "tensor \"{name}\" has shape {:?}, but the model description says {:?}",
            view.shape(),
            info.shape
        ));
    }

    let elements = view.data().len() / 4;
    let target = info
        .offset
        .checked_add(elements)
        .and_then(|end| params.get_mut(info.offset..end))
        .ok_or_else(|| format!("tensor \"{name}\" lies outside θ"))?;
    for (value, bytes) in target.iter_mut().zip(view.data().chunks_exact(4)) {
        *value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
