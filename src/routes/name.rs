//! `RouteName` and prefix matching: which route serves a request.
//!
//! A route is an optional host plus a path prefix: `/api` or
//! `shop.example.com/api`. A request is served by the most specific route:
//! any route for its exact host beats every any-host route, then the longest
//! prefix wins, matching only on path-segment boundaries (`/probe` serves
//! `/probe` and `/probe/a`, never `/probeX`).

use std::fmt;

/// Path prefix reserved for wasmgate itself; no route may be deployed there.
pub const RESERVED_PREFIX: &str = "/_wasmgate";

/// Deepest path prefix a route may have (and that a lookup considers), so one
/// lookup stays one bounded round trip.
pub const MAX_SEGMENTS: usize = 32;

/// A validated route: lowercase host (optional) and normalised path prefix.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteName {
    host: Option<String>,
    prefix: String,
}

/// Why a string is not a route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid route: {reason} (examples: `/api`, `shop.example.com/api`)")]
pub struct RouteParseError {
    input: String,
    reason: String,
}

impl RouteName {
    /// Parses `/path` or `host/path` (or a bare `host`, meaning `host/`).
    /// Trailing slashes are dropped; the host is lowercased. Fails on empty
    /// or `.`/`..` segments, characters outside a URL path, a port, or the
    /// reserved `/_wasmgate` prefix.
    pub fn parse(input: &str) -> Result<Self, RouteParseError> {
        let fail = |reason: &str| RouteParseError {
            input: input.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let (host, path) = match input.find('/') {
            Some(0) => (None, input),
            Some(i) => (Some(&input[..i]), &input[i..]),
            None if input.is_empty() => return Err(fail("it is empty")),
            None => (Some(input), "/"),
        };
        let host = match host {
            Some(h) => {
                if h.contains(':') {
                    return Err(fail(
                        "a route host has no port (routes match on the host name alone)",
                    ));
                }
                let valid = h.len() <= 253
                    && h.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(fail("the host is not a DNS name"));
                }
                Some(h.to_ascii_lowercase())
            }
            None => None,
        };
        let trimmed = path.trim_end_matches('/');
        let mut prefix = String::with_capacity(path.len());
        let mut depth = 0;
        for segment in trimmed.split('/').skip(1) {
            if segment.is_empty() {
                return Err(fail("it has an empty path segment (`//`)"));
            }
            if segment == "." || segment == ".." {
                return Err(fail("it has a `.` or `..` segment"));
            }
            if !segment.bytes().all(is_path_byte) {
                return Err(fail(
                    "the path has a character that is not allowed in a URL path",
                ));
            }
            depth += 1;
            prefix.push('/');
            prefix.push_str(segment);
        }
        if depth > MAX_SEGMENTS {
            return Err(fail(&format!(
                "the path is deeper than {MAX_SEGMENTS} segments"
            )));
        }
        if prefix.is_empty() {
            prefix.push('/');
        }
        if prefix == RESERVED_PREFIX || prefix.starts_with(&format!("{RESERVED_PREFIX}/")) {
            return Err(fail("`/_wasmgate` is reserved for wasmgate itself"));
        }
        Ok(RouteName { host, prefix })
    }

    /// The host this route is bound to, if any.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The path prefix, always starting with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn is_path_byte(b: u8) -> bool {
    // RFC 3986 pchar, minus what we never want in a route key.
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b)
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(host) if self.prefix == "/" => write!(f, "{host}/"),
            Some(host) => write!(f, "{host}{}", self.prefix),
            None => f.write_str(&self.prefix),
        }
    }
}

impl fmt::Debug for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RouteName({self})")
    }
}

impl std::str::FromStr for RouteName {
    type Err = RouteParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RouteName::parse(s)
    }
}

/// Every route that could serve a request for `host` + `path`, most specific
/// first: the exact host's prefixes longest first, then the any-host ones.
/// A request is served by the first of these that exists.
pub fn candidates(host: Option<&str>, path: &str) -> Vec<RouteName> {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .take(MAX_SEGMENTS)
        .collect();
    let mut prefixes = Vec::with_capacity(segments.len() + 1);
    for depth in (0..=segments.len()).rev() {
        if depth == 0 {
            prefixes.push("/".to_string());
        } else {
            prefixes.push(format!("/{}", segments[..depth].join("/")));
        }
    }
    let host = host.map(normalise_host).filter(|h| !h.is_empty());
    let mut out = Vec::with_capacity(prefixes.len() * 2);
    if let Some(host) = host {
        out.extend(prefixes.iter().map(|prefix| RouteName {
            host: Some(host.clone()),
            prefix: prefix.clone(),
        }));
    }
    out.extend(
        prefixes
            .into_iter()
            .map(|prefix| RouteName { host: None, prefix }),
    );
    out
}

/// The host a request names, lowercased, without a port, and without the
/// trailing dot of a fully qualified name (`example.com.` is
/// `example.com`).
pub fn normalise_host(host: &str) -> String {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a port after them.
        host.split_once(']')
            .map(|(h, _)| format!("{h}]"))
            .unwrap_or_default()
    } else {
        let name = host.split(':').next().unwrap_or_default();
        name.trim_end_matches('.').to_string()
    };
    host.to_ascii_lowercase()
}

/// Picks the most specific of `found` for the request, by the order of
/// [`candidates`].
pub fn most_specific<'a, T>(
    candidates: &[RouteName],
    found: impl IntoIterator<Item = (&'a RouteName, T)>,
) -> Option<T> {
    found
        .into_iter()
        .filter_map(|(name, value)| {
            candidates
                .iter()
                .position(|c| c == name)
                .map(|rank| (rank, value))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RouteName {
        RouteName::parse(s).unwrap()
    }

    fn pick<'a>(routes: &'a [&'a str], host: Option<&str>, path: &str) -> Option<&'a str> {
        let names: Vec<RouteName> = routes.iter().map(|s| r(s)).collect();
        let cands = candidates(host, path);
        most_specific(&cands, names.iter().zip(routes.iter().copied()))
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(r("/api").to_string(), "/api");
        assert_eq!(r("/api/").to_string(), "/api");
        assert_eq!(r("/").to_string(), "/");
        assert_eq!(
            r("Shop.Example.com/api").to_string(),
            "shop.example.com/api"
        );
        assert_eq!(r("shop.example.com").to_string(), "shop.example.com/");
        assert_eq!(r("shop.example.com/").host(), Some("shop.example.com"));
    }

    #[test]
    fn rejects_bad_routes() {
        for bad in [
            "",
            "/a//b",
            "/a/../b",
            "/a b",
            "/a?x=1",
            "/a#x",
            "host:8080/api",
            "bad_host!/api",
            "/_wasmgate",
            "/_wasmgate/x",
        ] {
            assert!(RouteName::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(RouteName::parse("/_wasmgatex").is_ok());
    }

    #[test]
    fn prefix_matches_on_segment_boundaries_only() {
        let routes = ["/probe"];
        assert_eq!(pick(&routes, None, "/probe"), Some("/probe"));
        assert_eq!(pick(&routes, None, "/probe/"), Some("/probe"));
        assert_eq!(pick(&routes, None, "/probe/a/b"), Some("/probe"));
        assert_eq!(pick(&routes, None, "/probeX"), None);
        assert_eq!(pick(&routes, None, "/prob"), None);
        assert_eq!(pick(&routes, None, "/"), None);
    }

    #[test]
    fn longest_prefix_wins() {
        let routes = ["/", "/api", "/api/v2"];
        assert_eq!(pick(&routes, None, "/api/v2/users"), Some("/api/v2"));
        assert_eq!(pick(&routes, None, "/api/v3"), Some("/api"));
        assert_eq!(pick(&routes, None, "/other"), Some("/"));
    }

    #[test]
    fn exact_host_beats_any_host_even_when_shorter() {
        let routes = ["/api/v2", "shop.example.com/", "shop.example.com/api"];
        assert_eq!(
            pick(&routes, Some("shop.example.com"), "/api/v2"),
            Some("shop.example.com/api")
        );
        assert_eq!(
            pick(&routes, Some("SHOP.example.com:8443"), "/x"),
            Some("shop.example.com/")
        );
        assert_eq!(
            pick(&routes, Some("other.example.com"), "/api/v2/x"),
            Some("/api/v2")
        );
        assert_eq!(pick(&routes, None, "/api"), None);
    }

    #[test]
    fn candidates_are_bounded_and_ordered() {
        let deep = "/a".repeat(100);
        let c = candidates(Some("h"), &deep);
        assert_eq!(c.len(), 2 * (MAX_SEGMENTS + 1));
        assert_eq!(c[0].host(), Some("h"));
        assert_eq!(c.last().unwrap().to_string(), "/");
        let c = candidates(Some("h"), "/a/b");
        let names: Vec<String> = c.iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["h/a/b", "h/a", "h/", "/a/b", "/a", "/"]);
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("Example.COM:8080"), "example.com");
        assert_eq!(normalise_host("example.com.:8080"), "example.com");
        // Idempotent (the route_match fuzz target checks it): every
        // trailing dot goes at once.
        assert_eq!(normalise_host("a.."), "a");
        assert_eq!(normalise_host(&normalise_host("a..")), "a");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert_eq!(normalise_host("127.0.0.1"), "127.0.0.1");
    }
}
