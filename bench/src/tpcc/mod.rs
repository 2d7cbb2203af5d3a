//! `geodb-bench tpcc`: the TPC-C benchmark (v5.11), GeoDB side by side
//! with PostgreSQL, in one invocation.
//!
//! For each `--target`, one after the other: drop and recreate the nine
//! tables and load the clause 4.3 population ([`load`]); run the five
//! transactions ([`txns`]) from N terminals with the standard mix
//! ([`driver`]); check the clause 3.3.2 consistency conditions through SQL
//! ([`consistency`]). Then print one table for all targets with their
//! ratio, and write a JSON file and an SVG plot ([`output`]). A violated
//! consistency condition fails the run with a non-zero exit.
//!
//! The transactions are written once against [`session::Session`]; the
//! targets are GeoDB over its HTTP API ([`geodb`]) and PostgreSQL through
//! `tokio-postgres` ([`postgres`]). Both targets get the same population
//! and the same terminal inputs for a given `--seed`.
//!
//! `docs/tpcc.md` says how to run it and what is not standard.

mod consistency;
mod driver;
mod geodb;
mod load;
mod output;
mod postgres;
mod random;
mod schema;
mod session;
mod txns;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;

use self::geodb::GeoDbTarget;
use self::output::{RunSettings, TargetResult};
use self::postgres::PostgresTarget;
use self::random::Constants;
use self::schema::Population;
use self::session::{Isolation, Target};

#[derive(clap::Args)]
pub struct Args {
    /// A database to run against, `KIND=ADDRESS`, repeatable; run in the
    /// order given. `geodb=URL[,URL...]` (one HTTP gateway URL per region),
    /// `geodb-pg=URL[,URL...]` (GeoDB over its PostgreSQL wire protocol: one
    /// `postgresql://` URL per region) or `postgres=CONNECTION` (a
    /// libpq-style URL or key=value string).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Warehouses (the TPC-C scale factor).
    #[arg(long, default_value_t = 1)]
    warehouses: i64,
    /// Emulated terminals, bound to warehouses round-robin.
    #[arg(long, default_value_t = 8)]
    terminals: usize,
    /// Seconds measured per target.
    #[arg(long, default_value_t = 120)]
    duration_s: u64,
    /// Seconds run before the measurement starts, not counted.
    #[arg(long, default_value_t = 0)]
    warmup_s: u64,
    /// Fraction of the clause 4.3 population per warehouse, in (0, 1].
    /// Anything below 1 is not TPC-C and is labelled so; for smoke tests.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Isolation level: serializable, snapshot, rc or mav (GeoDB names;
    /// PostgreSQL gets the nearest level it has).
    #[arg(long, default_value = "serializable")]
    isolation: String,
    /// Use the keying and think times of clause 5.2.5 and report the
    /// efficiency against the ideal 12.86 tpmC per ten terminals.
    #[arg(long)]
    keying_and_think: bool,
    /// Concurrent loader connections.
    #[arg(long, default_value_t = 4)]
    load_workers: usize,
    /// Store GeoDB's tables as one value per row: no column families for
    /// the year-to-date and next-order counters (`docs/tpcc.md`).
    #[arg(long)]
    no_column_families: bool,
    /// Seed of the population and the terminals' inputs (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for the JSON results and the SVG plot.
    #[arg(long, default_value = "tpcc-results")]
    out_dir: PathBuf,
}

enum TargetSpec {
    GeoDb(Vec<String>),
    GeoDbPg(Vec<String>),
    Postgres(String),
}

fn parse_target(spec: &str) -> Result<TargetSpec, String> {
    let (kind, address) = spec.split_once('=').ok_or_else(|| format!("--target {spec:?}: expected KIND=ADDRESS"))?;
    match kind {
        "geodb" => Ok(TargetSpec::GeoDb(address.split(',').map(str::to_string).collect())),
        "geodb-pg" => Ok(TargetSpec::GeoDbPg(address.split(',').map(str::to_string).collect())),
        "postgres" | "postgresql" => Ok(TargetSpec::Postgres(address.to_string())),
        other => Err(format!("--target {spec:?}: unknown kind {other:?} (geodb, geodb-pg, postgres)")),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<(), String> {
    let specs = args.targets.iter().map(|t| parse_target(t)).collect::<Result<Vec<_>, _>>()?;
    let population = Population::new(args.warehouses, args.scale)?;
    let isolation = Isolation::parse(&args.isolation)?;
    if args.terminals == 0 {
        return Err("--terminals must be at least 1".into());
    }
    if args.duration_s == 0 {
        return Err("--duration-s must be at least 1".into());
    }
    let seed = args
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let load_constants = Constants::for_load(&mut rng);
    let run_constants = Constants::for_run(load_constants, &mut rng);
    let settings = RunSettings {
        population,
        terminals: args.terminals,
        warmup_s: args.warmup_s,
        duration_s: args.duration_s,
        keying_and_think: args.keying_and_think,
        isolation: isolation.geodb_name().to_string(),
        column_families: !args.no_column_families,
        seed,
    };
    if !population.is_standard() {
        eprintln!("note: --scale {} is a reduced, non-standard population", args.scale);
    }
    if args.keying_and_think && args.terminals as i64 != 10 * args.warehouses {
        eprintln!("note: TPC-C runs ten terminals per warehouse with keying and think times");
    }
    let config = driver::Config {
        terminals: args.terminals,
        warmup: Duration::from_secs(args.warmup_s),
        duration: Duration::from_secs(args.duration_s),
        keying_and_think: args.keying_and_think,
        column_families: !args.no_column_families,
        seed,
    };
    let mut results = Vec::new();
    for spec in specs {
        let result = match spec {
            TargetSpec::GeoDb(urls) => {
                let target = GeoDbTarget::connect(&urls, isolation).await?;
                run_target(&target, population, load_constants, run_constants, config, args.load_workers).await?
            }
            TargetSpec::GeoDbPg(urls) => {
                let target = PostgresTarget::connect_geodb(&urls, isolation).await?;
                run_target(&target, population, load_constants, run_constants, config, args.load_workers).await?
            }
            TargetSpec::Postgres(connection) => {
                let target = PostgresTarget::connect(&connection, isolation).await?;
                run_target(&target, population, load_constants, run_constants, config, args.load_workers).await?
            }
        };
        results.push(result);
    }

    print!("{}", output::table(&settings, &results));
    std::fs::create_dir_all(&args.out_dir).map_err(|e| format!("{}: {e}", args.out_dir.display()))?;
    let stem = format!("tpcc-{}", SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs());
    let json_path = args.out_dir.join(format!("{stem}.json"));
    let json = serde_json::to_string_pretty(&output::to_json(&settings, &results)).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let svg_path = args.out_dir.join(format!("{stem}.svg"));
    output::plot(&svg_path, &settings, &results).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!("results: {}\nplot: {}", json_path.display(), svg_path.display());

    let inconsistent: Vec<&str> = results.iter().filter(|r| !r.consistent()).map(|r| r.name.as_str()).collect();
    if !inconsistent.is_empty() {
        return Err(format!("consistency check failed on {}", inconsistent.join(", ")));
    }
    Ok(())
}

/// Load, run and check one target.
async fn run_target<T: Target>(
    target: &T,
    population: Population,
    load_constants: Constants,
    run_constants: Constants,
    config: driver::Config,
    load_workers: usize,
) -> Result<TargetResult, String> {
    eprintln!("{}: {}", target.name(), target.description());
    let started = Instant::now();
    let rows_loaded =
        load::load(target, population, load_constants, config.seed, load_workers, config.column_families).await?;
    let load_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{}: running {} terminal(s) for {} s (+{} s warmup)",
        target.name(),
        config.terminals,
        config.duration.as_secs(),
        config.warmup.as_secs()
    );
    let stats = driver::run(target, population, run_constants, config).await?;
    eprintln!("{}: checking consistency", target.name());
    let mut session = target.load_session(None).await.map_err(|e| format!("consistency check: {e}"))?;
    let checks = consistency::check(&mut session, &population).await.map_err(|e| format!("consistency check: {e}"))?;
    session::Session::close(session).await;
    Ok(TargetResult {
        name: target.name().to_string(),
        description: target.description(),
        rows_loaded,
        load_s,
        stats,
        checks,
    })
}
