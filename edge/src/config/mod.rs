//! Configuration: file (serde types) ▸ validate (every error, with file:line:col) ▸ model.
//!
//! The compiled runtime form lives in [`crate::snapshot`]; reloading in [`crate::reload`].

pub mod file;
pub mod model;
pub mod validate;

pub use model::*;
pub use validate::{validate, ConfigErrors, Diagnostic, Validated};

use std::path::Path;

/// The embedded local default: the bundled services on loopback, HTTP on a non-root port.
pub const LOCAL_DEFAULT: &str = include_str!("../../../config/local.toml");
/// The name the embedded default is reported under.
pub const LOCAL_DEFAULT_NAME: &str = "<embedded local.toml>";

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Validated, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => validate(&name, &text),
        Err(e) => Err(ConfigErrors {
            errors: vec![Diagnostic {
                file: name,
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        }),
    }
}
