//! Weighted rollouts at request time: which version a request goes to, and
//! the per-server error counting that ends a bad rollout on its own.
//!
//! A split on the live pointer sends `percent`% of a route's requests to a
//! candidate version. With a sticky header, a stable hash of its value (the
//! same on every server) picks the side, so one client stays on one version
//! and raising the percentage only adds clients; otherwise each request is
//! drawn at random.
//!
//! With `max_error_rate`, every server counts the candidate's requests and
//! 5xx answers in a sliding window of `window_secs`. Past the rate, with at
//! least `min_requests` requests, it stops sending to the candidate at once
//! and ends the split with a write conditional on the split's id: of many
//! servers that fire together, exactly one write lands.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::routes::Split;

/// Most rollouts tracked at once; the oldest is forgotten past it.
const MAX_TRACKED: usize = 1024;

/// Whether this request goes to the split's candidate.
pub fn to_candidate(split: &Split, headers: &HeaderMap) -> bool {
    let point = match split
        .sticky_header
        .as_deref()
        .and_then(|name| headers.get(name))
    {
        Some(value) => fnv1a(value.as_bytes()),
        None => random_u64(),
    };
    let threshold = (split.percent * 100.0).round() as u64;
    point % 10_000 < threshold
}

/// FNV-1a: a hash every server computes alike (no per-process keys).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Mix the high bits down: FNV's low bits are weak for short inputs.
    hash ^ (hash >> 29) ^ (hash >> 47)
}

/// A per-thread xorshift64* generator seeded from the OS: enough for
/// drawing traffic shares, and cheap on the request path.
fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            getrandom::fill(&mut seed).expect("the OS random source is available");
            u64::from_le_bytes(seed) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The candidates' request and 5xx counts, per rollout, on this server.
#[derive(Default)]
pub struct RolloutMonitor {
    rollouts: Mutex<HashMap<String, Counts>>,
}

#[derive(Default)]
struct Counts {
    /// (second, requests, 5xx answers), oldest first.
    seconds: VecDeque<(u64, u64, u64)>,
    /// The threshold was crossed: this server sends nothing more to the
    /// candidate, whatever its (possibly stale) route cache says.
    tripped: bool,
    last_seen: u64,
}

impl RolloutMonitor {
    /// Whether this server has ended rollout `id` on its own.
    pub fn tripped(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|c| c.tripped)
    }

    /// Counts one answer of the candidate of `split`. Returns why the split
    /// must end when this answer crossed its threshold (once per rollout).
    pub fn record(&self, split: &Split, server_error: bool) -> Option<String> {
        let max_rate = split.max_error_rate?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rollouts = self.lock();
        if !rollouts.contains_key(&split.id) && rollouts.len() >= MAX_TRACKED {
            let oldest = rollouts
                .iter()
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                rollouts.remove(&oldest);
            }
        }
        let counts = rollouts.entry(split.id.clone()).or_default();
        counts.last_seen = now;
        if counts.tripped {
            return None;
        }
        match counts.seconds.back_mut() {
            Some((second, requests, errors)) if *second == now => {
                *requests += 1;
                *errors += u64::from(server_error);
            }
            _ => counts.seconds.push_back((now, 1, u64::from(server_error))),
        }
        let oldest_kept = now.saturating_sub(split.window_secs.saturating_sub(1));
        while counts
            .seconds
            .front()
            .is_some_and(|(s, _, _)| *s < oldest_kept)
        {
            counts.seconds.pop_front();
        }
        let (requests, errors) = counts
            .seconds
            .iter()
            .fold((0, 0), |(r, e), (_, dr, de)| (r + dr, e + de));
        let rate = errors as f64 * 100.0 / requests as f64;
        if requests >= split.min_requests && rate > max_rate {
            counts.tripped = true;
            return Some(format!(
                "auto-rollback: {errors} of {requests} requests to v{} failed with a 5xx ({rate:.1}%) within {}s, past the {max_rate}% limit",
                split.version, split.window_secs
            ));
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counts>> {
        self.rollouts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(percent: f64, sticky: Option<&str>) -> Split {
        Split {
            id: "r1".into(),
            version: 2,
            module: "m".into(),
            percent,
            sticky_header: sticky.map(str::to_string),
            max_error_rate: Some(10.0),
            window_secs: 60,
            min_requests: 20,
            metadata: serde_json::Value::Null,
        }
    }

    #[test]
    fn random_draws_land_near_the_share() {
        let split = split(20.0, None);
        let headers = HeaderMap::new();
        let hits = (0..20_000)
            .filter(|_| to_candidate(&split, &headers))
            .count();
        assert!((3_400..4_600).contains(&hits), "{hits} of 20000 for 20%");
    }

    #[test]
    fn a_sticky_value_always_lands_on_the_same_side_and_values_spread() {
        let split = split(30.0, Some("x-user"));
        let mut on_candidate = 0;
        for user in 0..2_000 {
            let mut headers = HeaderMap::new();
            headers.insert("x-user", format!("user-{user}").parse().unwrap());
            let first = to_candidate(&split, &headers);
            assert!((0..5).all(|_| to_candidate(&split, &headers) == first));
            on_candidate += usize::from(first);
        }
        assert!(
            (450..750).contains(&on_candidate),
            "{on_candidate} of 2000 for 30%"
        );
        // Raising the share only adds users.
        let wider = Split {
            percent: 60.0,
            ..split.clone()
        };
        for user in 0..2_000 {
            let mut headers = HeaderMap::new();
            headers.insert("x-user", format!("user-{user}").parse().unwrap());
            if to_candidate(&split, &headers) {
                assert!(to_candidate(&wider, &headers));
            }
        }
    }

    #[test]
    fn trips_once_past_the_rate_with_enough_requests() {
        let monitor = RolloutMonitor::default();
        let split = split(50.0, None);
        for _ in 0..15 {
            assert_eq!(monitor.record(&split, true), None, "below min_requests");
        }
        for _ in 0..4 {
            assert_eq!(monitor.record(&split, false), None);
        }
        let why = monitor
            .record(&split, true)
            .expect("20 requests, 16 failed");
        assert!(why.contains("16 of 20"), "{why}");
        assert!(monitor.tripped("r1"));
        assert_eq!(monitor.record(&split, true), None, "only once");
    }

    #[test]
    fn a_healthy_candidate_never_trips() {
        let monitor = RolloutMonitor::default();
        let split = split(50.0, None);
        for i in 0..1_000 {
            assert_eq!(monitor.record(&split, i % 20 == 0), None, "5% < 10%");
        }
        assert!(!monitor.tripped("r1"));
    }
}
