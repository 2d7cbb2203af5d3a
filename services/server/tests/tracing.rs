//! Traces as an operator's collector receives them: `geodb dev` (three
//! regions of three nodes, latencies off) exports its spans over OTLP/gRPC
//! to a real receiver (the collector's generated service, served by tonic)
//! in this test. A statement that carries a W3C `traceparent`, sent to the
//! eu-west gateway for a session that lives on the us-east gateway, is one
//! trace: eu-west's `http.request` is the client span's child, the request
//! it forwards continues the trace on us-east, and the statement, its
//! commit and the requests to shard leaders hang below that.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;

/// Every span the receiver was sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|resource| resource.scope_spans);
        self.spans.lock().unwrap().extend(spans.flat_map(|scope| scope.spans));
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the receiver on a free port of 127.0.0.1; its address.
async fn receive(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(incoming),
    );
    format!("http://{address}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The value of a string or integer attribute of `span`.
fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span.attributes.iter().find(|attribute| attribute.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(number) => Some(number.to_string()),
        _ => None,
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_statement_is_one_trace_across_the_forwarding_gateway_to_the_shard_leaders() {
    let receiver = Receiver::default();
    let endpoint = receive(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (server, gateways) =
        Server::dev_regions(dir.path(), &["--latency-scale", "0", "--no-auto-rehome", "--otlp-endpoint", &endpoint]);
    server.sql("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)", json!([])).await;
    // A session opened at us-east's gateway, used through eu-west's.
    let opened = server.client.post(format!("{}/v1/sessions", gateways[0])).json(&json!({"isolation": "serializable"}));
    let opened: serde_json::Value = opened.send().await.unwrap().json().await.unwrap();
    let session = opened["session"].as_str().unwrap().to_string();
    let answer = server
        .client
        .post(format!("{}/v1/sessions/{session}/sql", gateways[2]))
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"sql": "INSERT INTO t VALUES (1, 'one')"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers().contains_key("x-geodb-served-by"), "the statement was not forwarded");

    // Wait for the trace's spans (exported in batches every 5 s), up to a
    // bound only a broken exporter reaches.
    let mut trace = Vec::new();
    for _ in 0..600 {
        trace = receiver.spans.lock().unwrap().iter().filter(|span| hex(&span.trace_id) == TRACE).cloned().collect();
        let count = |name: &str| trace.iter().filter(|span| span.name == name).count();
        if count("POST session_sql") >= 2 && count("sql.statement") >= 1 && count("txn.commit") >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_id: BTreeMap<String, &Span> = trace.iter().map(|span| (hex(&span.span_id), span)).collect();
    let parent_name = |span: &Span| by_id.get(&hex(&span.parent_span_id)).map(|parent| parent.name.clone());
    let summary: Vec<(String, Option<String>)> =
        trace.iter().map(|span| (span.name.clone(), parent_name(span))).collect();

    // eu-west's request span is the client's span's child, and the
    // request it forwarded continues the trace below it on us-east.
    let requests: Vec<&Span> = trace.iter().filter(|span| span.name == "POST session_sql").collect();
    let gateway = requests
        .iter()
        .find(|span| hex(&span.parent_span_id) == CLIENT_SPAN)
        .unwrap_or_else(|| panic!("no request span below the client's: {summary:?}"));
    assert_eq!(attribute(gateway, "http.response.status_code").as_deref(), Some("200"));
    let served = requests
        .iter()
        .find(|span| span.parent_span_id == gateway.span_id)
        .unwrap_or_else(|| panic!("the forwarded request is not in the trace: {summary:?}"));
    // The statement and its commit (the session's implicit transaction)
    // below the served request; the requests to shard leaders below them.
    let statement = trace.iter().find(|span| span.name == "sql.statement").expect("a statement span");
    assert_eq!(statement.parent_span_id, served.span_id, "{summary:?}");
    assert_eq!(attribute(statement, "db.operation").as_deref(), Some("insert"));
    let commit = trace.iter().find(|span| span.name == "txn.commit").expect("a commit span");
    assert_eq!(commit.parent_span_id, served.span_id, "{summary:?}");
    assert_eq!(attribute(commit, "isolation").as_deref(), Some("serializable"));
    assert!(attribute(commit, "commit_ts").is_some(), "{:?}", commit.attributes);
    let shard_requests: Vec<&Span> = trace.iter().filter(|span| span.name == "shard.request").collect();
    assert!(shard_requests.iter().any(|span| span.parent_span_id == commit.span_id), "{summary:?}");
    for span in shard_requests {
        let parent = parent_name(span);
        let under = ["sql.statement", "txn.commit", "POST session_sql"];
        assert!(parent.as_deref().is_some_and(|parent| under.contains(&parent)), "shard.request under {parent:?}");
        assert!(attribute(span, "shard").is_some() && attribute(span, "kind").is_some(), "{:?}", span.attributes);
    }
    // Requests without a traceparent start traces of their own.
    let others = receiver.spans.lock().unwrap().iter().filter(|span| hex(&span.trace_id) != TRACE).count();
    assert!(others > 0, "the other requests were not traced");
}
