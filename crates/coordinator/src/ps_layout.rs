//! The split of θ over the parameter servers. No I/O.

use std::ops::Range;

/// Cuts `len` parameters into `parts` contiguous ranges whose sizes differ by
/// at most one, in order. Returns `None` when a range would be empty.
pub fn split_params(len: usize, parts: usize) -> Option<Vec<Range<usize>>> {
    if parts == 0 || parts > len {
        return None;
    }
    let base = len / parts;
    let extra = len % parts;
    let mut start = 0;
    let ranges = (0..parts)
        .map(|part| {
            let size = base + usize::from(part < extra);
            let range = start..start + size;
            start += size;
            range
        })
        .collect();
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_params_once_in_order() {
        for len in 1..40 {
            for parts in 1..=len.min(6) {
                let ranges = split_params(len, parts).unwrap();

                assert_eq!(ranges.len(), parts);
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[parts - 1].end, len);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let spread = sizes.iter().max().unwrap() - sizes.iter().min().unwrap();
                assert!(spread <= 1, "sizes {sizes:?}");
            }
        }
    }

    #[test]
    fn more_parts_than_params_is_rejected() {
        assert_eq!(split_params(3, 4), None);
        assert_eq!(split_params(3, 0), None);
    }
}
