//! Data handling for Downpour: reading MNIST-style IDX files, the one-time
//! seeded shuffle, cutting the training set into shards and minibatches, the
//! binary shard format served to workers, and safetensors checkpoints.
//!
//! The coordinator's data path uses these pieces in order:
//!
//! ```text
//! mnist::load ─> Dataset::split_off_tail (validation)
//!             ─> shuffle::permutation + Dataset::select
//!             ─> shard::plan ─> shard_file::encode ─> workers
//! ```

mod dataset;
mod error;

pub mod atomic;
pub mod checkpoint;
pub mod formats;
pub mod idx;
pub mod mnist;
pub mod scaling;
pub mod shard;
pub mod shard_file;
pub mod shuffle;

pub use dataset::{Dataset, Features};
pub use error::{DataError, Result};
