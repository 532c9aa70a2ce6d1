//! Compares single-threaded f32 matrix-product backends on the exact products of one
//! gradient step of the 784-256-128-10 model at batch 64. The backends are ndarray's
//! default (matrixmultiply), the `gemm` crate through this crate's wrapper and, with the
//! `bench-blis` feature, BLIS through its C BLAS interface.
//!
//! Throughput is in elements per second where one element is one FLOP, counting 2 FLOPs
//! per multiply-add, so criterion's "Gelem/s" reads as GFLOP/s. The `all` case runs the
//! eight products of one gradient step in sequence.
//!
//! Run with `cargo bench -p downpour-model --bench matmul_backends --features bench-blis`.
//! Building BLIS from source took 7 to 8 minutes on a 2-core machine.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::SeedableRng;
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../src/matmul.rs"]
mod matmul;

const BATCH: usize = 64;
const WIDTHS: [usize; 4] = [784, 256, 128, 10];

/// Computes `c = alpha · a · b + beta · c`.
type ProductFn = fn(f32, ArrayView2<'_, f32>, ArrayView2<'_, f32>, f32, ArrayViewMut2<'_, f32>);

/// Kind of product in a gradient step, which fixes the operands it takes from a layer's
/// buffers.
#[derive(Clone, Copy)]
enum Product {
    /// `output = input · Wᵀ + output`, the forward pass with the bias already in `output`.
    Forward,
    /// `dW = dOutputᵀ · input`.
    WeightGradient,
    /// `dInput = dOutput · W`.
    InputGradient,
}

/// Operands of one layer, laid out as the model lays them out: row-major minibatch
/// matrices and a row-major `[outputs, inputs]` weight.
struct LayerBuffers {
    input: Array2<f32>,
    weight: Array2<f32>,
    output: Array2<f32>,
    weight_gradient: Array2<f32>,
    input_gradient: Array2<f32>,
}

impl LayerBuffers {
    fn new(inputs: usize, outputs: usize, rng: &mut ChaCha8Rng) -> Self {
        let uniform = Uniform::new(-1.0f32, 1.0).expect("valid range");
        let mut random =
            |shape: (usize, usize)| Array2::from_shape_fn(shape, |_| uniform.sample(rng));
        LayerBuffers {
            input: random((BATCH, inputs)),
            weight: random((outputs, inputs)),
            output: random((BATCH, outputs)),
            weight_gradient: Array2::zeros((outputs, inputs)),
            input_gradient: Array2::zeros((BATCH, inputs)),
        }
    }

    fn run(&mut self, product: Product, multiply: ProductFn) {
        match product {
            Product::Forward => multiply(
                1.0,
                self.input.view(),
                self.weight.t(),
                1.0,
                self.output.view_mut(),
            ),
            Product::WeightGradient => multiply(
                1.0,
                self.output.t(),
                self.input.view(),
                0.0,
                self.weight_gradient.view_mut(),
            ),
            Product::InputGradient => multiply(
                1.0,
                self.output.view(),
                self.weight.view(),
                0.0,
                self.input_gradient.view_mut(),
            ),
        }
    }

    fn flops(&self) -> u64 {
        2 * (BATCH * self.weight.len()) as u64
    }
}

/// Returns the eight products of one gradient step, as (layer index, product). The first layer
/// needs no input gradient.
fn step_products() -> Vec<(usize, Product)> {
    let layers = WIDTHS.len() - 1;
    let mut products: Vec<(usize, Product)> =
        (0..layers).map(|layer| (layer, Product::Forward)).collect();
    for layer in (0..layers).rev() {
        products.push((layer, Product::WeightGradient));
        if layer > 0 {
            products.push((layer, Product::InputGradient));
        }
    }
    products
}

fn product_name(layer: usize, product: Product) -> String {
    let (inputs, outputs) = (WIDTHS[layer], WIDTHS[layer + 1]);
    match product {
        Product::Forward => format!("forward_{BATCH}x{inputs}_by_{inputs}x{outputs}"),
        Product::WeightGradient => {
            format!("weight_gradient_{outputs}x{BATCH}_by_{BATCH}x{inputs}")
        }
        Product::InputGradient => format!("input_gradient_{BATCH}x{outputs}_by_{outputs}x{inputs}"),
    }
}

fn ndarray_product(
    alpha: f32,
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    beta: f32,
    mut c: ArrayViewMut2<'_, f32>,
) {
    ndarray::linalg::general_mat_mul(alpha, &a, &b, beta, &mut c);
}

#[cfg(feature = "bench-blis")]
mod blis {
    use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE, cblas_sgemm};
    use ndarray::{ArrayView2, ArrayViewMut2};

    // Links the BLIS library that provides `cblas_sgemm`.
    use blis_src as _;

    /// Returns the transpose flag and leading dimension of `matrix` for a row-major
    /// `cblas_sgemm`. Supports row-major and column-major views with unit stride.
    fn operand(matrix: &ArrayView2<'_, f32>) -> (CBLAS_TRANSPOSE, i32) {
        let [row_stride, column_stride] = [matrix.strides()[0], matrix.strides()[1]];
        let leading = if column_stride == 1 {
            (CBLAS_TRANSPOSE::CblasNoTrans, row_stride)
        } else if row_stride == 1 {
            (CBLAS_TRANSPOSE::CblasTrans, column_stride)
        } else {
            panic!(
                "BLIS operands need a unit stride, got strides {row_stride} and {column_stride}"
            );
        };
        (
            leading.0,
            i32::try_from(leading.1).expect("leading dimension fits in i32"),
        )
    }

    pub(super) fn product(
        alpha: f32,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        beta: f32,
        mut c: ArrayViewMut2<'_, f32>,
    ) {
        let dimension = |value: usize| i32::try_from(value).expect("dimension fits in i32");
        let (m, k, n) = (
            dimension(a.nrows()),
            dimension(a.ncols()),
            dimension(b.ncols()),
        );
        assert_eq!(c.strides()[1], 1, "the BLIS output must be row-major");
        let ldc = dimension(c.strides()[0] as usize);
        let (a_transpose, lda) = operand(&a);
        let (b_transpose, ldb) = operand(&b);
        // SAFETY: the flags and leading dimensions describe the three views exactly, and
        // `c` is a mutable view, so it cannot overlap `a` or `b`.
        unsafe {
            cblas_sgemm(
                CBLAS_LAYOUT::CblasRowMajor,
                a_transpose,
                b_transpose,
                m,
                n,
                k,
                alpha,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                ldc,
            );
        }
    }
}

/// Backends built only with the `bench-blis` feature.
#[cfg(feature = "bench-blis")]
const OPTIONAL_BACKENDS: &[(&str, ProductFn)] = &[("blis", blis::product)];
#[cfg(not(feature = "bench-blis"))]
const OPTIONAL_BACKENDS: &[(&str, ProductFn)] = &[];

fn backends() -> Vec<(&'static str, ProductFn)> {
    let portable: [(&'static str, ProductFn); 2] = [
        ("ndarray_matrixmultiply", ndarray_product),
        ("gemm", matmul::general_mat_mul),
    ];
    portable
        .into_iter()
        .chain(OPTIONAL_BACKENDS.iter().copied())
        .collect()
}

fn bench_backend(
    group: &mut BenchmarkGroup<'_, WallTime>,
    layers: &mut [LayerBuffers],
    multiply: ProductFn,
) {
    let products = step_products();
    for &(layer, product) in &products {
        group.throughput(Throughput::Elements(layers[layer].flops()));
        group.bench_function(product_name(layer, product), |bencher| {
            bencher.iter(|| layers[layer].run(product, black_box(multiply)))
        });
    }
    let total: u64 = products
        .iter()
        .map(|&(layer, _)| layers[layer].flops())
        .sum();
    group.throughput(Throughput::Elements(total));
    group.bench_function("all", |bencher| {
        bencher.iter(|| {
            for &(layer, product) in &products {
                layers[layer].run(product, black_box(multiply));
            }
        })
    });
}

fn matmul_backends(criterion: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut layers: Vec<LayerBuffers> = WIDTHS
        .windows(2)
        .map(|pair| LayerBuffers::new(pair[0], pair[1], &mut rng))
        .collect();
    for (name, multiply) in backends() {
        let mut group = criterion.benchmark_group(format!("matmul_{name}"));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        bench_backend(&mut group, &mut layers, multiply);
        group.finish();
    }
}

criterion_group!(benches, matmul_backends);
criterion_main!(benches);
