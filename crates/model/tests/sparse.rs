//! The sparse softmax pass against the dense one on the same rows.

use downpour_model::{
    Mlp, ModelDescription, ModelSpec, SparseBatch, SparseGradient, SparseWorkspace, Workspace,
};
use ndarray::Array2;

/// Three rows over 6 features, the first row starting at entry 2 of the
/// arrays so that the batch views a slice.
fn batch() -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let offsets = vec![2, 4, 5, 8];
    let indices = vec![9, 9, 1, 4, 4, 0, 1, 5];
    let values = vec![0.0, 0.0, 0.5, -1.0, 2.0, 1.5, 0.25, 3.0];
    (offsets, indices, values)
}

fn dense(offsets: &[usize], indices: &[u32], values: &[f32], inputs: usize) -> Array2<f32> {
    let rows = offsets.len() - 1;
    let mut x = Array2::zeros((rows, inputs));
    for row in 0..rows {
        for entry in offsets[row]..offsets[row + 1] {
            x[[row, indices[entry] as usize]] = values[entry];
        }
    }
    x
}

#[test]
fn sparse_gradient_matches_dense() {
    let (inputs, classes) = (6, 3);
    let description = ModelDescription::new(&ModelSpec::Softmax, inputs, classes).unwrap();
    let model = Mlp::new(&description).unwrap();
    let params = model.init_params(7);
    let labels = [2u32, 0, 1];
    let (offsets, indices, values) = batch();

    let mut sparse = SparseGradient::default();
    let sparse_loss = model.sparse_loss_and_gradient(
        &params,
        SparseBatch {
            offsets: &offsets,
            indices: &indices,
            values: &values,
        },
        &labels,
        &mut sparse,
        &mut SparseWorkspace::default(),
    );

    let x = dense(&offsets, &indices, &values, inputs);
    let mut gradient = vec![0.0; model.num_params()];
    let dense_loss = model.loss_and_gradient(
        &params,
        x.view(),
        &labels,
        &mut gradient,
        &mut Workspace::new(&model, 3),
    );
    assert!(
        (sparse_loss - dense_loss).abs() < 1e-6,
        "{sparse_loss} vs {dense_loss}"
    );

    // Features 0, 1, 4 and 5 occur; 2 and 3 do not. Each class row of the
    // weight has 6 values, and the 3 biases follow at 18.
    let expected: Vec<u32> = vec![0, 1, 4, 5, 6, 7, 10, 11, 12, 13, 16, 17, 18, 19, 20];
    assert_eq!(sparse.indices, expected);
    assert_eq!(sparse.values.len(), expected.len());
    for (&index, &value) in sparse.indices.iter().zip(&sparse.values) {
        let reference = gradient[index as usize];
        assert!(
            (value - reference).abs() < 1e-6,
            "θ[{index}]: {value} vs {reference}"
        );
    }
    for (index, &value) in gradient.iter().enumerate() {
        if !sparse.indices.contains(&(index as u32)) {
            assert_eq!(
                value, 0.0,
                "θ[{index}] is untouched but has a dense gradient"
            );
        }
    }
}

#[test]
fn hidden_layers_do_not_support_sparse() {
    let description = ModelDescription::new(&"mlp:4".parse().unwrap(), 6, 3).unwrap();
    assert!(!Mlp::new(&description).unwrap().supports_sparse());
    let description = ModelDescription::new(&ModelSpec::Softmax, 6, 3).unwrap();
    assert!(Mlp::new(&description).unwrap().supports_sparse());
}
