//! The blocking half of a worker: the model and the buffers of one step.

use std::ops::Range;

use downpour_data::Dataset;
use downpour_model::{Mlp, Workspace};
use ndarray::ArrayView2;

/// Model, θ and per-step buffers, sized once so a step does not allocate.
#[derive(Debug)]
pub(crate) struct Trainer {
    model: Mlp,
    workspace: Workspace,
    /// The worker's copy of θ.
    pub(crate) params: Vec<f32>,
    /// Mean gradient of the last step.
    pub(crate) gradient: Vec<f32>,
    features: Vec<f32>,
}

impl Trainer {
    pub(crate) fn new(model: Mlp, batch_size: usize) -> Self {
        let params = vec![0.0; model.num_params()];
        Self {
            workspace: Workspace::new(&model, batch_size),
            gradient: vec![0.0; params.len()],
            features: vec![0.0; batch_size * model.inputs()],
            params,
            model,
        }
    }

    pub(crate) fn inputs(&self) -> usize {
        self.model.inputs()
    }

    /// Computes the mean loss and gradient over `rows` of `shard` at the
    /// current θ, leaving the gradient in `self.gradient`.
    pub(crate) fn step(&mut self, shard: &Dataset, rows: Range<usize>) -> f32 {
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
