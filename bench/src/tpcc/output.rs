//! What a run leaves behind: a table on stdout, a JSON file with every
//! figure, and an SVG with throughput over time and the latency CDF of
//! each transaction type, one row of panels per target.
//!
//! The SVG is drawn with `plotters`' SVG backend without font support:
//! text is written as SVG `<text>` elements for the viewer to render, and
//! label sizes are estimated, so labels may sit a little off their ideal
//! place.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{Value as Json, json};

use super::consistency::Check;
use super::driver::{KindStats, RunStats, TPMC_PER_TERMINAL_IDEAL};
use super::schema::Population;
use super::txns::Kind;

/// Everything measured on one target.
pub struct TargetResult {
    pub name: String,
    pub description: String,
    pub rows_loaded: u64,
    pub load_s: f64,
    pub stats: RunStats,
    pub checks: Vec<Check>,
}

impl TargetResult {
    pub fn consistent(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }
}

/// The run's settings, as printed and saved.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSettings {
    pub population: Population,
    pub terminals: usize,
    pub warmup_s: u64,
    pub duration_s: u64,
    pub keying_and_think: bool,
    pub isolation: String,
    /// GeoDB's hot counters in column families of their own.
    pub column_families: bool,
    pub seed: u64,
}

impl RunSettings {
    /// Clause 5.2.5: with keying and think times, the share of the ideal
    /// tpmC the terminals reached.
    pub fn efficiency(&self, stats: &RunStats) -> Option<f64> {
        self.keying_and_think.then(|| stats.tpmc() / (TPMC_PER_TERMINAL_IDEAL * self.terminals as f64))
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The human-readable report for all targets.
pub fn table(settings: &RunSettings, results: &[TargetResult]) -> String {
    let p = &settings.population;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "TPC-C: {} warehouse(s), {} terminal(s), {} s measured after {} s warmup, isolation {}, seed {}",
        p.warehouses, settings.terminals, settings.duration_s, settings.warmup_s, settings.isolation, settings.seed
    );
    if !p.is_standard() {
        let _ = writeln!(
            out,
            "NON-STANDARD POPULATION: --scale {} ({} items, {} customers and orders per district, {} new-orders \
             per district); these figures are not TPC-C results",
            p.scale, p.items, p.customers_per_district, p.new_orders_per_district
        );
    }
    let _ = writeln!(
        out,
        "{}",
        if settings.keying_and_think {
            "keying and think times: on (clause 5.2.5)"
        } else {
            "keying and think times: off (terminals run back to back; efficiency not applicable)"
        }
    );
    let _ = writeln!(
        out,
        "GeoDB column families for the year-to-date and next-order counters: {}",
        if settings.column_families { "on" } else { "off (--no-column-families)" }
    );
    for result in results {
        let stats = &result.stats;
        let _ = writeln!(out, "\n== {}: {}", result.name, result.description);
        let _ = writeln!(out, "loaded {} rows in {:.1} s", result.rows_loaded, result.load_s);
        let _ = write!(out, "tpmC {:.1}   total {:.1} tpm", stats.tpmc(), stats.tpm_total());
        if let Some(efficiency) = settings.efficiency(stats) {
            let _ = write!(out, "   efficiency {:.1} %", efficiency * 100.0);
        }
        let _ = writeln!(out, "\nnew-order commits: {}", stats.kind(Kind::NewOrder).committed);
        let _ = writeln!(
            out,
            "| transaction | completed | rolled back | retries | failures | p50 ms | p90 ms | p99 ms | max ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for kind in Kind::ALL {
            let k = stats.kind(kind);
            let h = &k.latency_us;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                kind.name(),
                k.completed(),
                k.rolled_back,
                k.retries,
                k.failures,
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.90)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            );
        }
        let failures: u64 = stats.per_kind.iter().map(|k| k.failures).sum();
        let retries: u64 = stats.per_kind.iter().map(|k| k.retries).sum();
        let _ = writeln!(out, "retries: {retries}, failures: {failures}");
        for kind in Kind::ALL {
            for sample in &stats.kind(kind).error_samples {
                let _ = writeln!(out, "  {} error: {sample}", kind.name());
            }
        }
        if result.consistent() {
            let clauses: Vec<&str> = result.checks.iter().map(|c| c.clause).collect();
            let _ = writeln!(out, "consistency: ok ({})", clauses.join(", "));
        } else {
            let _ = writeln!(out, "consistency: VIOLATED");
            for check in result.checks.iter().filter(|c| !c.ok()) {
                for violation in &check.violations {
                    let _ = writeln!(out, "  {} {}: {violation}", check.clause, check.condition);
                }
            }
        }
    }
    if results.len() >= 2 {
        let _ = writeln!(out);
        let base = &results[results.len() - 1];
        for result in &results[..results.len() - 1] {
            let _ = writeln!(
                out,
                "ratio {} / {}: tpmC {:.2}x, total tpm {:.2}x, New-Order p50 {:.2}x, p99 {:.2}x",
                result.name,
                base.name,
                result.stats.tpmc() / base.stats.tpmc().max(f64::MIN_POSITIVE),
                result.stats.tpm_total() / base.stats.tpm_total().max(f64::MIN_POSITIVE),
                latency_ratio(&result.stats, &base.stats, 0.50),
                latency_ratio(&result.stats, &base.stats, 0.99),
            );
        }
    }
    out
}

fn latency_ratio(a: &RunStats, b: &RunStats, quantile: f64) -> f64 {
    let a = a.kind(Kind::NewOrder).latency_us.value_at_quantile(quantile) as f64;
    let b = b.kind(Kind::NewOrder).latency_us.value_at_quantile(quantile) as f64;
    a / b.max(1.0)
}

fn kind_json(k: &KindStats) -> Json {
    let h = &k.latency_us;
    json!({
        "completed": k.completed(),
        "committed": k.committed,
        "rolled_back": k.rolled_back,
        "retries": k.retries,
        "failures": k.failures,
        "latency_ms": {
            "p50": ms(h.value_at_quantile(0.50)),
            "p90": ms(h.value_at_quantile(0.90)),
            "p99": ms(h.value_at_quantile(0.99)),
            "max": ms(h.max()),
            "mean": h.mean() / 1000.0,
        },
        "error_samples": k.error_samples,
    })
}

/// Every figure of the run as JSON.
pub fn to_json(settings: &RunSettings, results: &[TargetResult]) -> Json {
    let targets: Vec<Json> = results
        .iter()
        .map(|r| {
            let per_kind: serde_json::Map<String, Json> =
                Kind::ALL.iter().map(|&kind| (kind.name().to_string(), kind_json(r.stats.kind(kind)))).collect();
            let timeline: Vec<Json> = r
                .stats
                .timeline
                .iter()
                .enumerate()
                .map(|(second, counts)| {
                    let mut entry = serde_json::Map::new();
                    entry.insert("second".into(), json!(second));
                    for kind in Kind::ALL {
                        entry.insert(kind.name().into(), json!(counts[kind.index()]));
                    }
                    Json::Object(entry)
                })
                .collect();
            json!({
                "name": r.name,
                "description": r.description,
                "rows_loaded": r.rows_loaded,
                "load_s": r.load_s,
                "measured_s": r.stats.measured.as_secs_f64(),
                "tpmC": r.stats.tpmc(),
                "tpm_total": r.stats.tpm_total(),
                "efficiency": settings.efficiency(&r.stats),
                "transactions": per_kind,
                "timeline_per_second": timeline,
                "consistency": { "ok": r.consistent(), "checks": r.checks },
            })
        })
        .collect();
    json!({
        "benchmark": "tpcc",
        "standard_population": settings.population.is_standard(),
        "settings": settings,
        "targets": targets,
    })
}

/// Five distinguishable colours, one per transaction type.
const KIND_COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Pixel size of one target's row of panels.
const PLOT_WIDTH_PX: u32 = 1400;
const PLOT_ROW_HEIGHT_PX: u32 = 480;

/// Draws throughput over time and latency CDFs for every target.
pub fn plot(path: &Path, settings: &RunSettings, results: &[TargetResult]) -> Result<(), String> {
    let height = PLOT_ROW_HEIGHT_PX * results.len().max(1) as u32;
    let root = SVGBackend::new(path, (PLOT_WIDTH_PX, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let rows = root.split_evenly((results.len().max(1), 2));
    for (index, result) in results.iter().enumerate() {
        throughput_panel(&rows[2 * index], settings, result).map_err(|e| e.to_string())?;
        latency_panel(&rows[2 * index + 1], result).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn throughput_panel(
    area: &Panel<'_>,
    settings: &RunSettings,
    result: &TargetResult,
) -> Result<(), Box<dyn std::error::Error>> {
    let timeline = &result.stats.timeline;
    let seconds = timeline.len() as u32;
    let peak = timeline.iter().flat_map(|counts| counts.iter()).copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: completed transactions per second ({} wh, {} terminals)",
                result.name, settings.population.warehouses, settings.terminals
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0u32..seconds.saturating_sub(1).max(1), 0u64..peak + peak / 10 + 1)?;
    chart.configure_mesh().x_desc("seconds into the measurement").y_desc("transactions / s").draw()?;
    for kind in Kind::ALL {
        let color = KIND_COLORS[kind.index()];
        chart
            .draw_series(LineSeries::new(
                timeline.iter().enumerate().map(|(second, counts)| (second as u32, counts[kind.index()])),
                color.stroke_width(2),
            ))?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

fn latency_panel(area: &Panel<'_>, result: &TargetResult) -> Result<(), Box<dyn std::error::Error>> {
    let stats = &result.stats;
    let max_ms = Kind::ALL.iter().map(|&k| ms(stats.kind(k).latency_us.max())).fold(1.0, f64::max);
    let min_ms = Kind::ALL
        .iter()
        .filter(|&&k| stats.kind(k).completed() > 0)
        .map(|&k| ms(stats.kind(k).latency_us.min()))
        .fold(f64::INFINITY, f64::min)
        .clamp(0.01, max_ms);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{}: latency CDF per transaction type", result.name), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d((min_ms * 0.9..max_ms * 1.1).log_scale(), 0f64..1.0)?;
    chart.configure_mesh().x_desc("latency, ms (log scale)").y_desc("fraction completed within").draw()?;
    for kind in Kind::ALL {
        let histogram = &stats.kind(kind).latency_us;
        let total = histogram.len();
        if total == 0 {
            continue;
        }
        let mut seen = 0;
        let points: Vec<(f64, f64)> = histogram
            .iter_recorded()
            .map(|value| {
                seen += value.count_at_value();
                (ms(value.value_iterated_to()), seen as f64 / total as f64)
            })
            .collect();
        let color = KIND_COLORS[kind.index()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
