//! `tributary bench-engine`: evaluation time per event for catalogs of 10, 1,000 and 100,000
//! traits, in process, without HTTP, actors or store — the cost of the segment engine alone.
//!
//! Every size is driven by the same events (the bench's five-signal events, pre-parsed) from
//! the same 10,000 visitors whose profiles persist across events, within one day and then
//! across a day boundary (the once-a-day full re-evaluation). Each size runs three times and
//! the fastest run counts, which filters out a noisy neighbour better than an average.

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng};
use serde::Serialize;

use super::catalogs;
use crate::catalog::Catalog;
use crate::engine::{CompiledCatalog, EventInput};
use crate::profile::{Profile, SECS_PER_DAY};
use crate::signals::Signals;

const VISITORS: usize = 10_000;
const SIZES: [(u64, u64); 3] = [(10, 5), (1_000, 200), (100_000, 20_000)];

#[derive(Debug, Serialize)]
pub struct EngineMeasurement {
    pub traits: u64,
    pub segments: u64,
    pub events: usize,
    /// Nanoseconds per event, best of three runs.
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
            let parsed = crate::request::parse_event(query.as_bytes(), None)
                .map_err(|e| format!("bench event does not parse: {e:?}"))?;
            Ok((visitor, parsed.signals))
        })
        .collect::<Result<_, String>>()?;

    let mut measurements = Vec::new();
    for (traits, segments) in SIZES {
        let json = if traits <= 10 {
            catalogs::small(&[], 0, 80)
        } else {
            catalogs::large(traits, segments)
        };
        let catalog: Catalog = serde_json::from_value(json).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let compiled = CompiledCatalog::compile(&catalog, 1).map_err(|e| e.to_string())?;
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;

        let mut best = f64::MAX;
        let mut realized = 0usize;
        let mut profiles = vec![Profile::default(); VISITORS];
        let day0 = 20_000 * SECS_PER_DAY;
        for round in 0..3 {
            realized = 0;
            let started = Instant::now();
            for i in 0..events {
                let (visitor, signals) = &inputs[i % inputs.len()];
                let e = compiled.evaluate(
                    &mut profiles[*visitor],
                    &EventInput {
                        signals,
                        providers: &[],
                        sids: &[],
                        tdpid: None,
                        now: day0 + (round * events + i) as i64 / 1000,
                    },
                );
                realized += e.realized.len();
            }
            best = best.min(started.elapsed().as_nanos() as f64 / events as f64);
        }

        // Every visitor's first event of the next day: expiry scan and full re-evaluation.
        let next_day = day0 + SECS_PER_DAY;
        let mut new_day_best = f64::MAX;
        for round in 0..3 {
            let mut day_profiles = profiles.clone();
            let started = Instant::now();
            for (visitor, profile) in day_profiles.iter_mut().enumerate() {
                let signals = &inputs[(visitor + round) % inputs.len()].1;
                compiled.evaluate(
                    profile,
                    &EventInput {
                        signals,
                        providers: &[],
                        sids: &[],
                        tdpid: None,
                        now: next_day,
                    },
                );
            }
            new_day_best = new_day_best.min(started.elapsed().as_nanos() as f64 / VISITORS as f64);
        }

        measurements.push(EngineMeasurement {
            traits: compiled.trait_count() as u64,
            segments: compiled.segment_count() as u64,
            events,
            ns_per_event: best,
            realized_per_event: realized as f64 / events as f64,
            new_day_ns_per_event: new_day_best,
            compile_ms,
        });
    }
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
