//! `tributary bench-engine`: evaluation time per event for catalogs of 10, 1,000 and 100,000
//! traits, in process, without HTTP, actors or store — the cost of the segment engine alone.
//!
//! Every size is driven by the same events (the bench's five-signal events, pre-parsed) from
//! the same 10,000 visitors whose profiles persist across events, within one day and then
//! across a day boundary (the once-a-day full re-evaluation). The sizes run in interleaved
//! rounds, five counted after one warm-up, and each size's fastest round counts: on a shared
//! machine that filters out noise better than an average.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng};
use serde::Serialize;

use super::catalogs;
use crate::core::catalog::Catalog;
use crate::core::engine::{CompiledCatalog, EventInput};
use crate::core::profile::{Profile, SECS_PER_DAY};
use crate::core::signals::Signals;

const VISITORS: usize = 10_000;
const SIZES: [(u64, u64); 3] = [(10, 5), (1_000, 200), (100_000, 20_000)];
const ROUNDS: usize = 5;

#[derive(Debug, Serialize)]
pub struct EngineMeasurement {
    pub traits: u64,
    pub segments: u64,
    pub events: usize,
    /// Nanoseconds per event, best of five runs.
    pub ns_per_event: f64,
    /// Traits realized per event, on average: the work the catalog gives an event.
    pub realized_per_event: f64,
    /// Nanoseconds per event when every event is a visitor's first of a new day.
    pub new_day_ns_per_event: f64,
    pub compile_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct EngineReport {
    pub measurements: Vec<EngineMeasurement>,
    /// ns/event of the largest catalog over the smallest.
    pub ratio_largest_to_smallest: f64,
}

/// Runs the micro-benchmark with `events` events per run.
pub fn run(events: usize) -> Result<EngineReport, String> {
    let mut rng = SmallRng::seed_from_u64(7);
    let inputs: Vec<(usize, Signals)> = (0..4096)
        .map(|_| {
            let visitor = rng.random_range(0..VISITORS);
            let target = catalogs::event_target(visitor as u64, &mut rng);
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let parsed = crate::core::request::parse_event(query.as_bytes(), None)
                .map_err(|e| format!("bench event does not parse: {e:?}"))?;
            Ok((visitor, parsed.signals))
        })
        .collect::<Result<_, String>>()?;

    struct Size {
        compiled: CompiledCatalog,
        compile_ms: f64,
        profiles: Vec<Profile>,
        best: f64,
        new_day_best: f64,
        realized: usize,
    }
    let mut sizes = Vec::new();
    for (traits, segments) in SIZES {
        let json = if traits <= 10 {
            catalogs::small(&[], 0, 80)
        } else {
            catalogs::large(traits, segments)
        };
        let catalog: Catalog = serde_json::from_value(json).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let compiled = CompiledCatalog::compile(&catalog, 1).map_err(|e| e.to_string())?;
        sizes.push(Size {
            compiled,
            compile_ms: started.elapsed().as_secs_f64() * 1e3,
            profiles: vec![Profile::default(); VISITORS],
            best: f64::MAX,
            new_day_best: f64::MAX,
            realized: 0,
        });
    }

    // Rounds interleave the sizes, so that a slow moment of this shared machine hits each of
    // them alike; round 0 only warms up (first visits, heap growth) and is not counted.
    let day0 = 20_000 * SECS_PER_DAY;
    let next_day = day0 + SECS_PER_DAY;
    for round in 0..=ROUNDS {
        for size in &mut sizes {
            let mut realized = 0;
            let started = Instant::now();
            for i in 0..events {
                let (visitor, signals) = &inputs[i % inputs.len()];
                let e = size.compiled.evaluate(
                    &mut size.profiles[*visitor],
                    &EventInput {
                        signals,
                        providers: &[],
                        sids: &[],
                        tdpid: None,
                        now: day0 + (round * events + i) as i64 / 10_000,
                        answers_only: false,
                    },
                );
                realized += e.realized.len();
            }
            let ns = started.elapsed().as_nanos() as f64 / events as f64;

            // Every visitor's first event of the next day: expiry and full re-evaluation.
            let mut day_profiles = size.profiles.clone();
            let started = Instant::now();
            for (visitor, profile) in day_profiles.iter_mut().enumerate() {
                let signals = &inputs[(visitor + round) % inputs.len()].1;
                size.compiled.evaluate(
                    profile,
                    &EventInput {
                        signals,
                        providers: &[],
                        sids: &[],
                        tdpid: None,
                        now: next_day,
                        answers_only: false,
                    },
                );
            }
            let new_day_ns = started.elapsed().as_nanos() as f64 / VISITORS as f64;
            if round > 0 {
                size.best = size.best.min(ns);
                size.new_day_best = size.new_day_best.min(new_day_ns);
                size.realized = realized;
            }
        }
    }

    let measurements: Vec<EngineMeasurement> = sizes
        .iter()
        .map(|size| EngineMeasurement {
            traits: size.compiled.trait_count() as u64,
            segments: size.compiled.segment_count() as u64,
            events,
            ns_per_event: size.best,
            realized_per_event: size.realized as f64 / events as f64,
            new_day_ns_per_event: size.new_day_best,
            compile_ms: size.compile_ms,
        })
        .collect();
    let first = measurements.first().map_or(1.0, |m| m.ns_per_event);
    let last = measurements.last().map_or(1.0, |m| m.ns_per_event);
    Ok(EngineReport {
        measurements,
        ratio_largest_to_smallest: last / first.max(f64::MIN_POSITIVE),
    })
}

pub fn print(report: &EngineReport) {
    println!(
        "{:>8} {:>9} {:>10} {:>12} {:>14} {:>12}",
        "traits", "segments", "ns/event", "realized/ev", "new-day ns/ev", "compile ms"
    );
    for m in &report.measurements {
        println!(
            "{:>8} {:>9} {:>10.0} {:>12.2} {:>14.0} {:>12.0}",
            m.traits,
            m.segments,
            m.ns_per_event,
            m.realized_per_event,
            m.new_day_ns_per_event,
            m.compile_ms
        );
    }
    println!(
        "largest / smallest catalog: {:.2}× (aim: under 2×)",
        report.ratio_largest_to_smallest
    );
}
