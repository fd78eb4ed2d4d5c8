//! A worker thread's spare header maps: the request's and the answer's field maps of a
//! finished request, emptied, serve the next requests' heads on that thread. A map is two
//! allocations (its index table and its entries), made and freed for each of the two heads
//! of every request before.
//!
//! A map comes back only from the places that are done with it (an HTTP/1 session's
//! request, an answer written to an HTTP/1 client); any other map is simply dropped, and a
//! head finds a new one when none is spare.

use http::HeaderMap;
use std::cell::RefCell;

/// The most maps a thread keeps.
const KEPT: usize = 16;
/// A map that grew beyond this many fields (an unusually large head) is not kept: the
/// spares' memory stays small (about 2 KiB each at the usual capacity).
const LARGEST: usize = 64;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`: a spare one if the thread has one, else a new one.
pub fn header_map(fields: usize) -> HeaderMap {
    match MAPS.try_with(|maps| maps.borrow_mut().pop()).ok().flatten() {
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
    // (Dropped instead while the thread's locals are being torn down: a session can end
    // then.)
    let _ = MAPS.try_with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < KEPT {
            maps.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
