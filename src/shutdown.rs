//! Stopping: one [`CancellationToken`] is handed to every long-running part
//! (the consumer thread checks it between polls, async tasks await it), and
//! SIGTERM or Ctrl-C cancels it.
//!
//! Children of the token stop with it; a part that must stop on its own (the
//! demo's pipeline after its report, a rebuild's consumer) takes a child
//! token, so cancelling the part never stops its parent.

use tracing::info;

pub use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A token that SIGTERM or Ctrl-C cancels, logging `message` (if any) when
/// it does. Must be called inside a tokio runtime.
pub fn on_signal(message: Option<&'static str>) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signalled().await;
        if let Some(message) = message {
            info!("{message}");
        }
        cancel.cancel();
    });
    token
}
