//! The little DER that OCSP needs (and `edge check` of an OCSP response file): reading
//! tag-length-value items in order, and writing nested ones.

/// One DER item.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub tag: u8,
    /// The contents.
    pub value: &'a [u8],
    /// The whole encoding (tag, length, contents), e.g. what a signature covers.
    pub raw: &'a [u8],
}

pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const ENUMERATED: u8 = 0x0a;
pub const GENERALIZED_TIME: u8 = 0x18;
pub const SEQUENCE: u8 = 0x30;

/// Context-specific tag `n`, constructed (`[n] EXPLICIT` or a constructed IMPLICIT).
pub const fn context(n: u8) -> u8 {
    0xa0 | n
}

/// Context-specific tag `n`, primitive (an IMPLICIT primitive, like `good [0] IMPLICIT NULL`).
pub const fn context_primitive(n: u8) -> u8 {
    0x80 | n
}

/// Reads the items of a sequence's contents one after the other.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed DER: {0}")]
pub struct Malformed(pub &'static str);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next item, whatever its tag.
    pub fn any(&mut self) -> Result<Item<'a>, Malformed> {
        let bytes = self.rest;
        let (&tag, after_tag) = bytes.split_first().ok_or(Malformed("truncated"))?;
        if tag & 0x1f == 0x1f {
            return Err(Malformed("high tag numbers are not used here"));
        }
        let (&first, mut after) = after_tag.split_first().ok_or(Malformed("truncated"))?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 || after.len() < count {
                return Err(Malformed("bad length"));
            }
            let len = after[..count]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize);
            after = &after[count..];
            len
        };
        if after.len() < len {
            return Err(Malformed("truncated"));
        }
        let header = bytes.len() - after.len();
        let item = Item {
            tag,
            value: &after[..len],
            raw: &bytes[..header + len],
        };
        self.rest = &after[len..];
        Ok(item)
    }

    /// The next item, which must have `tag`.
    pub fn expect(&mut self, tag: u8, what: &'static str) -> Result<Item<'a>, Malformed> {
        let item = self.any()?;
        if item.tag == tag {
            Ok(item)
        } else {
            Err(Malformed(what))
        }
    }

    /// The next item if it has `tag`; nothing is consumed otherwise.
    pub fn optional(&mut self, tag: u8) -> Result<Option<Item<'a>>, Malformed> {
        if self.rest.first() == Some(&tag) {
            self.any().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The encoding of one item with `tag` around `value`.
pub fn write(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// A `GeneralizedTime` ("YYYYMMDDHHMMSS[.fff]Z") as seconds since the Unix epoch.
pub fn generalized_time(item: &Item<'_>) -> Result<i64, Malformed> {
    let text = std::str::from_utf8(item.value).map_err(|_| Malformed("time"))?;
    let digits = text.as_bytes();
    if digits.len() < 15 || !text.ends_with('Z') || !digits[..14].iter().all(u8::is_ascii_digit) {
        return Err(Malformed("time"));
    }
    let n = |from: usize, to: usize| text[from..to].parse::<i64>().map_err(|_| Malformed("time"));
    let (year, month, day) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hour, minute, second) = (n(8, 10)?, n(10, 12)?, n(12, 14)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(Malformed("time"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Whether `bytes` is a DER OCSPResponse whose status is `successful` (RFC 6960 4.2.1).
pub fn is_successful_ocsp_response(bytes: &[u8]) -> Result<(), Malformed> {
    let outer = Reader::new(bytes).expect(SEQUENCE, "not a DER OCSPResponse")?;
    let status = Reader::new(outer.value).expect(ENUMERATED, "no responseStatus")?;
    if status.value == [0] {
        Ok(())
    } else {
        Err(Malformed("its responseStatus is not successful"))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_read_in_order_with_short_and_long_lengths() {
        let long = vec![0xab; 300];
        let mut bytes = write(INTEGER, &[1]);
        bytes.extend(write(OCTET_STRING, &long));
        let seq = write(SEQUENCE, &bytes);
        let mut outer = Reader::new(&seq);
        let item = outer.expect(SEQUENCE, "seq").expect("sequence");
        assert_eq!(item.raw, &seq[..]);
        let mut inner = Reader::new(item.value);
        assert_eq!(inner.expect(INTEGER, "int").expect("int").value, [1]);
        assert_eq!(inner.optional(NULL).expect("ok").map(|i| i.tag), None);
        assert_eq!(
            inner
                .expect(OCTET_STRING, "octets")
                .expect("octets")
                .value
                .len(),
            300
        );
        assert!(inner.is_empty());
        assert!(Reader::new(&[0x30, 0x05, 0x01]).any().is_err(), "truncated");
        assert!(
            Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).any().is_err(),
            "too long a length"
        );
    }

    #[test]
    fn generalized_times_are_unix_seconds() {
        let t = |s: &str| {
            generalized_time(&Item {
                tag: GENERALIZED_TIME,
                value: s.as_bytes(),
                raw: &[],
            })
        };
        assert_eq!(t("19700101000000Z"), Ok(0));
        assert_eq!(t("20261202063000Z"), Ok(1_796_193_000));
        assert_eq!(t("20240229235959Z"), Ok(1_709_251_199));
        assert!(t("2026120206300Z").is_err());
        assert!(t("20261302063000Z").is_err());
    }
}
