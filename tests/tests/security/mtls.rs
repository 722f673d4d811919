//! gRPC over TLS with a client-certificate requirement: no certificate and a
//! certificate of another CA are refused, a CA-signed one is served; plaintext
//! to the TLS port fails on the client's side while the server, logging at most
//! at debug level, goes on serving; `grpcurl -cacert` works.

use std::time::Duration;

use scoria_tests::{pki::Ca, stack::serving};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{LoneApi, grpcurl, tls};

async fn check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

/// A refusal by the transport (the handshake failed or the server closed the
/// connection), not an answer of the API. With TLS 1.3 the client learns its
/// certificate was refused only after it sent the request (`Cancelled`, or
/// `Unknown` with the TLS alert or a broken pipe).
fn transport_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
    ) && status.metadata().is_empty()
}

#[tokio::test]
async fn mtls_serves_only_clients_of_its_ca_and_plaintext_fails_cleanly() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "api").expect("CA");
    let other = Ca::new(dir.path(), "other").expect("other CA");
    let server = ca.server("server", &[]).expect("server");
    let client = ca.client("client", "alice").expect("client");
    let stranger = other.client("stranger", "mallory").expect("stranger");
    let client_ca = ca.cert.display().to_string();
    let mut api = LoneApi::start(
        &server,
        &[("SCORIA_API_TLS_CLIENT_CA", client_ca)],
        |addr| tls(addr, &ca.cert, Some(&client)),
    )
    .await;
    let addr = api.addr.clone();

    check(tls(&addr, &ca.cert, Some(&client)))
        .await
        .expect("a CA-signed client certificate is served");
    let refused = check(tls(&addr, &ca.cert, None))
        .await
        .expect_err("no client certificate");
    assert!(transport_refusal(&refused), "{refused:?}");
    let refused = check(tls(&addr, &ca.cert, Some(&stranger)))
        .await
        .expect_err("a client certificate of another CA");
    assert!(transport_refusal(&refused), "{refused:?}");
    // The client checks the server too: a client trusting another CA refuses.
    assert!(!serving(&tls(&addr, &other.cert, Some(&client))).await);

    // Plaintext HTTP/2 to the TLS port: the client gets an error, not a hang.
    let plain = scoria_tests::stack::channel(&addr);
    // (hyper reads the TLS alert as a broken HTTP/2 frame: INTERNAL on the
    // client's side, never an answer of the API.)
    let refused = check(plain).await.expect_err("plaintext");
    assert!(
        transport_refusal(&refused) || refused.code() == tonic::Code::Internal,
        "{refused:?}"
    );
    let mut raw = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("the server answers plaintext at once");
    assert!(
        !matches!(read, Ok(n) if n > 0 && buf[..n].starts_with(b"\x00\x00")),
        "no HTTP/2 frame over plaintext: {read:?}"
    );
    drop(raw);

    // grpcurl with the CA and the client certificate; refused without either.
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let ca_file = ca.cert.display().to_string();
    let (ok, out) = grpcurl(&[
        "-cacert", &ca_file, "-cert", &cert, "-key", &key, &addr, "list",
    ])
    .await;
    assert!(ok && out.contains("scoria.v1.VolumeService"), "{out}");
    let (ok, out) = grpcurl(&["-cacert", &ca_file, &addr, "list"]).await;
    assert!(!ok, "grpcurl without a client certificate: {out}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(!ok, "grpcurl -plaintext: {out}");

    // The command line, with and without its client certificate.
    let scoria = |with_cert: bool| {
        let mut command = tokio::process::Command::new(scoria_tests::stack::binary("scoria"));
        command
            .args(["--os-url", &format!("https://{addr}"), "--cacert", &ca_file])
            .args(["--os-project", "p1", "volume", "list", "-f", "json"]);
        if with_cert {
            command.args(["--cert", &cert, "--key", &key]);
        }
        command.kill_on_drop(true).output()
    };
    let out = scoria(true).await.expect("scoria");
    assert!(
        out.status.success(),
        "scoria over mTLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = scoria(false).await.expect("scoria");
    assert!(!out.status.success(), "scoria without its certificate");

    // Still serving, and nothing above debug level about those handshakes.
    assert!(api.running(), "{}", api.log());
    check(tls(&addr, &ca.cert, Some(&client)))
        .await
        .expect("still serving");
    let log = api.log();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("handshake") && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    assert!(loud.is_empty(), "{loud:?}");
    assert!(
        log.contains("TLS handshake failed"),
        "debug lines expected:\n{log}"
    );
}

#[tokio::test]
async fn tls_without_a_client_ca_serves_every_client_and_grpcurl_with_cacert() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new(dir.path(), "api").expect("CA");
    let server = ca.server("server", &[]).expect("server");
    let api = LoneApi::start(&server, &[], |addr| tls(addr, &ca.cert, None)).await;
    check(tls(&api.addr, &ca.cert, None))
        .await
        .expect("served without a client certificate");
    let ca_file = ca.cert.display().to_string();
    let (ok, out) = grpcurl(&[
        "-cacert",
        &ca_file,
        &api.addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(ok && out.contains("SERVING"), "{out}");
    let (ok, out) = grpcurl(&[&api.addr, "list"]).await;
    assert!(
        !ok,
        "grpcurl without the CA must not trust the server: {out}"
    );
}
