//! The remote-control (pidbox) server: placeholder that only keeps the worker's mailbox
//! declared; commands are served by the control module.

use super::Inner;
use std::sync::Arc;

/// A running pidbox server.
#[derive(Debug)]
pub struct Pidbox {
    task: tokio::task::JoinHandle<()>,
}

/// Start serving control commands.
pub async fn start(_inner: Arc<Inner>) -> std::io::Result<Pidbox> {
    Ok(Pidbox {
        task: tokio::spawn(async {}),
    })
}

impl Pidbox {
    /// Stop serving and remove the mailbox binding.
    pub async fn stop(self) {
        self.task.abort();
    }
}
