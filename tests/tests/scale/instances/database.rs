//! The database cut with several instances running: the fleet's services reach
//! PostgreSQL through a TCP proxy of this test, which drops every connection and
//! refuses new ones for about three seconds (as `chaos::database` does for one
//! instance of each). Both API instances answer UNAVAILABLE meanwhile (no hang);
//! afterwards creates through either work again, every confirmed create ends
//! available, one volume per request id, nothing stuck.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use scoria_common::model::VolumeStatus;
use scoria_proto::v1 as pb;
use scoria_tests::stack::{Clients, Fleet, FleetOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{assert_settled, create, request_id, rows, wait_status};

const PROJECT: &str = "database";

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
async fn a_database_cut_with_several_instances_answers_unavailable_then_recovers() {
    let upstream = host_port(&scoria_tests::stack::postgres_url()).to_owned();
    let proxy = Proxy::start(upstream.clone()).await;
    let fleet = Fleet::start(FleetOptions {
        database_via: Some((upstream, proxy.addr.clone())),
        env: vec![("SCORIA_RPC_PUBLISH_TIMEOUT_MS".into(), "3000".into())],
        ..FleetOptions::default()
    })
    .await;
    assert!(
        proxy.accepted.load(Ordering::SeqCst) >= 7,
        "the services did not go through the proxy"
    );
    let apis = [fleet.member(0, PROJECT), fleet.member(1, PROJECT)];
    let mut keys = Vec::new();
    for n in 0..4 {
        let key = request_id("db-before", n);
        let v = create(&apis[n % 2], 1, &key)
            .await
            .expect("create before the cut");
        wait_status(
            &fleet,
            &apis[(n + 1) % 2],
            &v.id,
            pb::VolumeStatus::Available,
        )
        .await;
        keys.push(key);
    }
    let known = rows(&fleet).await[0].id.clone();
    // Creates in flight through both APIs when the database goes.
    for n in 0..6 {
        let key = request_id("db-inflight", n);
        create(&apis[n % 2], 1, &key)
            .await
            .expect("create just before the cut");
        keys.push(key);
    }

    proxy.cut();
    let cut_at = Instant::now();
    let during = [request_id("db-during", 0), request_id("db-during", 1)];
    for (i, api) in apis.iter().enumerate() {
        let within = Duration::from_secs(20);
        let mut volumes = api.volumes();
        let (got, listed, created) = tokio::join!(
            tokio::time::timeout(within, api.get_volume(&known)),
            tokio::time::timeout(
                within,
                volumes.list_volumes(pb::ListVolumesRequest::default())
            ),
            tokio::time::timeout(within, create(api, 1, &during[i])),
        );
        for (call, answer) in [
            ("GetVolume", got.map(|r| r.map(drop))),
            ("ListVolumes", listed.map(|r| r.map(drop))),
            ("CreateVolume", created.map(|r| r.map(drop))),
        ] {
            let answer = answer.unwrap_or_else(|_| {
                panic!("{call} through API {i} hung while the database was cut")
            });
            match answer {
                Err(status) if status.code() == Code::Unavailable => {}
                other => panic!(
                    "{call} through API {i} while the database was cut: {other:?}\n{}",
                    fleet.stack.logs()
                ),
            }
        }
    }
    eprintln!(
        "both APIs answered UNAVAILABLE within {:?}",
        cut_at.elapsed()
    );
    // The cut lasts about three seconds.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    proxy.restore();

    // Back: the refused creates go through on retry, through the other API too.
    for (i, key) in during.iter().enumerate() {
        create_retrying(&apis[1 - i], key).await;
        keys.push(key.clone());
    }
    for n in 0..4 {
        let key = request_id("db-after", n);
        create_retrying(&apis[n % 2], &key).await;
        keys.push(key);
    }
    let volumes = assert_settled(&fleet).await;
    assert_eq!(
        volumes.len(),
        keys.len(),
        "one volume per request id: {volumes:#?}"
    );
    for v in volumes {
        assert!(keys.iter().any(|k| v.name.ends_with(k.as_str())), "{v:?}");
        assert_eq!(
            v.status,
            VolumeStatus::Available,
            "{v:?}\n{}",
            fleet.stack.logs()
        );
    }
}

/// Creates with `key` through `api` until it is accepted (UNAVAILABLE retried,
/// for up to 30 s).
async fn create_retrying(api: &Clients, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create(api, 1, key).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("create {key}: {s:?}"),
        }
    }
}
