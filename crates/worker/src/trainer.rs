//! The blocking half of a worker: the model and the buffers of one step.

use std::ops::Range;

use downpour_data::Dataset;
use downpour_model::{Mlp, SparseBatch, SparseGradient, SparseWorkspace, Workspace};
use ndarray::ArrayView2;

/// Model, θ and per-step buffers, sized once so a step does not allocate.
#[derive(Debug)]
pub(crate) struct Trainer {
    model: Mlp,
    workspace: Workspace,
    /// The worker's copy of θ.
    pub(crate) params: Vec<f32>,
    /// Mean gradient of the last step, when steps are dense.
    pub(crate) gradient: Vec<f32>,
    /// Whether steps read sparse rows and leave their gradient in
    /// `sparse_gradient`.
    sparse: bool,
    /// Mean gradient of the last step, when steps are sparse.
    pub(crate) sparse_gradient: SparseGradient,
    sparse_workspace: SparseWorkspace,
    features: Vec<f32>,
}

impl Trainer {
    /// Builds the trainer. With `sparse`, each step reads the sparse rows
    /// of its shard and computes a sparse gradient, which needs a model for
    /// which [`Mlp::supports_sparse`] holds.
    pub(crate) fn new(model: Mlp, batch_size: usize, sparse: bool) -> Self {
        let params = vec![0.0; model.num_params()];
        let dense_features = if sparse {
            0
        } else {
            batch_size * model.inputs()
        };
        Self {
            workspace: Workspace::new(&model, if sparse { 1 } else { batch_size }),
            gradient: if sparse {
                Vec::new()
            } else {
                vec![0.0; params.len()]
            },
            sparse,
            sparse_gradient: SparseGradient::default(),
            sparse_workspace: SparseWorkspace::default(),
            features: vec![0.0; dense_features],
            params,
            model,
        }
    }

    pub(crate) fn inputs(&self) -> usize {
        self.model.inputs()
    }

    pub(crate) fn is_sparse(&self) -> bool {
        self.sparse
    }

    /// Computes the mean loss and gradient over `rows` of `shard` at the
    /// current θ, leaving the gradient in `self.gradient`, or in
    /// `self.sparse_gradient` when steps are sparse. A sparse shard on the
    /// dense path is densified one minibatch at a time.
    ///
    /// # Panics
    ///
    /// Panics when steps are sparse but the shard's rows are not; the
    /// worker checks each shard when it arrives.
    pub(crate) fn step(&mut self, shard: &Dataset, rows: Range<usize>) -> f32 {
        if self.sparse {
            let sparse = shard
                .sparse_rows()
                .expect("sparse steps run on shards with sparse rows");
            let batch = SparseBatch {
                offsets: &sparse.offsets[rows.start..=rows.end],
                indices: &sparse.indices,
                values: &sparse.values,
            };
            return self.model.sparse_loss_and_gradient(
                &self.params,
                batch,
                &shard.labels[rows.clone()],
                &mut self.sparse_gradient,
                &mut self.sparse_workspace,
            );
        }

        let inputs = self.model.inputs();
        let values = rows.len() * inputs;
        if self.features.len() < values {
            self.features.resize(values, 0.0);
        }
        let features = &mut self.features[..values];
        shard.copy_rows_f32(rows.clone(), features);
        let targets = shard.targets_of(rows.clone());

        let x = ArrayView2::from_shape((rows.len(), inputs), &*features)
            .expect("the feature buffer has exactly rows × inputs values");
        self.model.loss_and_gradient_for(
            &self.params,
            x,
            targets,
            &mut self.gradient,
            &mut self.workspace,
        )
    }
}
