//! Every AMQP name the RPC layer uses, derived from the `control_exchange` prefix
//! (shown here as `<cx>`, default `scoria`):
//!
//! | thing | name |
//! | --- | --- |
//! | call / cast exchange (topic) | `<cx>` |
//! | queue of a topic (servers compete) | `<cx>.<topic>`, key `<topic>` |
//! | queue of one server | `<cx>.<topic>.<server>`, key `<topic>.<server>` |
//! | fanout exchange of a topic | `<cx>.<topic>.fanout` |
//! | reply exchange (direct) | `<cx>.reply`, key = the caller's reply queue |
//! | notifications (topic) | `<cx>.notifications`, keys `notifications.info` / `.error` |
//! | dead letters | exchange `<cx>.dlx` (fanout) -> queue `<cx>.dead` |

use super::error::{RpcError, RpcResult};

/// The names of one deployment's AMQP objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under the control exchange `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    /// The control exchange itself (topic exchange for call and cast).
    pub fn topic_exchange(&self) -> &str {
        &self.prefix
    }
    /// The direct exchange replies are published to.
    pub fn reply_exchange(&self) -> String {
        format!("{}.reply", self.prefix)
    }
    /// The fanout exchange of `topic`.
    pub fn fanout_exchange(&self, topic: &str) -> String {
        format!("{}.{topic}.fanout", self.prefix)
    }
    /// The exchange notifications are published to.
    pub fn notifications_exchange(&self) -> String {
        format!("{}.notifications", self.prefix)
    }
    /// The durable queue notifications of `priority` (`info`, `error`) land in.
    pub fn notifications_queue(&self, priority: &str) -> String {
        format!("{}.notifications.{priority}", self.prefix)
    }
    /// The dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    /// The queue dead letters land in.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// The queue a target's messages land in.
    pub fn queue(&self, target: &Target) -> String {
        format!("{}.{}", self.prefix, target.routing_key())
    }
    /// A new name for a process's reply queue.
    pub fn new_reply_queue(&self) -> String {
        format!("{}.reply.{}", self.prefix, uuid::Uuid::new_v4().simple())
    }
    /// A new name for one server's exclusive fanout queue.
    pub fn new_fanout_queue(&self, topic: &str) -> String {
        format!(
            "{}.{topic}.fanout.{}",
            self.prefix,
            uuid::Uuid::new_v4().simple()
        )
    }
}

/// Where a call or cast goes: every server of a topic (they compete), or one
/// named server of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    topic: String,
    server: Option<String>,
}

impl Target {
    /// All servers of `topic`; one of them takes each message.
    pub fn topic(topic: impl Into<String>) -> RpcResult<Self> {
        let topic = topic.into();
        check_name(&topic)?;
        Ok(Self {
            topic,
            server: None,
        })
    }

    /// The one server `server` of `topic`.
    pub fn server(topic: impl Into<String>, server: impl Into<String>) -> RpcResult<Self> {
        let (topic, server) = (topic.into(), server.into());
        check_name(&topic)?;
        check_name(&server)?;
        Ok(Self {
            topic,
            server: Some(server),
        })
    }

    /// The topic.
    pub fn topic_name(&self) -> &str {
        &self.topic
    }

    /// The server, if the target is one server.
    pub fn server_name(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// The routing key on the topic exchange: `<topic>` or `<topic>.<server>`.
    pub fn routing_key(&self) -> String {
        match &self.server {
            Some(server) => format!("{}.{server}", self.topic),
            None => self.topic.clone(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.server {
            Some(server) => write!(f, "topic {:?} server {server:?}", self.topic),
            None => write!(f, "topic {:?}", self.topic),
        }
    }
}

/// Topic and server names become routing keys and queue names: no wildcards, no
/// whitespace, short enough for AMQP's 255-byte names.
fn check_name(name: &str) -> RpcResult<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 200 {
        Some("must be at most 200 bytes")
    } else if name
        .chars()
        .any(|c| c == '*' || c == '#' || c.is_whitespace() || c.is_control())
    {
        Some("must not contain '*', '#', whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RpcError::InvalidTarget {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let n = Names::new("scoria");
        let t = Target::topic("scheduler").expect("valid");
        let s = Target::server("volume", "node1@file").expect("valid");
        assert_eq!(n.queue(&t), "scoria.scheduler");
        assert_eq!(n.queue(&s), "scoria.volume.node1@file");
        assert_eq!(s.routing_key(), "volume.node1@file");
        assert_eq!(n.fanout_exchange("scheduler"), "scoria.scheduler.fanout");
        assert_eq!(n.reply_exchange(), "scoria.reply");
        assert_eq!(n.dead_letter_exchange(), "scoria.dlx");
        assert_eq!(n.dead_letter_queue(), "scoria.dead");
        assert_eq!(n.notifications_queue("info"), "scoria.notifications.info");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "a*b", "a#", "has space", &"x".repeat(201)] {
            assert!(Target::topic(bad).is_err(), "{bad:?} accepted");
        }
    }
}
