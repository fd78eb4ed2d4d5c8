//! Signal handlers outside Pingora's own (which handles SIGTERM, SIGINT and SIGQUIT).

use tokio::signal::unix::{signal, SignalKind};

/// Runs `action` on a thread of its own each time `kind` arrives. The handler is installed
/// before this returns, so the signal's default action (for SIGHUP and SIGUSR1: ending the
/// process) is never in force once the caller goes on.
pub fn on_signal(
    kind: SignalKind,
    name: &str,
    mut action: impl FnMut() + Send + 'static,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stream = {
        let _context = runtime.enter();
        signal(kind)?
    };
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            runtime.block_on(async move {
                while stream.recv().await.is_some() {
                    action();
                }
            })
        })?;
    Ok(())
}
