//! The items (spans, log records) of a request that could not be used: how many, and why for the
//! first few. The answer shows [`SHOWN`] reasons, so no more are ever formatted: a request of
//! millions of bad items costs a counter, not a string each.

use std::collections::HashSet;

/// Reasons given in an answer; the rest are counted.
pub const SHOWN: usize = 5;

#[derive(Debug, Default)]
pub struct Rejections {
    count: usize,
    /// The reasons of the lowest indexes so far, in index order.
    shown: Vec<(usize, String)>,
    /// Items rejected one by one, so none is counted twice. Only items that were read are ever
    /// rejected one by one, and a request reads a bounded number of them.
    marked: HashSet<usize>,
}

impl Rejections {
    /// Rejects item `index`; `why` is called only if its reason will be shown. False if it was
    /// already rejected.
    pub fn reject(&mut self, index: usize, why: impl FnOnce() -> String) -> bool {
        if !self.marked.insert(index) {
            return false;
        }
        self.count += 1;
        self.show(index, why);
        true
    }

    /// Rejects `count` items from `first` on, none of which was read (nor ever will be).
    pub fn reject_unread(&mut self, first: usize, count: usize, why: impl FnOnce() -> String) {
        if count > 0 {
            self.count += count;
            self.show(first, why);
        }
    }

    fn show(&mut self, index: usize, why: impl FnOnce() -> String) {
        if self.shown.len() == SHOWN && self.shown.last().is_some_and(|(last, _)| *last < index) {
            return;
        }
        let at = self.shown.partition_point(|(i, _)| *i < index);
        self.shown.insert(at, (index, why()));
        self.shown.truncate(SHOWN);
    }

    pub fn contains(&self, index: usize) -> bool {
        self.marked.contains(&index)
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The reasons shown, lowest index first.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.shown.iter().map(|(_, why)| why.as_str())
    }

    /// The indexes whose reasons are shown.
    pub fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.shown.iter().map(|(i, _)| *i)
    }

    /// `3 of 10 spans rejected: why; why; why`, with `and N more` past the shown ones.
    pub fn summary(&self, total: usize, noun: &str) -> String {
        let mut s = format!("{} of {total} {noun} rejected: ", self.count);
        s.push_str(&self.reasons().collect::<Vec<_>>().join("; "));
        let more = self.count.saturating_sub(self.shown.len());
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lowest_indexes_reasons_are_formatted_and_kept() {
        let mut r = Rejections::default();
        let mut formatted = 0;
        for i in (0..1000).rev() {
            r.reject(i, || {
                formatted += 1;
                format!("r{i}")
            });
        }
        assert_eq!(r.count(), 1000);
        assert_eq!(r.reasons().collect::<Vec<_>>(), ["r0", "r1", "r2", "r3", "r4"]);
        // In descending order every index is the lowest so far: the worst case.
        assert_eq!(formatted, 1000);

        let mut r = Rejections::default();
        let mut formatted = 0;
        for i in 0..100_000 {
            r.reject(i, || {
                formatted += 1;
                String::new()
            });
        }
        assert_eq!(formatted, SHOWN, "in request order, reasons past the shown ones are never made");
    }

    #[test]
    fn an_item_is_counted_once_and_unread_ones_in_bulk() {
        let mut r = Rejections::default();
        assert!(r.reject(7, || "seven".into()));
        assert!(!r.reject(7, || "seven again".into()));
        r.reject_unread(10, 90, || "past the cap".into());
        assert_eq!(r.count(), 91);
        assert!(r.contains(7) && !r.contains(10));
        assert_eq!(r.summary(100, "spans"), "91 of 100 spans rejected: seven; past the cap; and 89 more");
    }
}
