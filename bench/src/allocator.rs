//! `folio-bench allocator`: the allocator's decision time at scale, simulated in-process.
//!
//! A cluster of `--members` members in `--zones` zones serves `--journals` journals of
//! replication `--replication`. Each run times, with the allocator's output applied to an
//! in-memory keyspace between steps (and routes synced, as primaries would):
//! - **full solve**: every journal assigned, from no assignments;
//! - **stable re-solve**: the converged cluster decided again (expected: 0 changes);
//! - **member lost**: one member's assignments expire; the re-solve that repairs it.
//!
//! The baseline is the cheapest allocator that writes as many assignments: journal `i` on
//! members `i, i+1, ..., i+R-1` (mod members), with no balancing, zones or stickiness. It
//! bounds what deciding costs beyond producing the changes.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use folio_coordination::allocator::simulate::Simulation;
use folio_coordination::allocator::{AssignmentChange, ChangeAction, allocate};
use folio_coordination::keys::{AssignmentKey, Member, SpecEntry};
use folio_protocol::process_spec::Id;
use folio_protocol::{BrokerSpec, JournalSpec, ProcessSpec, Route};
use serde::Serialize;

use super::stats::median;

/// Flags of `folio-bench allocator`.
#[derive(Debug, Args)]
pub struct AllocatorArgs {
    /// Members of the simulated cluster.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Journals.
    #[arg(long, default_value_t = 100_000)]
    pub journals: usize,
    /// Zones the members are spread over.
    #[arg(long, default_value_t = 3)]
    pub zones: usize,
    /// Replication of every journal.
    #[arg(long, default_value_t = 3)]
    pub replication: i32,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 3, env = "FOLIO_BENCH_RUNS")]
    pub runs: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "FOLIO_BENCH_JSON")]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Serialize)]
struct Runs {
    baseline_s: Vec<f64>,
    full_solve_s: Vec<f64>,
    full_solve_changes: Vec<usize>,
    rounds_to_converge: Vec<usize>,
    stable_resolve_s: Vec<f64>,
    stable_resolve_changes: Vec<usize>,
    member_lost_s: Vec<f64>,
    member_lost_changes: Vec<usize>,
}

/// Runs the scenario and prints its table.
pub fn run(args: AllocatorArgs) -> Result<()> {
    if args.members == 0 || args.zones == 0 || args.runs == 0 {
        bail!("--members, --zones and --runs must be at least 1");
    }
    if !(1..=5).contains(&args.replication) {
        bail!(
            "--replication {} is out of range (1 to 5)",
            args.replication
        );
    }
    let limit = i32::try_from(args.journals * args.replication as usize).unwrap_or(i32::MAX);
    let mut members: Vec<Member> = (0..args.members)
        .map(|i| {
            member(
                &format!("zone-{}", i % args.zones),
                &format!("broker-{i:04}"),
                limit,
                i,
            )
        })
        .collect();
    members.sort_by(|a, b| (&a.id.zone, &a.id.suffix).cmp(&(&b.id.zone, &b.id.suffix)));
    let specs: Vec<SpecEntry> = (0..args.journals)
        .map(|i| SpecEntry {
            spec: JournalSpec {
                name: format!("bench/allocator/{i:07}"),
                replication: args.replication,
                ..JournalSpec::default()
            },
            create_revision: 1,
            mod_revision: 1,
        })
        .collect();

    let mut runs = Runs::default();
    for run in 0..args.runs {
        eprintln!("allocator bench: run {}/{}", run + 1, args.runs);
        let started = Instant::now();
        let naive = round_robin(&specs, &members, args.replication as usize);
        runs.baseline_s.push(started.elapsed().as_secs_f64());
        drop(naive);

        let mut sim = Simulation::default();
        let started = Instant::now();
        let changes = allocate(&specs, &members, &sim.assignments);
        runs.full_solve_s.push(started.elapsed().as_secs_f64());
        runs.full_solve_changes.push(changes.len());
        let rounds = converge(&mut sim, &specs, &members, changes)?;
        runs.rounds_to_converge.push(rounds);

        let started = Instant::now();
        let stable = allocate(&specs, &members, &sim.assignments);
        runs.stable_resolve_s.push(started.elapsed().as_secs_f64());
        runs.stable_resolve_changes.push(stable.len());

        let mut survivors = members.clone();
        survivors.remove(run % members.len());
        sim.expire(&survivors);
        let started = Instant::now();
        let repair = allocate(&specs, &survivors, &sim.assignments);
        runs.member_lost_s.push(started.elapsed().as_secs_f64());
        runs.member_lost_changes.push(repair.len());
    }

    let med = |v: &[f64]| median(v);
    let medz = |v: &[usize]| median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let baseline = med(&runs.baseline_s);
    println!(
        "allocator: {} members x {} journals x {} zones, R={}, {} runs (medians)",
        args.members, args.journals, args.zones, args.replication, args.runs
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "step", "seconds", "changes", "x baseline"
    );
    let row = |name: &str, s: f64, changes: f64| {
        println!(
            "{name:<34} {s:>10.3} {changes:>10.0} {:>12.2}",
            s / baseline
        );
    };
    row(
        "baseline: round-robin assignment",
        baseline,
        medz(&runs.full_solve_changes),
    );
    row(
        "full solve (from nothing)",
        med(&runs.full_solve_s),
        medz(&runs.full_solve_changes),
    );
    row(
        "stable re-solve",
        med(&runs.stable_resolve_s),
        medz(&runs.stable_resolve_changes),
    );
    row(
        "re-solve after losing one member",
        med(&runs.member_lost_s),
        medz(&runs.member_lost_changes),
    );
    println!(
        "rounds to converge from nothing: {}",
        medz(&runs.rounds_to_converge)
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&runs)?;
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// Applies decisions and syncs routes until the allocator has nothing more to change.
fn converge(
    sim: &mut Simulation,
    specs: &[SpecEntry],
    members: &[Member],
    mut changes: Vec<AssignmentChange>,
) -> Result<usize> {
    for round in 1..=20 {
        if changes.is_empty() {
            return Ok(round);
        }
        if let Err(err) = sim.apply(&changes) {
            bail!("the allocator's changes do not apply: {err}");
        }
        sim.sync(members);
        changes = allocate(specs, members, &sim.assignments);
    }
    bail!("the allocator did not converge in 20 rounds")
}

fn round_robin(specs: &[SpecEntry], members: &[Member], r: usize) -> Vec<AssignmentChange> {
    let mut changes = Vec::with_capacity(specs.len() * r);
    for (i, entry) in specs.iter().enumerate() {
        for slot in 0..r {
            let m = &members[(i + slot) % members.len()];
            changes.push(AssignmentChange {
                key: AssignmentKey {
                    journal: entry.spec.name.clone(),
                    member: m.id.clone(),
                    slot: slot as u32,
                },
                action: ChangeAction::Put(Route::default()),
                expect_mod_revision: 0,
                spec_mod_revision: entry.mod_revision,
            });
        }
    }
    changes
}

fn member(zone: &str, suffix: &str, limit: i32, i: usize) -> Member {
    let id = Id {
        zone: zone.into(),
        suffix: suffix.into(),
    };
    Member {
        spec: BrokerSpec {
            process_spec: Some(ProcessSpec {
                id: Some(id.clone()),
                endpoint: format!("http://10.0.{}.{}:8080", i / 250, i % 250),
            }),
            journal_limit: limit,
            exiting: false,
        },
        id,
        create_revision: i as i64 + 1,
        mod_revision: i as i64 + 1,
        lease: None,
    }
}
