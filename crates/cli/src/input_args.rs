//! Command-line arguments for reading data files and for the sources of the
//! held-out splits.

use std::path::PathBuf;

use clap::Args;
use downpour_data::formats::{
    CsvOptions, Format, InputOptions, LabelColumn, LibsvmOptions, ReadOptions,
};

/// How to read a data file.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Data format: idx, csv, libsvm or npy [default: from the file name:
    /// a folder or *idx1*/*idx3* is idx, .csv or .tsv is csv, .libsvm,
    /// .svm or .svmlight is libsvm, .npy is npy].
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// CSV: column of the labels, as `last`, a column number from 1, a
    /// header name, or `none` for a file without labels (`predict` only).
    #[arg(long, default_value = "last", value_parser = parse_label_column)]
    pub label_column: LabelColumn,
    /// CSV: field delimiter, one character, or `tab` [default: a comma, or
    /// a tab for .tsv files].
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// CSV: the first row contains data, not column names.
    #[arg(long)]
    pub no_header: bool,
    /// CSV: value that replaces missing or non-numeric features
    /// [default: such a feature is an error].
    #[arg(long, allow_negative_numbers = true, value_parser = parse_finite)]
    pub fill_value: Option<f32>,
    /// LIBSVM: feature indices count from 0 instead of 1.
    #[arg(long)]
    pub zero_based: bool,
}

/// Sources of the validation and test splits.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// File of validation examples, in the format of --data
    /// [default: hold out --validation-fraction of --data].
    #[arg(long)]
    pub validation_data: Option<PathBuf>,
    /// File of test examples, in the format of --data [default: the t10k
    /// files of an MNIST folder, or --test-fraction of --data].
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Fraction of --data held out for validation, drawn with --seed, when
    /// there is no --validation-data [default: 0.1; for IDX data the last
    /// --validation-size examples].
    #[arg(long)]
    pub validation_fraction: Option<f64>,
    /// Fraction of --data held out for test, drawn with --seed, when there
    /// is no --test-data [default: 0.1; none for IDX data].
    #[arg(long)]
    pub test_fraction: Option<f64>,
}

impl ReadArgs {
    /// Rejects `--label-column none` for a command that reads labels.
    pub fn require_labels(&self) -> anyhow::Result<()> {
        if matches!(self.label_column, LabelColumn::None) {
            anyhow::bail!(
                "--label-column none is only for `downpour predict`; training and `eval` need the labels of --data, so name their column (a number from 1, a header name or `last`)"
            );
        }
        Ok(())
    }

    /// Returns the format and reader options.
    pub fn read_options(&self) -> (Option<Format>, ReadOptions) {
        let csv = CsvOptions {
            header: !self.no_header,
            delimiter: self.delimiter.unwrap_or(b','),
            label_column: self.label_column.clone(),
            fill_value: self.fill_value,
        };
        let libsvm = LibsvmOptions {
            zero_based: self.zero_based,
        };
        (self.format, ReadOptions { csv, libsvm })
    }

    /// Returns the input options with the split settings of `splits`.
    pub fn input_options(&self, splits: &SplitArgs) -> InputOptions {
        let (format, read) = self.read_options();
        InputOptions {
            format,
            read,
            validation_data: splits.validation_data.clone(),
            test_data: splits.test_data.clone(),
            validation_fraction: splits.validation_fraction,
            test_fraction: splits.test_fraction,
        }
    }
}

fn parse_format(text: &str) -> Result<Format, String> {
    text.parse()
}

fn parse_label_column(text: &str) -> Result<LabelColumn, String> {
    text.parse()
}

fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ => match text.as_bytes() {
            [byte] if byte.is_ascii() && *byte != b'"' && *byte != b'\n' && *byte != b'\r' => {
                Ok(*byte)
            }
            _ => Err(format!(
                "the delimiter must be one ASCII character other than a quote or line break, \
                 or `tab`; got \"{text}\""
            )),
        },
    }
}

fn parse_finite(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(format!("expected a finite number, got \"{text}\"")),
    }
}
