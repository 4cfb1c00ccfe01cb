//! Compaction of PERSISTED journals: which runs of small persisted fragments to merge, and
//! which files a merged one makes removable.
//!
//! A PERSISTED journal writes one file per group commit, so its store fills with small
//! files. The primary merges runs of adjacent small files into one file of about the
//! fragment length, verifies it, lets its index prefer it, and removes the small files a
//! grace period later (readers that were handed their names meanwhile still find them).
//! This module is the plain-data part: the choice of runs and of removable files. The
//! replica does the I/O (`replica/compact.rs`).

use std::time::Duration;

use folio_protocol::Fragment;

/// Largest merged file: a merge holds its content in memory (outside the memory budget,
/// one merge at a time per broker), so journals with a longer fragment length merge into
/// files of this size.
pub const MAX_MERGED: i64 = 64 << 20;

/// How compaction paces itself (the broker's `--compaction-*` flags).
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Whether replicas compact in the background (passes can still be run by hand with
    /// `Replica::compact_pass`).
    pub enabled: bool,
    /// How long small files stay after the merged file holding them is confirmed: other
    /// brokers list the merged file within their refresh interval, and readers handed an
    /// old name or signed URL meanwhile still read it. Keep it above the journals'
    /// refresh interval and the signed-URL TTL.
    pub grace: Duration,
    /// How long the newest persisted file must be untouched before a run at the end of the
    /// journal, shorter than the fragment length, is merged anyway.
    pub idle: Duration,
    /// Merges running at once across the broker (each holds up to three times
    /// [`MAX_MERGED`] in memory: the run's content, one and a half targets at most, and
    /// the merged file read back to verify it).
    pub slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grace: Duration::from_secs(300),
            idle: Duration::from_secs(30),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// The size merged files aim at for a journal whose fragment length is `length`.
pub fn target_size(length: i64) -> i64 {
    if length <= 0 {
        MAX_MERGED
    } else {
        length.min(MAX_MERGED)
    }
}

/// The runs of `fragments` (an index's fragments, in offset order) to merge now, each of
/// two or more adjacent files in `store` smaller than half of `target`.
///
/// A run is cut once it holds `target` bytes or more (so merged files are at least the
/// target, and less than one and a half times it). A shorter run is merged when nothing
/// can extend it (a larger file, a gap, or another store follows it), or when it ends the
/// journal's persisted content and its newest file's mod time is at or before
/// `idle_before` (the journal went quiet). Returns the runs, and the mod time at which a
/// waiting tail run becomes idle, if one waits.
pub fn plan(
    fragments: &[Fragment],
    store: &str,
    target: i64,
    idle_before: i64,
) -> (Vec<Vec<Fragment>>, Option<i64>) {
    let mut runs = Vec::new();
    let mut run: Vec<Fragment> = Vec::new();
    let mut total = 0;
    for fragment in fragments {
        let small = fragment.backing_store == store && fragment.content_length() < target / 2;
        let extends = small && run.last().is_none_or(|last| last.end == fragment.begin);
        if !extends {
            // Nothing extends the run any more.
            if run.len() >= 2 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
            total = 0;
            if !small {
                continue;
            }
        }
        total += fragment.content_length();
        run.push(fragment.clone());
        if total >= target {
            if run.len() >= 2 {
                runs.push(std::mem::take(&mut run));
            }
            run.clear();
            total = 0;
        }
    }
    let mut waiting = None;
    if run.len() >= 2 {
        let newest = run.iter().map(|f| f.mod_time).max().unwrap_or(0);
        if newest <= idle_before {
            runs.push(run);
        } else {
            waiting = Some(newest);
        }
    }
    (runs, waiting)
}

/// A listed file that a merged (or any larger) file holds entirely: removable once
/// `covering`'s content is checked to match it and the grace period has passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Removable {
    /// The file to remove.
    pub file: Fragment,
    /// The file in the index whose span holds it.
    pub covering: Fragment,
}

/// The files of `listing` in `store` that `index` (the fragments a read would use) does not
/// use because one of its files holds their whole span and more. Files with the same span
/// as an indexed one are not listed: they are other copies, not parts.
pub fn removable(index: &[Fragment], listing: &[Fragment], store: &str) -> Vec<Removable> {
    let mut out = Vec::new();
    for file in listing.iter().filter(|f| f.backing_store == store) {
        // The index's last fragment beginning at or before the file is the one reaching
        // furthest (the index's fragments have increasing begins and ends).
        let at = index.partition_point(|f| f.begin <= file.begin);
        let Some(covering) = at.checked_sub(1).map(|i| &index[i]) else {
            continue;
        };
        let holds = covering.end >= file.end
            && (covering.begin, covering.end) != (file.begin, file.end)
            && covering.backing_store == store;
        if holds {
            out.push(Removable {
                file: file.clone(),
                covering: covering.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "s3://bucket/";

    fn file(begin: i64, end: i64, mod_time: i64) -> Fragment {
        Fragment {
            journal: "a/journal".to_owned(),
            begin,
            end,
            backing_store: STORE.to_owned(),
            mod_time,
            ..Fragment::default()
        }
    }

    fn spans(runs: &[Vec<Fragment>]) -> Vec<Vec<(i64, i64)>> {
        runs.iter()
            .map(|run| run.iter().map(|f| (f.begin, f.end)).collect())
            .collect()
    }

    #[test]
    fn runs_are_cut_at_the_target() {
        // Ten files of 30 bytes, target 100: runs of four (120 bytes) and a waiting tail.
        let files: Vec<_> = (0..10).map(|i| file(i * 30, i * 30 + 30, 100)).collect();
        let (runs, waiting) = plan(&files, STORE, 100, 50);
        assert_eq!(
            spans(&runs),
            [
                vec![(0, 30), (30, 60), (60, 90), (90, 120)],
                vec![(120, 150), (150, 180), (180, 210), (210, 240)],
            ]
        );
        assert_eq!(waiting, Some(100), "the tail of two waits until it is idle");
        let (runs, waiting) = plan(&files, STORE, 100, 100);
        assert_eq!(runs.len(), 3, "an idle tail is merged too");
        assert_eq!(spans(&runs)[2], [(240, 270), (270, 300)]);
        assert_eq!(waiting, None);
    }

    #[test]
    fn large_files_gaps_and_other_stores_end_runs() {
        let mut other = file(90, 100, 0);
        other.backing_store = "file:///elsewhere/".to_owned();
        let files = [
            file(0, 10, 0),
            file(10, 20, 0),
            file(20, 80, 0), // Not small: at least half the target.
            file(80, 90, 0),
            other,
            file(100, 110, 0),
            file(120, 130, 0), // After a gap.
            file(130, 140, 0),
        ];
        let (runs, _) = plan(&files, STORE, 100, 0);
        assert_eq!(
            spans(&runs),
            [vec![(0, 10), (10, 20)], vec![(120, 130), (130, 140)]],
            "single files are never merged alone"
        );
    }

    #[test]
    fn merged_files_are_not_merged_again() {
        let files = [file(0, 120, 0), file(120, 240, 0), file(240, 250, 0)];
        let (runs, waiting) = plan(&files, STORE, 100, i64::MAX);
        assert!(runs.is_empty(), "{runs:?}");
        assert_eq!(waiting, None);
    }

    #[test]
    fn files_inside_an_indexed_one_are_removable() {
        let index = [file(0, 100, 5), file(100, 110, 6)];
        let listing = [
            file(0, 100, 5),
            file(0, 40, 1),
            file(40, 100, 2),
            file(100, 110, 6),
        ];
        let removable = removable(&index, &listing, STORE);
        let spans: Vec<_> = removable
            .iter()
            .map(|r| (r.file.begin, r.file.end, r.covering.begin))
            .collect();
        assert_eq!(spans, [(0, 40, 0), (40, 100, 0)]);
    }

    #[test]
    fn copies_and_files_of_other_stores_are_kept() {
        let index = [file(0, 100, 5)];
        let mut elsewhere = file(0, 50, 1);
        elsewhere.backing_store = "file:///elsewhere/".to_owned();
        let mut copy = file(0, 100, 1);
        copy.path_postfix = "date=2026-12-02".to_owned();
        let listing = [file(0, 100, 5), copy, elsewhere];
        assert!(removable(&index, &listing, STORE).is_empty());
    }

    #[test]
    fn the_target_is_the_length_up_to_the_cap() {
        assert_eq!(target_size(1 << 20), 1 << 20);
        assert_eq!(target_size(1 << 30), MAX_MERGED);
        assert_eq!(target_size(0), MAX_MERGED);
    }
}
