//! Checks that a gradient step with a warm workspace allocates nothing beyond what the
//! matrix-product backend allocates inside its products.
//! The counter is per thread, so tests running on other threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use downpour_model::{Mlp, ModelDescription, ModelSpec, Workspace};
use ndarray::{Array2, s};

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../src/matmul.rs"]
mod matmul;

const INPUTS: usize = 784;
const HIDDEN: [usize; 2] = [256, 128];
const CLASSES: usize = 10;
const BATCH: usize = 64;

/// System allocator that counts calls to `alloc`, `alloc_zeroed` and `realloc` on each
/// thread.
struct CountingAllocator;

thread_local! {
    // A const-initialised `Cell` needs no allocation and no destructor, so the
    // allocator can use it.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record_allocation() {
    // `try_with` fails only while the thread is being torn down, when nothing is counted.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every method forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Returns the number of allocations made by `run`.
fn count_allocations(mut run: impl FnMut()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    run();
    ALLOCATIONS.with(Cell::get) - before
}

/// Runs the eight products of one gradient step of the 784-256-128-10 model on `rows`
/// rows through the crate's product wrapper, with the operand layouts the model uses:
/// row-major minibatch matrices and row-major `[outputs, inputs]` weights.
fn bare_products(rows: usize) -> impl FnMut() {
    let widths = [INPUTS, HIDDEN[0], HIDDEN[1], CLASSES];
    let mut layers: Vec<[Array2<f32>; 4]> = widths
        .windows(2)
        .map(|pair| {
            let (inputs, outputs) = (pair[0], pair[1]);
            [
                Array2::from_elem((BATCH, inputs), 0.5),
                Array2::from_elem((outputs, inputs), 0.01),
                Array2::from_elem((BATCH, outputs), 0.1),
                Array2::zeros((outputs, inputs)),
            ]
        })
        .collect();
    move || {
        for [input, weight, output, _] in layers.iter_mut() {
            let input = input.slice(s![..rows, ..]);
            let output = output.slice_mut(s![..rows, ..]);
            matmul::general_mat_mul(1.0, input, weight.t(), 1.0, output);
        }
        for (index, [input, weight, output, weight_gradient]) in layers.iter_mut().enumerate().rev()
        {
            let (input, output) = (
                input.slice_mut(s![..rows, ..]),
                output.slice(s![..rows, ..]),
            );
            matmul::general_mat_mul(
                1.0,
                output.t(),
                input.view(),
                0.0,
                weight_gradient.view_mut(),
            );
            if index > 0 {
                matmul::general_mat_mul(1.0, output, weight.view(), 0.0, input);
            }
        }
    }
}

#[test]
fn warm_gradient_step_allocates_only_in_products() {
    let spec: ModelSpec = "mlp:256,128".parse().expect("valid spec");
    let description = ModelDescription::new(&spec, INPUTS, CLASSES).expect("valid dimensions");
    let model = Mlp::new(&description).expect("description from new is valid");
    let params = model.init_params(5);
    let mut gradient = vec![0.0; model.num_params()];
    let mut workspace = Workspace::new(&model, BATCH);
    let x = Array2::from_shape_fn((BATCH, INPUTS), |(row, column)| {
        ((row * 31 + column * 17) % 256) as f32 / 255.0
    });
    let labels: Vec<u32> = (0..BATCH as u32).map(|row| row % CLASSES as u32).collect();

    // The first calls may set up the product backend's per-thread buffers.
    model.loss_and_gradient(&params, x.view(), &labels, &mut gradient, &mut workspace);
    let mut full_products = bare_products(BATCH);
    let mut half_products = bare_products(BATCH / 2);
    full_products();
    half_products();

    let product_allocations = count_allocations(|| {
        full_products();
        half_products();
    });
    // A smaller batch reuses the same workspace without growing it.
    let half = x.slice(s![..BATCH / 2, ..]);
    let step_allocations = count_allocations(|| {
        model.loss_and_gradient(&params, x.view(), &labels, &mut gradient, &mut workspace);
        model.loss_and_gradient(
            &params,
            half,
            &labels[..BATCH / 2],
            &mut gradient,
            &mut workspace,
        );
    });
    assert_eq!(
        step_allocations, product_allocations,
        "a full and a half batch step allocate more than their bare products"
    );
}
