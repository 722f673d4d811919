//! The Scoria API as the plugin reaches it: the CLI's [`Settings`], connected
//! on first use (the plugin starts, and Probe says "not ready", while the API
//! is still down), then one shared channel that reconnects by itself.

use scoria_cli::connect::{Api, Settings};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// A handle on the Scoria API (cheap to share behind an `Arc`).
#[derive(Debug)]
pub struct Scoria {
    settings: Settings,
    api: OnceCell<Api>,
}

impl Scoria {
    /// The API `settings` name; nothing is connected yet.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            api: OnceCell::new(),
        }
    }

    /// The API's URL.
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// The connected clients, connecting first if need be: UNAVAILABLE while
    /// the API cannot be reached.
    pub async fn api(&self) -> Result<&Api> {
        self.api
            .get_or_try_init(|| async {
                self.settings
                    .connect()
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))
            })
            .await
    }
}
