//! Model descriptions: dimensions and the layout of named tensors in the flat parameter vector θ.

use serde::{Deserialize, Serialize};

use crate::{ModelError, ModelSpec};

/// Activation name stored for models with hidden layers.
const RELU: &str = "relu";
/// Activation name stored for softmax regression, which has no hidden layer.
const NO_ACTIVATION: &str = "none";
/// Loss name stored for classifiers.
const CROSS_ENTROPY: &str = "cross_entropy";
/// Loss name stored for linear regression.
const MEAN_SQUARED_ERROR: &str = "mean_squared_error";

/// Named tensor inside the flat parameter vector θ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name, such as `layers.0.weight`.
    pub name: String,
    /// Tensor shape. Weights are `[out, in]` and stored row-major, biases are `[out]`.
    pub shape: Vec<usize>,
    /// Offset of the first element in θ, counted in f32 elements.
    pub offset: usize,
}

/// Architecture and parameter layout of a model, serializable as JSON.
///
/// Layer `i` has tensors `layers.{i}.weight` with shape `[out, in]` and `layers.{i}.bias` with
/// shape `[out]`, as in PyTorch's `nn.Linear`. The tensors follow each other in θ without gaps,
/// in layer order with each weight before its bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    /// Model spec in its canonical display form, such as `mlp:256,128`.
    pub spec: String,
    /// Number of input features.
    pub inputs: usize,
    /// Hidden-layer widths, empty for softmax regression.
    pub hidden: Vec<usize>,
    /// Number of classes, or 0 for linear regression, whose one output is a real value.
    pub classes: usize,
    /// Hidden-layer activation: `relu`, or `none` for linear and softmax regression.
    pub activation: String,
    /// Training loss: `cross_entropy` for classifiers, `mean_squared_error` for linear
    /// regression.
    pub loss: String,
    /// Total number of f32 elements in θ.
    pub parameters: usize,
    /// Tensors in layout order.
    pub tensors: Vec<TensorInfo>,
}

impl ModelDescription {
    /// Builds the description of `spec` for `inputs` features and `classes` classes. A
    /// linear regression spec takes `classes` 0 and has one output.
    ///
    /// Returns an error if `inputs` is 0, `classes` is below 2 for a classifier or not 0
    /// for linear regression, the spec has an empty or zero hidden size, or the parameter
    /// count overflows `usize`.
    pub fn new(spec: &ModelSpec, inputs: usize, classes: usize) -> Result<Self, ModelError> {
        validate_spec(spec)?;
        if inputs == 0 {
            return Err(ModelError::InvalidDescription(
                "the number of inputs must be at least 1, got 0".to_string(),
            ));
        }
        if spec.is_regression() && classes != 0 {
            return Err(ModelError::InvalidDescription(format!(
                "a {spec} model predicts a real value and takes 0 classes, got {classes}"
            )));
        }
        if !spec.is_regression() && classes < 2 {
            return Err(ModelError::InvalidDescription(format!(
                "the number of classes must be at least 2, got {classes}"
            )));
        }
        let outputs = if spec.is_regression() { 1 } else { classes };
        let (tensors, parameters) = layout_tensors(inputs, spec.hidden(), outputs)?;
        let activation = match spec {
            ModelSpec::Linear | ModelSpec::Softmax => NO_ACTIVATION,
            ModelSpec::Mlp { .. } => RELU,
        };
        let loss = if spec.is_regression() {
            MEAN_SQUARED_ERROR
        } else {
            CROSS_ENTROPY
        };
        Ok(ModelDescription {
            spec: spec.to_string(),
            inputs,
            hidden: spec.hidden().to_vec(),
            classes,
            activation: activation.to_string(),
            loss: loss.to_string(),
            parameters,
            tensors,
        })
    }

    /// Returns whether the model is linear regression, whose one output is a real value.
    pub fn is_regression(&self) -> bool {
        self.loss == MEAN_SQUARED_ERROR
    }

    /// Returns the width of the last layer: 1 for linear regression, else the classes.
    pub fn outputs(&self) -> usize {
        if self.is_regression() {
            1
        } else {
            self.classes
        }
    }

    /// Serializes the description as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("a struct of strings, integers and vectors always serializes")
    }

    /// Parses a description from JSON and checks that it is consistent, as [`validate`] does.
    ///
    /// [`validate`]: ModelDescription::validate
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let description: ModelDescription = serde_json::from_str(text)?;
        description.validate()?;
        Ok(description)
    }

    /// Checks that every field agrees with the description that [`ModelDescription::new`]
    /// builds from the spec, inputs and classes.
    ///
    /// The spec must parse and be in canonical form, `hidden` must match it, and the tensors
    /// must have the expected names, shapes and contiguous offsets. The error names the
    /// first field that differs.
    pub fn validate(&self) -> Result<(), ModelError> {
        let spec: ModelSpec = self.spec.parse()?;
        let canonical = spec.to_string();
        if canonical != self.spec {
            return Err(invalid(format!(
                "spec \"{}\" is not in canonical form \"{canonical}\"",
                self.spec
            )));
        }
        if spec.hidden() != self.hidden.as_slice() {
            return Err(invalid(format!(
                "hidden sizes {:?} do not match spec \"{}\"",
                self.hidden, self.spec
            )));
        }
        let expected = ModelDescription::new(&spec, self.inputs, self.classes)?;
        if self.activation != expected.activation {
            return Err(invalid(format!(
                "activation is \"{}\", expected \"{}\" for spec \"{}\"",
                self.activation, expected.activation, self.spec
            )));
        }
        if self.loss != expected.loss {
            return Err(invalid(format!(
                "loss is \"{}\", expected \"{}\"",
                self.loss, expected.loss
            )));
        }
        check_tensors(&self.tensors, &expected.tensors)?;
        if self.parameters != expected.parameters {
            return Err(invalid(format!(
                "the parameter count is {}, but the tensors contain {} elements",
                self.parameters, expected.parameters
            )));
        }
        Ok(())
    }
}

fn invalid(message: String) -> ModelError {
    ModelError::InvalidDescription(message)
}

/// Rejects an MLP spec without hidden layers or with a zero width, which a
/// `ModelSpec` built in code (not parsed) can contain.
fn validate_spec(spec: &ModelSpec) -> Result<(), ModelError> {
    let invalid_spec = |reason: &str| ModelError::InvalidSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    if let ModelSpec::Mlp { hidden } = spec {
        if hidden.is_empty() {
            return Err(invalid_spec("mlp needs at least one hidden size"));
        }
        if hidden.contains(&0) {
            return Err(invalid_spec("hidden size \"0\" is not a positive integer"));
        }
    }
    Ok(())
}

/// Lays out the weight and bias of each layer contiguously and returns the tensors
/// with the total element count.
fn layout_tensors(
    inputs: usize,
    hidden: &[usize],
    outputs: usize,
) -> Result<(Vec<TensorInfo>, usize), ModelError> {
    let overflow = || invalid("the parameter count overflows usize".to_string());
    let widths: Vec<usize> = std::iter::once(inputs)
        .chain(hidden.iter().copied())
        .chain(std::iter::once(outputs))
        .collect();
    let mut tensors = Vec::with_capacity(2 * (widths.len() - 1));
    let mut offset = 0usize;
    for (layer, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let weight_len = fan_out.checked_mul(fan_in).ok_or_else(overflow)?;
        tensors.push(TensorInfo {
            name: format!("layers.{layer}.weight"),
            shape: vec![fan_out, fan_in],
            offset,
        });
        offset = offset.checked_add(weight_len).ok_or_else(overflow)?;
        tensors.push(TensorInfo {
            name: format!("layers.{layer}.bias"),
            shape: vec![fan_out],
            offset,
        });
        offset = offset.checked_add(fan_out).ok_or_else(overflow)?;
    }
    Ok((tensors, offset))
}

/// Compares listed tensors with the expected layout and reports the first difference.
fn check_tensors(actual: &[TensorInfo], expected: &[TensorInfo]) -> Result<(), ModelError> {
    if actual.len() != expected.len() {
        return Err(invalid(format!(
            "{} tensors are listed, but the model has {}",
            actual.len(),
            expected.len()
        )));
    }
    for (index, (tensor, wanted)) in actual.iter().zip(expected).enumerate() {
        if tensor.name != wanted.name {
            return Err(invalid(format!(
                "tensor {index} is named \"{}\", expected \"{}\"",
                tensor.name, wanted.name
            )));
        }
        if tensor.shape != wanted.shape {
            return Err(invalid(format!(
                "tensor \"{}\" has shape {:?}, expected {:?}",
                tensor.name, tensor.shape, wanted.shape
            )));
        }
        if tensor.offset != wanted.offset {
            return Err(invalid(format!(
                "tensor \"{}\" starts at offset {}, expected {} because tensors are contiguous",
                tensor.name, tensor.offset, wanted.offset
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp(hidden: &[usize]) -> ModelSpec {
        ModelSpec::Mlp {
            hidden: hidden.to_vec(),
        }
    }

    fn describe(spec: &ModelSpec, inputs: usize, classes: usize) -> ModelDescription {
        ModelDescription::new(spec, inputs, classes).expect("valid dimensions")
    }

    fn tensor(name: &str, shape: &[usize], offset: usize) -> TensorInfo {
        TensorInfo {
            name: name.to_string(),
            shape: shape.to_vec(),
            offset,
        }
    }

    /// Parses `json` and returns the error message, failing if it parses.
    fn rejection(json: &str) -> String {
        match ModelDescription::from_json(json) {
            Ok(description) => panic!("accepted inconsistent description {description:?}"),
            Err(error) => error.to_string(),
        }
    }

    /// Applies `edit` to a valid 6-5-4-3 description and returns the from_json message.
    fn reject_edited(edit: impl FnOnce(&mut ModelDescription)) -> String {
        let mut description = describe(&mlp(&[5, 4]), 6, 3);
        edit(&mut description);
        rejection(&description.to_json())
    }

    #[test]
    fn softmax_layout() {
        let description = describe(&ModelSpec::Softmax, 4, 3);
        assert_eq!(description.spec, "softmax");
        assert_eq!(description.hidden, Vec::<usize>::new());
        assert_eq!(description.activation, "none");
        assert_eq!(description.loss, "cross_entropy");
        assert_eq!(description.parameters, 15);
        assert_eq!(
            description.tensors,
            vec![
                tensor("layers.0.weight", &[3, 4], 0),
                tensor("layers.0.bias", &[3], 12),
            ]
        );
    }

    #[test]
    fn mlp_layout() {
        let description = describe(&mlp(&[5, 4]), 6, 3);
        assert_eq!(description.spec, "mlp:5,4");
        assert_eq!(description.inputs, 6);
        assert_eq!(description.hidden, vec![5, 4]);
        assert_eq!(description.classes, 3);
        assert_eq!(description.activation, "relu");
        assert_eq!(description.parameters, 30 + 5 + 20 + 4 + 12 + 3);
        assert_eq!(
            description.tensors,
            vec![
                tensor("layers.0.weight", &[5, 6], 0),
                tensor("layers.0.bias", &[5], 30),
                tensor("layers.1.weight", &[4, 5], 35),
                tensor("layers.1.bias", &[4], 55),
                tensor("layers.2.weight", &[3, 4], 59),
                tensor("layers.2.bias", &[3], 71),
            ]
        );
    }

    #[test]
    fn linear_layout() {
        let description = describe(&ModelSpec::Linear, 3, 0);
        assert_eq!(description.spec, "linear");
        assert_eq!(description.loss, "mean_squared_error");
        assert_eq!(description.activation, "none");
        assert!(description.is_regression());
        assert_eq!(description.outputs(), 1);
        assert_eq!(description.parameters, 4);
        assert_eq!(
            description.tensors,
            [
                tensor("layers.0.weight", &[1, 3], 0),
                tensor("layers.0.bias", &[1], 3),
            ]
        );
        let parsed = ModelDescription::from_json(&description.to_json()).expect("round trip");
        assert_eq!(parsed, description);
    }

    #[test]
    fn linear_rejects_classes() {
        let error = ModelDescription::new(&ModelSpec::Linear, 3, 2).expect_err("classes");
        assert_eq!(
            error.to_string(),
            "invalid model description: a linear model predicts a real value and takes 0 \
             classes, got 2"
        );
    }

    #[test]
    fn mnist_mlp_parameter_count() {
        let description = describe(&mlp(&[256, 128]), 784, 10);
        let expected = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;
        assert_eq!(description.parameters, expected);
    }

    #[test]
    fn new_rejects_bad_dimensions() {
        let zero_inputs = ModelDescription::new(&ModelSpec::Softmax, 0, 3).map(|_| ());
        assert_eq!(
            zero_inputs.map_err(|error| error.to_string()),
            Err("invalid model description: the number of inputs must be at least 1, got 0".into())
        );
        let one_class = ModelDescription::new(&ModelSpec::Softmax, 4, 1).map(|_| ());
        assert_eq!(
            one_class.map_err(|error| error.to_string()),
            Err(
                "invalid model description: the number of classes must be at least 2, got 1".into()
            )
        );
    }

    #[test]
    fn new_rejects_bad_hidden_sizes() {
        let empty = ModelDescription::new(&mlp(&[]), 4, 3);
        assert!(
            matches!(empty, Err(ModelError::InvalidSpec { .. })),
            "{empty:?}"
        );
        let zero = ModelDescription::new(&mlp(&[4, 0]), 4, 3);
        assert!(
            matches!(zero, Err(ModelError::InvalidSpec { .. })),
            "{zero:?}"
        );
    }

    #[test]
    fn new_rejects_parameter_overflow() {
        let result = ModelDescription::new(&mlp(&[usize::MAX / 2]), 4, 3);
        let message = result.map(|_| ()).map_err(|error| error.to_string());
        assert_eq!(
            message,
            Err("invalid model description: the parameter count overflows usize".into())
        );
    }

    #[test]
    fn json_round_trip() {
        for spec in [ModelSpec::Softmax, mlp(&[5, 4])] {
            let description = describe(&spec, 6, 3);
            let json = description.to_json();
            let parsed = ModelDescription::from_json(&json).expect("own JSON parses");
            assert_eq!(parsed, description);
        }
    }

    #[test]
    fn json_uses_field_names() {
        let json = describe(&ModelSpec::Softmax, 2, 2).to_json();
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["spec"], "softmax");
        assert_eq!(value["parameters"], 6);
        assert_eq!(value["tensors"][1]["name"], "layers.0.bias");
        assert_eq!(value["tensors"][1]["offset"], 4);
        assert!(json.contains('\n'), "to_json output is not pretty-printed");
    }

    #[test]
    fn from_json_rejects_malformed_json() {
        assert!(rejection("{").starts_with("invalid model description JSON: "));
        assert!(rejection("{\"spec\": \"softmax\"}").contains("missing field"));
        let negative = describe(&ModelSpec::Softmax, 2, 2)
            .to_json()
            .replace("\"inputs\": 2", "\"inputs\": -2");
        assert!(rejection(&negative).starts_with("invalid model description JSON: "));
    }

    #[test]
    fn from_json_rejects_bad_spec() {
        let message = reject_edited(|d| d.spec = "mlp:5,x".to_string());
        assert!(
            message.starts_with("invalid model spec \"mlp:5,x\""),
            "{message}"
        );
        let message = reject_edited(|d| d.spec = "mlp: 5, 4".to_string());
        assert_eq!(
            message,
            "invalid model description: spec \"mlp: 5, 4\" is not in canonical form \"mlp:5,4\""
        );
    }

    #[test]
    fn from_json_rejects_hidden_mismatch() {
        let message = reject_edited(|d| d.hidden = vec![5, 3]);
        assert_eq!(
            message,
            "invalid model description: hidden sizes [5, 3] do not match spec \"mlp:5,4\""
        );
    }

    #[test]
    fn from_json_rejects_bad_dimensions() {
        let message = reject_edited(|d| d.classes = 1);
        assert_eq!(
            message,
            "invalid model description: the number of classes must be at least 2, got 1"
        );
        let message = reject_edited(|d| d.inputs = 0);
        assert_eq!(
            message,
            "invalid model description: the number of inputs must be at least 1, got 0"
        );
    }

    #[test]
    fn from_json_rejects_changed_inputs() {
        // Changing inputs alone leaves the first weight with the old shape.
        let message = reject_edited(|d| d.inputs = 7);
        assert_eq!(
            message,
            "invalid model description: tensor \"layers.0.weight\" has shape [5, 6], expected [5, 7]"
        );
    }

    #[test]
    fn from_json_rejects_activation_and_loss() {
        let message = reject_edited(|d| d.activation = "tanh".to_string());
        assert_eq!(
            message,
            "invalid model description: activation is \"tanh\", expected \"relu\" for spec \"mlp:5,4\""
        );
        let message = reject_edited(|d| d.loss = "mse".to_string());
        assert_eq!(
            message,
            "invalid model description: loss is \"mse\", expected \"cross_entropy\""
        );
    }

    #[test]
    fn from_json_rejects_parameter_total() {
        let message = reject_edited(|d| d.parameters += 1);
        assert_eq!(
            message,
            "invalid model description: the parameter count is 75, but the tensors contain 74 elements"
        );
    }

    #[test]
    fn from_json_rejects_tensor_list() {
        let message = reject_edited(|d| {
            d.tensors.pop();
        });
        assert_eq!(
            message,
            "invalid model description: 5 tensors are listed, but the model has 6"
        );
        let message = reject_edited(|d| d.tensors.swap(0, 1));
        assert_eq!(
            message,
            "invalid model description: tensor 0 is named \"layers.0.bias\", expected \"layers.0.weight\""
        );
    }

    #[test]
    fn from_json_rejects_tensor_shape() {
        let message = reject_edited(|d| d.tensors[3].shape = vec![4, 1]);
        assert_eq!(
            message,
            "invalid model description: tensor \"layers.1.bias\" has shape [4, 1], expected [4]"
        );
    }

    #[test]
    fn from_json_rejects_gaps_and_overlaps() {
        let message = reject_edited(|d| d.tensors[2].offset += 1);
        assert_eq!(
            message,
            "invalid model description: tensor \"layers.1.weight\" starts at offset 36, \
             expected 35 because tensors are contiguous"
        );
        let message = reject_edited(|d| d.tensors[1].offset = 0);
        assert!(
            message.contains("\"layers.0.bias\" starts at offset 0"),
            "{message}"
        );
    }
}
