//! How the edge's configuration writes its values, and what of an OpenSSL cipher list it can
//! honour: the words the gateway (`edge`) reads its config in and the nginx import
//! (`edge-nginx`) writes one in. A leaf: it depends on nothing of either.
//!
//! Layers:
//!
//! ```text
//! ciphers, units     each a leaf
//! ```

pub mod ciphers;
pub mod units;
