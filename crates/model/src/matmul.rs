//! Single-precision matrix product on ndarray views, computed by the `gemm` crate.
//!
//! `benches/matmul_backends.rs` measured `gemm` 0.19 fastest on the eight products of a
//! 784-256-128-10 gradient step at batch 64 on one thread. On a 2-core AMD EPYC (AVX-512)
//! virtual machine it ran them at about 90 GFLOP/s, BLIS (through `blis-src` 0.2) at 87
//! and ndarray's default backend, matrixmultiply 0.3, at 82.
//!
//! NOTE: `gemm` 0.19 allocates inside every product: a vector of packing flags and,
//! when it packs an operand, a packing buffer. Its API takes no caller-provided
//! buffer, so a gradient step still allocates there, as `tests/allocation.rs` shows.

use gemm::Parallelism;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Computes `c = alpha · a · b + beta · c` on one thread.
///
/// The views may have any non-negative strides, such as the swapped strides of a
/// transposed view. The tests cover row-major and column-major views.
/// With `beta` equal to 0, `c` is overwritten and its old values, even NaN, are never read.
///
/// # Panics
///
/// Panics if the shapes of `a` `[m, k]`, `b` `[k, n]` and `c` `[m, n]` do not agree.
pub(crate) fn general_mat_mul(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(b.nrows(), k, "inner dimensions of the product must agree");
    assert_eq!(c.dim(), (m, n), "the output must be [a rows, b columns]");
    if m == 0 || n == 0 {
        return;
    }
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: each pointer addresses a view whose elements all lie at `row * row_stride +
    // column * column_stride` for the shapes asserted above, and `gemm` reads or writes
    // only those elements. `c` is a mutable view, so the borrow checker keeps it from
    // overlapping `a` or `b`, and ndarray's safe constructors never give a mutable view
    // two indices for one element.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            // `gemm` computes dst = alpha · dst + beta · lhs · rhs, so its alpha and beta
            // swap roles with ours. It reads dst only when this flag is true.
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, ShapeBuilder};

    use super::*;

    /// Reference product in f64 with plain loops.
    fn reference(
        alpha: f32,
        a: &Array2<f32>,
        b: &Array2<f32>,
        beta: f32,
        c: &Array2<f32>,
    ) -> Array2<f64> {
        Array2::from_shape_fn(c.dim(), |(row, column)| {
            let dot: f64 = (0..a.ncols())
                .map(|inner| f64::from(a[[row, inner]]) * f64::from(b[[inner, column]]))
                .sum();
            f64::from(alpha) * dot + f64::from(beta) * f64::from(c[[row, column]])
        })
    }

    fn filled(rows: usize, columns: usize, seed: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, columns), |(row, column)| {
            ((row * 7 + column * 3) as f32 * seed).sin()
        })
    }

    fn assert_close(actual: &Array2<f32>, expected: &Array2<f64>) {
        for ((index, &value), &wanted) in actual.indexed_iter().zip(expected.iter()) {
            assert!(
                (f64::from(value) - wanted).abs() < 1e-4,
                "{index:?}: {value} vs {wanted}"
            );
        }
    }

    #[test]
    fn product_of_row_major_views() {
        let (a, b) = (filled(5, 7, 0.3), filled(7, 4, 0.7));
        let mut c = filled(5, 4, 1.1);
        let expected = reference(0.5, &a, &b, 2.0, &c);
        general_mat_mul(0.5, a.view(), b.view(), 2.0, c.view_mut());
        assert_close(&c, &expected);
    }

    #[test]
    fn product_of_transposed_views() {
        let (a_transposed, b_transposed) = (filled(7, 5, 0.3), filled(4, 7, 0.7));
        let (a, b) = (a_transposed.t().to_owned(), b_transposed.t().to_owned());
        let mut c = Array2::zeros((5, 4).f());
        let expected = reference(1.0, &a, &b, 0.0, &c.to_owned());
        general_mat_mul(1.0, a_transposed.t(), b_transposed.t(), 0.0, c.view_mut());
        assert_close(&c.to_owned(), &expected);
    }

    #[test]
    fn zero_beta_ignores_nan_output() {
        let (a, b) = (filled(3, 2, 0.3), filled(2, 3, 0.7));
        let mut c = Array2::from_elem((3, 3), f32::NAN);
        let expected = reference(1.0, &a, &b, 0.0, &Array2::zeros((3, 3)));
        general_mat_mul(1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert_close(&c, &expected);
    }

    #[test]
    fn empty_inner_dimension_scales_output() {
        let (a, b) = (Array2::zeros((2, 0)), Array2::zeros((0, 3)));
        let mut c = Array2::from_elem((2, 3), 4.0f32);
        general_mat_mul(1.0, a.view(), b.view(), 0.5, c.view_mut());
        assert!(c.iter().all(|&value| value == 2.0), "{c}");
    }
}
