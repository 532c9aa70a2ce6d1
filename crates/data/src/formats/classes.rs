//! The mapping from label text to class ids.
//!
//! The mapping depends only on the set of labels in the training file, never
//! on their order, so the same file always gives the same classes. When every
//! label is an integer (`-1`, `+1`, `0`, `7`, also written `1.0`), classes
//! follow numeric order, so `-1`/`+1` and `0`/`1` both map to 0 and 1.
//! Otherwise classes follow the byte order of the label text.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Class names in class-id order: class `i` is `names[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassMap {
    /// Canonical label text of each class.
    pub names: Vec<String>,
}

impl ClassMap {
    /// Builds the class map of a set of labels.
    pub fn fit<'a>(labels: impl IntoIterator<Item = &'a str>) -> ClassMap {
        let keys: BTreeSet<String> = labels.into_iter().map(canonical_label).collect();
        let mut names: Vec<String> = keys.into_iter().collect();
        let integers: Option<Vec<i64>> = names.iter().map(|name| name.parse().ok()).collect();
        if let Some(mut integers) = integers {
            integers.sort_unstable();
            names = integers.iter().map(i64::to_string).collect();
        }
        ClassMap { names }
    }

    /// Returns the number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Returns whether the map has no classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Returns the class id of a label, or `None` for a label the map does
    /// not contain.
    pub fn class_of(&self, label: &str) -> Option<u32> {
        let key = canonical_label(label);
        let index = self.names.iter().position(|name| *name == key)?;
        u32::try_from(index).ok()
    }
}

/// Returns the text a label is compared by: an integer in decimal without a
/// sign or fraction that adds nothing (`+1` and `1.0` become `1`), and any
/// other label with surrounding whitespace removed.
pub fn canonical_label(label: &str) -> String {
    let label = label.trim();
    if let Ok(integer) = label.parse::<i64>() {
        return integer.to_string();
    }
    if let Ok(value) = label.parse::<f64>()
        && value.is_finite()
        && value.fract() == 0.0
        && value.abs() < 9.0e15
    {
        // Exact, because integers below 2^53 are exact in f64.
        return (value as i64).to_string();
    }
    label.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_sort_numerically() {
        let map = ClassMap::fit(["10", "+1", "-1", "2", "1.0"]);
        assert_eq!(map.names, ["-1", "1", "2", "10"]);
        assert_eq!(map.class_of("-1"), Some(0));
        assert_eq!(map.class_of("+1"), Some(1));
        assert_eq!(map.class_of("10"), Some(3));
    }

    #[test]
    fn text_sorts_by_bytes() {
        let map = ClassMap::fit(["virginica", "setosa", " versicolor ", "setosa"]);
        assert_eq!(map.names, ["setosa", "versicolor", "virginica"]);
        assert_eq!(map.class_of("versicolor"), Some(1));
        assert_eq!(map.class_of("rose"), None);
    }

    #[test]
    fn mixed_labels_sort_as_text() {
        let map = ClassMap::fit(["b", "10", "9"]);
        assert_eq!(map.names, ["10", "9", "b"]);
    }

    #[test]
    fn order_of_labels_does_not_matter() {
        let forward = ClassMap::fit(["0", "1", "1", "0"]);
        let backward = ClassMap::fit(["1", "0"]);
        assert_eq!(forward, backward);
    }
}
