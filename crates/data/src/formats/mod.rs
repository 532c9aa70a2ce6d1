//! Reading the user's own data: CSV, LIBSVM (SVMlight) text and NumPy
//! `.npy` pairs, besides the MNIST IDX files of [`crate::mnist`], and
//! holding out validation and test splits from them.
//!
//! Each text reader streams records one at a time ([`csv_file::CsvRows`],
//! [`libsvm::LibsvmRows`]), and every error names the file, and for text
//! formats the line and column. The `read_*` functions collect a whole file
//! into a [`RawTable`], whose labels [`ClassMap`] turns into class ids.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::{DataError, Result};

pub mod classes;
pub mod csv_file;
pub mod libsvm;
mod line_index;
pub mod npy;
pub mod splits;
pub mod table;

pub use classes::ClassMap;
pub use csv_file::{CsvOptions, LabelColumn};
pub use libsvm::LibsvmOptions;
pub use splits::{InputOptions, LoadedSplits, SplitRecord, SplitSpec, SplitsRecord, load_splits};
pub use table::{RawFeatures, RawTable, SparseRows};

/// A data file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MNIST-style IDX: a folder, or an images file with its labels file.
    Idx,
    /// Comma-separated (or other delimiter) values.
    Csv,
    /// LIBSVM (SVMlight) sparse text.
    Libsvm,
    /// A NumPy features `.npy` file with its labels `.npy` file.
    Npy,
}

impl Format {
    /// Tells the format from a path: a folder is IDX, and a file by its
    /// name: `.csv` or `.tsv` is CSV, `.npy` is NumPy, `.libsvm`, `.svm` or
    /// `.svmlight` is LIBSVM, and a name containing `idx1` or `idx3` is IDX.
    ///
    /// # Errors
    ///
    /// [`DataError::UnknownFormat`] when no rule applies.
    pub fn from_path(path: &Path) -> Result<Format> {
        if path.is_dir() {
            return Ok(Format::Idx);
        }
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let extension = name.rsplit_once('.').map_or("", |(_, extension)| extension);
        match extension {
            "csv" | "tsv" => Ok(Format::Csv),
            "npy" => Ok(Format::Npy),
            "libsvm" | "svm" | "svmlight" => Ok(Format::Libsvm),
            _ if name.contains("idx1") || name.contains("idx3") => Ok(Format::Idx),
            _ => Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Returns the format's name as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "idx",
            Format::Csv => "csv",
            Format::Libsvm => "libsvm",
            Format::Npy => "npy",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "idx" => Ok(Format::Idx),
            "csv" => Ok(Format::Csv),
            "libsvm" | "svmlight" => Ok(Format::Libsvm),
            "npy" => Ok(Format::Npy),
            _ => Err(format!(
                "unknown format \"{text}\"; expected idx, csv, libsvm or npy"
            )),
        }
    }
}

/// Options of the readers, each used only by its own format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOptions {
    /// How to read CSV files.
    pub csv: CsvOptions,
    /// How to read LIBSVM files.
    pub libsvm: LibsvmOptions,
}

/// Reads a CSV, LIBSVM or NumPy file into a table. A `.npy` features file
/// is read with the labels file [`npy::labels_path_for`] names. A `.tsv`
/// file read with the default comma delimiter is read with tabs.
///
/// # Errors
///
/// The errors of the format's reader, and [`DataError::UnknownFormat`] for
/// [`Format::Idx`], which is not a table.
pub fn read_table(path: &Path, format: Format, options: &ReadOptions) -> Result<RawTable> {
    match format {
        Format::Csv => {
            let mut csv = options.csv.clone();
            let is_tsv = path
                .extension()
                .is_some_and(|extension| extension.eq_ignore_ascii_case("tsv"));
            if is_tsv && csv.delimiter == b',' {
                csv.delimiter = b'\t';
            }
            csv_file::read_csv(path, &csv)
        }
        Format::Libsvm => libsvm::read_libsvm(path, options.libsvm),
        Format::Npy => npy::read_npy_pair(path, &npy::labels_path_for(path)?),
        Format::Idx => Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests;
