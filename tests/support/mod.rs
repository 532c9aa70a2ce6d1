//! Helpers shared by the integration tests: small subsets of the bundled
//! MNIST and bad data files.

#![allow(dead_code)] // each test file uses a different part

pub(crate) mod nodes;

use std::path::{Path, PathBuf};

use downpour_data::idx;

/// Returns the path of the bundled MNIST folder.
pub(crate) fn bundled_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

/// Writes the first `train` training and `test` test examples of the
/// bundled MNIST into `dir` as an MNIST folder (gzipped IDX), and returns
/// `dir`.
pub(crate) fn mnist_subset(dir: &Path, train: usize, test: usize) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the subset folder");
    for (prefix, count) in [("train", train), ("t10k", test)] {
        let images = idx::read_idx(&bundled_mnist().join(format!("{prefix}-images-idx3-ubyte.gz")))
            .expect("read bundled images");
        let labels = idx::read_idx(&bundled_mnist().join(format!("{prefix}-labels-idx1-ubyte.gz")))
            .expect("read bundled labels");
        let pixels = images.dims[1] * images.dims[2];
        idx::write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &[count, images.dims[1], images.dims[2]],
            &images.values[..count * pixels],
            true,
        )
        .expect("write subset images");
        idx::write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &[count],
            &labels.values[..count],
            true,
        )
        .expect("write subset labels");
    }
    dir.to_owned()
}
