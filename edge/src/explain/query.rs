//! The question `edge explain` asks: a method, a URL, the client's address and headers; and
//! how it travels to the admin `/explain` as a query string.

use std::net::{IpAddr, Ipv4Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub method: String,
    /// `https://host/path?query`, `http://...`, or a bare `/path` (Host from the headers).
    pub url: String,
    /// The socket peer the request would come from.
    pub peer: IpAddr,
    pub headers: Vec<(String, String)>,
}

/// The URL taken apart.
pub(super) struct Target {
    pub scheme: String,
    pub host: String,
    /// Path and query.
    pub path: String,
}

impl Question {
    pub fn new(method: &str, url: &str) -> Question {
        Question {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            headers: Vec::new(),
        }
    }

    pub(super) fn target(&self) -> Result<Target, String> {
        let (scheme, rest) = match self.url.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => (scheme, rest),
            Some((scheme, _)) => {
                return Err(format!("`{scheme}://`: the edge serves http and https"))
            }
            None if self.url.starts_with('/') => {
                let host = self
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("host"))
                    .map_or("localhost", |(_, v)| v.as_str());
                return Ok(Target {
                    scheme: "http".into(),
                    host: host.to_string(),
                    path: self.url.clone(),
                });
            }
            None => {
                return Err(format!(
                    "`{}` is not a URL like https://host/path or a /path",
                    self.url
                ))
            }
        };
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if host.is_empty() {
            return Err(format!("`{}` has no host", self.url));
        }
        Ok(Target {
            scheme: scheme.to_string(),
            host: host.to_string(),
            path,
        })
    }

    /// `method=GET&url=...&client_ip=...&header=Name%3A+value...` for `/explain`.
    pub fn to_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("method", &self.method);
        query.append_pair("url", &self.url);
        query.append_pair("client_ip", &self.peer.to_string());
        for (name, value) in &self.headers {
            query.append_pair("header", &format!("{name}: {value}"));
        }
        query.finish()
    }

    /// The question `/explain?...` asks.
    pub fn from_query(query: &str) -> Result<Question, String> {
        let mut question = Question::new("GET", "");
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "method" => question.method = value.to_ascii_uppercase(),
                "url" => question.url = value.into_owned(),
                "client_ip" => {
                    question.peer = value
                        .parse()
                        .map_err(|_| format!("client_ip `{value}` is not an IP address"))?;
                }
                "header" => question.headers.push(parse_header(&value)?),
                other => {
                    return Err(format!(
                        "unknown parameter `{other}` (method, url, client_ip, header)"
                    ))
                }
            }
        }
        if question.url.is_empty() {
            return Err("url is missing: /explain?url=https://host/path".into());
        }
        Ok(question)
    }
}

/// `Name: value`, as curl's `-H`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not a header like 'Name: value'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_survives_the_query_string() {
        let mut q = Question::new("post", "https://edge.test/api/x?a=1&b=2");
        q.peer = "10.1.2.3".parse().expect("ip");
        q.headers
            .push(("X-Forwarded-For".into(), "1.2.3.4, 5.6.7.8".into()));
        q.headers
            .push(("Accept-Encoding".into(), "gzip;q=1, br".into()));
        let back = Question::from_query(&q.to_query()).expect("parses");
        assert_eq!(back, q);
        let t = back.target().expect("target");
        assert_eq!(
            (t.scheme.as_str(), t.host.as_str(), t.path.as_str()),
            ("https", "edge.test", "/api/x?a=1&b=2")
        );
        assert!(Question::from_query("url=/x&nope=1").is_err());
        assert!(Question::from_query("method=GET").is_err());
        assert!(Question::new("GET", "ftp://x/").target().is_err());
        assert_eq!(
            Question::new("GET", "http://h").target().expect("t").path,
            "/"
        );
        assert_eq!(
            parse_header("Host:  a.test ").expect("h"),
            ("Host".into(), "a.test".into())
        );
        assert!(parse_header("nocolon").is_err());
    }
}
