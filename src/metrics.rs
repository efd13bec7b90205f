//! Process-wide counters, written by the request path with relaxed atomics
//! (no locks, no allocation) and read two ways:
//!
//! - on the listener, as Prometheus text at `GET /_wasmgate/metrics`
//!   (behind the admin token when one is set);
//! - on Lambda, as one CloudWatch Embedded Metric Format line per request
//!   on stdout, which CloudWatch turns into metrics with no agent and no
//!   API call ([`emf_line`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::modules::CacheOutcome;

/// The counters of this process.
pub static METRICS: Metrics = Metrics::new();

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What one request did, as the gateway saw it.
#[derive(Debug, Clone, Copy)]
pub struct RequestSample {
    pub status: u16,
    /// Time to the response head.
    pub duration: Duration,
    pub route_cache: Option<CacheOutcome>,
    pub module_cache: Option<CacheOutcome>,
}

pub struct Metrics {
    /// By status class: 1xx..5xx.
    requests: [AtomicU64; 5],
    duration_buckets: [AtomicU64; BUCKETS.len()],
    /// Durations past the last bucket.
    duration_overflow: AtomicU64,
    duration_sum_micros: AtomicU64,
    route_cache: [AtomicU64; 3],
    module_cache: [AtomicU64; 3],
    outbound_allowed: AtomicU64,
    outbound_denied: AtomicU64,
    limits_refused: AtomicU64,
    route_table_reads: AtomicU64,
    guest_log_dropped_bytes: AtomicU64,
    admin_refusals: AtomicU64,
    cold_start: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn outcome_index(outcome: CacheOutcome) -> usize {
    match outcome {
        CacheOutcome::Hit => 0,
        CacheOutcome::Miss => 1,
        CacheOutcome::Stale => 2,
    }
}

impl Metrics {
    pub const fn new() -> Self {
        Metrics {
            requests: [const { AtomicU64::new(0) }; 5],
            duration_buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            duration_overflow: AtomicU64::new(0),
            duration_sum_micros: AtomicU64::new(0),
            route_cache: [const { AtomicU64::new(0) }; 3],
            module_cache: [const { AtomicU64::new(0) }; 3],
            outbound_allowed: AtomicU64::new(0),
            outbound_denied: AtomicU64::new(0),
            limits_refused: AtomicU64::new(0),
            route_table_reads: AtomicU64::new(0),
            guest_log_dropped_bytes: AtomicU64::new(0),
            admin_refusals: AtomicU64::new(0),
            cold_start: AtomicBool::new(true),
        }
    }

    /// Counts one answered request. Returns whether it was the first of
    /// this process (on Lambda: the cold start).
    pub fn request(&self, sample: &RequestSample) -> bool {
        let class = (sample.status / 100).clamp(1, 5) as usize - 1;
        self.requests[class].fetch_add(1, Relaxed);
        let seconds = sample.duration.as_secs_f64();
        match BUCKETS.iter().position(|bound| seconds <= *bound) {
            Some(bucket) => self.duration_buckets[bucket].fetch_add(1, Relaxed),
            None => self.duration_overflow.fetch_add(1, Relaxed),
        };
        self.duration_sum_micros
            .fetch_add(sample.duration.as_micros() as u64, Relaxed);
        if let Some(outcome) = sample.route_cache {
            self.route_cache[outcome_index(outcome)].fetch_add(1, Relaxed);
        }
        if let Some(outcome) = sample.module_cache {
            self.module_cache[outcome_index(outcome)].fetch_add(1, Relaxed);
        }
        self.cold_start.swap(false, Relaxed)
    }

    /// Counts a guest's outbound wasi:http request, sent or refused.
    pub fn outbound(&self, allowed: bool) {
        if allowed {
            self.outbound_allowed.fetch_add(1, Relaxed);
        } else {
            self.outbound_denied.fetch_add(1, Relaxed);
        }
    }

    /// Counts a request refused by an input limit (413, 414, 431).
    pub fn limit_refused(&self) {
        self.limits_refused.fetch_add(1, Relaxed);
    }

    /// Counts one lookup in the route table: a cache miss's batched read of
    /// every candidate route, or the read of a hand-set pointer's versions.
    pub fn route_table_read(&self) {
        self.route_table_reads.fetch_add(1, Relaxed);
    }

    /// Counts guest output dropped past a request's log cap.
    pub fn guest_log_dropped(&self, bytes: u64) {
        self.guest_log_dropped_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts an admin API request refused for its token (missing, wrong,
    /// or from an address over its failure budget).
    pub fn admin_refused(&self) {
        self.admin_refusals.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn prometheus(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        let name = family(
            o,
            "wasmgate_requests_total",
            "counter",
            "Requests answered, by status class.",
        );
        for (i, count) in self.requests.iter().enumerate() {
            let _ = writeln!(o, "{name}{{class=\"{}xx\"}} {}", i + 1, count.load(Relaxed));
        }
        let name = family(
            o,
            "wasmgate_request_duration_seconds",
            "histogram",
            "Time from the request to the response head.",
        );
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.duration_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(o, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // +Inf and _count from the same loads as the buckets, so a scrape
        // racing a request never shows +Inf below a finite bucket.
        let total = cumulative + self.duration_overflow.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.duration_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {total}");
        for (metric, counters, help) in [
            (
                "wasmgate_route_cache_total",
                &self.route_cache,
                "Route lookups by outcome (stale: served past the TTL while the route table was unreachable).",
            ),
            (
                "wasmgate_module_cache_total",
                &self.module_cache,
                "Readied-version lookups by outcome (miss: readied here; stale: kept past its time while a backend was unreachable).",
            ),
        ] {
            let name = family(o, metric, "counter", help);
            for (outcome, count) in ["hit", "miss", "stale"].iter().zip(counters) {
                let _ = writeln!(o, "{name}{{outcome=\"{outcome}\"}} {}", count.load(Relaxed));
            }
        }
        let name = family(
            o,
            "wasmgate_outbound_requests_total",
            "counter",
            "Guest wasi:http requests, sent or denied by allowed_outbound_hosts.",
        );
        let _ = writeln!(
            o,
            "{name}{{outcome=\"allowed\"}} {}\n{name}{{outcome=\"denied\"}} {}",
            self.outbound_allowed.load(Relaxed),
            self.outbound_denied.load(Relaxed)
        );
        let name = family(
            o,
            "wasmgate_limit_refusals_total",
            "counter",
            "Requests refused by an input limit (413, 414, 431).",
        );
        let _ = writeln!(o, "{name} {}", self.limits_refused.load(Relaxed));
        let name = family(
            o,
            "wasmgate_route_table_reads_total",
            "counter",
            "Route table lookups (DynamoDB or SQLite): one per route cache miss, every candidate route in one batched read.",
        );
        let _ = writeln!(o, "{name} {}", self.route_table_reads.load(Relaxed));
        let name = family(
            o,
            "wasmgate_guest_log_dropped_bytes_total",
            "counter",
            "Guest stdout/stderr bytes dropped past a request's log cap.",
        );
        let _ = writeln!(o, "{name} {}", self.guest_log_dropped_bytes.load(Relaxed));
        let name = family(
            o,
            "wasmgate_admin_auth_refusals_total",
            "counter",
            "Admin API and metrics requests refused for their token (401, 429).",
        );
        let _ = writeln!(o, "{name} {}", self.admin_refusals.load(Relaxed));
        for (metric, value, help) in [
            (
                "wasmgate_instances_running",
                gauges.instances_running as f64,
                "Guest instances running now.",
            ),
            (
                "wasmgate_modules_cached",
                gauges.modules_cached as f64,
                "Compiled modules kept warm.",
            ),
            (
                "process_resident_memory_bytes",
                resident_memory_bytes().unwrap_or(0) as f64,
                "Resident set size.",
            ),
            (
                "process_start_time_seconds",
                gauges.start_time_seconds,
                "Start time of the process, in seconds since the epoch.",
            ),
        ] {
            let name = family(o, metric, "gauge", help);
            let _ = writeln!(o, "{name} {value}");
        }
        out
    }
}

/// Writes a metric family's HELP and TYPE lines; returns its name.
fn family<'a>(out: &mut String, name: &'a str, kind: &str, help: &str) -> &'a str {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    name
}

/// Values read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub instances_running: u64,
    pub modules_cached: u64,
    pub start_time_seconds: f64,
}

/// VmRSS of this process, from /proc (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Settings of the EMF lines.
#[derive(Debug, Clone)]
pub struct EmfSettings {
    pub namespace: String,
    /// The `FunctionName` dimension (`AWS_LAMBDA_FUNCTION_NAME`).
    pub function_name: String,
}

/// One CloudWatch Embedded Metric Format line for one request: metrics
/// `Requests`, `Errors` (5xx), `ClientErrors` (4xx), `Duration` (ms),
/// `ColdStart`, `RouteCacheHit`/`Miss`, `ModuleCacheHit`/`Miss`, under the
/// `FunctionName` dimension; the request id, route and status ride along as
/// properties (searchable in Logs Insights, not metrics: no cardinality cost).
pub fn emf_line(
    settings: &EmfSettings,
    sample: &RequestSample,
    cold_start: bool,
    request_id: &str,
    route: Option<&str>,
) -> String {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let flag = |b: bool| u8::from(b);
    let is = |outcome: Option<CacheOutcome>, want: CacheOutcome| flag(outcome == Some(want));
    let metrics = [
        ("Requests", "Count"),
        ("Errors", "Count"),
        ("ClientErrors", "Count"),
        ("Duration", "Milliseconds"),
        ("ColdStart", "Count"),
        ("RouteCacheHit", "Count"),
        ("RouteCacheMiss", "Count"),
        ("ModuleCacheHit", "Count"),
        ("ModuleCacheMiss", "Count"),
    ]
    .iter()
    .map(|(name, unit)| serde_json::json!({"Name": name, "Unit": unit}))
    .collect::<Vec<_>>();
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics,
            }],
        },
        "FunctionName": settings.function_name,
        "Requests": 1,
        "Errors": flag(sample.status >= 500),
        "ClientErrors": flag((400..500).contains(&sample.status)),
        "Duration": sample.duration.as_secs_f64() * 1000.0,
        "ColdStart": flag(cold_start),
        "RouteCacheHit": is(sample.route_cache, CacheOutcome::Hit) + is(sample.route_cache, CacheOutcome::Stale),
        "RouteCacheMiss": is(sample.route_cache, CacheOutcome::Miss),
        "ModuleCacheHit": is(sample.module_cache, CacheOutcome::Hit) + is(sample.module_cache, CacheOutcome::Stale),
        "ModuleCacheMiss": is(sample.module_cache, CacheOutcome::Miss),
        "request_id": request_id,
        "route": route.unwrap_or("-"),
        "status": sample.status,
    });
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16, ms: u64) -> RequestSample {
        RequestSample {
            status,
            duration: Duration::from_millis(ms),
            route_cache: Some(CacheOutcome::Hit),
            module_cache: Some(CacheOutcome::Miss),
        }
    }

    #[test]
    fn prometheus_text_counts_classes_and_buckets() {
        let metrics = Metrics::new();
        assert!(
            metrics.request(&sample(200, 3)),
            "the first request is the cold start"
        );
        assert!(!metrics.request(&sample(503, 40)));
        metrics.request(&sample(404, 2_000));
        metrics.outbound(false);
        let text = metrics.prometheus(&Gauges::default());
        assert!(
            text.contains("wasmgate_requests_total{class=\"2xx\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_requests_total{class=\"5xx\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_request_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_request_duration_seconds_bucket{le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_request_duration_seconds_count 3\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_route_cache_total{outcome=\"hit\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("wasmgate_outbound_requests_total{outcome=\"denied\"} 1\n"),
            "{text}"
        );
        // Every sample follows its own family's TYPE line.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn emf_lines_declare_what_they_carry() {
        let settings = EmfSettings {
            namespace: "wasmgate".into(),
            function_name: "fn".into(),
        };
        let line = emf_line(&settings, &sample(502, 12), true, "req-1", Some("/app"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let declared = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "wasmgate");
        for metric in declared["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(value[name].is_number(), "{name} has a value");
        }
        assert_eq!(value["Errors"], 1);
        assert_eq!(value["ColdStart"], 1);
        assert_eq!(value["ModuleCacheMiss"], 1);
        assert_eq!(value["FunctionName"], "fn");
        assert_eq!(value["request_id"], "req-1");
    }
}
