//! Cutting the shuffled training set into one contiguous shard per worker,
//! and cutting a shard into minibatches.
//!
//! Shards are made of whole minibatches, so every epoch uses the same fixed
//! minibatches. Only the last shard may end in a partial minibatch, when the
//! number of examples is not a multiple of the batch size.

use std::ops::Range;

use crate::error::{DataError, Result};

/// Cuts `examples` rows into `shards` contiguous row ranges made of whole
/// minibatches of `batch_size` rows. Only the final range may end in a
/// partial minibatch. The ranges cover `0..examples` in order.
///
/// Minibatch counts per shard differ by at most one. The shards with the
/// extra minibatch come last, so that the shard holding the partial
/// minibatch is not also one minibatch short. As a result, row counts also
/// differ by at most `batch_size`.
///
/// # Errors
///
/// [`DataError::ZeroShards`], [`DataError::ZeroBatchSize`], or
/// [`DataError::TooFewBatches`] when the examples make fewer minibatches than
/// there are shards.
pub fn plan(examples: usize, batch_size: usize, shards: usize) -> Result<Vec<Range<usize>>> {
    if shards == 0 {
        return Err(DataError::ZeroShards);
    }
    if batch_size == 0 {
        return Err(DataError::ZeroBatchSize);
    }
    let batches = examples.div_ceil(batch_size);
    if batches < shards {
        return Err(DataError::TooFewBatches {
            examples,
            batch_size,
            batches,
            shards,
        });
    }

    let base = batches / shards;
    let first_with_extra = shards - batches % shards;
    let mut ranges = Vec::with_capacity(shards);
    let mut start = 0usize;
    for shard in 0..shards {
        let shard_batches = if shard >= first_with_extra {
            base + 1
        } else {
            base
        };
        let rows = shard_batches.saturating_mul(batch_size);
        let end = start.saturating_add(rows).min(examples);
        ranges.push(start..end);
        start = end;
    }
    Ok(ranges)
}

/// Returns the number of minibatches of `batch_size` rows in a shard of `len`
/// rows, counting a final partial minibatch. Returns 0 when `batch_size` is 0.
pub fn batch_count(len: usize, batch_size: usize) -> usize {
    if batch_size == 0 {
        return 0;
    }
    len.div_ceil(batch_size)
}

/// Returns the row range of minibatch `index` within a shard of `len` rows.
/// The last minibatch may be shorter than `batch_size`. An index at or past
/// [`batch_count`] gives the empty range `len..len`.
pub fn batch_rows(len: usize, batch_size: usize, index: usize) -> Range<usize> {
    let start = index.saturating_mul(batch_size).min(len);
    let end = start.saturating_add(batch_size).min(len);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the properties that `plan` promises and returns the minibatch
    /// count of each shard.
    fn check_plan(examples: usize, batch_size: usize, shards: usize) -> Vec<usize> {
        let ranges = plan(examples, batch_size, shards).expect("valid plan");
        let context = format!("examples {examples}, batch {batch_size}, shards {shards}");
        assert_eq!(ranges.len(), shards, "{context}");

        // Contiguous and in order, so every row appears exactly once.
        let mut next = 0;
        for range in &ranges {
            assert_eq!(range.start, next, "{context}: {ranges:?}");
            assert!(
                range.end > range.start,
                "{context}: empty shard in {ranges:?}"
            );
            next = range.end;
        }
        assert_eq!(next, examples, "{context}: {ranges:?}");

        // Whole minibatches everywhere except at the very end.
        for range in &ranges[..shards - 1] {
            assert_eq!(range.len() % batch_size, 0, "{context}: {ranges:?}");
        }

        let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
        let max_size = sizes.iter().max().copied().unwrap_or(0);
        let min_size = sizes.iter().min().copied().unwrap_or(0);
        assert!(max_size - min_size <= batch_size, "{context}: {sizes:?}");

        let batches: Vec<usize> = ranges
            .iter()
            .map(|r| batch_count(r.len(), batch_size))
            .collect();
        let max_batches = batches.iter().max().copied().unwrap_or(0);
        let min_batches = batches.iter().min().copied().unwrap_or(0);
        assert!(max_batches - min_batches <= 1, "{context}: {batches:?}");
        batches
    }

    #[test]
    fn plan_mnist_sizes() {
        let batches = check_plan(50_000, 64, 4);
        // 50000 rows make 781 full minibatches and one of 16 rows.
        assert_eq!(batches, vec![195, 195, 196, 196]);
    }

    #[test]
    fn plan_invariants_over_many_cases() {
        for examples in 1..60usize {
            for batch_size in 1..9 {
                let batches = examples.div_ceil(batch_size);
                for shards in 1..=batches.min(7) {
                    check_plan(examples, batch_size, shards);
                }
            }
        }
    }

    #[test]
    fn plan_exact_ranges() {
        // 10 rows make the minibatches [0,3) [3,6) [6,9) [9,10). The extra
        // minibatch goes to the last shard.
        let ranges = plan(10, 3, 3).expect("valid plan");
        assert_eq!(ranges, vec![0..3, 3..6, 6..10]);
    }

    #[test]
    fn plan_single_shard() {
        assert_eq!(plan(10, 4, 1).expect("valid plan"), vec![0..10]);
    }

    #[test]
    fn plan_rejects_zero_shards() {
        let error = plan(10, 2, 0).expect_err("zero shards");
        assert_eq!(error.to_string(), "the number of shards must be at least 1");
    }

    #[test]
    fn plan_rejects_zero_batch_size() {
        let error = plan(10, 0, 2).expect_err("zero batch size");
        assert_eq!(error.to_string(), "the batch size must be at least 1");
    }

    #[test]
    fn plan_rejects_too_few_batches() {
        let error = plan(100, 64, 3).expect_err("2 minibatches for 3 shards");
        assert_eq!(
            error.to_string(),
            "100 training examples make only 2 minibatches of 64, too few for 3 shards. \
             Use fewer shards or a smaller batch size"
        );
    }

    #[test]
    fn plan_rejects_empty_set() {
        let error = plan(0, 8, 1).expect_err("no examples");
        assert!(matches!(error, DataError::TooFewBatches { batches: 0, .. }));
    }

    #[test]
    fn batches_cover_shard() {
        let len = 10;
        let size = 4;
        assert_eq!(batch_count(len, size), 3);
        assert_eq!(batch_rows(len, size, 0), 0..4);
        assert_eq!(batch_rows(len, size, 1), 4..8);
        assert_eq!(batch_rows(len, size, 2), 8..10);
        assert_eq!(batch_rows(len, size, 3), 10..10);
        assert_eq!(batch_rows(len, size, usize::MAX), 10..10);
    }

    #[test]
    fn batch_count_edge_cases() {
        assert_eq!(batch_count(0, 4), 0);
        assert_eq!(batch_count(8, 4), 2);
        assert_eq!(batch_count(8, 0), 0);
        assert_eq!(batch_rows(8, 0, 0), 0..0);
    }
}
