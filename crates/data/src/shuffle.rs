//! The one-time shuffle of the training set: a seeded permutation of row
//! indices, applied once before the set is cut into shards.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Returns a permutation of `0..len` drawn with a ChaCha8 generator seeded by
/// `seed`, using the Fisher-Yates shuffle of rand 0.9.
///
/// The same `len` and `seed` give the same order on 32- and 64-bit platforms,
/// because rand 0.9.5 draws 32-bit indices for slices shorter than
/// `u32::MAX`. A test pins one order, so that a change in rand or rand_chacha
/// that alters it fails the test.
pub fn permutation(len: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(order: &[usize]) -> bool {
        let mut seen = vec![false; order.len()];
        for &i in order {
            if i >= order.len() || seen[i] {
                return false;
            }
            seen[i] = true;
        }
        true
    }

    #[test]
    fn result_is_permutation() {
        for len in [0, 1, 2, 17, 1000] {
            let order = permutation(len, 42);
            assert_eq!(order.len(), len);
            assert!(is_permutation(&order), "len {len}: {order:?}");
        }
    }

    #[test]
    fn same_seed_same_order() {
        assert_eq!(permutation(1000, 7), permutation(1000, 7));
    }

    #[test]
    fn other_seed_other_order() {
        assert_ne!(permutation(1000, 7), permutation(1000, 8));
    }

    #[test]
    fn order_actually_moves_rows() {
        let order = permutation(1000, 7);
        let fixed_points = order.iter().enumerate().filter(|&(i, &j)| i == j).count();
        // A uniform permutation has one fixed point on average.
        assert!(fixed_points < 20, "{fixed_points} rows stayed in place");
    }

    #[test]
    fn order_pinned_for_seed() {
        assert_eq!(permutation(10, 0), PINNED_SEED_0_LEN_10);
    }

    /// Output of rand 0.9.5 with rand_chacha 0.9.0.
    const PINNED_SEED_0_LEN_10: [usize; 10] = [2, 8, 6, 1, 9, 5, 7, 4, 0, 3];
}
