//! Route matching: for any routes, host and path, the route chosen matches
//! the path on whole segments (and the host, when it has one), and no other
//! matching route is more specific.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::routes::{MAX_SEGMENTS, RouteName, candidates, most_specific, normalise_host};

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether `route` may serve the request, and how specifically.
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

fuzz_target!(|input: (Option<String>, String, Vec<String>)| {
    let (host, path, routes) = input;
    if let Some(host) = &host {
        let once = normalise_host(host);
        assert_eq!(normalise_host(&once), once);
    }
    let names: Vec<RouteName> = routes
        .iter()
        .filter_map(|r| RouteName::parse(r).ok())
        .collect();
    for name in &names {
        assert_eq!(RouteName::parse(&name.to_string()).as_ref(), Ok(name));
    }
    let candidates = candidates(host.as_deref(), &path);
    assert!(candidates.len() <= 2 * (MAX_SEGMENTS + 1));
    let chosen = most_specific(&candidates, names.iter().map(|n| (n, n)));
    let best = names
        .iter()
        .filter_map(|n| specificity(n, host.as_deref(), &path))
        .max();
    assert_eq!(
        chosen.and_then(|c| specificity(c, host.as_deref(), &path)),
        best
    );
});
