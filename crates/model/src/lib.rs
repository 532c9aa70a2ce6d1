//! Models for Downpour: softmax regression and multilayer perceptrons with ReLU hidden
//! layers, trained with the mean cross-entropy over a minibatch, and linear regression,
//! trained with the mean squared error.
//!
//! The parameters θ of a model are one flat `f32` vector of named tensors, whose layout a
//! [`ModelDescription`] records. An [`Mlp`] computes losses, gradients and predictions for
//! a θ passed in by the caller, using a reusable [`Workspace`] for intermediate buffers.
//! The crate does no file or network I/O.

pub mod clip;
pub mod curvature;
mod description;
mod error;
mod evaluation;
mod hessian;
mod layer;
mod matmul;
mod mlp;
mod regression;
mod softmax;
mod sparse;
mod spec;
mod workspace;

pub use curvature::{CurvatureProbe, MinibatchObjective, Objective, probe_curvature};
pub use description::{ModelDescription, TensorInfo};
pub use error::ModelError;
pub use evaluation::Evaluation;
pub use mlp::Mlp;
pub use regression::{RegressionObjective, Targets};
pub use sparse::{SparseBatch, SparseGradient, SparseWorkspace};
pub use spec::ModelSpec;
pub use workspace::Workspace;
