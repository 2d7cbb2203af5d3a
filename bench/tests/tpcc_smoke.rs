//! The TPC-C kit end to end, small: start `geodb dev`, run
//! `geodb-bench tpcc` against it for one warehouse at a reduced scale for
//! ten seconds, over HTTP and then over the PostgreSQL wire protocol
//! (`geodb-pg`, tokio-postgres with prepared statements), and require a
//! clean exit, committed New-Orders and a passing consistency check for
//! both. This keeps the kit from rotting; it measures nothing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `geodb dev` on a free port, killed when dropped.
struct DevServer {
    child: Child,
    url: String,
    pg_url: String,
}

impl DevServer {
    fn start(data_dir: &std::path::Path) -> DevServer {
        let binary = geodb_binary();
        let mut child = Command::new(&binary)
            .args(["dev", "--regions", "1", "--nodes-per-region", "1", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // The first line announces the address once the server is ready.
        let (url, pg_url) = loop {
            let line = lines.next().expect("geodb exited before announcing its address").expect("read stdout");
            if let (Some(http), Some(pg)) = (line.find("http://"), line.find("postgresql://")) {
                let address = |from: usize| {
                    line[from..].split(|c: char| c.is_whitespace() || c == ',').next().expect("an address").to_string()
                };
                break (address(http), address(pg));
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        DevServer { child, url, pg_url }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `<target>/debug/geodb`, next to this test's `deps/` directory: the
/// binary `cargo test --workspace` builds from `services/server`.
fn geodb_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile_dir = test.parent().and_then(|deps| deps.parent()).expect("test binaries live in <profile>/deps");
    let binary = profile_dir.join(format!("geodb{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace`, which builds the geodb server too",
        binary.display()
    );
    binary
}

#[test]
fn tpcc_smoke_one_warehouse_reduced_scale_is_consistent() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = DevServer::start(&dir.path().join("data"));
    let output = Command::new(env!("CARGO_BIN_EXE_geodb-bench"))
        .args(["tpcc", "--target", &format!("geodb={}", server.url)])
        .args(["--target", &format!("geodb-pg={}", server.pg_url)])
        .args(["--warehouses", "1", "--scale", "0.01", "--duration-s", "10", "--terminals", "2", "--seed", "42"])
        .arg("--out-dir")
        .arg(dir.path().join("results"))
        .output()
        .expect("run geodb-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "geodb-bench tpcc failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("NON-STANDARD POPULATION"), "a reduced run says so:\n{stdout}");
    // Each target's section: over HTTP, then over the wire protocol.
    assert!(stdout.contains("== geodb: ") && stdout.contains("== geodb-pg: "), "both targets ran:\n{stdout}");
    assert_eq!(stdout.matches("consistency: ok").count(), 2, "consistency of both:\n{stdout}");
    assert_eq!(stdout.matches("failures: 0").count(), 2, "no transaction failed for good:\n{stdout}");
    let committed: Vec<u64> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("new-order commits: "))
        .map(|n| n.trim().parse().expect("a count"))
        .collect();
    assert!(committed.len() == 2 && committed.iter().all(|n| *n > 0), "New-Orders committed by both:\n{stdout}");

    let results: Vec<PathBuf> = std::fs::read_dir(dir.path().join("results"))
        .expect("results directory")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    for extension in ["json", "svg"] {
        assert!(
            results.iter().any(|p| p.extension().is_some_and(|e| e == extension)),
            "a .{extension} file in {results:?}"
        );
    }
    drop(server);
}
