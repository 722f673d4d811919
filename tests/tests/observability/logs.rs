//! JSON logs: every line of every process is one JSON object, and the events of
//! one request carry its request id, its trace id and the volume id at the top
//! level, in all three processes.

use scoria_proto::v1 as pb;
use scoria_tests::stack::{DbKind, Stack};
use serde_json::Value;
use tonic::Request;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const REQUEST_ID: &str = "req-4c1ad3c0-31ad-4a2e-9b7b-6a3b3b1f0c11";

#[tokio::test(flavor = "multi_thread")]
async fn json_log_events_of_a_create_carry_request_trace_and_volume_ids() {
    let stack = Stack::start_with(DbKind::Sqlite, &[("SCORIA_LOG_FORMAT", "json")]).await;
    let mut request = Request::new(pb::CreateVolumeRequest {
        name: "logged".into(),
        size_gib: 1,
        ..Default::default()
    });
    let headers = request.metadata_mut();
    headers.insert("x-request-id", REQUEST_ID.parse().expect("ascii"));
    let traceparent = format!("00-{TRACE_ID}-b7ad6b7169203331-01");
    headers.insert("traceparent", traceparent.parse().expect("ascii"));
    let volume = stack
        .volumes("p1")
        .create_volume(request)
        .await
        .expect("create volume")
        .into_inner();
    stack
        .wait_status("p1", &volume.id, pb::VolumeStatus::Available)
        .await;

    for name in ["scoria-api", "scoria-scheduler", "scoria-volume"] {
        let text = std::fs::read_to_string(stack.log_path(name)).expect("log file");
        let mut of_request = 0;
        for line in text.lines() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} wrote a line that is not JSON ({e}): {line}"));
            for key in ["timestamp", "level"] {
                assert!(event.get(key).is_some(), "{name}: no {key} in {line}");
            }
            if event["request_id"] != REQUEST_ID {
                continue;
            }
            of_request += 1;
            assert_eq!(event["trace_id"], TRACE_ID, "{name}: {line}");
            assert_eq!(event["volume_id"], volume.id.as_str(), "{name}: {line}");
        }
        eprintln!("{name}: {of_request} events of {REQUEST_ID}");
        assert!(
            of_request > 0,
            "{name} logged no event of request {REQUEST_ID}:\n{text}"
        );
    }
}
