//! The aligner: two runs' steps, in order, paired where they do the same thing.
//!
//! The objective is lexicographic: as many `same` pairs as possible (a longest common
//! subsequence under [`Unit::same`]), then, inside each stretch between two of them, as many
//! `changed` pairs as possible (a longest common subsequence under [`Unit::pairs`]). Among equal
//! alignments the earliest matches win, so a run that diverges does so as late as the evidence
//! allows.
//!
//! Cost: the common prefix and suffix are matched in one pass. What is left is aligned exactly
//! when both sides fit a window of [`WINDOW`] steps; otherwise window by window: each window is
//! aligned exactly and kept up to its last `same` pair in its first half, and the next window
//! starts there. Time O((n + m) · WINDOW), memory O(WINDOW²) (16-bit lengths: 8 MiB), whatever
//! the runs' lengths; a divergence spanning more than half a window may be aligned less well
//! than the exact answer, never wrongly (every pair is a real `same` or `changed` pair and each
//! side's order is kept).

use serde::{Deserialize, Serialize};

/// Steps of each side aligned exactly at once, at most.
pub const WINDOW: usize = 2048;
/// Larger stretches between `same` pairs are left unpaired rather than searched for `changed`
/// pairs (each test may compare texts).
const CHANGED_CELLS: usize = 1 << 20;

/// What the aligner needs of a step.
pub(super) trait Unit {
    /// Does the same thing with the same outcome.
    fn same(&self, other: &Self) -> bool;
    /// Does the same kind of thing, so one can be shown as the other changed.
    fn pairs(&self, other: &Self) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Same,
    Changed,
    OnlyA,
    OnlyB,
}

/// One step of an alignment: indices into the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pair {
    pub kind: Kind,
    pub a: Option<usize>,
    pub b: Option<usize>,
}

impl Pair {
    fn same(a: usize, b: usize) -> Pair {
        Pair { kind: Kind::Same, a: Some(a), b: Some(b) }
    }
    fn changed(a: usize, b: usize) -> Pair {
        Pair { kind: Kind::Changed, a: Some(a), b: Some(b) }
    }
    fn only_a(a: usize) -> Pair {
        Pair { kind: Kind::OnlyA, a: Some(a), b: None }
    }
    fn only_b(b: usize) -> Pair {
        Pair { kind: Kind::OnlyB, a: None, b: Some(b) }
    }

    /// The same pair seen from the other side.
    pub(super) fn swapped(self) -> Pair {
        let kind = match self.kind {
            Kind::OnlyA => Kind::OnlyB,
            Kind::OnlyB => Kind::OnlyA,
            k => k,
        };
        Pair { kind, a: self.b, b: self.a }
    }
}

/// Aligns `a` with `b`. Symmetric: `align(b, a)` is `align(a, b)` with every pair swapped (and,
/// within each stretch of one-sided steps, `a`'s listed first).
pub(super) fn align<T: Unit>(a: &[T], b: &[T], order: impl Fn(&[T], &[T]) -> std::cmp::Ordering) -> Vec<Pair> {
    // Ties between equally good alignments are broken by which side comes first; computing
    // always in one orientation (chosen by content) makes the answer independent of the
    // arguments' order.
    let mut pairs = if order(a, b).is_le() {
        Aligner::default().run(a, b)
    } else {
        Aligner::default().run(b, a).into_iter().map(Pair::swapped).collect()
    };
    a_first(&mut pairs);
    pairs
}

/// Within each stretch of one-sided steps, `a`'s steps first (each side's order kept).
pub(super) fn a_first(pairs: &mut [Pair]) {
    let mut start = 0;
    while start < pairs.len() {
        let one_sided = |p: &Pair| matches!(p.kind, Kind::OnlyA | Kind::OnlyB);
        if !one_sided(&pairs[start]) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < pairs.len() && one_sided(&pairs[end]) {
            end += 1;
        }
        pairs[start..end].sort_by_key(|p| p.kind == Kind::OnlyB);
        start = end;
    }
}

#[derive(Default)]
struct Aligner {
    out: Vec<Pair>,
    /// The window's table, reused: `len[i][j]`, the longest common subsequence of the window's
    /// suffixes from `i` and `j`.
    len: Vec<u16>,
}

impl Aligner {
    fn run<T: Unit>(mut self, a: &[T], b: &[T]) -> Vec<Pair> {
        let (n, m) = (a.len(), b.len());
        let mut prefix = 0;
        while prefix < n.min(m) && a[prefix].same(&b[prefix]) {
            prefix += 1;
        }
        let mut suffix = 0;
        while suffix < (n - prefix).min(m - prefix) && a[n - 1 - suffix].same(&b[m - 1 - suffix]) {
            suffix += 1;
        }
        self.out.extend((0..prefix).map(|k| Pair::same(k, k)));
        let (end_a, end_b) = (n - suffix, m - suffix);
        let (mut i, mut j) = (prefix, prefix);
        while i < end_a && j < end_b {
            let (wa, wb) = ((end_a - i).min(WINDOW), (end_b - j).min(WINDOW));
            let matches = self.lcs(&a[i..i + wa], &b[j..j + wb], T::same);
            let last_window = i + wa == end_a && j + wb == end_b;
            let keep = if last_window {
                matches.len()
            } else {
                matches.iter().rposition(|&(x, y)| x < wa / 2 && y < wb / 2).map_or(0, |k| k + 1)
            };
            let (base_a, base_b) = (i, j);
            for &(x, y) in &matches[..keep] {
                self.gap(a, b, i..base_a + x, j..base_b + y);
                self.out.push(Pair::same(base_a + x, base_b + y));
                i = base_a + x + 1;
                j = base_b + y + 1;
            }
            if last_window {
                break;
            }
            if keep == 0 {
                // Nothing in common in the windows' first halves: leave them as a stretch of
                // differences and move on.
                let (ha, hb) = (wa / 2, wb / 2);
                self.gap(a, b, i..i + ha, j..j + hb);
                i += ha;
                j += hb;
            }
        }
        self.gap(a, b, i..end_a, j..end_b);
        self.out.extend((0..suffix).map(|k| Pair::same(end_a + k, end_b + k)));
        self.out
    }

    /// A stretch with no `same` pair: `changed` pairs where steps pair, the rest one-sided.
    fn gap<T: Unit>(&mut self, a: &[T], b: &[T], ra: std::ops::Range<usize>, rb: std::ops::Range<usize>) {
        let matches = if ra.len().saturating_mul(rb.len()) <= CHANGED_CELLS {
            self.lcs(&a[ra.clone()], &b[rb.clone()], T::pairs)
        } else {
            Vec::new()
        };
        let (mut i, mut j) = (ra.start, rb.start);
        for (x, y) in matches {
            self.out.extend((i..ra.start + x).map(Pair::only_a));
            self.out.extend((j..rb.start + y).map(Pair::only_b));
            self.out.push(Pair::changed(ra.start + x, rb.start + y));
            i = ra.start + x + 1;
            j = rb.start + y + 1;
        }
        self.out.extend((i..ra.end).map(Pair::only_a));
        self.out.extend((j..rb.end).map(Pair::only_b));
    }

    /// A longest common subsequence of `a` and `b` under `eq`, as index pairs, preferring the
    /// earliest matches. Both sides are at most [`WINDOW`] long.
    fn lcs<T>(&mut self, a: &[T], b: &[T], eq: impl Fn(&T, &T) -> bool) -> Vec<(usize, usize)> {
        let (n, m) = (a.len(), b.len());
        debug_assert!(n <= WINDOW && m <= WINDOW);
        let w = m + 1;
        self.len.clear();
        self.len.resize((n + 1) * w, 0);
        let len = &mut self.len;
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                len[i * w + j] = if eq(&a[i], &b[j]) {
                    len[(i + 1) * w + j + 1] + 1
                } else {
                    len[(i + 1) * w + j].max(len[i * w + j + 1])
                };
            }
        }
        let mut matches = Vec::with_capacity(usize::from(len[0]));
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if eq(&a[i], &b[j]) && len[i * w + j] == len[(i + 1) * w + j + 1] + 1 {
                matches.push((i, j));
                i += 1;
                j += 1;
            } else if len[(i + 1) * w + j] >= len[i * w + j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
        matches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test step: `"tool:outcome"`; same when equal, pairs when the part before `:` is.
    #[derive(Debug)]
    struct S(&'static str);

    impl Unit for S {
        fn same(&self, other: &S) -> bool {
            self.0 == other.0
        }
        fn pairs(&self, other: &S) -> bool {
            self.0.split(':').next() == other.0.split(':').next()
        }
    }

    fn by_text(a: &[S], b: &[S]) -> std::cmp::Ordering {
        a.iter().map(|s| s.0).cmp(b.iter().map(|s| s.0))
    }

    fn run(a: &[&'static str], b: &[&'static str]) -> Vec<(Kind, Option<usize>, Option<usize>)> {
        let a: Vec<S> = a.iter().map(|s| S(s)).collect();
        let b: Vec<S> = b.iter().map(|s| S(s)).collect();
        align(&a, &b, by_text).into_iter().map(|p| (p.kind, p.a, p.b)).collect()
    }

    use Kind::*;

    #[test]
    fn earliest_matches_win_and_stretches_pair_changed_steps() {
        assert_eq!(
            run(&["s:q", "e:fail", "s:q", "e:ok", "t"], &["s:q", "e:ok", "t"]),
            vec![
                (Same, Some(0), Some(0)),
                (OnlyA, Some(1), None),
                (OnlyA, Some(2), None),
                (Same, Some(3), Some(1)),
                (Same, Some(4), Some(2)),
            ]
        );
        assert_eq!(
            run(&["x", "s:1", "y"], &["x", "s:2", "y"]),
            vec![(Same, Some(0), Some(0)), (Changed, Some(1), Some(1)), (Same, Some(2), Some(2))]
        );
    }

    /// Long runs go window by window and still find every `same` pair of two runs that differ by
    /// a few inserted steps, and keep both sides whole and in order.
    #[test]
    fn windows_keep_order_and_cover_both_sides() {
        let names: Vec<&'static str> =
            (0..(WINDOW * 3)).map(|k| &*Box::leak(format!("step{}", k % 997).into_boxed_str())).collect();
        let a: Vec<&'static str> = names.clone();
        let mut b = names.clone();
        b.insert(100, "extra:1");
        b.insert(WINDOW + 7, "extra:2");
        b.remove(WINDOW * 2 + 5);
        let pairs = run(&a, &b);
        let a_seen: Vec<usize> = pairs.iter().filter_map(|p| p.1).collect();
        let b_seen: Vec<usize> = pairs.iter().filter_map(|p| p.2).collect();
        assert_eq!(a_seen, (0..a.len()).collect::<Vec<_>>());
        assert_eq!(b_seen, (0..b.len()).collect::<Vec<_>>());
        let same = pairs.iter().filter(|p| p.0 == Same).count();
        assert_eq!(same, a.len() - 1, "every step but the removed one is matched");
    }

    #[test]
    fn wholly_different_long_runs_finish_as_one_sided_steps() {
        let a: Vec<&'static str> = (0..WINDOW * 2 + 3).map(|_| "a").collect();
        let b: Vec<&'static str> = (0..WINDOW + 1).map(|_| "b").collect();
        let pairs = run(&a, &b);
        assert_eq!(pairs.len(), a.len() + b.len());
        assert!(pairs.iter().all(|p| matches!(p.0, OnlyA | OnlyB)));
    }
}
