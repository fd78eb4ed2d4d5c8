//! A worker thread's spares: what a finished request is done with, emptied, serves the next
//! requests on that thread, in a list of bounded length per kind. Each comes back only from
//! the places that are done with it; anything else is simply dropped, and a request finds a
//! new one when none is spare.
//!
//! - **Read buffers**, which a connection's request hands back when it is done, for the next
//!   request that arrives on any connection of the thread: a waiting connection holds no
//!   buffer (its memory while idle), and a buffer made and freed per request was two
//!   allocations (the buffer, and its shared storage when the head was split off) and a fresh
//!   4 KiB for each request. A buffer comes back empty, and is used again only when nothing
//!   of its last request still holds a slice of it.
//! - **Header maps**: the request's and the answer's field maps (an HTTP/1 session's request,
//!   an answer written to an HTTP/1 client). A map is two allocations (its index table and
//!   its entries), made and freed for each of the two heads of every request before.
//! - **Out buffers**, one of each kind per thread: the buffer an HTTP/1 answer's head is
//!   written in, and a client connection's gathering buffer (what it writes is gathered and
//!   leaves in one write). Taken for a head or a gathering, given back once written out: no
//!   allocation per answer, and no buffer held by a connection that waits. One given up on
//!   (a send that failed) is dropped, and the next takes a new one.

use bytes::BytesMut;
use http::HeaderMap;
use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

/// The most read buffers a thread keeps (128 KiB of 4 KiB ones): the list must cover the
/// thread's requests in flight (with 8, 39% of requests under load made a new buffer).
const READ_BUFFERS_KEPT: usize = 32;
/// The most maps a thread keeps.
const KEPT: usize = 16;
/// A map that grew beyond this many fields (an unusually large head) is not kept: the
/// spares' memory stays small (about 2 KiB each at the usual capacity).
const LARGEST: usize = 64;
/// A head buffer that an unusually large head grew beyond this is not kept.
const HEAD_BUFFER_LARGEST: usize = 16 * 1024;

thread_local! {
    static READ_BUFFERS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static HEAD_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static GATHERING: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer with room for a read of `size`: a spare one if one is free again (nothing
/// holds a slice of it) and of that size (not one a large head grew), else a new one.
pub fn read_buffer(size: usize) -> BytesMut {
    if let Some(mut buf) = take(&READ_BUFFERS) {
        if buf.try_reclaim(size) && buf.capacity() == size {
            return buf;
        }
    }
    BytesMut::with_capacity(size)
}

/// Keeps `spent` (what is left of a request's read buffer: nothing) for a later request.
pub fn give_back_read_buffer(spent: BytesMut) {
    if spent.is_empty() {
        keep(&READ_BUFFERS, spent, READ_BUFFERS_KEPT);
    }
}

/// An empty map with room for `fields`: a spare one if the thread has one, else a new one.
pub fn header_map(fields: usize) -> HeaderMap {
    match take(&MAPS) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Empties `map` and keeps it for a later head on this thread (unless the thread keeps
/// enough, or the map is unusually large).
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    map.clear();
    keep(&MAPS, map, KEPT);
}

/// An empty buffer to write an answer's head in: the thread's spare one, or a new one.
pub fn head_buffer() -> Vec<u8> {
    take_slot(&HEAD_BUFFER)
}

/// Keeps a head's buffer for the thread's next head, unless an unusually large head grew it.
pub fn give_back_head_buffer(buf: Vec<u8>) {
    if buf.capacity() <= HEAD_BUFFER_LARGEST {
        keep_in_slot(&HEAD_BUFFER, buf);
    }
}

/// An empty gathering buffer of exactly `size` bytes: the thread's spare one, or a new one.
pub fn gathering_buffer(size: usize) -> Vec<u8> {
    let mut buf = take_slot(&GATHERING);
    buf.reserve_exact(size);
    buf
}

/// Keeps a gathering buffer written out for the thread's next connection that writes, if it
/// is of the usual `size`.
pub fn give_back_gathering_buffer(buf: Vec<u8>, size: usize) {
    if buf.capacity() == size {
        keep_in_slot(&GATHERING, buf);
    }
}

/// The buffer in this thread's one-buffer `slot`, emptied (an empty new one if none).
fn take_slot(slot: &'static LocalKey<Cell<Vec<u8>>>) -> Vec<u8> {
    let mut buf = slot.try_with(Cell::take).unwrap_or_default();
    buf.clear();
    buf
}

/// Puts `buf` in this thread's `slot` (not while the thread's locals are being torn down).
fn keep_in_slot(slot: &'static LocalKey<Cell<Vec<u8>>>, buf: Vec<u8>) {
    let _ = slot.try_with(|spare| spare.set(buf));
}

fn take<T: 'static>(list: &'static LocalKey<RefCell<Vec<T>>>) -> Option<T> {
    list.try_with(|list| list.borrow_mut().pop()).ok().flatten()
}

/// Puts `spare` on this thread's `list` unless it holds `most` already (or the thread's
/// locals are being torn down: a request can end then).
fn keep<T: 'static>(list: &'static LocalKey<RefCell<Vec<T>>>, spare: T, most: usize) {
    let _ = list.try_with(|list| {
        let mut list = list.borrow_mut();
        if list.len() < most {
            list.push(spare);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of a read buffer (the connection's first read's).
    const SIZE: usize = 4096;

    /// A request's buffer comes back for a later request once nothing holds a slice of it;
    /// one that is still sliced, or that a large head grew, is not used again; a worker keeps
    /// a bounded number.
    #[test]
    fn read_buffers_are_used_again_only_when_free_and_of_the_usual_size() {
        let request = |buf: &mut bytes::BytesMut| {
            buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            buf.split_to(buf.len()).freeze()
        };
        // Spent and free: the same storage again, whole.
        let mut buf = read_buffer(SIZE);
        let at = buf.as_ptr();
        drop(request(&mut buf));
        give_back_read_buffer(buf);
        let again = read_buffer(SIZE);
        assert_eq!(again.as_ptr(), at, "the same buffer");
        assert!(again.is_empty() && again.capacity() == SIZE);

        // Still sliced (a head whose fields live on): a new buffer, and the slice intact.
        let mut buf = again;
        let head = request(&mut buf);
        give_back_read_buffer(buf);
        let mut other = read_buffer(SIZE);
        assert_ne!(other.as_ptr(), at);
        other.extend_from_slice(&[b'x'; SIZE]);
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");

        // Grown by a large head: not kept for reuse.
        let mut big = read_buffer(SIZE);
        big.extend_from_slice(&[b'h'; 3 * SIZE]);
        drop(big.split_to(big.len()));
        give_back_read_buffer(big);
        assert_eq!(read_buffer(SIZE).capacity(), SIZE);

        // Bounded.
        for _ in 0..100 {
            give_back_read_buffer(bytes::BytesMut::with_capacity(SIZE));
        }
        assert!(READ_BUFFERS.with_borrow(Vec::len) <= 32);
    }

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = header_map(8);
        map.insert("a", "1".parse().expect("value"));
        map.append("a", "2".parse().expect("value"));
        map.insert("b", "3".parse().expect("value"));
        let room = map.capacity();
        give_back(map);
        let again = header_map(4);
        assert!(again.is_empty(), "{again:?}");
        assert!(again.get("a").is_none());
        assert_eq!(again.capacity(), room, "the same map, its room kept");
        // No spare left: a new one.
        assert_eq!(
            header_map(4).capacity(),
            HeaderMap::<http::HeaderValue>::with_capacity(4).capacity()
        );
    }

    #[test]
    fn a_thread_keeps_few_maps_and_no_large_one() {
        let mut large = HeaderMap::with_capacity(LARGEST * 4);
        large.insert("a", "1".parse().expect("value"));
        give_back(large);
        assert_eq!(MAPS.with_borrow(Vec::len), 0);
        for _ in 0..KEPT * 2 {
            give_back(HeaderMap::with_capacity(8));
        }
        assert_eq!(MAPS.with_borrow(Vec::len), KEPT);
        MAPS.with_borrow_mut(Vec::clear);
    }

    /// A head's buffer and a gathering buffer come back empty, the same storage; one grown
    /// beyond its kind's bound (a large head, a gathering of another size) is not kept.
    #[test]
    fn out_buffers_come_back_empty_and_only_of_their_usual_size() {
        let mut head = head_buffer();
        head.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let at = head.as_ptr();
        give_back_head_buffer(head);
        let again = head_buffer();
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        give_back_head_buffer(Vec::with_capacity(HEAD_BUFFER_LARGEST + 1));
        assert_eq!(head_buffer().capacity(), 0, "a large one is not kept");

        let mut out = gathering_buffer(SIZE);
        assert_eq!(out.capacity(), SIZE);
        out.extend_from_slice(b"an answer");
        let at = out.as_ptr();
        give_back_gathering_buffer(out, SIZE);
        // Had the buffer been freed, this would take its storage.
        let decoy = Vec::<u8>::with_capacity(SIZE);
        let again = gathering_buffer(SIZE);
        assert_ne!(decoy.as_ptr(), at);
        assert_eq!(
            (again.as_ptr(), again.len(), again.capacity()),
            (at, 0, SIZE)
        );
        give_back_gathering_buffer(Vec::with_capacity(SIZE * 2), SIZE);
        assert_eq!(
            GATHERING.with(Cell::take).capacity(),
            0,
            "another size is not kept"
        );
    }
}
