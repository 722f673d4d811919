//! What a test leaves on the shared broker, and its removal: every exchange and
//! queue named after a control exchange `<cx>` (`<cx>` itself or `<cx>.…`, see
//! `scoria_common::rpc::names`) is listed with `rabbitmqctl` (AMQP cannot list)
//! and deleted over AMQP with `lapin`. [`crate::stack::Stack`] does this when it
//! ends; [`TestExchange`] does it for the bus-level tests.

use std::{fmt, ops::Deref, str::FromStr, time::Duration};

use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeleteOptions},
    uri::AMQPUri,
};
use tokio::process::Command;

use crate::{amqp_url, unique_exchange};

/// How many times a removal lists and deletes before it reports leftovers
/// (an exclusive queue goes only once its connection is closed).
const DELETE_ROUNDS: usize = 3;

/// The exchanges and queues of one control exchange on the broker, sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BrokerObjects {
    /// Exchange names.
    pub exchanges: Vec<String>,
    /// Queue names.
    pub queues: Vec<String>,
}

impl BrokerObjects {
    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.queues.is_empty()
    }
}

/// Whether `name` belongs to control exchange `cx`: `<cx>` or `<cx>.…`.
fn belongs(name: &str, cx: &str) -> bool {
    name.strip_prefix(cx)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The virtual host of the test broker's URL (`%2f` is `/`).
fn vhost() -> anyhow::Result<String> {
    let uri = AMQPUri::from_str(&amqp_url())
        .map_err(|e| anyhow::anyhow!("SCORIA_TEST_AMQP_URL is not an AMQP URL: {e}"))?;
    Ok(uri.vhost)
}

/// `rabbitmqctl <list> -p <vhost> name`: one name a line.
async fn rabbitmqctl_names(list: &str, vhost: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new("rabbitmqctl")
        .args([list, "-p", vhost, "name", "--no-table-headers", "-q"])
        .output()
        .await
        .map_err(|e| {
            anyhow::anyhow!("rabbitmqctl is needed (it comes with rabbitmq-server): {e}")
        })?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {list} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Lists (with `rabbitmqctl list_exchanges name` and `list_queues name`) every
/// exchange and queue of control exchange `cx` on the test broker.
pub async fn broker_objects(cx: &str) -> anyhow::Result<BrokerObjects> {
    let vhost = vhost()?;
    let (exchanges, queues) = tokio::try_join!(
        rabbitmqctl_names("list_exchanges", &vhost),
        rabbitmqctl_names("list_queues", &vhost),
    )?;
    let mine = |names: Vec<String>| {
        let mut names: Vec<String> = names.into_iter().filter(|n| belongs(n, cx)).collect();
        names.sort();
        names
    };
    Ok(BrokerObjects {
        exchanges: mine(exchanges),
        queues: mine(queues),
    })
}

/// Deletes every exchange and queue of control exchange `cx` from the test
/// broker: lists them, deletes each with `lapin`, and lists again while some
/// delete failed (a queue still held exclusively by a closing connection), a
/// few times. Returns what it deleted; fails naming what is left.
pub async fn delete_broker_objects(cx: &str) -> anyhow::Result<BrokerObjects> {
    let mut deleted = BrokerObjects::default();
    let mut conn: Option<Connection> = None;
    let mut failures = Vec::new();
    for round in 0..DELETE_ROUNDS {
        let found = broker_objects(cx).await?;
        if found.is_empty() {
            break;
        }
        if round + 1 == DELETE_ROUNDS {
            anyhow::bail!(
                "left on the broker under {cx}: {found:?} (delete failures: {failures:?})"
            );
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let conn = match &conn {
            Some(conn) => conn,
            None => conn
                .insert(Connection::connect(&amqp_url(), ConnectionProperties::default()).await?),
        };
        failures.clear();
        // A refused delete closes its channel: a fresh channel for each.
        for queue in &found.queues {
            let channel = conn.create_channel().await?;
            match channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                Ok(_) => deleted.queues.push(queue.clone()),
                Err(e) => failures.push(format!("queue {queue}: {e}")),
            }
            let _ = channel.close(200, "deleted".into()).await;
        }
        for exchange in &found.exchanges {
            let channel = conn.create_channel().await?;
            match channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
            {
                Ok(()) => deleted.exchanges.push(exchange.clone()),
                Err(e) => failures.push(format!("exchange {exchange}: {e}")),
            }
            let _ = channel.close(200, "deleted".into()).await;
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close(200, "cleaned up".into()).await;
    }
    deleted.exchanges.sort();
    deleted.queues.sort();
    Ok(deleted)
}

/// [`delete_broker_objects`] from synchronous code (a `Drop`), on a thread of its
/// own with its own runtime (the caller may be inside one). A failure is
/// printed, not raised: a test that ends must not fail for it.
pub fn delete_broker_objects_blocking(cx: &str) {
    let cx = cx.to_owned();
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(delete_broker_objects(&cx))
    })
    .join();
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("cleaning up the broker: {e}"),
        Err(_) => eprintln!("cleaning up the broker: the clean-up thread panicked"),
    }
}

/// A control exchange of its own for a bus-level test ([`unique_exchange`]):
/// derefs to its name, and deletes everything named after it from the broker
/// when dropped (declare it first, so it drops after the servers and clients
/// that use it).
#[derive(Debug)]
pub struct TestExchange {
    name: String,
}

impl TestExchange {
    /// A new exchange name with `tag` in it.
    pub fn new(tag: &str) -> Self {
        Self {
            name: unique_exchange(tag),
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Deref for TestExchange {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for TestExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestExchange {
    fn drop(&mut self) {
        delete_broker_objects_blocking(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::belongs;

    #[test]
    fn names_of_an_exchange_and_only_those() {
        for name in ["cx", "cx.reply", "cx.volume.n1@file", "cx.volume.fanout.ab"] {
            assert!(belongs(name, "cx"), "{name}");
        }
        for name in ["cx2", "cxx.reply", "other.cx", "c"] {
            assert!(!belongs(name, "cx"), "{name}");
        }
    }
}
