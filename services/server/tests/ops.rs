//! The operational artefacts of `ops/`, checked by the tools operators use
//! them with: `promtool` on a live node's `/metrics` and on the Prometheus
//! rules, the Grafana dashboard against Grafana's published schema,
//! `kubectl kustomize` and `helm template` output against the Kubernetes API
//! schemas, hadolint on the Dockerfile, shellcheck on the scripts, the
//! `./geodb` launcher on a fresh machine, and the log formats.
//!
//! The tools are installed by `.ci/ops-tools` into `$GEODB_OPS_TOOLS`
//! (default `~/.cache/geodb-ops-tools`), one per name in its `bin/`. A
//! missing tool fails the test rather than skipping it: CI installs them, and
//! a check that silently does not run is worse than none.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::Server;
use geodb_server::config::Config;
use geodb_server::telemetry::names::{FAMILIES, Kind};
use serde_json::{Value, json};

/// The Kubernetes versions the manifests must be valid for: the oldest this
/// deployment supports (per-node Services select on the pod-index label,
/// on by default since 1.28) and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The regions of ops/k8s/overlays and of the Helm chart's default values.
const REGIONS: [&str; 3] = ["us-east", "us-central", "eu-west"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A tool installed by `.ci/ops-tools`.
fn tool(name: &str) -> PathBuf {
    let tools = std::env::var_os("GEODB_OPS_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/geodb-ops-tools")
    });
    let path = if name == "grafana-dashboard.schema.json" { tools.join(name) } else { tools.join("bin").join(name) };
    assert!(path.exists(), "{} is missing: run .ci/ops-tools, which installs the ops check tools", path.display());
    path
}

/// Runs `command` to success and returns its stdout; panics with everything
/// it printed otherwise.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `command` with `input` on stdin; returns (success, stdout + stderr).
fn run_with_input(command: &mut Command, input: &str) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The series a family exposes: histograms as buckets, sums and counts.
fn exposed_series() -> BTreeSet<String> {
    let mut series = BTreeSet::new();
    for (name, kind, _) in FAMILIES {
        match kind {
            Kind::Histogram => series.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}"))),
            Kind::Counter | Kind::Gauge => {
                series.insert(name.to_string());
            }
        }
    }
    series
}

/// The recording rules of ops/prometheus/rules.yaml.
fn recorded_series() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(repo().join("ops/prometheus/rules.yaml")).unwrap();
    rules.lines().filter_map(|line| Some(line.trim().strip_prefix("- record: ")?.to_string())).collect()
}

/// Every GeoDB series a PromQL text names must be one the server exposes or
/// a recording rule defines: a renamed metric breaks its alert or panel here
/// instead of silently matching nothing.
fn assert_series_exist(what: &str, promql: &str) {
    let exposed = exposed_series();
    let recorded = recorded_series();
    let mut seen = 0;
    for token in promql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.contains(':') && token.contains("geodb_") {
            assert!(recorded.contains(token), "{what}: {token} is not a recording rule of ops/prometheus/rules.yaml");
            seen += 1;
        } else if token.starts_with("geodb_") {
            assert!(exposed.contains(token), "{what}: {token} is not a metric the server exposes");
            seen += 1;
        }
    }
    assert!(seen > 0, "{what} names no GeoDB series");
}

#[tokio::test]
async fn a_live_nodes_metrics_pass_promtool_and_the_image_healthcheck_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::dev(&dir.path().join("data"));
    // Touch the families a single node has: statements, a commit, a
    // constraint abort, a rollback, sessions, the statement cache.
    server.sql("CREATE TABLE t (k INT PRIMARY KEY, v INT)", json!([])).await;
    server.sql("INSERT INTO t VALUES (1, 1)", json!([])).await;
    server.sql("SELECT v FROM t WHERE k = 1", json!([])).await;
    let (status, _) = server.try_sql("INSERT INTO t VALUES (1, 2)", json!([])).await;
    assert_eq!(status, 409, "a duplicate key aborts with a constraint violation");
    let session = server.session("snapshot").await;
    session.ok("BEGIN").await;
    session.ok("ROLLBACK").await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for family in
        ["geodb_transactions_total", "geodb_aborts_total", "geodb_statement_duration_seconds", "geodb_sessions"]
    {
        assert!(metrics.contains(&format!("# HELP {family} ")), "no HELP for {family}:\n{metrics}");
    }
    let (ok, lint) = run_with_input(Command::new(tool("promtool")).args(["check", "metrics"]), &metrics);
    assert!(ok && lint.trim().is_empty(), "promtool check metrics:\n{lint}");

    // The image's HEALTHCHECK, run as written against this node's port:
    // it must pass on a serving node and fail where nothing listens.
    let dockerfile = std::fs::read_to_string(repo().join("ops/docker/Dockerfile")).unwrap();
    let healthcheck = dockerfile
        .lines()
        .skip_while(|line| !line.starts_with("HEALTHCHECK"))
        .find_map(|line| line.trim().strip_prefix("CMD "))
        .expect("the Dockerfile has a HEALTHCHECK ... CMD [...]");
    let argv: Vec<String> = serde_json::from_str(healthcheck).unwrap();
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let check = |port: &str| {
        let argv: Vec<String> =
            argv.iter().map(|arg| arg.replace("127.0.0.1/7070", &format!("127.0.0.1/{port}"))).collect();
        Command::new(&argv[0]).args(&argv[1..]).status().unwrap().success()
    };
    assert!(argv.iter().any(|arg| arg.contains("127.0.0.1/7070")), "{argv:?}");
    assert!(check(&port), "the HEALTHCHECK command fails against a serving node");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    assert!(!check(&closed_port), "the HEALTHCHECK command passes where nothing listens");
}

#[tokio::test]
async fn a_clusters_replication_and_transport_metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
    command
        .args(["dev", "--regions", "3", "--nodes-per-region", "1", "--latency-scale", "0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let server = Server::spawn(command, &dir.path().join("data"));
    server.sql("CREATE TABLE t (k INT PRIMARY KEY, v INT)", json!([])).await;
    server.sql("INSERT INTO t VALUES (1, 1)", json!([])).await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for family in
        ["geodb_paxos_commit_duration_seconds", "geodb_transport_frames_sent_total", "geodb_clock_unsynchronized"]
    {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family} missing:\n{metrics}");
    }
    let (ok, lint) = run_with_input(Command::new(tool("promtool")).args(["check", "metrics"]), &metrics);
    assert!(ok && lint.trim().is_empty(), "promtool check metrics:\n{lint}");
}

#[test]
fn prometheus_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("ops/prometheus");
    let checked =
        run(Command::new(tool("promtool")).current_dir(&dir).args(["check", "rules", "rules.yaml", "alerts.yaml"]));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(Command::new(tool("promtool")).current_dir(&dir).args(["test", "rules", "tests.yaml"]));
    assert!(tested.contains("SUCCESS"), "{tested}");
    for file in ["rules.yaml", "alerts.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let exprs: String = text
            .split("expr:")
            .skip(1)
            .map(|rest| rest.split("\n      - ").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert_series_exist(file, &exprs);
    }
}

#[test]
fn the_grafana_dashboard_validates_against_grafanas_schema() {
    let dashboard = repo().join("ops/grafana/geodb.json");
    run(Command::new(tool("check-jsonschema"))
        .arg("--schemafile")
        .arg(tool("grafana-dashboard.schema.json"))
        .arg(&dashboard));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    let panels = json["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|panel| panel["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    let mut titles = Vec::new();
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        let exprs: Vec<&str> =
            panel["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap()).collect();
        if !title.starts_with("Clock") {
            assert_series_exist(title, &exprs.join("\n"));
        }
        titles.push(title.to_lowercase());
    }
    // What the dashboard is for (docs/operations.md).
    for topic in ["isolation level and kind", "aborts by reason", "paxos commit", "leader changes", "queue depths"] {
        assert!(titles.iter().any(|title| title.contains(topic)), "no panel about {topic}: {titles:?}");
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let lint = run(Command::new(tool("hadolint")).arg("--no-color").arg(repo().join("ops/docker/Dockerfile")));
    assert!(lint.trim().is_empty(), "{lint}");
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|line| line == "target/"), "the build context must leave out target/");
}

/// The manifests of each YAML file as JSON objects, parsed by the tools'
/// Python (one process for all files: its start-up is most of the cost).
#[test]
fn the_launcher_passes_shellcheck() {
    run(Command::new(tool("shellcheck"))
        .arg(repo().join("geodb"))
        .arg(repo().join(".ci/run"))
        .arg(repo().join(".ci/ops-tools")));
}

/// Where the system keeps `tool`.
fn system_tool(tool: &str) -> PathBuf {
    ["/usr/bin", "/bin"].iter().map(|dir| Path::new(dir).join(tool)).find(|path| path.exists()).unwrap()
}

/// A directory to be the whole `PATH` of `./geodb`: the few system tools it
/// needs, and stand-ins for the commands `names`, each appending its name
/// and arguments to `calls`; `id -u` answers 0 (root).
fn stand_ins(dir: &Path, names: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["dirname", "grep", "env"] {
        std::os::unix::fs::symlink(system_tool(tool), bin.join(tool)).unwrap();
    }
    let calls = dir.join("calls");
    for name in names {
        let answer = match *name {
            "id" => "echo 0",
            // Neither the package nor the library is installed.
            "dpkg" => "exit 1",
            _ => "true",
        };
        let script = format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n{answer}\n", calls.display());
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        run(Command::new("chmod").arg("+x").arg(&path));
    }
    calls
}

/// `./geodb` on a fresh checkout (nothing built) of a Debian machine
/// without libclang and make, as root: it installs libclang-dev and make
/// with apt-get, then runs GeoDB through cargo with the arguments it was
/// given; with make there, libclang-dev alone.
#[test]
fn the_launcher_installs_libclang_and_make_on_a_fresh_machine_then_runs_geodb() {
    for (has_make, installed) in [(false, "libclang-dev make"), (true, "libclang-dev")] {
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join("checkout");
        std::fs::create_dir_all(&checkout).unwrap();
        std::fs::copy(repo().join("geodb"), checkout.join("geodb")).unwrap();
        let mut tools = vec!["cargo", "dpkg", "ldconfig", "apt-get", "id"];
        if has_make {
            tools.push("make");
        }
        let calls = stand_ins(dir.path(), &tools);
        let output = Command::new(system_tool("bash"))
            .arg(checkout.join("geodb"))
            .args(["dev", "--data-dir", "my data"])
            .env("PATH", dir.path().join("bin"))
            .env_remove("LIBCLANG_PATH")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("installing {installed} with apt-get")) && stderr.contains("first build"),
            "{stderr}"
        );
        let calls = std::fs::read_to_string(calls).unwrap();
        let manifest = checkout.join("Cargo.toml");
        let expected = [
            "id -u".to_string(),
            "apt-get update -qq".to_string(),
            format!("apt-get install -y -qq --no-install-recommends {installed}"),
            format!("cargo run --manifest-path {} -p geodb-server -- dev --data-dir my data", manifest.display()),
        ];
        let seen: Vec<&str> =
            calls.lines().filter(|line| !line.starts_with("dpkg") && !line.starts_with("ldconfig")).collect();
        assert_eq!(seen, expected, "{calls}");
    }
}

/// Without cargo, `./geodb` says what to install instead of failing obscurely.
#[test]
fn the_launcher_without_cargo_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    stand_ins(dir.path(), &["id"]);
    let output = Command::new(system_tool("bash"))
        .arg(repo().join("geodb"))
        .arg("dev")
        .env("PATH", dir.path().join("bin"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cargo is not installed") && stderr.contains("rustup.rs"), "{stderr}");
}

fn parse_yaml(files: &[PathBuf]) -> Vec<Vec<Value>> {
    let mut python = Command::new(tool("python"));
    python
        .args([
            "-c",
            "import json, sys, yaml\n\
             json.dump([[d for d in yaml.safe_load_all(open(f)) if d] for f in sys.argv[1:]], sys.stdout)",
        ])
        .args(files);
    serde_json::from_str(&run(&mut python)).unwrap()
}

fn objects<'a>(manifests: &'a [Value], kind: &str) -> Vec<&'a Value> {
    manifests.iter().filter(|object| object["kind"] == kind).collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

/// Renders the config of pod `ordinal` of a region the way Kubernetes runs
/// its init container: the ConfigMap's files in a directory, the container's
/// environment (the downward API's pod name, the ConfigMap key), and a
/// `getent` that answers every name with an address and records it.
fn render_node_config(manifests: &[Value], ordinal: u64, work: &Path) -> (Config, Vec<String>) {
    let statefulset = objects(manifests, "StatefulSet")[0];
    let configmap = objects(manifests, "ConfigMap")[0];
    let pod = format!("{}-{ordinal}", name(statefulset));
    let init = &statefulset["spec"]["template"]["spec"]["initContainers"][0];
    std::fs::create_dir_all(work.join("template")).unwrap();
    std::fs::create_dir_all(work.join("bin")).unwrap();
    for (file, text) in configmap["data"].as_object().unwrap() {
        std::fs::write(work.join("template").join(file), text.as_str().unwrap()).unwrap();
    }
    let getent = work.join("bin/getent");
    std::fs::write(
        &getent,
        format!(
            "#!/bin/sh\necho \"$2\" >> {queried}\nn=$(printf %s \"$2\" | cksum | cut -d' ' -f1)\n\
             echo \"10.96.$((n % 250)).$((n / 250 % 250)) STREAM $2\"\n",
            queried = work.join("queried").display()
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&getent));
    let mut command = Command::new("sh");
    command.arg(work.join("template/render-config.sh"));
    for variable in init["env"].as_array().unwrap() {
        let value = if let Some(value) = variable["value"].as_str() {
            value.to_string()
        } else if variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod.clone()
        } else {
            let reference = &variable["valueFrom"]["configMapKeyRef"];
            assert_eq!(reference["name"], configmap["metadata"]["name"], "{variable}");
            configmap["data"][reference["key"].as_str().unwrap()].as_str().unwrap().to_string()
        };
        command.env(variable["name"].as_str().unwrap(), value);
    }
    let path = format!("{}:{}", work.join("bin").display(), std::env::var("PATH").unwrap());
    command
        .env("PATH", path)
        .env("GEODB_TEMPLATE_DIR", work.join("template"))
        .env("GEODB_CONFIG", work.join("geodb.toml"))
        .env("GEODB_RESOLVE_WAIT_S", "0");
    run(&mut command);
    let queried = std::fs::read_to_string(work.join("queried")).unwrap().lines().map(str::to_string).collect();
    (Config::load(&work.join("geodb.toml")).unwrap(), queried)
}

/// The fields of a StatefulSet that kustomize and Helm must render alike.
fn pod_shape(statefulset: &Value) -> Value {
    let spec = &statefulset["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    json!({
        "replicas": spec["replicas"],
        "podManagementPolicy": spec["podManagementPolicy"],
        "updateStrategy": spec["updateStrategy"],
        "persistentVolumeClaimRetentionPolicy": spec["persistentVolumeClaimRetentionPolicy"],
        "securityContext": pod["securityContext"],
        "topologySpreadConstraints": pod["topologySpreadConstraints"],
        "terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"],
        "annotations": spec["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
        "init": pod["initContainers"][0]["command"],
        "args": container["args"],
        "ports": container["ports"],
        "probes": [container["startupProbe"], container["livenessProbe"], container["readinessProbe"]],
        "resources": container["resources"],
        "containerSecurityContext": container["securityContext"],
        "volumeMounts": container["volumeMounts"],
        "volumeClaimTemplates": spec["volumeClaimTemplates"][0]["spec"],
    })
}

#[test]
fn kubernetes_manifests_render_validate_and_configure_every_node() {
    let k8s = repo().join("ops/k8s");
    let chart = repo().join("ops/helm/geodb");
    let work = tempfile::tempdir().unwrap();
    run(Command::new(tool("helm")).args(["lint", "--strict", "--namespace", "geodb"]).arg(&chart));
    // Render every region with both tools at once: each run is a process
    // start-up, and they do not depend on each other.
    let outputs: Vec<(&str, &str, String)> = std::thread::scope(|scope| {
        let renders: Vec<_> = REGIONS
            .iter()
            .flat_map(|region| {
                let (k8s, chart) = (&k8s, &chart);
                let kustomize = scope.spawn(move || {
                    run(Command::new(tool("kubectl")).arg("kustomize").arg(k8s.join("overlays").join(region)))
                });
                let helm = scope.spawn(move || {
                    run(Command::new(tool("helm"))
                        .args(["template", "geodb", "--namespace", "geodb", "--set"])
                        .arg(format!("region={region}"))
                        .arg(chart))
                });
                [("kustomize", *region, kustomize), ("helm", *region, helm)]
            })
            .collect();
        renders.into_iter().map(|(renderer, region, yaml)| (renderer, region, yaml.join().unwrap())).collect()
    });
    let mut files = Vec::new();
    for (renderer, region, yaml) in &outputs {
        let file = work.path().join(format!("{renderer}-{region}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        files.push(file);
    }
    std::thread::scope(|scope| {
        for version in KUBERNETES_VERSIONS {
            let files = &files;
            scope.spawn(move || {
                run(Command::new(tool("kubernetes-validate")).args(["--strict", "--quiet", "-k", version]).args(files))
            });
        }
    });
    let rendered: BTreeMap<(&str, &str), Vec<Value>> =
        outputs.iter().map(|(renderer, region, _)| (*renderer, *region)).zip(parse_yaml(&files)).collect();

    let regions_file = std::fs::read_to_string(k8s.join("base/regions")).unwrap();
    let nodes_of = |region: &str| -> (u64, u64) {
        let line = regions_file.lines().find(|line| line.split_whitespace().next() == Some(region)).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields[1].parse().unwrap(), fields[2].parse().unwrap())
    };
    let total_nodes: u64 = REGIONS.iter().map(|region| nodes_of(region).1).sum();
    for region in REGIONS {
        let (first_id, nodes) = nodes_of(region);
        let mut configs = Vec::new();
        for renderer in ["kustomize", "helm"] {
            let manifests = &rendered[&(renderer, region)];
            let what = format!("{renderer} {region}");
            let statefulsets = objects(manifests, "StatefulSet");
            assert_eq!(statefulsets.len(), 1, "{what}");
            let statefulset = statefulsets[0];
            assert_eq!(statefulset["spec"]["replicas"], nodes, "{what}: replicas must equal `nodes` in regions");
            let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
            assert_eq!(
                statefulset["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"],
                "topology.kubernetes.io/zone",
                "{what}"
            );
            assert_eq!(objects(manifests, "PodDisruptionBudget").len(), 1, "{what}");
            let services = objects(manifests, "Service");
            let headless: Vec<_> = services.iter().filter(|service| service["spec"]["clusterIP"] == "None").collect();
            assert_eq!(headless.len(), 1, "{what}");
            assert_eq!(statefulset["spec"]["serviceName"].as_str(), Some(name(headless[0])), "{what}");
            // One Service per pod, selecting it by its ordinal, reachable
            // while the pod is not ready; named as render-config.sh resolves.
            for ordinal in 0..nodes {
                let service = services
                    .iter()
                    .find(|service| name(service) == format!("{}-{ordinal}", name(statefulset)))
                    .unwrap_or_else(|| panic!("{what}: no Service for pod {ordinal}"));
                assert_eq!(service["spec"]["selector"]["apps.kubernetes.io/pod-index"], ordinal.to_string());
                assert_eq!(service["spec"]["publishNotReadyAddresses"], true, "{what}");
            }
            assert_eq!(services.len() as u64, nodes + 2, "{what}: headless, client and one per node");

            // Pod 1's config, rendered as its init container would.
            let scratch = work.path().join(format!("render-{renderer}-{region}"));
            let (config, queried) = render_node_config(manifests, 1, &scratch);
            assert_eq!(config.node_id, first_id + 1, "{what}");
            assert_eq!((config.region.as_str(), config.zone.as_str()), (region, "b"), "{what}");
            let cluster = config.cluster.as_ref().expect("a [cluster] section");
            assert_eq!(cluster.nodes.len() as u64, total_nodes, "{what}");
            assert_eq!(queried.len() as u64, total_nodes - 1, "{what}: every other node is resolved");
            for host in &queried {
                let (service, domain) = host.split_once('.').unwrap();
                assert_eq!(domain, "geodb.svc.cluster.local", "{what}");
                let peer_region = REGIONS.iter().find(|r| service.starts_with(&format!("{r}-"))).unwrap();
                let peer = &rendered[&(renderer, *peer_region)];
                assert!(
                    objects(peer, "Service").iter().any(|s| name(s) == service),
                    "{what}: {host} names no Service of {peer_region}"
                );
            }
            configs.push((format!("{config:?}"), pod_shape(statefulset)));
        }
        // Helm renders what kustomize renders.
        assert_eq!(configs[0].0, configs[1].0, "{region}: the node configs differ between kustomize and Helm");
        assert_eq!(configs[0].1, configs[1].1, "{region}: the StatefulSets differ between kustomize and Helm");
        let kinds_and_names = |renderer: &str| -> BTreeSet<(String, String)> {
            rendered[&(renderer, region)]
                .iter()
                .map(|object| {
                    let kind = object["kind"].as_str().unwrap();
                    let name = match (renderer, kind) {
                        // kustomize suffixes a generated ConfigMap with its hash.
                        ("kustomize", "ConfigMap") => name(object).rsplit_once('-').unwrap().0,
                        _ => name(object),
                    };
                    (kind.to_string(), name.to_string())
                })
                .collect()
        };
        let kustomized = kinds_and_names("kustomize");
        let templated = kinds_and_names("helm");
        assert_eq!(kustomized, templated, "{region}: kustomize and Helm render different objects");
    }
    // The render script exists twice (kustomize and Helm each read files
    // only under their own root); they must not drift.
    let script = std::fs::read_to_string(k8s.join("base/render-config.sh")).unwrap();
    assert_eq!(script, std::fs::read_to_string(chart.join("files/render-config.sh")).unwrap());
}

/// Starts `geodb` with its stderr in `log`, waits for its address, stops it
/// with SIGTERM and returns what it logged.
fn logs_of(mut command: Command, log: &Path) -> String {
    command.stdout(Stdio::piped()).stderr(std::fs::File::create(log).unwrap()).env("RUST_LOG", "info");
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = stdout
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| Some(line.split("http://").nth(1)?.split_whitespace().next()?.to_string()))
        .unwrap_or_else(|| {
            panic!("geodb exited before announcing its address: {}", std::fs::read_to_string(log).unwrap())
        });
    // Keep reading: a closed pipe would fail geodb's next line on stdout.
    let drained = std::thread::spawn(move || stdout.for_each(drop));
    // The address is announced just before serving starts, and with it the
    // SIGTERM handler: an answer from the node means both are in place.
    let mut health = std::net::TcpStream::connect(&address).unwrap();
    health.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut health, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    run(Command::new("kill").arg("-TERM").arg(child.id().to_string()));
    assert!(child.wait().unwrap().success(), "{}", std::fs::read_to_string(log).unwrap());
    drained.join().unwrap();
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn logs_are_json_lines_on_request_and_plain_text_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let dev = |extra: &[&str], data: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_geodb"));
        command.args(extra).args(["dev", "--regions", "1", "--nodes-per-region", "1", "--http", "127.0.0.1:0"]);
        command.arg("--data-dir").arg(dir.path().join(data));
        command
    };
    let json_lines = |text: &str, what: &str| {
        let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        assert!(!lines.is_empty(), "{what}: no log lines");
        for line in lines {
            let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
            for field in ["timestamp", "level", "target", "message"] {
                assert!(event[field].is_string(), "{what}: no {field} in {line}");
            }
        }
    };
    json_lines(&logs_of(dev(&["--log-format", "json"], "json"), &dir.path().join("json.log")), "--log-format json");

    let text = logs_of(dev(&[], "text"), &dir.path().join("text.log"));
    assert!(text.contains("INFO") && text.contains("stopped"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in a log written to a file:\n{text:?}");

    // The config file's log_format, for `geodb start`.
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "http = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nlog_format = \"json\"\n",
            dir.path().join("start").display()
        ),
    )
    .unwrap();
    let mut start = Command::new(env!("CARGO_BIN_EXE_geodb"));
    start.arg("start").arg("--insecure").arg("--config").arg(&config);
    json_lines(&logs_of(start, &dir.path().join("start.log")), "log_format = \"json\"");
}
