//! Reading LIBSVM (SVMlight) text: one example per line,
//! `LABEL [qid:N] INDEX:VALUE INDEX:VALUE ... [# comment]`.
//!
//! Indices count from 1 unless the file is read as 0-based, and must
//! increase strictly within a line. `qid:` fields are ignored, `#` starts a
//! comment, and blank or comment-only lines are skipped. Lines are read one
//! at a time through [`LibsvmRows`], so a caller can process a file larger
//! than memory.

use std::fs::File;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::formats::table::{LabelPosition, RawFeatures, RawTable, SparseRows};

/// How to read a LIBSVM file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LibsvmOptions {
    /// Whether feature indices count from 0 instead of 1.
    pub zero_based: bool,
}

/// One example of a LIBSVM file.
#[derive(Debug, Clone, PartialEq)]
pub struct LibsvmRow {
    /// Label text as written, such as `+1`, `0` or `3`.
    pub label: String,
    /// Feature indices counted from 0, strictly increasing.
    pub indices: Vec<u32>,
    /// Value of each index.
    pub values: Vec<f32>,
    /// Line of the example, counted from 1.
    pub line: u64,
}

/// Iterator over the examples of a LIBSVM file.
#[derive(Debug)]
pub struct LibsvmRows<R: BufRead> {
    path: PathBuf,
    reader: R,
    options: LibsvmOptions,
    line: u64,
    text: String,
    done: bool,
}

impl<R: BufRead> LibsvmRows<R> {
    /// Starts reading LIBSVM text from `reader`; `path` names it in errors.
    pub fn new(path: &Path, reader: R, options: LibsvmOptions) -> Self {
        LibsvmRows {
            path: path.to_path_buf(),
            reader,
            options,
            line: 0,
            text: String::new(),
            done: false,
        }
    }

    /// Parses the line in `self.text`, or returns `None` for a blank or
    /// comment-only line.
    fn parse_line(&self) -> Option<Result<LibsvmRow>> {
        let content = match self.text.find('#') {
            Some(end) => &self.text[..end],
            None => &self.text,
        };
        let mut tokens = tokens(content);
        let (label_column, label) = tokens.next()?;
        Some(self.parse_tokens(label_column, label, tokens))
    }

    fn parse_tokens<'a>(
        &self,
        label_column: usize,
        label: &str,
        tokens: impl Iterator<Item = (usize, &'a str)>,
    ) -> Result<LibsvmRow> {
        let syntax = |column: usize, message: String| DataError::Syntax {
            path: self.path.clone(),
            line: self.line,
            column: column as u64 + 1,
            message,
        };
        if !label.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(syntax(
                label_column,
                format!("label \"{label}\" is not a number"),
            ));
        }
        let mut indices: Vec<u32> = Vec::new();
        let mut values = Vec::new();
        for (column, token) in tokens {
            let Some((index_text, value_text)) = token.split_once(':') else {
                return Err(syntax(
                    column,
                    format!("expected INDEX:VALUE, found \"{token}\""),
                ));
            };
            if index_text == "qid" {
                continue;
            }
            let Ok(written) = index_text.parse::<u32>() else {
                return Err(syntax(
                    column,
                    format!("index \"{index_text}\" is not a non-negative integer"),
                ));
            };
            let index = if self.options.zero_based {
                written
            } else if written == 0 {
                return Err(syntax(
                    column,
                    "index 0 in a file read as 1-based; if the file's indices count from 0, \
                     give --zero-based"
                        .to_owned(),
                ));
            } else {
                written - 1
            };
            if index == u32::MAX {
                return Err(syntax(column, format!("index {written} is too large")));
            }
            if let Some(&previous) = indices.last() {
                let shown = |index: u32| {
                    if self.options.zero_based {
                        index
                    } else {
                        index + 1
                    }
                };
                if index == previous {
                    return Err(syntax(
                        column,
                        format!("index {written} appears twice in the line"),
                    ));
                }
                if index < previous {
                    return Err(syntax(
                        column,
                        format!(
                            "index {written} follows index {}; indices must increase within a line",
                            shown(previous)
                        ),
                    ));
                }
            }
            let value = match value_text.parse::<f32>() {
                Ok(value) if value.is_finite() => value,
                _ => {
                    return Err(syntax(
                        column + index_text.len() + 1,
                        format!("value \"{value_text}\" of index {written} is not a finite number"),
                    ));
                }
            };
            indices.push(index);
            values.push(value);
        }
        Ok(LibsvmRow {
            label: label.to_owned(),
            indices,
            values,
            line: self.line,
        })
    }
}

impl<R: BufRead> Iterator for LibsvmRows<R> {
    type Item = Result<LibsvmRow>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.text.clear();
            match self.reader.read_line(&mut self.text) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    if let Some(row) = self.parse_line() {
                        self.done = row.is_err();
                        return Some(row);
                    }
                }
                Err(error) => {
                    self.done = true;
                    self.line += 1;
                    let error = if error.kind() == io::ErrorKind::InvalidData {
                        DataError::Syntax {
                            path: self.path.clone(),
                            line: self.line,
                            column: 1,
                            message: "the line is not valid UTF-8".to_owned(),
                        }
                    } else {
                        DataError::io(&self.path, error)
                    };
                    return Some(Err(error));
                }
            }
        }
        None
    }
}

/// Splits a line at spaces and tabs into tokens with their byte offsets.
fn tokens(line: &str) -> impl Iterator<Item = (usize, &str)> {
    line.split([' ', '\t', '\r', '\n'])
        .scan(0usize, |offset, token| {
            let start = *offset;
            *offset += token.len() + 1;
            Some((start, token))
        })
        .filter(|(_, token)| !token.is_empty())
}

/// Reads a whole LIBSVM file into a table of sparse rows.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read, [`DataError::Syntax`]
/// for the first invalid line, and [`DataError::EmptyFile`] when it holds
/// no examples.
pub fn read_libsvm(path: &Path, options: LibsvmOptions) -> Result<RawTable> {
    let file = File::open(path).map_err(|error| DataError::io(path, error))?;
    let mut rows = SparseRows::new();
    let mut labels = Vec::new();
    let mut positions = Vec::new();
    for row in LibsvmRows::new(path, io::BufReader::new(file), options) {
        let row = row?;
        rows.push_row(&row.indices, &row.values);
        labels.push(row.label);
        positions.push(LabelPosition::Text {
            line: row.line,
            column: 1,
        });
    }
    if labels.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(RawTable {
        path: path.to_path_buf(),
        features: RawFeatures::Sparse(rows),
        labels,
        positions,
    })
}
