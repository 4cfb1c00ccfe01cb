//! The fragment index: one journal's known fragments, queried by offset.
//!
//! Like Gazette's `CoverSet`, the index keeps only fragments that no other fragment covers:
//! a fragment wholly inside another's span holds no byte the other lacks, so reads never
//! need it. It is plain data with no I/O; the replica feeds it local spools and store
//! listings, and readers ask it which fragment holds an offset.
//!
//! Invariant: no stored fragment's span lies inside another's (equal spans included). So,
//! sorted by `begin`, begins strictly increase and ends strictly increase too: two
//! fragments with `a.begin < b.begin` and `a.end >= b.end` would have `b` inside `a`. The
//! lookups below lean on that by binary searching either field.

use folio_protocol::Fragment;

/// The set of one journal's fragments that no other known fragment covers, in offset order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FragmentIndex {
    /// Sorted by `(begin, end)`; see the module invariant.
    fragments: Vec<Fragment>,
}

/// The answer to [`FragmentIndex::query`].
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The offset is inside this fragment, the one covering it that reaches furthest.
    Covered(Fragment),
    /// No fragment covers the offset.
    Gap {
        /// The first fragment beginning after the offset, where a reader may skip to.
        next: Option<Fragment>,
    },
}

impl FragmentIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `fragment` unless a known fragment already covers its span; returns whether the
    /// index changed.
    ///
    /// A fragment with the same span as a known local one (empty `backing_store`) but with a
    /// backing store replaces it: the persisted copy supersedes the spool it came from.
    /// Otherwise every known fragment inside `fragment`'s span is dropped. Fragments that
    /// only partly overlap are both kept.
    pub fn insert(&mut self, fragment: Fragment) -> bool {
        // The last fragment beginning at or before `fragment` has the greatest end of all
        // such, so it is the only one that can cover `fragment`.
        let after = self
            .fragments
            .partition_point(|f| f.begin <= fragment.begin);
        if let Some(prev) = after.checked_sub(1).map(|at| &mut self.fragments[at])
            && prev.end >= fragment.end
        {
            let persisted_copy = prev.begin == fragment.begin
                && prev.end == fragment.end
                && prev.backing_store.is_empty()
                && !fragment.backing_store.is_empty();
            if persisted_copy {
                *prev = fragment;
            }
            return persisted_copy;
        }
        // Fragments inside `fragment`'s span are a contiguous run: from the first beginning
        // at or after it to the last ending at or before it. Nothing in that run shares its
        // begin and reaches further, or it would have covered `fragment` above.
        let from = self.fragments.partition_point(|f| f.begin < fragment.begin);
        let to = self
            .fragments
            .partition_point(|f| f.end <= fragment.end)
            .max(from);
        self.fragments.splice(from..to, [fragment]);
        true
    }

    /// The fragment holding `offset`, or where the next one begins if none does.
    pub fn query(&self, offset: i64) -> Lookup {
        let after = self.fragments.partition_point(|f| f.begin <= offset);
        match after.checked_sub(1).map(|at| &self.fragments[at]) {
            // Of the fragments beginning at or before `offset`, the last ends furthest.
            Some(prev) if offset < prev.end => Lookup::Covered(prev.clone()),
            _ => Lookup::Gap {
                next: self.fragments.get(after).cloned(),
            },
        }
    }

    /// The lowest offset any fragment begins at; 0 when empty.
    pub fn begin_offset(&self) -> i64 {
        self.fragments.first().map_or(0, |f| f.begin)
    }

    /// The highest offset any fragment ends at; 0 when empty.
    pub fn end_offset(&self) -> i64 {
        // Ends increase with begins (module invariant), so the last fragment ends furthest.
        self.fragments.last().map_or(0, |f| f.end)
    }

    /// How many fragments the index holds.
    pub fn len(&self) -> usize {
        self.fragments.len()
    }

    /// Whether the index holds no fragment.
    pub fn is_empty(&self) -> bool {
        self.fragments.is_empty()
    }

    /// The fragments, in offset order.
    pub fn fragments(&self) -> &[Fragment] {
        &self.fragments
    }

    /// The spans `[begin, end)` between [`begin_offset`](Self::begin_offset) and
    /// [`end_offset`](Self::end_offset) that no fragment covers, in order.
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        self.fragments
            .windows(2)
            .filter(|pair| pair[0].end < pair[1].begin)
            .map(|pair| (pair[0].end, pair[1].begin))
            .collect()
    }

    /// The fragments whose `mod_time` is in `[begin, end)`, in offset order; `end == 0` is
    /// unbounded (the filter of `ListFragments`).
    pub fn with_mod_time(&self, begin: i64, end: i64) -> Vec<Fragment> {
        self.fragments
            .iter()
            .filter(|f| begin <= f.mod_time && (end == 0 || f.mod_time < end))
            .cloned()
            .collect()
    }

    /// Removes `fragment` (the same span, sum, store and postfix); returns whether it was
    /// there. Fragments it covered are not restored: insert them again if they are known.
    pub fn remove(&mut self, fragment: &Fragment) -> bool {
        let before = self.fragments.len();
        self.fragments.retain(|f| !same_file(f, fragment));
        self.fragments.len() != before
    }

    /// Makes `listed`, a fresh listing of the stores, the truth about persisted fragments.
    ///
    /// Every fragment with a backing store is dropped (one missing from the listing was
    /// deleted, by retention or by hand), then the listed ones are inserted, which drops
    /// local fragments a listed one now covers.
    pub fn replace_remote(&mut self, listed: impl IntoIterator<Item = Fragment>) {
        self.fragments.retain(|f| f.backing_store.is_empty());
        for fragment in listed {
            self.insert(fragment);
        }
    }
}

/// Whether two fragments name the same file.
pub fn same_file(a: &Fragment, b: &Fragment) -> bool {
    a.begin == b.begin
        && a.end == b.end
        && a.sum == b.sum
        && a.compression_codec == b.compression_codec
        && a.backing_store == b.backing_store
        && a.path_postfix == b.path_postfix
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STORE: &str = "s3://bucket/";

    fn local(begin: i64, end: i64) -> Fragment {
        Fragment {
            journal: "a/journal".to_owned(),
            begin,
            end,
            ..Fragment::default()
        }
    }

    fn remote(begin: i64, end: i64) -> Fragment {
        Fragment {
            backing_store: STORE.to_owned(),
            ..local(begin, end)
        }
    }

    fn spans(index: &FragmentIndex) -> Vec<(i64, i64)> {
        index.fragments().iter().map(|f| (f.begin, f.end)).collect()
    }

    #[test]
    fn a_removed_fragment_uncovers_what_is_inserted_again() {
        let mut idx = index([remote(0, 1400), remote(1400, 2100)]);
        let bogus = remote(0, 2100);
        idx.insert(bogus.clone());
        assert_eq!(spans(&idx), [(0, 2100)], "the large one covers both");
        assert!(idx.remove(&bogus));
        assert!(!idx.remove(&bogus), "already gone");
        idx.insert(remote(0, 1400));
        idx.insert(remote(1400, 2100));
        assert_eq!(spans(&idx), [(0, 1400), (1400, 2100)]);
    }

    fn index(fragments: impl IntoIterator<Item = Fragment>) -> FragmentIndex {
        let mut index = FragmentIndex::new();
        for f in fragments {
            index.insert(f);
        }
        index
    }

    #[test]
    fn empty_index() {
        let index = FragmentIndex::new();
        assert!(index.is_empty());
        assert_eq!(index.len(), 0);
        assert_eq!((index.begin_offset(), index.end_offset()), (0, 0));
        assert_eq!(index.query(0), Lookup::Gap { next: None });
        assert!(index.gaps().is_empty());
    }

    #[test]
    fn longest_covering_fragment_wins() {
        let index = index([local(0, 100), local(50, 300), local(80, 200)]);
        // [80, 200) lies inside [50, 300) and was dropped.
        assert_eq!(spans(&index), [(0, 100), (50, 300)]);
        assert_eq!(index.query(10), Lookup::Covered(local(0, 100)));
        assert_eq!(index.query(60), Lookup::Covered(local(50, 300)));
        assert_eq!(index.query(99), Lookup::Covered(local(50, 300)));
        assert_eq!(index.query(299), Lookup::Covered(local(50, 300)));
        assert_eq!(index.query(300), Lookup::Gap { next: None });
    }

    #[test]
    fn covered_fragment_is_rejected() {
        let mut index = index([local(100, 200)]);
        assert!(!index.insert(local(100, 200)), "equal span");
        assert!(!index.insert(local(120, 150)), "inside");
        assert!(!index.insert(local(100, 150)), "same begin");
        assert!(!index.insert(local(150, 200)), "same end");
        assert!(!index.insert(local(150, 150)), "empty span inside");
        assert!(!index.insert(local(200, 200)), "empty span at the end");
        assert!(
            !index.insert(remote(120, 150)),
            "a backing store does not help a smaller span"
        );
        assert!(!index.insert(Fragment {
            backing_store: String::new(),
            ..remote(100, 200)
        }));
        assert_eq!(spans(&index), [(100, 200)]);
    }

    #[test]
    fn covering_fragment_evicts_those_inside_it() {
        let mut index = index([local(0, 10), local(10, 20), local(20, 30), local(30, 40)]);
        assert!(index.insert(local(10, 30)));
        assert_eq!(spans(&index), [(0, 10), (10, 30), (30, 40)]);
        assert!(index.insert(local(5, 35)));
        assert_eq!(spans(&index), [(0, 10), (5, 35), (30, 40)]);
        assert!(index.insert(remote(0, 40)));
        assert_eq!(index.fragments(), [remote(0, 40)]);
    }

    #[test]
    fn partial_overlaps_are_kept() {
        let mut index = index([local(0, 100)]);
        assert!(index.insert(local(50, 150)));
        assert!(index.insert(local(120, 200)));
        // Overlaps [50, 150) and [120, 200), lies inside neither, and covers neither.
        assert!(index.insert(local(140, 210)));
        assert_eq!(spans(&index), [(0, 100), (50, 150), (120, 200), (140, 210)]);
        assert_eq!(index.query(145), Lookup::Covered(local(140, 210)));
        assert!(index.gaps().is_empty());
    }

    #[test]
    fn gap_query_names_the_next_fragment() {
        let index = index([local(0, 10), local(20, 30), remote(50, 60)]);
        assert_eq!(
            index.query(-1),
            Lookup::Gap {
                next: Some(local(0, 10))
            }
        );
        assert_eq!(
            index.query(10),
            Lookup::Gap {
                next: Some(local(20, 30))
            }
        );
        assert_eq!(
            index.query(19),
            Lookup::Gap {
                next: Some(local(20, 30))
            }
        );
        assert_eq!(index.query(20), Lookup::Covered(local(20, 30)));
        assert_eq!(
            index.query(30),
            Lookup::Gap {
                next: Some(remote(50, 60))
            }
        );
        assert_eq!(index.query(60), Lookup::Gap { next: None });
    }

    #[test]
    fn gaps_lists_uncovered_spans() {
        let index = index([
            local(5, 10),
            local(8, 20),
            local(25, 30),
            local(30, 40),
            local(41, 50),
        ]);
        assert_eq!(index.gaps(), [(20, 25), (40, 41)]);
        assert_eq!((index.begin_offset(), index.end_offset()), (5, 50));
        assert_eq!(index.len(), 5);
    }

    #[test]
    fn local_fragment_is_replaced_by_its_persisted_copy() {
        let mut index = index([local(0, 100), local(100, 200)]);
        assert!(index.insert(remote(0, 100)));
        assert_eq!(index.fragments(), [remote(0, 100), local(100, 200)]);
        // A second persisted copy (another store) changes nothing, nor does the spool again.
        let other = Fragment {
            backing_store: "gs://other/".to_owned(),
            ..remote(0, 100)
        };
        assert!(!index.insert(other));
        assert!(!index.insert(local(0, 100)));
        assert_eq!(index.fragments(), [remote(0, 100), local(100, 200)]);
    }

    #[test]
    fn replace_remote_drops_deleted_objects() {
        let mut index = index([
            remote(0, 100),
            remote(100, 200),
            local(200, 250),
            local(250, 300),
        ]);
        // The store now lists only [100, 200) and a new [200, 250); [0, 100) was pruned.
        index.replace_remote([remote(100, 200), remote(200, 250)]);
        assert_eq!(
            index.fragments(),
            [remote(100, 200), remote(200, 250), local(250, 300)]
        );
        assert_eq!(
            index.query(50),
            Lookup::Gap {
                next: Some(remote(100, 200))
            }
        );
        // A listed fragment inside a local spool stays out; a local one inside a listed goes.
        index.replace_remote([remote(260, 280), remote(100, 250)]);
        assert_eq!(index.fragments(), [remote(100, 250), local(250, 300)]);
        index.replace_remote([]);
        assert_eq!(index.fragments(), [local(250, 300)]);
    }

    #[test]
    fn mod_time_filter() {
        let at = |f: Fragment, mod_time| Fragment { mod_time, ..f };
        let index = index([
            at(remote(0, 10), 300),
            at(remote(10, 20), 100),
            at(remote(20, 30), 200),
            local(30, 40),
        ]);
        let span = |fs: Vec<Fragment>| fs.iter().map(|f| (f.begin, f.end)).collect::<Vec<_>>();
        assert_eq!(span(index.with_mod_time(100, 300)), [(10, 20), (20, 30)]);
        assert_eq!(span(index.with_mod_time(150, 0)), [(0, 10), (20, 30)]);
        assert_eq!(span(index.with_mod_time(0, 0)).len(), 4);
        assert_eq!(span(index.with_mod_time(0, 1)), [(30, 40)]);
        assert!(index.with_mod_time(301, 0).is_empty());
    }

    proptest! {
        #[test]
        fn longest_covering_fragment_is_kept(
            inserted in proptest::collection::vec((0i64..64, 0i64..16, any::<bool>()), 0..40),
        ) {
            let inserted: Vec<Fragment> = inserted
                .into_iter()
                .map(|(begin, len, persisted)| {
                    if persisted { remote(begin, begin + len) } else { local(begin, begin + len) }
                })
                .collect();
            let index = index(inserted.iter().cloned());

            for offset in -1..90 {
                let best = inserted.iter().filter(|f| f.contains(offset)).map(|f| f.end).max();
                match (index.query(offset), best) {
                    (Lookup::Covered(f), Some(end)) => {
                        prop_assert!(f.contains(offset));
                        prop_assert_eq!(f.end, end, "offset {}", offset);
                    }
                    (Lookup::Gap { next }, None) => {
                        // A fragment dropped for lying inside a kept one that begins at or
                        // before `offset` would put `offset` inside the kept one, so the
                        // first inserted begin past `offset` is also a kept begin.
                        let want =
                            inserted.iter().filter(|f| f.begin > offset).map(|f| f.begin).min();
                        prop_assert_eq!(next.map(|f| f.begin), want, "offset {}", offset);
                    }
                    (got, want) => {
                        prop_assert!(false, "offset {}: {:?}, expected end {:?}", offset, got, want)
                    }
                }
            }

            let kept = index.fragments();
            for (i, a) in kept.iter().enumerate() {
                for (j, b) in kept.iter().enumerate() {
                    prop_assert!(
                        i == j || !(a.begin <= b.begin && b.end <= a.end),
                        "{:?} covers {:?}", (a.begin, a.end), (b.begin, b.end),
                    );
                }
            }
            prop_assert!(kept.windows(2).all(|p| (p[0].begin, p[0].end) < (p[1].begin, p[1].end)));
            prop_assert_eq!(index.end_offset(), inserted.iter().map(|f| f.end).max().unwrap_or(0));
        }
    }
}
