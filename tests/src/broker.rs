//! What a test leaves on the shared broker, and its removal: every exchange and
//! queue named after a control exchange `<cx>` (`<cx>` itself or `<cx>.…`, see
//! `scoria_common::rpc::names`) is listed with `rabbitmqctl` (AMQP cannot list)
//! and deleted over AMQP with `lapin`. [`crate::stack::Stack`] does this when it
//! ends; [`TestExchange`] does it for the bus-level tests. A test on a broker
//! of its own (a cluster of test nodes) says where it is with a
//! [`BrokerAccess`].

use std::{fmt, ops::Deref, path::PathBuf, str::FromStr, time::Duration};

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

/// One way to run `rabbitmqctl` against a broker node.
#[derive(Debug, Clone)]
pub struct Ctl {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the command (`-n <node>`).
    pub args: Vec<String>,
    /// Its environment (`HOME`, where the Erlang cookie is).
    pub env: Vec<(String, String)>,
}

/// Where a broker is: its AMQP addresses (the first that answers is used) and
/// the `rabbitmqctl` of each of its nodes (the first that answers is used).
#[derive(Debug, Clone)]
pub struct BrokerAccess {
    /// AMQP URLs, all of one vhost.
    pub amqp_urls: Vec<String>,
    /// `rabbitmqctl` per node.
    pub ctl: Vec<Ctl>,
}

impl BrokerAccess {
    /// The machine's broker (`SCORIA_TEST_AMQP_URL`, plain `rabbitmqctl`).
    pub fn machine() -> Self {
        Self {
            amqp_urls: vec![amqp_url()],
            ctl: vec![Ctl {
                program: PathBuf::from("rabbitmqctl"),
                args: Vec::new(),
                env: Vec::new(),
            }],
        }
    }

    /// The virtual host of the first URL (`%2f` is `/`).
    fn vhost(&self) -> anyhow::Result<String> {
        let url = self.amqp_urls.first().map_or("", String::as_str);
        let uri = AMQPUri::from_str(url)
            .map_err(|e| anyhow::anyhow!("{url:?} is not an AMQP URL: {e}"))?;
        Ok(uri.vhost)
    }

    /// A connection to the first address that answers.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let mut errors = Vec::new();
        for url in &self.amqp_urls {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(conn) => return Ok(conn),
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        anyhow::bail!("no broker address answers: {errors:?}")
    }

    /// `rabbitmqctl <args>` on the first node that answers; its stdout.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut errors = Vec::new();
        for ctl in &self.ctl {
            let out = Command::new(&ctl.program)
                .args(&ctl.args)
                .args(args)
                .envs(ctl.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("rabbitmqctl is needed (it comes with rabbitmq-server): {e}")
                })?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            errors.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        anyhow::bail!("rabbitmqctl {args:?} failed: {errors:?}")
    }

    /// `rabbitmqctl <list> -p <vhost> <columns>`: a row of tab-separated
    /// columns a line.
    async fn rows(&self, list: &str, columns: &[&str]) -> anyhow::Result<Vec<String>> {
        let vhost = self.vhost()?;
        let mut args = vec![list, "-p", vhost.as_str()];
        args.extend_from_slice(columns);
        args.extend_from_slice(&["--no-table-headers", "-q"]);
        Ok(self
            .ctl(&args)
            .await?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The queues of control exchange `cx`: name, type (`classic`, `quorum`)
    /// and arguments as `rabbitmqctl list_queues name type arguments` prints
    /// them, sorted by name.
    pub async fn queues(&self, cx: &str) -> anyhow::Result<Vec<QueueRow>> {
        let mut rows: Vec<QueueRow> = self
            .rows("list_queues", &["name", "type", "arguments"])
            .await?
            .into_iter()
            .filter_map(|row| {
                let mut cols = row.splitn(3, '\t');
                let name = cols.next()?.to_owned();
                let kind = cols.next().unwrap_or_default().trim().to_owned();
                let arguments = cols.next().unwrap_or_default().to_owned();
                belongs(&name, cx).then_some(QueueRow {
                    name,
                    kind,
                    arguments,
                })
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }
}

/// One queue as `rabbitmqctl list_queues name type arguments` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// The name.
    pub name: String,
    /// `classic` or `quorum`.
    pub kind: String,
    /// The arguments, as printed.
    pub arguments: String,
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
async fn list(
    access: &BrokerAccess,
    cx: &str,
    spare: Spare,
) -> anyhow::Result<(BrokerObjects, Vec<String>)> {
    let (exchanges, queues) = tokio::try_join!(
        access.rows("list_exchanges", &["name"]),
        access.rows("list_queues", &["name", "exclusive", "consumers"]),
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
    Ok(list(&BrokerAccess::machine(), cx, Spare::Exclusive)
        .await?
        .0)
}

/// Deletes every exchange and queue of control exchange `cx` from the test
/// broker: lists them, deletes each with `lapin`, and lists again while some
/// are left, a few times, sparing the queues `spare` says. Returns what it
/// deleted; fails naming what is left.
pub async fn delete_broker_objects(cx: &str, spare: Spare) -> anyhow::Result<BrokerObjects> {
    delete_broker_objects_on(&BrokerAccess::machine(), cx, spare).await
}

/// [`delete_broker_objects`] on the broker `access` says.
pub async fn delete_broker_objects_on(
    access: &BrokerAccess,
    cx: &str,
    spare: Spare,
) -> anyhow::Result<BrokerObjects> {
    let mut deleted = BrokerObjects::default();
    let mut conn: Option<Connection> = None;
    let mut failures = Vec::new();
    for round in 0..DELETE_ROUNDS {
        let (mut found, spared) = list(access, cx, spare).await?;
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
            None => conn.insert(access.connect().await?),
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
    delete_broker_objects_blocking_on(&BrokerAccess::machine(), cx, spare);
}

/// [`delete_broker_objects_blocking`] on the broker `access` says.
pub fn delete_broker_objects_blocking_on(access: &BrokerAccess, cx: &str, spare: Spare) {
    let (cx, access) = (cx.to_owned(), access.clone());
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(delete_broker_objects_on(&access, &cx, spare))
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
