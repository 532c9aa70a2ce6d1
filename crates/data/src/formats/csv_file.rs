//! Reading CSV files of examples: one example per record, one column of
//! labels and numeric features in every other column.
//!
//! The `csv` crate splits records, so quoted fields, CRLF line endings and
//! any one-byte delimiter work. Blank lines are skipped. Records are read
//! one at a time through [`CsvRows`], so a caller can process a file larger
//! than memory.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{DataError, Result};
use crate::formats::line_index::{LineCounting, LineIndex};
use crate::formats::table::{LabelPosition, RawFeatures, RawTable};

/// The column of the labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// No column: every column is a feature and each label is empty, as
    /// for data to predict.
    None,
    /// The last column.
    Last,
    /// A column by its number, counted from 1.
    Number(usize),
    /// A column by its header name.
    Name(String),
}

impl FromStr for LabelColumn {
    type Err = String;

    /// Parses `none`, `last`, a column number from 1, or a header name.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => return Ok(LabelColumn::None),
            "last" => return Ok(LabelColumn::Last),
            _ => {}
        }
        if let Ok(number) = text.parse::<usize>() {
            if number == 0 {
                return Err("label column numbers count from 1, got 0".to_owned());
            }
            return Ok(LabelColumn::Number(number));
        }
        if text.is_empty() {
            return Err("the label column name is empty".to_owned());
        }
        Ok(LabelColumn::Name(text.to_owned()))
    }
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    /// Whether the first record names the columns.
    pub header: bool,
    /// Field delimiter, one byte such as `b','` or `b'\t'`.
    pub delimiter: u8,
    /// Column of the labels.
    pub label_column: LabelColumn,
    /// Value that replaces a missing or non-numeric feature; without one,
    /// such a feature is an error.
    pub fill_value: Option<f32>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: b',',
            label_column: LabelColumn::Last,
            fill_value: None,
        }
    }
}

/// Label index of [`LabelColumn::None`], past any real field.
const NO_LABEL: usize = usize::MAX;

/// One record of a CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    /// Feature values, in column order without the label column.
    pub features: Vec<f32>,
    /// Label text, with surrounding whitespace removed.
    pub label: String,
    /// Line the record starts on, counted from 1.
    pub line: u64,
}

/// Iterator over the records of a CSV file.
#[derive(Debug)]
pub struct CsvRows<R: io::Read> {
    path: PathBuf,
    reader: csv::Reader<LineCounting<R>>,
    lines: LineIndex,
    record: csv::ByteRecord,
    label_column: LabelColumn,
    /// Label field index from 0, known after the header or first record.
    label_index: Option<usize>,
    /// Fields per record, known after the header or first record.
    fields: Option<usize>,
    fill_value: Option<f32>,
    /// Features replaced by the fill value so far.
    filled: u64,
    done: bool,
}

impl<R: io::Read> CsvRows<R> {
    /// Starts reading CSV text from `reader`; `path` names it in errors.
    ///
    /// # Errors
    ///
    /// With a header: a read error, or [`DataError::Syntax`] when the
    /// header has no column of the requested name or number.
    pub fn new(path: &Path, reader: R, options: &CsvOptions) -> Result<Self> {
        let (reader, lines) = LineCounting::new(reader);
        let reader = csv::ReaderBuilder::new()
            .has_headers(options.header)
            .delimiter(options.delimiter)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let mut rows = CsvRows {
            path: path.to_path_buf(),
            reader,
            lines,
            record: csv::ByteRecord::new(),
            label_column: options.label_column.clone(),
            label_index: None,
            fields: None,
            fill_value: options.fill_value,
            filled: 0,
            done: false,
        };
        if options.header {
            let headers = match rows.reader.byte_headers() {
                Ok(headers) => headers.clone(),
                Err(error) => return Err(rows.csv_error(error)),
            };
            if !headers.is_empty() {
                let names: Vec<String> = headers
                    .iter()
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .collect();
                rows.label_index = Some(rows.resolve_label(&names, 1)?);
                rows.fields = Some(names.len());
            }
        } else if let LabelColumn::Name(name) = &options.label_column {
            return Err(DataError::Syntax {
                path: rows.path.clone(),
                line: 1,
                column: 1,
                message: format!(
                    "the label column is named \"{name}\" but the file is read without a \
                     header; give the column number instead"
                ),
            });
        }
        Ok(rows)
    }

    /// Returns the number of features replaced by the fill value so far.
    pub fn filled(&self) -> u64 {
        self.filled
    }

    /// Returns the label column counted from 1, once it is known.
    pub fn label_column_number(&self) -> Option<u64> {
        self.label_index
            .filter(|&index| index != NO_LABEL)
            .map(|index| index as u64 + 1)
    }

    fn resolve_label(&self, names: &[String], line: u64) -> Result<usize> {
        let syntax = |message: String| DataError::Syntax {
            path: self.path.clone(),
            line,
            column: 1,
            message,
        };
        match &self.label_column {
            LabelColumn::None => Ok(NO_LABEL),
            LabelColumn::Last => Ok(names.len() - 1),
            LabelColumn::Number(number) if *number <= names.len() => Ok(number - 1),
            LabelColumn::Number(number) => Err(syntax(format!(
                "label column {number} does not exist, because the row has {} columns",
                names.len()
            ))),
            LabelColumn::Name(name) => names.iter().position(|n| n == name).ok_or_else(|| {
                syntax(format!(
                    "no column is named \"{name}\"; the header names {}",
                    names.join(", ")
                ))
            }),
        }
    }

    fn csv_error(&self, error: csv::Error) -> DataError {
        let line = self
            .lines
            .line_at(error.position().map_or(0, csv::Position::byte));
        let message = error.to_string();
        match error.into_kind() {
            csv::ErrorKind::Io(error) => DataError::io(&self.path, error),
            _ => DataError::Syntax {
                path: self.path.clone(),
                line,
                column: 1,
                message,
            },
        }
    }

    fn parse_record(&mut self) -> Result<CsvRow> {
        let line = self
            .lines
            .line_at(self.record.position().map_or(0, csv::Position::byte));
        let syntax = |column: usize, message: String| DataError::Syntax {
            path: self.path.clone(),
            line,
            column: column as u64 + 1,
            message,
        };
        let fields = *self.fields.get_or_insert(self.record.len());
        if self.record.len() != fields {
            return Err(syntax(
                self.record.len().min(fields),
                format!(
                    "the row has {} fields but the first row has {fields}",
                    self.record.len()
                ),
            ));
        }
        let labeled = !matches!(self.label_column, LabelColumn::None);
        if labeled && fields < 2 {
            return Err(syntax(
                0,
                "the row has one field, but a label and at least one feature are needed; \
                 check the delimiter"
                    .to_owned(),
            ));
        }
        let label_index = match self.label_index {
            Some(index) => index,
            None => {
                let names: Vec<String> = (1..=fields).map(|n| n.to_string()).collect();
                let index = self.resolve_label(&names, line)?;
                self.label_index = Some(index);
                index
            }
        };

        let mut features = Vec::with_capacity(fields);
        let mut label = String::new();
        for (index, bytes) in self.record.iter().enumerate() {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Err(syntax(index, "the field is not valid UTF-8".to_owned()));
            };
            if index == label_index {
                if text.is_empty() {
                    return Err(syntax(
                        index,
                        "missing label; fill it in or drop the row".to_owned(),
                    ));
                }
                label = text.to_owned();
                continue;
            }
            match parse_feature(text) {
                Ok(value) => features.push(value),
                Err(problem) => match self.fill_value {
                    Some(fill) => {
                        self.filled += 1;
                        features.push(fill);
                    }
                    None => return Err(syntax(index, problem)),
                },
            }
        }
        Ok(CsvRow {
            features,
            label,
            line,
        })
    }
}

impl<R: io::Read> Iterator for CsvRows<R> {
    type Item = Result<CsvRow>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let row = match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => self.parse_record(),
            Ok(false) => {
                self.done = true;
                return None;
            }
            Err(error) => Err(self.csv_error(error)),
        };
        if row.is_err() {
            self.done = true;
        }
        Some(row)
    }
}

/// Parses one feature. Returns a message naming the problem when the field
/// is missing (empty, `NA`, `N/A`, `NaN`, `null` or `?`), not a number or
/// not finite.
fn parse_feature(text: &str) -> std::result::Result<f32, String> {
    const MISSING: [&str; 5] = ["na", "n/a", "nan", "null", "?"];
    if text.is_empty() || MISSING.iter().any(|m| text.eq_ignore_ascii_case(m)) {
        return Err(format!(
            "missing value \"{text}\"; give --fill-value to replace missing values"
        ));
    }
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(format!(
            "\"{text}\" is not a finite number; fix the value or give --fill-value"
        )),
        Err(_) => Err(format!(
            "\"{text}\" is not a number; fix the value or give --fill-value"
        )),
    }
}

/// Reads a whole CSV file into a table of dense rows.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read, [`DataError::Syntax`]
/// for the first invalid record, and [`DataError::EmptyFile`] when it holds
/// no records.
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<RawTable> {
    let file = File::open(path).map_err(|error| DataError::io(path, error))?;
    let mut rows = CsvRows::new(path, io::BufReader::new(file), options)?;
    let mut values = Vec::new();
    let mut labels = Vec::new();
    let mut positions = Vec::new();
    let mut width = 0;
    for row in rows.by_ref() {
        let row = row?;
        width = row.features.len();
        values.extend_from_slice(&row.features);
        labels.push(row.label);
        positions.push(LabelPosition::Text {
            line: row.line,
            column: 0,
        });
    }
    if labels.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let label_column = rows.label_column_number().unwrap_or(1);
    for position in &mut positions {
        if let LabelPosition::Text { column, .. } = position {
            *column = label_column;
        }
    }
    if rows.filled() > 0 {
        tracing::info!(
            path = %path.display(),
            filled = rows.filled(),
            "replaced missing or non-numeric features with the fill value"
        );
    }
    Ok(RawTable {
        path: path.to_path_buf(),
        features: RawFeatures::Dense { values, width },
        labels,
        positions,
    })
}
