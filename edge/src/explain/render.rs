//! The human-readable form of an [`Explanation`].

use super::Explanation;
use std::fmt::Write;

pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let r = &e.request;
    let _ = writeln!(
        out,
        "{} {}://{}{} from {}{}",
        r.method,
        r.scheme,
        r.host,
        r.path,
        r.peer,
        if r.client == r.peer {
            String::new()
        } else {
            format!(" (client {})", r.client)
        }
    );
    let v = &e.verdict;
    let status = v.status.map(|s| format!("{s} ")).unwrap_or_default();
    let _ = write!(out, "=> {} {status}{}", v.action, v.reason);
    if let Some(location) = &v.location {
        let _ = write!(out, " -> {location}");
    }
    out.push('\n');
    if !e.live {
        out.push_str("   (from the config file: no live zone state, in-flight counts or health)\n");
    }
    if !e.client_protocols.is_empty() {
        let _ = writeln!(out, "   over: {}", e.client_protocols);
    }
    if !e.certificate.is_empty() {
        let _ = writeln!(out, "   certificate: {}", e.certificate);
    }
    match &e.route {
        Some(route) => {
            let _ = writeln!(
                out,
                "\nroute {} -> upstream {}",
                route.route, route.upstream
            );
            let _ = writeln!(out, "  why: {}", route.why);
        }
        None => out.push_str("\nroute: none\n"),
    }
    for beaten in &e.beaten {
        let _ = writeln!(out, "  beat {}: {}", beaten.route, beaten.why);
    }
    match &e.allow {
        Some(a) => {
            let _ = writeln!(
                out,
                "\nallow {}: {}",
                a.allow.join(", "),
                match &a.matched {
                    Some(net) => format!("admitted by {net}"),
                    None => format!("{} is not in it (403)", r.client),
                }
            );
        }
        None if e.route.is_some() => out.push_str("\nallow: every client (no allow list)\n"),
        None => {}
    }
    for z in &e.zones {
        zone(&mut out, z, e.live);
    }
    if let Some(b) = &e.balance {
        let _ = writeln!(
            out,
            "\nbalance {} ({}): {}",
            b.upstream,
            b.balance,
            b.pick.as_deref().unwrap_or("no usable server")
        );
        let _ = writeln!(out, "  why: {}", b.why);
        if !b.reached.is_empty() {
            let _ = writeln!(out, "  reached: {}", b.reached);
        }
        for s in &b.servers {
            let _ = writeln!(
                out,
                "  {} {} weight {} in flight {}",
                s.server, s.state, s.weight, s.in_flight
            );
        }
    }
    if let Some(t) = &e.timeouts {
        let _ = write!(out, "\ntimeouts: ");
        if let Some(body) = t.client_body {
            let _ = write!(
                out,
                "the client may pause its body {body}s (client_body_timeout), "
            );
        }
        let _ = writeln!(
            out,
            "the client must take the answer with no stall over {}s (send_timeout); \
             the server: connect {}s, read {}s, send {}s",
            t.client_send, t.upstream_connect, t.upstream_read, t.upstream_send
        );
    }
    if !e.upstream_headers.is_empty() {
        out.push_str("\nsent upstream:\n");
        for (name, value) in &e.upstream_headers {
            let _ = writeln!(out, "  {name}: {value}");
        }
    }
    let _ = writeln!(out, "\ncompressed: {}", e.compression.says);
    out
}

/// One zone of the route, and the client's standing in it.
fn zone(out: &mut String, z: &super::ZoneCheck, live: bool) {
    let mut line = format!("\nzone {}: {} burst {}", z.zone, z.rate, z.burst);
    if z.nodelay {
        line.push_str(" nodelay");
    }
    if z.dry_run {
        line.push_str(" dry_run");
    }
    let _ = write!(out, "{line} ({} store)", z.store);
    match &z.standing {
        Some(s) => {
            let _ = write!(
                out,
                "\n  standing: {:.2} requests over the rate; next: {}",
                s.excess, s.next
            );
            if s.delay_ms > 0 {
                let _ = write!(out, " after {} ms", s.delay_ms);
            }
            if s.retry_after_ms > 0 {
                let _ = write!(out, " (retry after {} ms)", s.retry_after_ms);
            }
        }
        None if live => {
            let why = z.unread.as_deref().unwrap_or("not read");
            let _ = write!(out, "\n  standing: unknown ({why})");
        }
        None => {}
    }
    out.push('\n');
}
