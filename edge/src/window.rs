//! Sending on an HTTP/2 stream as the peer's flow-control window allows, for the edge's
//! answers to clients and its requests to servers alike: each wait for window is bounded, so
//! a peer that never opens its window costs one stream for that long, not the edge. A leaf:
//! it imports nothing of the edge.

use bytes::Bytes;
use h2::SendStream;
use std::task::Poll;
use std::time::Duration;

/// Why a send did not go through.
#[derive(Debug)]
pub enum Stalled {
    /// No window within the timeout, or the caller's `give_up` said the stream is lost.
    TimedOut,
    /// The stream closed under the send.
    Closed,
    /// h2's error on the stream or its connection.
    H2(h2::Error),
}

/// Sends `data` on `stream` (`end`: the last of the body) as the peer's window lets it, each
/// wait for window at most `timeout`; `give_up` is asked before each wait (the connection's
/// own clock may have run out under the stream while h2 still grants window). Each byte handed
/// to the stream is added to `sent` as it goes (a send cut short still counts what went).
pub async fn send(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    timeout: Duration,
    give_up: impl Fn() -> bool,
    sent: &mut usize,
) -> Result<(), Stalled> {
    if data.is_empty() {
        return stream.send_data(data, end).map_err(Stalled::H2);
    }
    while !data.is_empty() {
        if give_up() {
            return Err(Stalled::TimedOut);
        }
        stream.reserve_capacity(data.len());
        let granted = pingora::prelude::fast_timeout::fast_timeout(
            timeout,
            // Capacity can be granted and taken back (a SETTINGS that shrinks the window):
            // none granted is polled again, which waits for more.
            std::future::poll_fn(|cx| loop {
                match stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => continue,
                    other => return other,
                }
            }),
        )
        .await;
        let n = match granted {
            Ok(Some(Ok(n))) => n,
            Ok(Some(Err(e))) => return Err(Stalled::H2(e)),
            Ok(None) => return Err(Stalled::Closed),
            Err(_) => return Err(Stalled::TimedOut),
        };
        let chunk = data.split_to(n.min(data.len()));
        let len = chunk.len();
        stream
            .send_data(chunk, end && data.is_empty())
            .map_err(Stalled::H2)?;
        *sent += len;
    }
    Ok(())
}
