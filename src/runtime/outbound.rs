//! Outbound HTTP (`wasi:http/outgoing-handler`): denied unless the version's
//! metadata grants it.
//!
//! ```json
//! {"allowed_outbound_hosts": ["https://api.example.com", "https://*.internal.example:8443", "http://10.0.0.7:8080"]}
//! ```
//!
//! Each entry is `scheme://host[:port]`:
//! - scheme: `http`, `https`, or `*` for both;
//! - host: an exact name or IP address (case-insensitive), or `*.suffix`, which
//!   matches any name ending in `.suffix` (not `suffix` itself);
//! - port: a number, `*` for any, or left out for the scheme's default (80,
//!   443; both for `*://`).
//!
//! A request to anything else fails inside the guest with wasi:http's
//! `HTTP-request-denied` error, and is logged and counted. The check is on
//! the request's scheme, host and port as the guest gave them; names are
//! resolved by the host's resolver after the check.

use std::fmt;

/// The hosts a version may call. Empty: none (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    rules: Vec<OutboundRule>,
}

impl OutboundPolicy {
    /// Parses every entry; the first bad one fails the whole list.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|entry| OutboundRule::parse(entry.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(OutboundPolicy { rules })
    }

    /// Whether a request to `scheme://host:port` is granted.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = port.or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        }) else {
            return false;
        };
        let host = normalise_host(host);
        self.rules
            .iter()
            .any(|rule| rule.matches(&scheme, &host, port))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// One `scheme://host[:port]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OutboundRule {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeRule {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    /// `*.suffix`: stored as `.suffix`.
    Subdomains(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// The scheme's default port.
    Default,
    Exact(u16),
    Any,
}

impl OutboundRule {
    fn parse(entry: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "allowed_outbound_hosts entry {entry:?} {why} (expected scheme://host[:port], \
                 e.g. \"https://api.example.com\" or \"https://*.example.com:8443\")"
            )
        };
        let (scheme, rest) = entry
            .split_once("://")
            .ok_or_else(|| bad("has no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => SchemeRule::Http,
            "https" => SchemeRule::Https,
            "*" => SchemeRule::Any,
            _ => return Err(bad("has a scheme other than http, https or *")),
        };
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(bad("must be a scheme, a host and a port only"));
        }
        // An IPv6 literal keeps its brackets: [::1]:8080.
        let (host, port) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains(']') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        let port = match port {
            None => PortRule::Default,
            Some("*") => PortRule::Any,
            Some(number) => PortRule::Exact(
                number
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("has a bad port"))?,
            ),
        };
        let host = normalise_host(host);
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            check_name(suffix).map_err(bad)?;
            HostRule::Subdomains(format!(".{suffix}"))
        } else if host.contains('*') {
            return Err(bad(
                "has a wildcard other than a leading `*.` (a bare `*` host is not accepted: name the hosts)",
            ));
        } else if host.starts_with('[') {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("has a bad IPv6 address"))?;
            HostRule::Exact(host)
        } else {
            check_name(&host).map_err(bad)?;
            HostRule::Exact(host)
        };
        Ok(OutboundRule { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match self.scheme {
            SchemeRule::Http => scheme == "http",
            SchemeRule::Https => scheme == "https",
            SchemeRule::Any => scheme == "http" || scheme == "https",
        };
        let port_ok = match self.port {
            PortRule::Any => true,
            PortRule::Exact(p) => p == port,
            PortRule::Default => {
                (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
            }
        };
        let host_ok = match &self.host {
            HostRule::Exact(name) => name == host,
            HostRule::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        };
        scheme_ok && port_ok && host_ok
    }
}

impl fmt::Display for OutboundPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str("none");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let scheme = match rule.scheme {
                SchemeRule::Http => "http",
                SchemeRule::Https => "https",
                SchemeRule::Any => "*",
            };
            let host = match &rule.host {
                HostRule::Exact(h) => h.clone(),
                HostRule::Subdomains(s) => format!("*{s}"),
            };
            match rule.port {
                PortRule::Default => write!(f, "{scheme}://{host}")?,
                PortRule::Exact(p) => write!(f, "{scheme}://{host}:{p}")?,
                PortRule::Any => write!(f, "{scheme}://{host}:*")?,
            }
        }
        Ok(())
    }
}

/// Lowercase, without a trailing dot (`Example.COM.` is `example.com`).
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name or an IPv4 address: letters, digits, `-` and `.`, no empty label.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("has an empty or overlong host");
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if labels_ok {
        Ok(())
    } else {
        Err("has a host that is not a DNS name or IP address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::parse(entries).unwrap()
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let none = OutboundPolicy::default();
        assert!(!none.allows("https", "example.com", None));
        assert!(!none.allows("http", "127.0.0.1", Some(8080)));
    }

    #[test]
    fn exact_hosts_match_scheme_host_and_default_port() {
        let p = policy(&["https://api.example.com"]);
        assert!(p.allows("https", "api.example.com", None));
        assert!(p.allows("HTTPS", "API.Example.com.", Some(443)));
        assert!(!p.allows("http", "api.example.com", None), "scheme");
        assert!(!p.allows("https", "api.example.com", Some(8443)), "port");
        assert!(!p.allows("https", "x.api.example.com", None), "subdomain");
        assert!(!p.allows("https", "api.example.com.evil.test", None));
    }

    #[test]
    fn suffix_wildcards_match_subdomains_only() {
        let p = policy(&["*://*.internal.test:*"]);
        assert!(p.allows("http", "a.internal.test", Some(9000)));
        assert!(p.allows("https", "a.b.internal.test", None));
        assert!(!p.allows("https", "internal.test", None));
        assert!(!p.allows("https", "evilinternal.test", None));
        assert!(!p.allows("ftp", "a.internal.test", Some(21)));
    }

    #[test]
    fn ports_and_addresses() {
        let p = policy(&["http://127.0.0.1:8080", "https://[::1]:8443"]);
        assert!(p.allows("http", "127.0.0.1", Some(8080)));
        assert!(!p.allows("http", "127.0.0.1", Some(8081)));
        assert!(!p.allows("http", "127.0.0.1", None));
        assert!(p.allows("https", "[::1]", Some(8443)));
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_named() {
        for bad in [
            "api.example.com",
            "ftp://x.test",
            "https://*",
            "https://a.*.test",
            "https://x.test/path",
            "https://user@x.test",
            "https://x.test:0",
            "https://x.test:99999",
            "https://",
            "https://bad host",
            "https://[nope]:1",
        ] {
            let error = OutboundPolicy::parse(&[bad]).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn display_lists_the_rules() {
        let p = policy(&["https://a.test", "*://*.b.test:*", "http://c.test:81"]);
        assert_eq!(
            p.to_string(),
            "https://a.test, *://*.b.test:*, http://c.test:81"
        );
        assert_eq!(OutboundPolicy::default().to_string(), "none");
    }
}
