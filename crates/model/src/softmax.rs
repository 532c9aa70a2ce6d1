//! Row-wise softmax, cross-entropy and argmax over class logits.
//!
//! Every function subtracts the row maximum before exponentiating, so large logits do not
//! overflow.

use ndarray::{ArrayView1, ArrayViewMut1, ArrayViewMut2};

/// Returns the maximum of a non-empty row.
fn row_max(row: ArrayView1<'_, f32>) -> f32 {
    row.fold(f32::NEG_INFINITY, |max, &value| max.max(value))
}

/// Returns the cross-entropy `logsumexp(row) - row[label]` of one row of logits.
pub(crate) fn cross_entropy(row: ArrayView1<'_, f32>, label: usize) -> f64 {
    let max = row_max(row);
    let sum: f64 = row.iter().map(|&value| f64::from(value - max).exp()).sum();
    sum.ln() - f64::from(row[label] - max)
}

/// Returns the index of the largest logit. Ties go to the lowest index.
pub(crate) fn argmax(row: ArrayView1<'_, f32>) -> usize {
    let mut best = 0;
    for (index, &value) in row.iter().enumerate().skip(1) {
        if value > row[best] {
            best = index;
        }
    }
    best
}

/// Replaces a row of logits by its softmax probabilities and returns `logsumexp(row)`
/// relative to the row maximum, the `ln(sum)` term of the cross-entropy.
fn softmax_in_place(mut row: ArrayViewMut1<'_, f32>) -> f64 {
    let max = row_max(row.view());
    let mut sum = 0.0f64;
    for value in row.iter_mut() {
        *value = (*value - max).exp();
        sum += f64::from(*value);
    }
    let scale = (1.0 / sum) as f32;
    row.mapv_inplace(|value| value * scale);
    sum.ln()
}

/// Replaces each row of logits by its softmax probabilities.
pub(crate) fn softmax_rows(mut logits: ArrayViewMut2<'_, f32>) {
    for row in logits.rows_mut() {
        softmax_in_place(row);
    }
}

/// Replaces each row of logits by `scale * (softmax(row) - onehot(label))`, the gradient of
/// `scale * cross_entropy` with respect to the logits, and returns the unscaled sum of the
/// rows' cross-entropies.
pub(crate) fn cross_entropy_backward(
    mut logits: ArrayViewMut2<'_, f32>,
    labels: &[u32],
    scale: f32,
) -> f64 {
    let mut loss_sum = 0.0f64;
    for (mut row, &label) in logits.rows_mut().into_iter().zip(labels) {
        let label = label as usize;
        let shifted_label_logit = f64::from(row[label] - row_max(row.view()));
        loss_sum += softmax_in_place(row.view_mut()) - shifted_label_logit;
        row[label] -= 1.0;
        row.mapv_inplace(|value| value * scale);
    }
    loss_sum
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, array};

    use super::*;

    #[test]
    fn cross_entropy_of_uniform_logits() {
        let row = array![2.0f32, 2.0, 2.0, 2.0];
        let loss = cross_entropy(row.view(), 1);
        assert!((loss - 4f64.ln()).abs() < 1e-12, "{loss}");
    }

    #[test]
    fn cross_entropy_of_huge_logits_is_finite() {
        let row = array![1e30f32, -1e30, 0.0];
        assert_eq!(cross_entropy(row.view(), 0), 0.0);
        let loss = cross_entropy(row.view(), 1);
        assert!(loss.is_finite(), "{loss}");
        assert!((loss - 2e30).abs() <= 1e24, "{loss}");
    }

    #[test]
    fn argmax_ties_go_to_lowest_index() {
        assert_eq!(argmax(array![1.0f32, 3.0, 3.0, 2.0].view()), 1);
        assert_eq!(argmax(array![5.0f32, 5.0].view()), 0);
        assert_eq!(argmax(array![-1.0f32, -2.0, 0.5].view()), 2);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut logits = array![[1.0f32, 2.0, 3.0], [1e4, -1e4, 0.0]];
        softmax_rows(logits.view_mut());
        for row in logits.rows() {
            let sum: f32 = row.sum();
            assert!((sum - 1.0).abs() < 1e-6, "{row}");
        }
        assert_eq!(logits[[1, 0]], 1.0);
        assert!((logits[[0, 2]] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn backward_matches_probabilities_minus_onehot() {
        let logits = array![[0.5f32, -1.0, 2.0], [3.0, 3.0, 3.0]];
        let labels = [2u32, 0];
        let mut gradient = logits.clone();
        let loss_sum = cross_entropy_backward(gradient.view_mut(), &labels, 0.5);

        let mut probabilities: Array2<f32> = logits.clone();
        softmax_rows(probabilities.view_mut());
        let expected_loss = cross_entropy(logits.row(0), 2) + cross_entropy(logits.row(1), 0);
        assert!((loss_sum - expected_loss).abs() < 1e-6);
        for ((row, column), &value) in gradient.indexed_iter() {
            let onehot = if column == labels[row] as usize {
                1.0
            } else {
                0.0
            };
            let expected = 0.5 * (probabilities[[row, column]] - onehot);
            assert!(
                (value - expected).abs() < 1e-7,
                "[{row}, {column}]: {value} vs {expected}"
            );
        }
    }
}
