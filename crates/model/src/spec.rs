//! Model spec strings such as `linear`, `softmax` and `mlp:256,128`.

use std::fmt;
use std::str::FromStr;

use crate::ModelError;

/// Model architecture, as selected on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// Linear regression: one linear layer from the inputs to one real-valued output,
    /// trained on the mean squared error.
    Linear,
    /// Softmax regression: one linear layer from the inputs to the class logits.
    Softmax,
    /// Multilayer perceptron with ReLU hidden layers of the given widths, in order from the input.
    Mlp {
        /// Widths of the hidden layers.
        hidden: Vec<usize>,
    },
}

impl ModelSpec {
    /// Returns whether the model predicts a real value (trained on the mean squared
    /// error) rather than a class (trained on the cross-entropy).
    pub fn is_regression(&self) -> bool {
        matches!(self, ModelSpec::Linear)
    }

    /// Returns the hidden-layer widths, which are empty for linear and softmax regression.
    pub fn hidden(&self) -> &[usize] {
        match self {
            ModelSpec::Linear | ModelSpec::Softmax => &[],
            ModelSpec::Mlp { hidden } => hidden,
        }
    }
}

impl FromStr for ModelSpec {
    type Err = ModelError;

    /// Parses `linear`, `softmax` or `mlp:` followed by comma-separated positive hidden sizes.
    /// Whitespace around the whole spec and around each size is ignored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| ModelError::InvalidSpec {
            spec: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        let (kind, sizes) = match trimmed.split_once(':') {
            Some((kind, sizes)) => (kind.trim(), Some(sizes)),
            None => (trimmed, None),
        };
        match (kind, sizes) {
            ("linear", None) => Ok(ModelSpec::Linear),
            ("linear", Some(_)) => Err(invalid("linear takes no hidden sizes".to_string())),
            ("softmax", None) => Ok(ModelSpec::Softmax),
            ("softmax", Some(_)) => Err(invalid("softmax takes no hidden sizes".to_string())),
            ("mlp", None) => Err(invalid("mlp needs at least one hidden size".to_string())),
            ("mlp", Some(sizes)) if sizes.trim().is_empty() => {
                Err(invalid("mlp needs at least one hidden size".to_string()))
            }
            ("mlp", Some(sizes)) => {
                let hidden = sizes
                    .split(',')
                    .map(parse_hidden_size)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                Ok(ModelSpec::Mlp { hidden })
            }
            _ => Err(invalid(format!("unknown model kind \"{kind}\""))),
        }
    }
}

/// Parses one hidden size, which must be a positive decimal integer that fits in `usize`.
fn parse_hidden_size(text: &str) -> Result<usize, String> {
    let size = text.trim();
    let not_positive = || format!("hidden size \"{size}\" is not a positive integer");
    if size.is_empty() || !size.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(not_positive());
    }
    match size.parse::<usize>() {
        Ok(0) => Err(not_positive()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("hidden size \"{size}\" is too large")),
    }
}

impl fmt::Display for ModelSpec {
    /// Writes the canonical form: `linear`, `softmax`, or `mlp:` followed by the sizes
    /// without spaces.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Linear => formatter.write_str("linear"),
            ModelSpec::Softmax => formatter.write_str("softmax"),
            ModelSpec::Mlp { hidden } => {
                formatter.write_str("mlp:")?;
                for (index, size) in hidden.iter().enumerate() {
                    if index > 0 {
                        formatter.write_str(",")?;
                    }
                    write!(formatter, "{size}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModelSpec {
        text.parse()
            .unwrap_or_else(|error| panic!("{text:?} should parse: {error}"))
    }

    fn parse_error(text: &str) -> String {
        match text.parse::<ModelSpec>() {
            Ok(spec) => panic!("{text:?} should be rejected, parsed as {spec:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn parses_valid_specs() {
        assert_eq!(parse("softmax"), ModelSpec::Softmax);
        assert_eq!(parse("linear"), ModelSpec::Linear);
        assert_eq!(parse("mlp:64"), ModelSpec::Mlp { hidden: vec![64] });
        assert_eq!(
            parse("mlp:256,128"),
            ModelSpec::Mlp {
                hidden: vec![256, 128]
            }
        );
    }

    #[test]
    fn parse_tolerates_whitespace() {
        assert_eq!(parse("  softmax "), ModelSpec::Softmax);
        assert_eq!(
            parse("mlp: 256 , 128 "),
            ModelSpec::Mlp {
                hidden: vec![256, 128]
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for text in ["linear", "softmax", "mlp:64", "mlp:256,128", "mlp:3,2,1"] {
            let spec = parse(text);
            assert_eq!(spec.to_string(), text);
            assert_eq!(parse(&spec.to_string()), spec);
        }
        assert_eq!(parse("mlp: 8, 4").to_string(), "mlp:8,4");
    }

    #[test]
    fn hidden_lists_layer_widths() {
        assert!(ModelSpec::Softmax.hidden().is_empty());
        assert_eq!(parse("mlp:5,4").hidden(), &[5, 4]);
    }

    #[test]
    fn rejects_invalid_specs_with_reason() {
        let cases = [
            ("", "unknown model kind \"\""),
            ("cnn", "unknown model kind \"cnn\""),
            ("Softmax", "unknown model kind \"Softmax\""),
            ("softmax:10", "softmax takes no hidden sizes"),
            ("linear:3", "linear takes no hidden sizes"),
            ("mlp", "mlp needs at least one hidden size"),
            ("mlp:", "mlp needs at least one hidden size"),
            ("mlp:  ", "mlp needs at least one hidden size"),
            ("mlp:abc", "hidden size \"abc\" is not a positive integer"),
            ("mlp:0", "hidden size \"0\" is not a positive integer"),
            ("mlp:-5", "hidden size \"-5\" is not a positive integer"),
            ("mlp:+5", "hidden size \"+5\" is not a positive integer"),
            ("mlp:2.5", "hidden size \"2.5\" is not a positive integer"),
            ("mlp:256,,128", "hidden size \"\" is not a positive integer"),
            ("mlp:256,", "hidden size \"\" is not a positive integer"),
            ("mlp:1 2", "hidden size \"1 2\" is not a positive integer"),
            (
                "mlp:99999999999999999999999",
                "hidden size \"99999999999999999999999\" is too large",
            ),
        ];
        for (text, reason) in cases {
            let message = parse_error(text);
            let expected = format!(
                "invalid model spec \"{text}\": {reason}; expected \"linear\", \"softmax\" \
                 or \"mlp:\" followed by comma-separated hidden sizes, such as \"mlp:256,128\""
            );
            assert_eq!(message, expected, "spec {text:?}");
        }
    }

    #[test]
    fn error_is_one_line() {
        let message = parse_error("mlp:abc");
        assert!(!message.contains('\n'), "{message}");
    }
}
