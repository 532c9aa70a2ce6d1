use downpour_model::ModelSpec;

use crate::scaling::{ScaleMethod, Scaling};

use super::*;

/// Returns the description of an MLP with 4 inputs, one hidden layer of 3
/// and 2 classes, which has 23 parameters.
fn description() -> ModelDescription {
    let spec: ModelSpec = "mlp:3".parse().expect("valid spec");
    ModelDescription::new(&spec, 4, 2).expect("valid description")
}

fn params(count: usize) -> Vec<f32> {
    (0..count).map(|i| i as f32 * 0.5 - 3.0).collect()
}

/// A tensor to write with [`write_raw`]: name, dtype, shape and raw bytes.
type RawTensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a safetensors file from raw tensors, bypassing [`save`].
fn write_raw(path: &Path, tensors: &[RawTensor], metadata: Option<HashMap<String, String>>) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = TensorView::new(*dtype, shape.clone(), bytes).expect("consistent view");
            (*name, view)
        })
        .collect();
    let bytes = safetensors::serialize(views, metadata).expect("serialize");
    fs::write(path, bytes).expect("write");
}

/// Returns the tensors of [`description`] filled from [`params`], as `save`
/// writes them.
fn good_tensors() -> Vec<RawTensor> {
    let theta = params(23);
    vec![
        (
            "layers.0.weight",
            Dtype::F32,
            vec![3, 4],
            f32_bytes(&theta[0..12]),
        ),
        (
            "layers.0.bias",
            Dtype::F32,
            vec![3],
            f32_bytes(&theta[12..15]),
        ),
        (
            "layers.1.weight",
            Dtype::F32,
            vec![2, 3],
            f32_bytes(&theta[15..21]),
        ),
        (
            "layers.1.bias",
            Dtype::F32,
            vec![2],
            f32_bytes(&theta[21..23]),
        ),
    ]
}

fn with_description() -> Option<HashMap<String, String>> {
    Some(HashMap::from([(
        METADATA_KEY.to_owned(),
        description().to_json(),
    )]))
}

fn load_error(path: &Path) -> String {
    load(path).expect_err("load should fail").to_string()
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let theta = params(23);
    let path = save(dir.path(), "best", &description(), &theta).expect("save");
    assert_eq!(path, dir.path().join("best.safetensors"));

    let (loaded, loaded_theta) = load(&path).expect("load");
    assert_eq!(loaded, description());
    assert_eq!(loaded_theta, theta);

    let mut names: Vec<String> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["best.safetensors", "model.json"]);
}

#[test]
fn saved_file_has_named_tensors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let theta = params(23);
    let path = save(dir.path(), "best", &description(), &theta).expect("save");
    let bytes = fs::read(&path).expect("read");
    let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");

    assert_eq!(tensors.len(), 4);
    let weight = tensors.tensor("layers.1.weight").expect("tensor");
    assert_eq!(weight.dtype(), Dtype::F32);
    assert_eq!(weight.shape(), &[2, 3]);
    assert_eq!(weight.data(), f32_bytes(&theta[15..21]).as_slice());

    let (_, metadata) = SafeTensors::read_metadata(&bytes).expect("metadata");
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .expect("description in metadata");
    assert_eq!(
        ModelDescription::from_json(json).expect("valid"),
        description()
    );
}

#[test]
fn sidecar_holds_description() {
    let dir = tempfile::tempdir().expect("temp dir");
    save(dir.path(), "best", &description(), &params(23)).expect("save");
    let json = fs::read_to_string(dir.path().join("model.json")).expect("model.json");
    assert!(json.ends_with('\n'));
    assert_eq!(
        ModelDescription::from_json(&json).expect("valid"),
        description()
    );
}

#[test]
fn save_overwrites_previous_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    save(dir.path(), "best", &description(), &params(23)).expect("first save");
    let newer = vec![1.5f32; 23];
    let path = save(dir.path(), "best", &description(), &newer).expect("second save");
    assert_eq!(load(&path).expect("load").1, newer);
}

#[test]
fn save_rejects_wrong_parameter_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = save(dir.path(), "best", &description(), &params(22)).expect_err("22 != 23");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: invalid checkpoint: the model description declares 23 parameters \
             but 22 values were given",
            dir.path().join("best.safetensors").display()
        )
    );
}

#[test]
fn save_rejects_invalid_description() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broken = description();
    broken.tensors[1].offset = 13;
    let error = save(dir.path(), "best", &broken, &params(23)).expect_err("gap in layout");
    let text = error.to_string();
    let prefix = format!(
        "{}: invalid model description: ",
        dir.path().join("best.safetensors").display()
    );
    assert!(text.starts_with(&prefix), "{text}");
    assert!(!dir.path().join("best.safetensors").exists());
}

#[test]
fn save_rejects_path_in_stem() {
    let dir = tempfile::tempdir().expect("temp dir");
    for stem in ["", ".", "..", "a/b", "../best", "a\\b"] {
        let error = save(dir.path(), stem, &description(), &params(23)).expect_err(stem);
        assert_eq!(
            error.to_string(),
            format!(
                "{}: invalid checkpoint: the name \"{stem}\" is not a plain file name \
                 without folders",
                dir.path().display()
            )
        );
    }
}

#[test]
fn load_falls_back_to_sidecar() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain.safetensors");
    write_raw(&path, &good_tensors(), None);
    fs::write(dir.path().join("model.json"), description().to_json()).expect("sidecar");

    let (loaded, theta) = load(&path).expect("load");
    assert_eq!(loaded, description());
    assert_eq!(theta, params(23));
}

#[test]
fn load_without_any_description() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain.safetensors");
    write_raw(&path, &good_tensors(), None);
    let sidecar = dir.path().join("model.json");
    assert_eq!(
        load_error(&path),
        format!(
            "{}: invalid checkpoint: the file has no \"downpour.model\" metadata, and {}: \
             not found (no such file or directory)",
            path.display(),
            sidecar.display()
        )
    );
}

#[test]
fn load_with_invalid_sidecar() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain.safetensors");
    write_raw(&path, &good_tensors(), None);
    let sidecar = dir.path().join("model.json");
    fs::write(&sidecar, "{\"spec\": 3}").expect("sidecar");
    let text = load_error(&path);
    let prefix = format!("{}: invalid model description JSON: ", sidecar.display());
    assert!(text.starts_with(&prefix), "{text}");
}

#[test]
fn load_with_invalid_metadata_description() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.safetensors");
    let mut broken = description();
    broken.parameters = 24;
    let metadata = HashMap::from([(METADATA_KEY.to_owned(), broken.to_json())]);
    write_raw(&path, &good_tensors(), Some(metadata));
    let text = load_error(&path);
    let prefix = format!("{}: invalid model description: ", path.display());
    assert!(text.starts_with(&prefix), "{text}");
}

#[test]
fn load_rejects_wrong_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.safetensors");
    let mut tensors = good_tensors();
    tensors[0].2 = vec![4, 3];
    write_raw(&path, &tensors, with_description());
    assert_eq!(
        load_error(&path),
        format!(
            "{}: invalid checkpoint: tensor \"layers.0.weight\" has shape [4, 3], \
             but the model description says [3, 4]",
            path.display()
        )
    );
}

#[test]
fn load_rejects_wrong_dtype() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.safetensors");
    let mut tensors = good_tensors();
    tensors[3].1 = Dtype::I32;
    write_raw(&path, &tensors, with_description());
    assert_eq!(
        load_error(&path),
        format!(
            "{}: invalid checkpoint: tensor \"layers.1.bias\" has dtype I32, expected F32",
            path.display()
        )
    );
}

#[test]
fn load_rejects_missing_tensor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.safetensors");
    let mut tensors = good_tensors();
    tensors.remove(1);
    write_raw(&path, &tensors, with_description());
    assert_eq!(
        load_error(&path),
        format!(
            "{}: invalid checkpoint: tensor \"layers.0.bias\" is missing",
            path.display()
        )
    );
}

#[test]
fn load_rejects_extra_tensor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.safetensors");
    let mut tensors = good_tensors();
    tensors.push(("optimizer.step", Dtype::F32, vec![1], f32_bytes(&[7.0])));
    write_raw(&path, &tensors, with_description());
    assert_eq!(
        load_error(&path),
        format!(
            "{}: invalid checkpoint: tensor \"optimizer.step\" is not in the model description",
            path.display()
        )
    );
}

#[test]
fn load_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("best.safetensors");
    assert_eq!(
        load_error(&path),
        format!("{}: not found (no such file or directory)", path.display())
    );
}

#[test]
fn load_rejects_garbage_and_truncation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.safetensors");
    save(dir.path(), "good", &description(), &params(23)).expect("save");
    let bytes = fs::read(&good).expect("read");

    let path = dir.path().join("cut.safetensors");
    for len in (0..bytes.len()).step_by(7) {
        fs::write(&path, &bytes[..len]).expect("write");
        let text = load_error(&path);
        assert!(
            text.starts_with(&format!("{}: invalid checkpoint: ", path.display())),
            "{len} bytes: {text}"
        );
    }

    fs::write(&path, b"\x89PNG\r\n\x1a\n not a checkpoint").expect("write");
    let text = load_error(&path);
    assert!(text.contains("not a valid safetensors file ("), "{text}");
}

#[test]
fn load_rejects_offsets_past_end() {
    // Eight U8 tensors of 2^61 - 1 bytes each claim 2^64 - 8 bytes in total,
    // with only 8 bytes of data behind the header. Adding the header length
    // to that total overflows u64.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.safetensors");
    let size = (1u64 << 61) - 1;
    let entries: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#,
                i * size,
                (i + 1) * size
            )
        })
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 8]);
    fs::write(&path, &bytes).expect("write");

    let text = load_error(&path);
    assert!(
        text.starts_with(&format!(
            "{}: invalid checkpoint: tensor \"t",
            path.display()
        )),
        "{text}"
    );
    assert!(text.contains("past the 8 bytes of tensor data"), "{text}");
}

#[test]
fn load_rejects_description_larger_than_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.safetensors");
    let spec: ModelSpec = "mlp:100000".parse().expect("valid spec");
    let big = ModelDescription::new(&spec, 100_000, 10).expect("valid description");
    let metadata = HashMap::from([(METADATA_KEY.to_owned(), big.to_json())]);
    write_raw(&path, &good_tensors(), Some(metadata));
    assert_eq!(
        load_error(&path),
        format!(
            "{}: invalid checkpoint: the model description declares {} parameters, \
             more than the {}-byte file holds",
            path.display(),
            big.parameters,
            fs::metadata(&path).expect("metadata").len()
        )
    );
}

#[test]
fn run_metadata_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let description = description();
    let run = RunMetadata {
        classes: Some(vec!["edible".to_owned(), "poisonous".to_owned()]),
        scaling: Some(Scaling {
            method: ScaleMethod::Standardize,
            offset: vec![0.5, -1.0, 2.0, 0.0],
            divisor: vec![2.0, 1.0, 0.25, 1.0],
        }),
    };
    let path =
        save_with_metadata(dir.path(), "best", &description, &params(23), &run).expect("saved");
    let (loaded, theta, loaded_run) = load_with_metadata(&path).expect("loaded");
    assert_eq!(loaded, description);
    assert_eq!(theta, params(23));
    assert_eq!(loaded_run, run);

    let bytes = fs::read(&path).expect("read");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("safetensors");
    let entries = header.metadata().clone().expect("metadata");
    assert_eq!(entries[TASK_KEY], "classification");
    assert_eq!(entries[CLASSES_KEY], r#"["edible","poisonous"]"#);
    assert_eq!(
        entries[SCALING_KEY],
        r#"{"method":"standardize","offset":[0.5,-1.0,2.0,0.0],"divisor":[2.0,1.0,0.25,1.0]}"#
    );
}

#[test]
fn plain_save_has_no_run_metadata() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec: ModelSpec = "linear".parse().expect("valid spec");
    let description = ModelDescription::new(&spec, 4, 0).expect("valid description");
    let path = save(dir.path(), "best", &description, &params(5)).expect("saved");
    let (_, _, run) = load_with_metadata(&path).expect("loaded");
    assert_eq!(run, RunMetadata::default());
    let bytes = fs::read(&path).expect("read");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("safetensors");
    let entries = header.metadata().clone().expect("metadata");
    assert_eq!(entries[TASK_KEY], "regression");
}

#[test]
fn scaling_of_wrong_width_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = RunMetadata {
        classes: None,
        scaling: Some(Scaling {
            method: ScaleMethod::Minmax,
            offset: vec![0.0; 3],
            divisor: vec![1.0; 3],
        }),
    };
    let error = save_with_metadata(dir.path(), "best", &description(), &params(23), &run)
        .expect_err("width mismatch");
    assert!(
        error
            .to_string()
            .contains("the scaling has 3 offsets and 3 divisors but the model has 4 inputs"),
        "{error}"
    );

    // A file edited to hold too few class names is rejected on load.
    let path = dir.path().join("edited.safetensors");
    let mut metadata = HashMap::from([
        (METADATA_KEY.to_owned(), description().to_json()),
        (CLASSES_KEY.to_owned(), r#"["only"]"#.to_owned()),
    ]);
    metadata.insert(TASK_KEY.to_owned(), "classification".to_owned());
    write_raw(&path, &good_tensors(), Some(metadata));
    let error = load_with_metadata(&path).expect_err("class count mismatch");
    assert!(
        error
            .to_string()
            .contains("the \"downpour.classes\" metadata lists 1 classes but the model has 2"),
        "{error}"
    );
}
