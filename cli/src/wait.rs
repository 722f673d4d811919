//! `--wait`: follows a resource until it settles, from its watch stream
//! (`Watch*`, [`watch`]), or by polling ([`follow`]) when the server has no
//! watch streams (UNIMPLEMENTED), when the resource is already gone at the
//! start, or when the stream breaks off (the API instance shut down, or dropped
//! the watcher). The output is the same either way. On a terminal an `indicatif` spinner shows the status and
//! the time so far, and each status change stays as a line; elsewhere each
//! change is one plain line on stderr. An error status ends it with the
//! resource's `error_message` (exit 1); so does `--timeout`.

use std::{
    future::Future,
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use tonic::{Code, Status, Streaming};

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
pub async fn follow<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>, CliError>>,
{
    let mut progress = Progress::new(what);
    let outcome = poll(&mut progress, Instant::now() + timeout, timeout, probe).await;
    progress.finish();
    outcome
}

/// Follows the stream `open` returns, each message turned into a step by
/// `classify`, until [`Step::Done`] or [`Step::Failed`] or `timeout`; polls
/// `probe` instead when the stream cannot serve (see the module's notes).
pub async fn watch<T, M, O, OFut, C, F, Fut>(
    what: &str,
    timeout: Duration,
    open: O,
    classify: C,
    probe: F,
) -> Result<T, CliError>
where
    O: FnOnce() -> OFut,
    OFut: Future<Output = Result<Streaming<M>, Status>>,
    C: Fn(M) -> Result<Step<T>, CliError>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>, CliError>>,
{
    let mut progress = Progress::new(what);
    let deadline = Instant::now() + timeout;
    let outcome = match tokio::time::timeout_at(deadline.into(), open()).await {
        Ok(Ok(mut stream)) => loop {
            let next = tokio::time::timeout_at(deadline.into(), stream.message()).await;
            let message = match next {
                Ok(Ok(Some(message))) => message,
                // Ended early or broke off (shutdown, too slow, connection lost).
                Ok(Ok(None)) | Ok(Err(_)) => {
                    break poll(&mut progress, deadline, timeout, probe).await;
                }
                Err(_) => break Err(gave_up(what, &progress, timeout)),
            };
            match classify(message) {
                Err(err) => break Err(err),
                Ok(step) => {
                    if let Some(outcome) = settle(&mut progress, what, step) {
                        break outcome;
                    }
                }
            }
        },
        Ok(Err(status)) if matches!(status.code(), Code::Unimplemented | Code::NotFound) => {
            // No watch streams here, or gone already: the probe says what that means.
            poll(&mut progress, deadline, timeout, probe).await
        }
        Ok(Err(status)) => Err(CliError::request(format!("watch {what}"))(status)),
        Err(_) => Err(gave_up(what, &progress, timeout)),
    };
    progress.finish();
    outcome
}

/// Polls `probe` (every [`POLL`]) until it settles or `deadline` passes.
async fn poll<T, F, Fut>(
    progress: &mut Progress,
    deadline: Instant,
    timeout: Duration,
    mut probe: F,
) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>, CliError>>,
{
    let what = progress.what.clone();
    loop {
        match probe().await {
            Err(err) => return Err(err),
            Ok(step) => {
                if let Some(outcome) = settle(progress, &what, step) {
                    return outcome;
                }
                if Instant::now() >= deadline {
                    return Err(gave_up(&what, progress, timeout));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Shows `step`; the outcome if it settled.
fn settle<T>(progress: &mut Progress, what: &str, step: Step<T>) -> Option<Result<T, CliError>> {
    match step {
        Step::Done(status, value) => {
            progress.status(&status);
            Some(Ok(value))
        }
        Step::Failed(status, why) => {
            progress.status(&status);
            let why = if why.is_empty() {
                "no reason given".to_owned()
            } else {
                why
            };
            Some(Err(CliError::Failed(format!("{what} is {status}: {why}"))))
        }
        Step::Pending(status) => {
            progress.status(&status);
            None
        }
    }
}

/// The error of `--timeout`.
fn gave_up(what: &str, progress: &Progress, timeout: Duration) -> CliError {
    let status = progress.last.as_deref().unwrap_or("unknown");
    CliError::Failed(format!(
        "{what} is still {status} after {}s (--timeout): gave up waiting",
        timeout.as_secs()
    ))
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

    #[tokio::test]
    async fn a_server_without_watch_streams_is_polled() {
        let mut steps = vec![
            Step::Pending("creating".into()),
            Step::Done("available".into(), 7),
        ]
        .into_iter();
        let got = watch(
            "volume v",
            Duration::from_secs(5),
            || async {
                Err::<Streaming<scoria_proto::v1::WatchVolumeResponse>, _>(Status::unimplemented(
                    "no watch",
                ))
            },
            |_| Ok(Step::Pending("never".into())),
            || {
                let step = steps.next().unwrap_or(Step::Pending("?".into()));
                async move { Ok(step) }
            },
        )
        .await;
        assert_eq!(got.expect("done by polling"), 7);

        let refused: Result<u8, _> = watch(
            "volume v",
            Duration::from_secs(5),
            || async {
                Err::<Streaming<scoria_proto::v1::WatchVolumeResponse>, _>(
                    Status::permission_denied("no"),
                )
            },
            |_| Ok(Step::Pending("never".into())),
            || async { Ok(Step::Done("available".into(), 1)) },
        )
        .await;
        assert!(
            refused.is_err(),
            "only UNIMPLEMENTED (or NOT_FOUND) falls back to polling"
        );
    }
}
