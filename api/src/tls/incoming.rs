//! The TLS listener: accepts TCP connections and completes each handshake in a
//! task of its own (a slow or silent client holds up nobody), with the
//! configuration current at accept time; tonic gets only finished handshakes.
//! A failed handshake (plaintext, an unknown client CA, no client certificate)
//! is logged at debug level and the connection closed.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::ServerTls;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many finished handshakes may wait for tonic to pick them up.
const BACKLOG: usize = 64;

/// The connections tonic serves.
pub type Incoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Accepts on `listener` until `shutdown`, the accept loop and every handshake
/// owned by `tasks`.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Incoming {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and the like: back off a little, keep serving.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // No Nagle: small replies must not wait 40 ms for a delayed ACK.
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let (tx, shutdown) = (tx.clone(), shutdown.clone());
            handshakes.spawn(async move {
                let Some(stream) = handshake(acceptor, tcp, peer, &shutdown).await else {
                    return;
                };
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    _ = tx.send(Ok(stream)) => {}
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    tokio::select! {
        () = shutdown.cancelled() => None,
        outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match outcome {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                None
            }
        },
    }
}
