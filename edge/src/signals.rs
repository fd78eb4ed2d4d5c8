//! Signal handlers outside Pingora's own (which handles SIGTERM, SIGINT and SIGQUIT): one
//! thread with a small runtime of its own waits for all of them.

use crate::held;
use std::sync::Mutex;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};

/// Runs `action` on the signal thread each time `kind` arrives. The handler is installed
/// before this returns, so the signal's default action (for SIGHUP and SIGUSR1: ending the
/// process) is never in force once the caller goes on.
pub fn on_signal(
    kind: SignalKind,
    mut action: impl FnMut() + Send + 'static,
) -> std::io::Result<()> {
    let runtime = signal_thread()?;
    let mut arrivals = {
        let _context = runtime.enter();
        signal(kind)?
    };
    runtime.spawn(async move {
        while arrivals.recv().await.is_some() {
            action();
        }
    });
    Ok(())
}

/// The signal thread's runtime, started by the first handler.
fn signal_thread() -> std::io::Result<Handle> {
    static HANDLE: Mutex<Option<Handle>> = Mutex::new(None);
    let mut handle = held::lock(&HANDLE);
    if let Some(running) = &*handle {
        return Ok(running.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = runtime.handle().clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    *handle = Some(started.clone());
    Ok(started)
}
