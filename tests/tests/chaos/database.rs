//! The database unreachable for a moment: the stack runs on PostgreSQL through
//! a TCP proxy of this test, which then drops every connection and refuses new
//! ones for about three seconds. API calls meanwhile answer UNAVAILABLE (no
//! hang), work in flight is retried, and afterwards creates work again and
//! nothing is left stuck.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use scoria_common::model::VolumeStatus;
use scoria_tests::stack::{DbKind, Stack};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::support::{Api, CHAOS_ENV, assert_settled, enforce_quota, request_id, serial, volumes};

/// A TCP proxy to `upstream` that can cut every connection at once.
struct Proxy {
    addr: String,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<CancellationToken>>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(CancellationToken::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let proxy = Self {
            addr,
            cut: cut.clone(),
            live: live.clone(),
            accepted: accepted.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                    () = stop.cancelled() => return,
                };
                if cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                let token = live.lock().expect("lock").clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Drops every proxied connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut live = self.live.lock().expect("lock");
        live.cancel();
        *live = CancellationToken::new();
    }

    /// Accepts connections again.
    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.live.lock().expect("lock").cancel();
    }
}

/// `user@host:port` of a `postgres://user@host:port/db` URL, split at the `@`.
fn host_port(url: &str) -> &str {
    url.split_once('@')
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .expect("host:port")
}

#[tokio::test(flavor = "multi_thread")]
async fn database_cut_answers_unavailable_then_recovers() {
    let _serial = serial().await;
    let upstream = host_port(&scoria_tests::stack::postgres_url()).to_owned();
    let proxy = Proxy::start(upstream.clone()).await;
    let via = proxy.addr.clone();
    let stack = Stack::start_routed(DbKind::Postgres, CHAOS_ENV, |url| {
        url.replacen(&upstream, &via, 1)
    })
    .await;
    enforce_quota(&stack).await;
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > 0,
        "the services did not go through the proxy"
    );
    let api = Api::new(&stack);
    let mut keys = Vec::new();
    for n in 0..3 {
        let key = request_id("db-before", n);
        let v = api.create(1, &key).await.expect("create before the cut");
        api.wait_status(&v.id, scoria_proto::v1::VolumeStatus::Available)
            .await;
        keys.push(key);
    }
    let known = volumes(&stack).await[0].id.clone();
    // Creates in flight when the database goes.
    for n in 0..5 {
        let key = request_id("db-inflight", n);
        api.create(1, &key)
            .await
            .expect("create just before the cut");
        keys.push(key);
    }

    proxy.cut();
    let cut_at = Instant::now();
    let in_flight = volumes(&stack)
        .await
        .iter()
        .filter(|v| v.status == VolumeStatus::Creating)
        .count();
    let during = request_id("db-during", 0);
    let (got, listed, created) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(20), api.get(&known)),
        tokio::time::timeout(Duration::from_secs(20), api.list()),
        tokio::time::timeout(Duration::from_secs(20), api.create(1, &during)),
    );
    for (call, answer) in [
        ("GetVolume", got.map(|r| r.map(|_| ()))),
        ("ListVolumes", listed.map(|r| r.map(|_| ()))),
        ("CreateVolume", created.map(|r| r.map(|_| ()))),
    ] {
        let answer = answer.unwrap_or_else(|_| panic!("{call} hung while the database was cut"));
        match answer {
            Err(status) if status.code() == Code::Unavailable => {}
            other => panic!(
                "{call} while the database was cut: {other:?}\n{}",
                stack.logs()
            ),
        }
    }
    eprintln!(
        "cut with {in_flight} creates in flight; UNAVAILABLE answered within {:?}",
        cut_at.elapsed()
    );
    let remaining = Duration::from_secs(3).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(remaining).await;
    proxy.restore();

    // Back: the refused create goes through on retry, and so do new ones.
    api.create_retrying(1, &during, Duration::from_secs(30))
        .await;
    keys.push(during);
    for n in 0..3 {
        let key = request_id("db-after", n);
        api.create_retrying(1, &key, Duration::from_secs(30)).await;
        keys.push(key);
    }
    assert_settled(&stack).await;
    let rows = volumes(&stack).await;
    assert_eq!(
        rows.len(),
        keys.len(),
        "one volume per request id: {rows:#?}"
    );
    for v in rows {
        assert!(keys.iter().any(|k| v.name.ends_with(k.as_str())), "{v:?}");
        assert_eq!(v.status, VolumeStatus::Available, "{v:?}\n{}", stack.logs());
    }
}
