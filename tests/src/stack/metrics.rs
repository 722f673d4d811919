//! The metrics listeners of a stack's processes, and scraping them: a stack
//! started with [`Stack::start_with_metrics`] gives each process its own
//! `SCORIA_METRICS_LISTEN` port, found in [`Stack::metrics_addr`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{DbKind, Stack};

impl Stack {
    /// [`Stack::start`], each process serving `/metrics`, `/healthz` and
    /// `/readyz` on a port of its own.
    pub async fn start_with_metrics(kind: DbKind) -> Self {
        Self::start_inner(
            kind,
            &[],
            str::to_owned,
            true,
            super::StackOptions::default(),
        )
        .await
    }

    /// [`Stack::start_with_metrics`] with extra environment for every process.
    pub async fn start_with_metrics_env(kind: DbKind, extra_env: &[(&str, &str)]) -> Self {
        Self::start_inner(
            kind,
            extra_env,
            str::to_owned,
            true,
            super::StackOptions::default(),
        )
        .await
    }

    /// The metrics listener of process `name` (`scoria-api` ...), if it has one.
    pub fn metrics_addr(&self, name: &str) -> Option<String> {
        self.metrics
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| addr.clone())
    }

    /// The environment of process `name`: the stack's, plus its own metrics
    /// port when the stack serves metrics (recorded for [`Stack::metrics_addr`]).
    pub(super) fn env_for(
        &mut self,
        name: &str,
        env: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut env = env.to_vec();
        if self.serve_metrics && !env.iter().any(|(k, _)| k == "SCORIA_METRICS_LISTEN") {
            let addr = format!("127.0.0.1:{}", super::free_port());
            env.push(("SCORIA_METRICS_LISTEN".into(), addr.clone()));
            self.metrics.push((name.to_owned(), addr));
        }
        env
    }
}

/// `GET path` on `addr` (HTTP/1.0, so the server closes when done): the status
/// code and the body. `None` if nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of the sample `name{labels}` in the exposition `text`, where
/// `labels` are some of its labels (`[("grpc_code", "OK")]`), summed over the
/// samples that match. `None` if no sample matches.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let matches = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if matches {
            let value: f64 = value.parse().ok()?;
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_some_labels() {
        let text = "# TYPE a counter\na_total{x=\"1\",y=\"2\"} 3\na_total{x=\"1\",y=\"3\"} 4\nb 7\n# EOF\n";
        assert_eq!(sample(text, "a_total", &[("x", "1")]), Some(7.0));
        assert_eq!(sample(text, "a_total", &[("y", "3")]), Some(4.0));
        assert_eq!(sample(text, "b", &[]), Some(7.0));
        assert_eq!(sample(text, "a_total", &[("x", "2")]), None);
    }
}
