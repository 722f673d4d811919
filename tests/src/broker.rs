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

/// `rabbitmqctl <list> -p <vhost> <columns>`: a row of tab-separated columns a
/// line.
async fn rabbitmqctl_rows(
    list: &str,
    vhost: &str,
    columns: &[&str],
) -> anyhow::Result<Vec<String>> {
    let out = Command::new("rabbitmqctl")
        .args([list, "-p", vhost])
        .args(columns)
        .args(["--no-table-headers", "-q"])
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

/// Which queues a removal leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spare {
    /// Exclusive queues: they belong to a connection still open (of this
    /// process, say) and go when it closes.
    Exclusive,
    /// Exclusive queues, and queues a consumer still reads: deleting one would
    /// cancel a server still running, which may reconnect and declare
    /// everything again (with the tests' `x-expires` the queue goes by itself).
    InUse,
}

/// What the broker holds under `cx`, and the queues `spare` leaves alone.
async fn list(cx: &str, spare: Spare) -> anyhow::Result<(BrokerObjects, Vec<String>)> {
    let vhost = vhost()?;
    let (exchanges, queues) = tokio::try_join!(
        rabbitmqctl_rows("list_exchanges", &vhost, &["name"]),
        rabbitmqctl_rows("list_queues", &vhost, &["name", "exclusive", "consumers"]),
    )?;
    let mut found = BrokerObjects {
        exchanges: exchanges.into_iter().filter(|n| belongs(n, cx)).collect(),
        queues: Vec::new(),
    };
    let mut spared = Vec::new();
    for row in queues {
        let mut columns = row.split('\t');
        let name = columns.next().unwrap_or_default();
        let exclusive = columns.next().is_some_and(|c| c.trim() == "true");
        let consumed = columns
            .next()
            .is_some_and(|c| c.trim().parse::<u64>().is_ok_and(|n| n > 0));
        if belongs(name, cx) {
            found.queues.push(name.to_owned());
            if exclusive || (consumed && spare == Spare::InUse) {
                spared.push(name.to_owned());
            }
        }
    }
    found.exchanges.sort();
    found.queues.sort();
    Ok((found, spared))
}

/// Lists (with `rabbitmqctl list_exchanges name` and `list_queues name`) every
/// exchange and queue of control exchange `cx` on the test broker.
pub async fn broker_objects(cx: &str) -> anyhow::Result<BrokerObjects> {
    Ok(list(cx, Spare::Exclusive).await?.0)
}

/// Deletes every exchange and queue of control exchange `cx` from the test
/// broker: lists them, deletes each with `lapin`, and lists again while some
/// are left, a few times, sparing the queues `spare` says. Returns what it
/// deleted; fails naming what is left.
pub async fn delete_broker_objects(cx: &str, spare: Spare) -> anyhow::Result<BrokerObjects> {
    let mut deleted = BrokerObjects::default();
    let mut conn: Option<Connection> = None;
    let mut failures = Vec::new();
    for round in 0..DELETE_ROUNDS {
        let (mut found, spared) = list(cx, spare).await?;
        found.queues.retain(|q| !spared.contains(q));
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
pub fn delete_broker_objects_blocking(cx: &str, spare: Spare) {
    let cx = cx.to_owned();
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(delete_broker_objects(&cx, spare))
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
        // The test's servers may still run in the background.
        delete_broker_objects_blocking(&self.name, Spare::InUse);
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
