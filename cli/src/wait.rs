//! `--wait`: follows a resource until it settles, by polling (the API has no
//! watch stream yet). On a terminal an `indicatif` spinner shows the status and
//! the time so far, and each status change stays as a line; elsewhere each
//! change is one plain line on stderr. An error status ends it with the
//! resource's `error_message` (exit 1); so does `--timeout`.

use std::{
    future::Future,
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::CliError;

/// How often a resource is polled.
const POLL: Duration = Duration::from_millis(250);

/// Where a followed resource is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Still moving, in this status.
    Pending(String),
    /// Settled as wanted (its status, and what to return).
    Done(String, T),
    /// Settled in an error status: the status and why.
    Failed(String, String),
}

/// The progress shown while following `what`.
struct Progress {
    what: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last: Option<String>,
}

impl Progress {
    fn new(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
                bar.set_style(style);
            }
            // Something to show before the first answer (not a bare spinner).
            bar.set_message(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            what: what.to_owned(),
            bar,
            started: Instant::now(),
            last: None,
        }
    }

    /// Shows `status` if it changed.
    fn status(&mut self, status: &str) {
        if self.last.as_deref() == Some(status) {
            return;
        }
        self.last = Some(status.to_owned());
        let line = format!(
            "{}: {status} after {:.1}s",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(bar) => {
                bar.println(&line);
                bar.set_message(format!("{}: {status}", self.what));
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Polls `probe` until it says [`Step::Done`] (returns its value) or
/// [`Step::Failed`] (an error with the reason), or `timeout` passes.
pub async fn follow<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>, CliError>>,
{
    let mut progress = Progress::new(what);
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        match probe().await {
            Err(err) => break Err(err),
            Ok(Step::Done(status, value)) => {
                progress.status(&status);
                break Ok(value);
            }
            Ok(Step::Failed(status, why)) => {
                progress.status(&status);
                let why = if why.is_empty() {
                    "no reason given".to_owned()
                } else {
                    why
                };
                break Err(CliError::Failed(format!("{what} is {status}: {why}")));
            }
            Ok(Step::Pending(status)) => {
                progress.status(&status);
                if Instant::now() >= deadline {
                    break Err(CliError::Failed(format!(
                        "{what} is still {status} after {}s (--timeout): gave up waiting",
                        timeout.as_secs()
                    )));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    };
    progress.finish();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn follows_until_done_failed_or_timeout() {
        let mut steps = vec![
            Step::Pending("creating".into()),
            Step::Done("available".into(), 7),
        ]
        .into_iter();
        let got = follow("volume v", Duration::from_secs(5), || {
            let step = steps.next().unwrap_or(Step::Pending("?".into()));
            async move { Ok(step) }
        })
        .await;
        assert_eq!(got.expect("done"), 7);

        let failed: Result<u8, _> = follow("volume v", Duration::from_secs(5), || async {
            Ok(Step::Failed("error".into(), "no valid backend".into()))
        })
        .await;
        let err = failed.expect_err("failed");
        assert_eq!(err.to_string(), "volume v is error: no valid backend");

        let slow: Result<u8, _> = follow("volume v", Duration::ZERO, || async {
            Ok(Step::Pending("creating".into()))
        })
        .await;
        assert!(
            slow.expect_err("timeout")
                .to_string()
                .contains("still creating")
        );
    }
}
