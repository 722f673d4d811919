//! Certificate reload: after the files are replaced, a new connection sees the
//! new certificate (on SIGHUP at once, or at the next poll), while a connection
//! and a stream opened before go on working; a broken file is logged, naming
//! its variable, and the certificate in use kept.

use std::time::{Duration, Instant};

use scoria_tests::{
    pki::{Ca, Pair},
    stack::serving,
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{LoneApi, tls};

/// Waits up to 15 s for `ok()`.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, ok: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok().await {
        assert!(Instant::now() < deadline, "{what} within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replace(api: &LoneApi, with: &Pair) {
    // Key first: a poll between the two writes sees a mismatch, which is
    // refused, and picks both up at the next one.
    std::fs::copy(&with.key, &api.key).expect("replace key");
    std::fs::copy(&with.cert, &api.cert).expect("replace cert");
}

async fn check(channel: &Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_to_new_connections_only() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_ca, new_ca) = (
        Ca::new(dir.path(), "old").expect("CA"),
        Ca::new(dir.path(), "new").expect("CA"),
    );
    let (old, new) = (
        old_ca.server("server", &[]).expect("old"),
        new_ca.server("server", &[]).expect("new"),
    );
    let api = LoneApi::start(&old, &[("SCORIA_API_TLS_RELOAD_SECS", "0".into())], |a| {
        tls(a, &old_ca.cert, None)
    })
    .await;
    // A connection and a server stream opened before the reload.
    let open = tls(&api.addr, &old_ca.cert, None);
    assert!(check(&open).await);
    let mut watch = HealthClient::new(open.clone())
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watch
        .message()
        .await
        .expect("first status")
        .expect("a status");

    replace(&api, &new);
    // SIGHUP only (no poll): nothing changes before it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(serving(&tls(&api.addr, &old_ca.cert, None)).await);
    api.hangup().await;
    eventually("the new certificate on a new connection", || async {
        serving(&tls(&api.addr, &new_ca.cert, None)).await
    })
    .await;
    assert!(
        !serving(&tls(&api.addr, &old_ca.cert, None)).await,
        "a new connection must no longer get the old certificate"
    );
    // The old connection and its stream are still there.
    assert!(check(&open).await, "{}", api.log());
    let pending = tokio::time::timeout(Duration::from_millis(500), watch.message()).await;
    assert!(
        pending.is_err(),
        "the open stream must stay open: {pending:?}"
    );
    assert!(
        api.log().contains("TLS certificate reloaded"),
        "{}",
        api.log()
    );
}

#[tokio::test]
async fn the_poll_picks_up_a_new_certificate_and_ignores_a_broken_one() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_ca, new_ca) = (
        Ca::new(dir.path(), "old").expect("CA"),
        Ca::new(dir.path(), "new").expect("CA"),
    );
    let (old, new) = (
        old_ca.server("server", &[]).expect("old"),
        new_ca.server("server", &[]).expect("new"),
    );
    let api = LoneApi::start(&old, &[("SCORIA_API_TLS_RELOAD_SECS", "1".into())], |a| {
        tls(a, &old_ca.cert, None)
    })
    .await;
    std::fs::write(&api.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("break");
    eventually("the broken file logged with its variable", || async {
        api.log()
            .lines()
            .any(|l| l.contains("TLS reload failed") && l.contains("SCORIA_API_TLS_CERT"))
    })
    .await;
    assert!(
        serving(&tls(&api.addr, &old_ca.cert, None)).await,
        "the certificate in use is kept\n{}",
        api.log()
    );
    replace(&api, &new);
    eventually("the new certificate at the next poll", || async {
        serving(&tls(&api.addr, &new_ca.cert, None)).await
    })
    .await;
}
