//! The dependency order of ARCHITECTURE.md, checked: a crate may depend
//! only on the GeoDB crates below it, and the core crates (storage, geo,
//! txn, sql) on no runtime or network crate — that is what keeps the
//! protocols sans-IO and drivable by the deterministic simulator.

use std::collections::BTreeMap;
use std::process::Command;

/// For each workspace crate, the GeoDB crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("geodb-storage", &[]),
    ("geodb-geo", &["geodb-storage"]),
    ("geodb-txn", &["geodb-storage", "geodb-geo"]),
    ("geodb-sql", &["geodb-storage", "geodb-geo", "geodb-txn"]),
    ("geodb-sim", &["geodb-storage", "geodb-geo", "geodb-txn"]),
    ("geodb-server", &["geodb-storage", "geodb-geo", "geodb-txn", "geodb-sql"]),
    // The benchmarks sit on top: the Paxos benchmark drives the server's
    // replication driver and transport in-process.
    ("geodb-bench", &["geodb-storage", "geodb-geo", "geodb-txn", "geodb-server"]),
];

/// Crates that do I/O on their own: only the server and the benchmark may
/// use them.
const RUNTIME_CRATES: &[&str] = &["tokio", "tokio-util", "axum", "hyper", "reqwest", "tonic", "tokio-postgres", "mio"];
const CORE: &[&str] = &["geodb-storage", "geodb-geo", "geodb-txn", "geodb-sql", "geodb-sim"];

fn dependencies() -> BTreeMap<String, Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|dep| {
                    let kind = dep["kind"].as_str().unwrap_or("normal").to_string();
                    (dep["name"].as_str().unwrap().to_string(), kind)
                })
                .collect();
            (package["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_downwards_and_the_core_does_no_io() {
    let packages = dependencies();
    for (name, _) in ALLOWED {
        assert!(packages.contains_key(*name), "{name} is not in the workspace");
    }
    for (name, deps) in &packages {
        let allowed = ALLOWED
            .iter()
            .find(|(crate_name, _)| crate_name == name)
            .unwrap_or_else(|| panic!("{name} is missing from ALLOWED: place it in the order"))
            .1;
        for (dep, kind) in deps {
            if dep.starts_with("geodb-") {
                assert!(allowed.contains(&dep.as_str()), "forbidden edge: {name} -> {dep}");
            }
            if CORE.contains(&name.as_str()) && kind != "dev" {
                assert!(!RUNTIME_CRATES.contains(&dep.as_str()), "{name} must stay sans-IO but depends on {dep}");
            }
        }
    }
}
