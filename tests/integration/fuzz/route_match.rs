//! Routes (`RouteName::parse`, `candidates`, `most_specific`): the route
//! chosen is the most specific one that matches on whole segments.

use super::*;
use wasmgate::routes::{
    MAX_SEGMENTS, RESERVED_PREFIX, RouteName, candidates, most_specific, normalise_host,
};

/// Segments from a small alphabet, so routes and paths meet often.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "api", "v2", "A", "%41", "x y", "é", "_wasmgate", ".", ".."])
            .prop_map(str::to_string),
        1 => "[a-z0-9%._~-]{0,4}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (segment(), prop::sample::select(vec!["/", "/", "/", "//"])),
            0..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(pieces, trailing)| {
            let mut path = String::new();
            for (segment, slash) in pieces {
                path.push_str(slash);
                path.push_str(&segment);
            }
            if trailing || path.is_empty() {
                path.push('/');
            }
            path
        })
}

fn host() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "shop.example.com",
        "SHOP.Example.com",
        "shop.example.com:8443",
        "other",
        "[::1]:80",
        "",
        "bad host",
    ])
    .prop_map(str::to_string)
}

fn route() -> impl Strategy<Value = String> {
    (prop::option::of(host()), path()).prop_map(|(host, path)| match host {
        Some(host) => format!("{host}{path}"),
        None => path,
    })
}

/// The path's segments as matching sees them: empty ones skipped.
fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether `route` may serve `host` + `path`, and how specifically
/// (exact host first, then more segments).
fn specificity(route: &RouteName, host: Option<&str>, path: &str) -> Option<(bool, usize)> {
    let request_host = host.map(normalise_host).filter(|h| !h.is_empty());
    if route.host().is_some() && route.host() != request_host.as_deref() {
        return None;
    }
    let prefix = segments(route.prefix());
    let path = segments(path);
    (prefix.len() <= MAX_SEGMENTS.min(path.len()) && path[..prefix.len()] == prefix[..])
        .then_some((route.host().is_some(), prefix.len()))
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn a_parsed_route_is_normal_and_parses_to_itself(text in prop_oneof![route(), any::<String>()]) {
        if let Ok(name) = RouteName::parse(&text) {
            let prefix = name.prefix();
            prop_assert!(prefix.starts_with('/'));
            prop_assert!(prefix == "/" || (!prefix.ends_with('/') && !prefix.contains("//")));
            prop_assert!(segments(prefix).len() <= MAX_SEGMENTS);
            prop_assert!(segments(prefix).iter().all(|s| *s != "." && *s != ".."));
            prop_assert!(prefix != RESERVED_PREFIX && !prefix.starts_with("/_wasmgate/"));
            if let Some(host) = name.host() {
                prop_assert_eq!(host, host.to_ascii_lowercase());
                prop_assert!(!host.is_empty() && !host.contains(':'));
            }
            prop_assert_eq!(RouteName::parse(&name.to_string()), Ok(name.clone()));
        }
    }

    #[test]
    fn host_normalisation_is_idempotent(host in prop_oneof![host(), any::<String>()]) {
        let once = normalise_host(&host);
        prop_assert_eq!(normalise_host(&once), once.clone());
        prop_assert!(!once.bytes().any(|b| b.is_ascii_uppercase()));
    }

    #[test]
    fn candidates_are_ordered_and_bounded(host in prop::option::of(host()), path in prop_oneof![path(), any::<String>()]) {
        let candidates = candidates(host.as_deref(), &path);
        let depth = segments(&path).len().min(MAX_SEGMENTS);
        let with_host = host.as_deref().map(normalise_host).is_some_and(|h| !h.is_empty());
        prop_assert_eq!(candidates.len(), (depth + 1) * if with_host { 2 } else { 1 });
        for pair in candidates.windows(2) {
            let rank = |c: &RouteName| (c.host().is_some(), segments(c.prefix()).len());
            prop_assert!(rank(&pair[0]) > rank(&pair[1]), "{:?}", candidates);
        }
        for candidate in &candidates {
            prop_assert!(specificity(candidate, host.as_deref(), &path).is_some(), "{:?}", candidate);
        }
    }

    #[test]
    fn the_most_specific_matching_route_serves(
        routes in prop::collection::vec(route(), 0..8),
        host in prop::option::of(host()),
        path in path(),
    ) {
        let names: Vec<RouteName> = routes.iter().filter_map(|r| RouteName::parse(r).ok()).collect();
        let candidates = candidates(host.as_deref(), &path);
        let chosen = most_specific(&candidates, names.iter().map(|n| (n, n)));
        let best = names
            .iter()
            .filter_map(|n| specificity(n, host.as_deref(), &path).map(|s| (s, n)))
            .max_by_key(|(s, _)| *s);
        match (chosen, best) {
            (None, None) => {}
            (Some(chosen), Some((rank, _))) => {
                prop_assert_eq!(specificity(chosen, host.as_deref(), &path), Some(rank));
            }
            (chosen, best) => prop_assert!(false, "chose {:?}, expected {:?}", chosen, best),
        }
    }
}
