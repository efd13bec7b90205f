//! Fair shares for tenants who do not share well: who gets an instance
//! slot, who gets the CPU when guests run long, and how much memory all
//! guests may hold together. A storm of looping, memory-bombing or slow
//! requests on one route gets its 503s and 504s; every other route goes on
//! at its usual latency.
//!
//! - **Instance slots** (`WASMGATE_MAX_CONCURRENCY`): a guest instance holds
//!   one while it is alive. One route holds at most
//!   `WASMGATE_ROUTE_MAX_CONCURRENCY` of them (default: three quarters), so
//!   a storm on it leaves slots for the others. A request that finds none
//!   free waits at most `WASMGATE_QUEUE_TIMEOUT_MS` (default 1 s, never past
//!   its deadline), and at most four times as many requests as there are
//!   slots wait at once: past either, a `503` with `Retry-After` at once,
//!   not a wait until the deadline.
//! - **CPU lanes** (`WASMGATE_CPU_LANES`, default: one less than the CPUs,
//!   at least one): a guest that has run for more than [`HEAVY_AFTER`]
//!   epoch ticks (about 30 ms) of running (a tick that finds it back from
//!   waiting on I/O does not count) goes on only while it holds a lane, one
//!   tick at a time; lanes go round-robin between routes, then first come
//!   first served within one, and a lane whose holder stops running (it
//!   waits on I/O) is taken back after [`LANE_LEASE`]. Short requests never wait for a lane, so however
//!   many guests loop, they take at most the lanes' share of the CPU and the
//!   listener and the others keep the rest.
//! - **Guest memory budget** (`WASMGATE_GUEST_MEMORY_MB`, default three
//!   quarters of the container's memory: the cgroup limit, else
//!   `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, else the machine's): all guests'
//!   linear memories together, one route's guests at most three quarters
//!   of it. A growth past either fails inside the guest as
//!   its own limit would, and the request is a `503` (the host's capacity,
//!   which does not count against a rollout), not a `500`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

/// Epoch ticks a guest runs before it needs a CPU lane (with the 10 ms
/// tick, about 30 ms of running).
pub const HEAVY_AFTER: u32 = 3;

/// How the slots and lanes are shared out.
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// Instance slots in all.
    pub slots: u32,
    /// Most slots one route holds at once.
    pub route_slots: u32,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
    /// CPU lanes for guests past [`HEAVY_AFTER`] ticks.
    pub cpu_lanes: u32,
    /// All guests' linear memories together, in bytes.
    pub guest_memory_bytes: usize,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot (or the route's share) stayed taken for the queue timeout.
    Busy,
    /// Too many requests were already waiting.
    QueueFull,
}

/// The instance slots, with each route's share.
pub struct Admission {
    limits: AdmissionLimits,
    slots: Arc<Semaphore>,
    per_route: Mutex<HashMap<Arc<str>, u32>>,
    route_freed: Notify,
    waiting: AtomicUsize,
    lanes: Arc<Lanes>,
    memory: Arc<SharedMemory>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(limits.slots as usize)),
            per_route: Mutex::new(HashMap::new()),
            route_freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            lanes: Arc::new(Lanes::new(limits.cpu_lanes.max(1) as usize)),
            memory: Arc::new(SharedMemory::new(limits.guest_memory_bytes)),
            limits,
        }
    }

    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// The CPU lanes long-running guests take turns on.
    pub fn lanes(&self) -> &Arc<Lanes> {
        &self.lanes
    }

    /// The memory all guests share.
    pub fn memory(&self) -> &Arc<SharedMemory> {
        &self.memory
    }

    /// Slots taken now.
    pub fn in_use(&self) -> u64 {
        (self.limits.slots as u64).saturating_sub(self.slots.available_permits() as u64)
    }

    /// A slot for a guest of `route`, waiting at most the queue timeout and
    /// never past `deadline`.
    pub async fn acquire(
        self: &Arc<Self>,
        route: &str,
        deadline: Instant,
    ) -> Result<SlotPermit, Refusal> {
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Decrement(&self.waiting);
        let until = deadline.min(Instant::now() + self.limits.queue_timeout);
        // Fast path: a free slot and room in the route's share.
        if let Some(route_share) = self.take_route_share(route)
            && let Ok(slot) = self.slots.clone().try_acquire_owned()
        {
            return Ok(SlotPermit {
                _slot: slot,
                _route: Some(route_share),
            });
        } else if waiting >= (self.limits.slots as usize).saturating_mul(4) {
            return Err(Refusal::QueueFull);
        }
        let wait = async {
            // The route's share first, then a slot: a route at its share
            // waits without holding anything.
            let route_share = loop {
                let notified = self.route_freed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(share) = self.take_route_share(route) {
                    break share;
                }
                notified.await;
            };
            let slot = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("BUG: the slot semaphore is never closed");
            SlotPermit {
                _slot: slot,
                _route: Some(route_share),
            }
        };
        tokio::time::timeout_at(until.into(), wait)
            .await
            .map_err(|_| Refusal::Busy)
    }

    /// Counts one more slot for `route` when it is under its share.
    fn take_route_share(self: &Arc<Self>, route: &str) -> Option<RouteShare> {
        let mut per_route = self.per_route.lock().unwrap_or_else(|e| e.into_inner());
        let key: Arc<str> = match per_route.get_key_value(route) {
            Some((key, _)) => key.clone(),
            None => Arc::from(route),
        };
        let count = per_route.entry(key.clone()).or_insert(0);
        if *count >= self.limits.route_slots.max(1) {
            return None;
        }
        *count += 1;
        Some(RouteShare {
            admission: self.clone(),
            route: key,
        })
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An instance slot, given back on drop (after the store it was for).
pub struct SlotPermit {
    _slot: OwnedSemaphorePermit,
    _route: Option<RouteShare>,
}

impl SlotPermit {
    /// A slot outside the route shares (tests, and the deploy-time checks).
    pub fn unshared(slot: OwnedSemaphorePermit) -> Self {
        SlotPermit {
            _slot: slot,
            _route: None,
        }
    }
}

/// One of a route's share of slots.
struct RouteShare {
    admission: Arc<Admission>,
    route: Arc<str>,
}

impl Drop for RouteShare {
    fn drop(&mut self) {
        let mut per_route = self
            .admission
            .per_route
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_route.get_mut(&self.route) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_route.remove(&self.route);
            }
        }
        drop(per_route);
        self.admission.route_freed.notify_waiters();
    }
}

/// How long a lane is a guest's without a renewal: a guest that holds one
/// renews it at every epoch tick it runs through; one that stops running
/// (it waits on I/O) loses it after this, whether or not it gives it back.
pub const LANE_LEASE: Duration = Duration::from_millis(20);

/// CPU lanes for guests that run long, given round-robin between routes.
pub struct Lanes {
    state: Mutex<LaneState>,
}

struct LaneState {
    lanes: usize,
    /// Lanes given out, by permit id, with the end of their lease.
    holders: HashMap<u64, Instant>,
    next_id: u64,
    /// Waiters by route; the BTreeMap's order is the round-robin's.
    waiting: BTreeMap<Arc<str>, VecDeque<oneshot::Sender<LanePermit>>>,
    /// The route served last: the next lane goes to the one after it.
    last: Option<Arc<str>>,
}

/// A CPU lane, given to the next in line on drop (unless its lease ran out
/// and it went to someone else already).
pub struct LanePermit {
    lanes: Option<Arc<Lanes>>,
    id: u64,
}

impl Drop for LanePermit {
    fn drop(&mut self) {
        if let Some(lanes) = self.lanes.take() {
            let mut state = lanes.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.holders.remove(&self.id).is_some() {
                state.dispatch(&lanes);
            }
        }
    }
}

impl LaneState {
    fn grant(&mut self, lanes: &Arc<Lanes>) -> LanePermit {
        let id = self.next_id;
        self.next_id += 1;
        self.holders.insert(id, Instant::now() + LANE_LEASE);
        LanePermit {
            lanes: Some(lanes.clone()),
            id,
        }
    }

    /// Gives free lanes to the first waiters of the routes after the last
    /// one served (waiters who gave up are skipped).
    fn dispatch(&mut self, lanes: &Arc<Lanes>) {
        while self.holders.len() < self.lanes {
            let next = match &self.last {
                Some(last) => self
                    .waiting
                    .range::<Arc<str>, _>((
                        std::ops::Bound::Excluded(last.clone()),
                        std::ops::Bound::Unbounded,
                    ))
                    .next()
                    .or_else(|| self.waiting.iter().next())
                    .map(|(route, _)| route.clone()),
                None => self.waiting.keys().next().cloned(),
            };
            let Some(route) = next else {
                return;
            };
            let queue = self.waiting.get_mut(&route).expect("BUG: a listed route");
            let sender = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&route);
            }
            self.last = Some(route);
            if let Some(sender) = sender {
                let permit = self.grant(lanes);
                if let Err(mut permit) = sender.send(permit) {
                    // The waiter gave up: take the lane back quietly.
                    self.holders.remove(&permit.id);
                    permit.lanes = None;
                }
            }
        }
    }

    /// Takes back the lanes whose lease ran out.
    fn reclaim(&mut self, lanes: &Arc<Lanes>) {
        let now = Instant::now();
        let before = self.holders.len();
        self.holders.retain(|_, lease| *lease > now);
        if self.holders.len() < before {
            self.dispatch(lanes);
        }
    }
}

impl Lanes {
    fn new(lanes: usize) -> Self {
        Lanes {
            state: Mutex::new(LaneState {
                lanes,
                holders: HashMap::new(),
                next_id: 0,
                waiting: BTreeMap::new(),
                last: None,
            }),
        }
    }

    /// A lane for a guest of `route`: at once when one is free and nobody
    /// waits, else in turn (a lane whose holder stopped renewing it is
    /// taken back after [`LANE_LEASE`]).
    pub fn acquire(
        self: &Arc<Self>,
        route: &Arc<str>,
    ) -> impl Future<Output = Option<LanePermit>> + Send + 'static {
        let lanes = self.clone();
        let receiver = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.reclaim(self);
            if state.holders.len() < state.lanes && state.waiting.is_empty() {
                Ok(state.grant(self))
            } else {
                let (sender, receiver) = oneshot::channel();
                state
                    .waiting
                    .entry(route.clone())
                    .or_default()
                    .push_back(sender);
                Err(receiver)
            }
        };
        async move {
            let mut receiver = match receiver {
                Ok(permit) => return Some(permit),
                Err(receiver) => receiver,
            };
            loop {
                match tokio::time::timeout(LANE_LEASE, &mut receiver).await {
                    Ok(permit) => return permit.ok(),
                    Err(_) => lanes
                        .state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .reclaim(&lanes),
                }
            }
        }
    }
}

/// All guests' linear memory, shared, with each route's share: one route
/// holds at most three quarters of it, so a storm of memory bombs on one
/// route leaves memory for the others.
pub struct SharedMemory {
    limit: usize,
    route_limit: usize,
    used: AtomicUsize,
    per_route: Mutex<HashMap<Arc<str>, usize>>,
}

impl SharedMemory {
    fn new(limit: usize) -> Self {
        SharedMemory {
            limit,
            route_limit: limit / 4 * 3,
            used: AtomicUsize::new(0),
            per_route: Mutex::new(HashMap::new()),
        }
    }

    /// The budget a guest of `route` draws on.
    pub fn for_route(self: &Arc<Self>, route: &str) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            shared: self.clone(),
            route: Arc::from(route),
        })
    }

    /// Bytes held by guests now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// What one route's guests may take from the [`SharedMemory`].
pub struct MemoryBudget {
    shared: Arc<SharedMemory>,
    route: Arc<str>,
}

impl MemoryBudget {
    /// Takes `bytes` from the route's share and the whole, or says no.
    pub fn reserve(&self, bytes: usize) -> bool {
        let shared = &self.shared;
        let taken = shared
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= shared.limit)
            })
            .is_ok();
        if !taken {
            return false;
        }
        let mut per_route = shared.per_route.lock().unwrap_or_else(|e| e.into_inner());
        let held = per_route.entry(self.route.clone()).or_insert(0);
        if held.saturating_add(bytes) > shared.route_limit {
            if *held == 0 {
                per_route.remove(&self.route);
            }
            drop(per_route);
            self.release_shared(bytes);
            return false;
        }
        *held += bytes;
        true
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        {
            let mut per_route = self
                .shared
                .per_route
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(held) = per_route.get_mut(&self.route) {
                *held = held.saturating_sub(bytes);
                if *held == 0 {
                    per_route.remove(&self.route);
                }
            }
        }
        self.release_shared(bytes);
    }

    fn release_shared(&self, bytes: usize) {
        let _ = self
            .shared
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// An empty hold on the budget, which gives back what it grew to when
    /// dropped (a WAGI request body buffered for the guest's stdin).
    pub fn hold(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes held from a [`MemoryBudget`] until dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Holds `more` bytes too, or says no (and holds what it held).
    pub fn grow(&mut self, more: usize) -> bool {
        if self.budget.reserve(more) {
            self.bytes += more;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// Three quarters of the memory this process may use: the cgroup's limit
/// (v2, then v1), else Lambda's `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, else the
/// machine's (`/proc/meminfo`); `usize::MAX` when none can be read.
pub fn default_guest_memory_bytes() -> usize {
    fn read_number(path: &str) -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
    let cgroup = read_number("/sys/fs/cgroup/memory.max")
        .or_else(|| read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        // cgroup v1 says "no limit" with a huge number.
        .filter(|bytes| *bytes < 1 << 50);
    let lambda = || {
        std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()?
            .parse::<u64>()
            .ok()
            .map(|mb| mb << 20)
    };
    let machine = || {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    };
    match cgroup.or_else(lambda).or_else(machine) {
        Some(bytes) => usize::try_from(bytes / 4 * 3).unwrap_or(usize::MAX),
        None => usize::MAX,
    }
}

/// One less than the CPUs this process may use, at least one.
pub fn default_cpu_lanes() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cpus.saturating_sub(1).max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(slots: u32, route_slots: u32) -> AdmissionLimits {
        AdmissionLimits {
            slots,
            route_slots,
            queue_timeout: Duration::from_millis(50),
            cpu_lanes: 1,
            guest_memory_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn a_route_keeps_to_its_share_and_others_still_get_slots() {
        let admission = Arc::new(Admission::new(limits(4, 2)));
        let far = Instant::now() + Duration::from_secs(10);
        let a1 = admission.acquire("/a", far).await.unwrap();
        let _a2 = admission.acquire("/a", far).await.unwrap();
        // A third for /a waits for its share, then gives up: Busy.
        assert_eq!(
            admission.acquire("/a", far).await.err(),
            Some(Refusal::Busy)
        );
        let _b = admission.acquire("/b", far).await.unwrap();
        assert_eq!(admission.in_use(), 3);
        drop(a1);
        let _a3 = admission.acquire("/a", far).await.unwrap();
    }

    #[tokio::test]
    async fn a_full_server_refuses_after_the_queue_timeout_not_the_deadline() {
        let admission = Arc::new(Admission::new(limits(1, 1)));
        let far = Instant::now() + Duration::from_secs(30);
        let _held = admission.acquire("/a", far).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            admission.acquire("/b", far).await.err(),
            Some(Refusal::Busy)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_lane_whose_holder_stops_renewing_it_is_taken_back() {
        let lanes = Arc::new(Lanes::new(1));
        let route: Arc<str> = Arc::from("/a");
        let idle = lanes.acquire(&route).await.unwrap();
        let started = Instant::now();
        let next = lanes.acquire(&route).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        // The old holder's late drop gives nothing away twice.
        drop(idle);
        let state = lanes.state.lock().unwrap();
        assert_eq!(state.holders.len(), 1);
        drop(state);
        drop(next);
    }

    #[tokio::test]
    async fn lanes_go_round_robin_between_routes() {
        let lanes = Arc::new(Lanes::new(1));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("/a"), Arc::from("/b"));
        let held = lanes.acquire(&a).await.unwrap();
        // Three of /a wait, then one of /b: /b is served second, not last.
        let mut waiters = Vec::new();
        for route in [&a, &a, &a, &b] {
            waiters.push((route.clone(), tokio::spawn(lanes.acquire(route))));
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut order = Vec::new();
        let mut pending: Vec<_> = waiters;
        while !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut still = Vec::new();
            for (route, task) in pending {
                if task.is_finished() {
                    let permit = task.await.unwrap().unwrap();
                    order.push(route.to_string());
                    drop(permit);
                } else {
                    still.push((route, task));
                }
            }
            pending = still;
        }
        assert_eq!(
            order[..2],
            ["/a".to_string(), "/b".to_string()],
            "{order:?}"
        );
    }

    #[test]
    fn the_memory_budget_is_shared_with_a_share_per_route() {
        let shared = Arc::new(SharedMemory::new(100));
        let (a, b) = (shared.for_route("/a"), shared.for_route("/b"));
        assert!(a.reserve(60));
        assert!(!a.reserve(20), "/a's share is 75");
        assert!(a.reserve(15));
        assert!(b.reserve(25));
        assert!(!b.reserve(1), "the whole is spent");
        a.release(75);
        assert!(b.reserve(50));
        assert_eq!(shared.used(), 75);
    }
}
