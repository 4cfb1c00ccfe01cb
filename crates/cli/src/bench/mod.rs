//! `folio bench`: performance scenarios, each measured against a baseline in the same run.
//!
//! Every scenario repeats its measurements `--runs` times, interleaving the baseline with
//! the subject so drift on a noisy machine hits both, and reports medians and the ratio of
//! medians. Results print as a table and, with `--json FILE`, as JSON.

pub mod persist;
pub mod stats;
