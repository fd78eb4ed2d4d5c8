//! The tunnel after an upgrade (websocket, on routes with `websocket = true`): once the server
//! answered 101 Switching Protocols ([`crate::forward`] sent the handshake and relayed the
//! answer, as for any request), bytes go both ways between the client's connection and the
//! server's until either side closes, or one direction has been silent for the upstream's
//! `read_timeout` (each direction on its own clock: traffic one way does not keep a side that
//! went silent open). Writes toward the client run under the connection's send clock
//! (`send_timeout`); writes toward the server under `read_timeout` too.

use pingora::protocols::{Shutdown, Stream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much one read of either side takes.
const PIECE: usize = 16 * 1024;

/// Relays between `client` and `upstream` until either closes or goes quiet for `idle`.
pub async fn relay(client: &mut Stream, upstream: &mut Stream, idle: Duration) {
    let mut from_client = vec![0u8; PIECE];
    let mut from_upstream = vec![0u8; PIECE];
    let mut client_quiet_by = tokio::time::Instant::now() + idle;
    let mut upstream_quiet_by = client_quiet_by;
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let Ok(n @ 1..) = read else { break };
                client_quiet_by = tokio::time::Instant::now() + idle;
                let sent = tokio::time::timeout(idle, async {
                    upstream.write_all(&from_client[..n]).await?;
                    upstream.flush().await
                });
                if !matches!(sent.await, Ok(Ok(()))) {
                    break;
                }
            }
            read = upstream.read(&mut from_upstream) => {
                let Ok(n @ 1..) = read else { break };
                upstream_quiet_by = tokio::time::Instant::now() + idle;
                let sent = async {
                    client.write_all(&from_upstream[..n]).await?;
                    client.flush().await
                };
                if sent.await.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep_until(client_quiet_by.min(upstream_quiet_by)) => {
                tracing::debug!("tunnel idle for read_timeout one way; closing");
                break;
            }
        }
    }
    let closing = async {
        Shutdown::shutdown(&mut **upstream).await;
        Shutdown::shutdown(&mut **client).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
}
