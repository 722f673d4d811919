//! Identity: the plugin's name and version, its capabilities per mode, and a
//! Probe that tells whether the Scoria API answers.

use std::time::{Duration, Instant};

use scoria_csi::proto::{
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest, plugin_capability,
};
use scoria_tests::{
    csi::Plugin,
    stack::{DbKind, Stack},
};

fn services(
    response: &scoria_csi::proto::GetPluginCapabilitiesResponse,
) -> Vec<plugin_capability::service::Type> {
    response
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn plugin_info_names_the_driver_and_its_version() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let info = plugin
        .identity()
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "block.scoria.dev");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        info.manifest.get("url").map(String::as_str),
        Some(format!("http://{}", stack.api).as_str())
    );
}

#[tokio::test]
async fn capabilities_are_the_controller_and_topology_and_a_node_plugin_has_no_controller() {
    use plugin_capability::service::Type;
    let stack = Stack::start(DbKind::Sqlite).await;
    let all = Plugin::start(&stack, "node-a").await;
    let caps = all
        .identity()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        services(&caps),
        vec![
            Type::ControllerService,
            Type::VolumeAccessibilityConstraints
        ]
    );

    let node_only = Plugin::start_with(&stack, "node-b", &["--mode", "node"]).await;
    let caps = node_only
        .identity()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(services(&caps), vec![Type::VolumeAccessibilityConstraints]);
    // And it serves no Controller at all.
    let err = node_only
        .controller()
        .controller_get_capabilities(scoria_csi::proto::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
}

#[tokio::test]
async fn probe_is_not_ready_while_the_api_is_down_and_ready_again_after() {
    let mut stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    stack.kill_service("scoria-api").await;
    let probe = plugin
        .identity()
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(false), "{}", plugin.logs());
    // Calls that need the API say it is unavailable.
    let list = plugin
        .controller()
        .list_volumes(scoria_csi::proto::ListVolumesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(list.code(), tonic::Code::Unavailable, "{list:?}");

    stack.start_service("scoria-api").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = plugin
            .identity()
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner();
        if probe.ready == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready again\n{}",
            plugin.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_socket_serves_reflection_of_the_csi_services() {
    let stack = Stack::start(DbKind::Sqlite).await;
    let plugin = Plugin::start(&stack, "node-a").await;
    let channel = scoria_csi::client::unix_channel(plugin.socket());
    let mut client =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["csi.v1.Identity", "csi.v1.Controller", "csi.v1.Node"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} not in {names:?}"
        );
    }
}
