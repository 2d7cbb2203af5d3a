//! The TPC-C kit end to end, small: start `geodb dev`, run
//! `geodb-bench tpcc` against it for one warehouse at a reduced scale for
//! ten seconds, and require a clean exit, committed New-Orders and a
//! passing consistency check. This keeps the kit from rotting; it measures
//! nothing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// `geodb dev` on a free port, killed when dropped.
struct DevServer {
    child: Child,
    url: String,
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
        let url = loop {
            let line = lines.next().expect("geodb exited before announcing its address").expect("read stdout");
            if let Some(start) = line.find("http://") {
                break line[start..].split_whitespace().next().expect("an address").to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        DevServer { child, url }
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
        .args(["--warehouses", "1", "--scale", "0.01", "--duration-s", "10", "--terminals", "2", "--seed", "42"])
        .arg("--out-dir")
        .arg(dir.path().join("results"))
        .output()
        .expect("run geodb-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "geodb-bench tpcc failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("NON-STANDARD POPULATION"), "a reduced run says so:\n{stdout}");
    assert!(stdout.contains("consistency: ok"), "consistency:\n{stdout}");
    assert!(stdout.contains("failures: 0"), "no transaction failed for good:\n{stdout}");
    let committed: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("new-order commits: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no New-Order count in:\n{stdout}"));
    assert!(committed > 0, "New-Orders committed:\n{stdout}");

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
