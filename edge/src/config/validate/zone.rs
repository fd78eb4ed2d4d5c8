//! `[zones.NAME]`: rate-limit zones.

use super::Validator;
use crate::config::file::*;
use crate::config::model::*;
use crate::units::parse_rate;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn zone(&mut self, name: &str, z: &Spanned<ZoneFile>) -> Option<ZoneSettings> {
        self.check_name(name, z.span(), "zone");
        let f = z.get_ref();
        let rate = match &f.rate {
            Some(r) => match parse_rate(r.get_ref()) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    self.error(r.span(), e.to_string());
                    None
                }
            },
            None => {
                self.error(
                    z.span(),
                    format!("zone `{}` needs a `rate`, like \"10r/s\"", name),
                );
                None
            }
        };
        let max_clients = self.int_or(
            &f.max_clients,
            DEFAULT_ZONE_MAX_CLIENTS as u32,
            1,
            100_000_000,
            "max_clients",
        ) as usize;
        let store = self.choice(
            "store",
            &f.store,
            &[("local", ZoneStore::Local), ("redis", ZoneStore::Redis)],
        );
        Some(ZoneSettings {
            rate: rate?,
            max_clients,
            store,
        })
    }
}
