//! Node configuration: `geodb start --config <file.toml>`, or the defaults
//! of `geodb dev`.
//!
//! Every limit has a default chosen for a small node (2 cores); each is a
//! named field so operators can see and change what bounds the node.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// A node's configuration. Unknown keys are rejected, so a typo in a
/// config file is an error at start rather than a silently ignored setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id, unique in the cluster.
    #[serde(default = "default_node_id")]
    pub node_id: u64,
    /// The region this node serves (`us-east`, ...).
    #[serde(default = "default_region")]
    pub region: String,
    /// The zone inside the region (`a`, `b`, `c`).
    #[serde(default = "default_zone")]
    pub zone: String,
    /// The HTTP API address.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// Where the data lives. Required for `geodb start`.
    pub data_dir: Option<PathBuf>,
    /// The clock bound ε, in milliseconds.
    #[serde(default = "default_max_clock_offset_ms")]
    pub max_clock_offset_ms: u64,
    #[serde(default)]
    pub limits: Limits,
    /// Export traces over OTLP/gRPC to this endpoint (e.g.
    /// `http://127.0.0.1:4317`); none by default.
    pub otlp_endpoint: Option<String>,
}

/// Resource bounds of the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 beyond it). 1 MiB holds a batch of
    /// thousands of TPC-C rows; anything larger is a mistake or an attack.
    pub request_bytes_max: usize,
    /// Requests executing at once; beyond it the node answers 503 with
    /// `Retry-After` instead of queueing without bound. Two cores run a few
    /// dozen blocking statements usefully; more only adds latency.
    pub requests_inflight_max: usize,
    /// Open sessions at once (503 beyond it).
    pub sessions_max: usize,
    /// A session idle longer than this is rolled back and removed.
    pub session_idle_timeout_ms: u64,
    /// Server-side retries of a one-shot statement or batch on a
    /// serialization failure, before the failure is returned.
    pub retries_max: u32,
    /// Statements in one batch.
    pub batch_statements_max: usize,
    /// A statement running longer than this fails with 57014; 0 disables
    /// the bound (as PostgreSQL's `statement_timeout`). 30 s is far beyond
    /// any OLTP statement yet stops a runaway scan from holding a worker.
    pub statement_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_bytes_max: 1 << 20,
            requests_inflight_max: 64,
            sessions_max: 1024,
            session_idle_timeout_ms: 60_000,
            retries_max: 16,
            batch_statements_max: 1000,
            statement_timeout_ms: 30_000,
        }
    }
}

fn default_node_id() -> u64 {
    1
}

fn default_region() -> String {
    "us-east".into()
}

fn default_zone() -> String {
    "a".into()
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

fn default_max_clock_offset_ms() -> u64 {
    250
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: default_node_id(),
            region: default_region(),
            zone: default_zone(),
            http: default_http(),
            data_dir: None,
            max_clock_offset_ms: default_max_clock_offset_ms(),
            limits: Limits::default(),
            otlp_endpoint: None,
        }
    }
}

impl Config {
    /// Reads and checks a TOML config file.
    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// Rejects settings that cannot work.
    pub fn check(&self) -> Result<(), String> {
        let limits = &self.limits;
        if limits.requests_inflight_max == 0 || limits.sessions_max == 0 || limits.batch_statements_max == 0 {
            return Err("limits must be positive".into());
        }
        if limits.request_bytes_max < 1024 {
            return Err("limits.request_bytes_max must be at least 1024".into());
        }
        if self.region.is_empty() || self.zone.is_empty() {
            return Err("region and zone must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses_and_unknown_keys_are_refused() {
        let config: Config = toml::from_str(
            r#"
            node_id = 4
            region = "eu-west"
            zone = "b"
            http = "127.0.0.1:7071"
            data_dir = "/var/lib/geodb"
            max_clock_offset_ms = 5
            [limits]
            requests_inflight_max = 8
            "#,
        )
        .unwrap();
        assert_eq!(config.node_id, 4);
        assert_eq!(config.limits.requests_inflight_max, 8);
        assert_eq!(config.limits.sessions_max, Limits::default().sessions_max);
        assert!(config.check().is_ok());
        assert!(toml::from_str::<Config>("regoin = \"x\"").is_err());
    }
}
