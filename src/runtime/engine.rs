//! The wasmtime `Engine` wasmgate runs every guest on: configuration, the
//! pooling allocator (probed, with a fallback), the epoch ticker that
//! enforces deadlines, and the `Store` each request gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use super::GuestError;
use super::admission::{Admission, AdmissionLimits, HEAVY_AFTER, LanePermit, SlotPermit};
use super::host::{HostState, MemoryLimiter};
use super::wagi::WagiState;

/// How often the epoch ticks: a guest in a busy loop yields to other tasks
/// and has its deadline checked at this period.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits every guest instance runs under.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    /// Most bytes a linear memory (or table) may grow to.
    pub memory_limit_bytes: usize,
    /// Wall-clock budget of one request, from instantiation to the last body byte.
    pub timeout: Duration,
    /// Most guest instances alive at once; requests beyond wait for a slot.
    pub max_concurrency: u32,
    /// Whether to try the pooling allocator.
    pub pooling: PoolingMode,
    /// Whether deploys store a precompiled artifact beside each module, and
    /// servers load it instead of compiling (`WASMGATE_PRECOMPILED`).
    pub precompiled: bool,
    /// wasi:http's limit on one set of fields (headers or trailers), in
    /// bytes of their in-memory form (`WASMGATE_MAX_FIELD_BYTES`).
    pub max_field_bytes: usize,
    /// Most slots one route holds (`WASMGATE_ROUTE_MAX_CONCURRENCY`).
    pub route_max_concurrency: u32,
    /// Longest wait for a slot (`WASMGATE_QUEUE_TIMEOUT_MS`).
    pub queue_timeout: Duration,
    /// CPU lanes for long-running guests (`WASMGATE_CPU_LANES`).
    pub cpu_lanes: u32,
    /// All guests' memory together (`WASMGATE_GUEST_MEMORY_MB`).
    pub guest_memory_bytes: usize,
    /// Largest request body (`WASMGATE_MAX_BODY_BYTES`): the cap of a
    /// version's `max_body_bytes`.
    pub max_body_bytes: u64,
}

impl RuntimeLimits {
    /// Limits for `max_concurrency` instances of at most
    /// `memory_limit_bytes` each, running at most `timeout`, with the other
    /// settings at their defaults.
    pub fn new(memory_limit_bytes: usize, timeout: Duration, max_concurrency: u32) -> Self {
        RuntimeLimits {
            memory_limit_bytes,
            timeout,
            max_concurrency,
            pooling: PoolingMode::Auto,
            precompiled: true,
            max_field_bytes: 128 * 1024,
            route_max_concurrency: default_route_share(max_concurrency),
            queue_timeout: Duration::from_secs(1),
            cpu_lanes: super::admission::default_cpu_lanes(),
            guest_memory_bytes: super::admission::default_guest_memory_bytes(),
            max_body_bytes: crate::config::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Default of `WASMGATE_ROUTE_MAX_CONCURRENCY`: three quarters of the
/// slots, at least one.
pub fn default_route_share(max_concurrency: u32) -> u32 {
    (max_concurrency.saturating_mul(3) / 4).max(1)
}

/// Use of wasmtime's pooling instance allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolingMode {
    /// Use it when the host allows its virtual memory reservation, else fall back.
    Auto,
    /// Always use it; fail at start when it cannot be set up.
    On,
    /// Never use it: allocate each instance on demand.
    Off,
}

/// The engine plus everything shared by all requests.
pub struct WasmEngine {
    engine: Engine,
    pub(crate) linker: Linker<HostState>,
    /// WASI preview1 for WAGI core modules (and the modules bound to them).
    pub(crate) p1_linker: wasmtime::Linker<WagiState>,
    limits: RuntimeLimits,
    pooling: bool,
    /// Whether it compiles for the architecture's baseline (see `portable`).
    portable: bool,
    /// Names the code this engine makes; `None` with precompiled artifacts off.
    artifact_id: Option<String>,
    admission: Arc<Admission>,
    _ticker: EpochTicker,
}

impl WasmEngine {
    /// Builds the engine. Fails only when `PoolingMode::On` was asked for and
    /// the pooling allocator cannot be set up, or on a wasmtime bug.
    pub fn new(limits: RuntimeLimits) -> anyhow::Result<Self> {
        let ((engine, portable), pooling) = match limits.pooling {
            PoolingMode::Off => (new_engine(base_config)?, false),
            PoolingMode::On => (new_engine(|| pooling_config(&limits))?, true),
            PoolingMode::Auto => {
                let attempt = if pooling_reservation_available() {
                    new_engine(|| pooling_config(&limits)).map_err(|e| e.to_string())
                } else {
                    Err("the host refused a 4 TiB virtual memory reservation".to_string())
                };
                match attempt {
                    Ok(engine) => (engine, true),
                    Err(reason) => {
                        tracing::warn!(%reason, "pooling allocator unavailable; allocating instances on demand");
                        (new_engine(base_config)?, false)
                    }
                }
            }
        };
        let artifact_id = limits.precompiled.then(|| artifact_id(&engine));
        let linker = component_linker(&engine).map_err(wasmtime_error)?;
        let mut p1_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1_linker, |state: &mut WagiState| {
            &mut state.wasi
        })
        .map_err(wasmtime_error)?;
        let ticker = EpochTicker::spawn(engine.clone());
        Ok(WasmEngine {
            engine,
            linker,
            p1_linker,
            pooling,
            portable,
            artifact_id,
            admission: Arc::new(Admission::new(AdmissionLimits {
                slots: limits.max_concurrency,
                route_slots: limits.route_max_concurrency,
                queue_timeout: limits.queue_timeout,
                cpu_lanes: limits.cpu_lanes,
                guest_memory_bytes: limits.guest_memory_bytes,
            })),
            limits,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> &RuntimeLimits {
        &self.limits
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// What names this engine's precompiled code (`x86_64-1f2e3d4c5b6a7988`):
    /// the CPU architecture and 16 hex digits of a SHA-256 over wasmtime's
    /// compatibility hash (its version, compiler settings and wasm
    /// features). An artifact made by an engine with the same id loads on
    /// this one. `None` when precompiled artifacts are off.
    pub fn artifact_id(&self) -> Option<&str> {
        self.artifact_id.as_deref()
    }

    /// Whether code is compiled for the architecture's baseline rather than
    /// for this CPU (see `portable`), so artifacts match across the fleet.
    pub fn portable(&self) -> bool {
        self.portable
    }

    /// Guest instances alive now (slots taken).
    pub fn instances_running(&self) -> u64 {
        self.admission.in_use()
    }

    /// The slots, lanes and memory budget guests share.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Waits for an instance slot for a guest of `route` (see
    /// [`Admission::acquire`]); the permit is held until the store is gone.
    pub(crate) async fn acquire_slot(
        &self,
        route: &str,
        deadline: Instant,
    ) -> Result<SlotPermit, GuestError> {
        self.admission
            .acquire(route, deadline)
            .await
            .map_err(|_| GuestError::Busy(self.limits.max_concurrency))
    }

    /// A fresh store for one request: memory limiter installed, and an epoch
    /// callback that interrupts the guest at `deadline` and otherwise
    /// yields every tick; past [`HEAVY_AFTER`] ticks, the guest takes its
    /// turn on a CPU lane of `route`'s before it goes on (see
    /// [`super::admission`]).
    pub(crate) fn new_store<T: Limited>(
        &self,
        state: T,
        deadline: Instant,
        route: &str,
    ) -> Store<T> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limiter());
        store.set_epoch_deadline(1);
        let lanes = self.admission.lanes().clone();
        let route: Arc<str> = Arc::from(route);
        let mut ticks: u32 = 0;
        let lane: Arc<std::sync::Mutex<Option<LanePermit>>> = Arc::default();
        // When the guest last went back to running, after a yield: a tick
        // that comes soon after is one it ran through; one that comes late
        // found it back from waiting on I/O, which is not running.
        let resumed = Arc::new(std::sync::Mutex::new(Instant::now()));
        store.epoch_deadline_callback(move |_| {
            let now = Instant::now();
            if now >= deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            let ran_through = {
                let resumed = resumed.lock().unwrap_or_else(|e| e.into_inner());
                now.saturating_duration_since(*resumed) <= EPOCH_TICK * 2
            };
            if ran_through {
                ticks = ticks.saturating_add(1);
            }
            // Give the lane back (the next in line runs); a guest past
            // HEAVY_AFTER ticks of running waits for its turn again, at
            // most until the deadline.
            drop(lane.lock().unwrap_or_else(|e| e.into_inner()).take());
            let turn = (ticks > HEAVY_AFTER && ran_through).then(|| lanes.acquire(&route));
            let lane = lane.clone();
            let resumed = resumed.clone();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    if let Some(turn) = turn
                        && let Ok(Some(permit)) =
                            tokio::time::timeout_at(deadline.into(), turn).await
                    {
                        *lane.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                    }
                    *resumed.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                }),
            ))
        });
        store
    }
}

/// Every interface a component may import, WASI 0.2 and 0.3 side by side
/// (a component links against the ones it names): wasi:cli, clocks,
/// random, io, filesystem and sockets (with nothing granted: no preopens,
/// no network), wasi:http (outbound through the allow-list),
/// `wasi:config/store` and `wasi:keyvalue`.
fn component_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    super::wasi_config::add_to_linker(&mut linker, HostState::config)?;
    super::wasi_keyvalue::add_to_linker(&mut linker, HostState::keyvalue)?;
    Ok(linker)
}

/// Store state that carries the per-instance memory limiter.
pub(crate) trait Limited: Send + 'static {
    fn limiter(&mut self) -> &mut MemoryLimiter;
}

fn wasmtime_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}

/// An engine from `config()` made portable (see [`portable`]), and whether
/// it is; when this CPU lacks the baseline's features, from `config()` as
/// it is: code for this very CPU, whose artifacts only match machines like
/// it.
fn new_engine(config: impl Fn() -> Config) -> anyhow::Result<(Engine, bool)> {
    /// The smallest module: compiling it runs wasmtime's check that this
    /// CPU has every feature the engine's code may use.
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    let mut baseline = config();
    if portable(&mut baseline) {
        let engine = Engine::new(&baseline).map_err(wasmtime_error)?;
        match wasmtime::Module::new(&engine, EMPTY_MODULE) {
            Ok(_) => return Ok((engine, true)),
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                "this CPU lacks the baseline features; compiling for this CPU alone"
            ),
        }
    }
    Ok((Engine::new(&config()).map_err(wasmtime_error)?, false))
}

/// Makes Cranelift compile for a fixed baseline of this architecture
/// rather than for the features it detects on this CPU, so that code
/// precompiled on one machine (a deployer's laptop, a CI runner) is the code
/// every server of the same architecture would make: Lambda and Cloud Run
/// place containers on CPUs of several generations. The baselines are
/// x86-64-v2 (SSE4.2 and POPCNT, every x86 server since 2009) and ARMv8.1
/// atomics (LSE: Graviton2 and later). `false` on other systems, which keep
/// the detected features.
fn portable(config: &mut Config) -> bool {
    /// What wasmgate was built for: wasmtime runs code only for the host's
    /// own triple (so `-gnu` and `-musl` builds make different artifacts).
    const TARGET: &str = env!("WASMGATE_TARGET");
    let flags: &[&str] = match (std::env::consts::ARCH, std::env::consts::OS) {
        ("x86_64", "linux") => &[
            "has_sse3",
            "has_ssse3",
            "has_sse41",
            "has_sse42",
            "has_popcnt",
        ],
        ("aarch64", "linux") => &["has_lse"],
        _ => return false,
    };
    if config.target(TARGET).is_err() {
        return false;
    }
    for flag in flags {
        // SAFETY: `new_engine` compiles a module before it uses the engine,
        // which makes wasmtime check every enabled ISA flag against the
        // features this CPU reports; when one is missing the engine is
        // dropped and built without them, so no code using a missing
        // feature ever runs.
        unsafe {
            config.cranelift_flag_enable(flag);
        }
    }
    true
}

/// `x86_64-` and 16 hex digits of SHA-256 over `engine`'s compatibility hash.
fn artifact_id(engine: &Engine) -> String {
    use std::hash::Hash as _;
    use std::hash::Hasher;

    /// Feeds what `Hash` writes into a SHA-256 (std's own hashers are
    /// neither stable across releases nor wide enough to name artifacts).
    struct Sha256Hasher(sha2::Sha256);
    impl Hasher for Sha256Hasher {
        fn write(&mut self, bytes: &[u8]) {
            sha2::Digest::update(&mut self.0, bytes);
        }
        fn finish(&self) -> u64 {
            let digest = sha2::Digest::finalize(self.0.clone());
            u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 8 bytes"))
        }
    }
    let mut hasher = Sha256Hasher(<sha2::Sha256 as sha2::Digest>::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{}-{:016x}", std::env::consts::ARCH, hasher.finish())
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // WASI 0.3 (`wasi:http/handler@0.3.0`): async lifts, streams, futures.
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    config
}

fn pooling_config(limits: &RuntimeLimits) -> Config {
    // Room beyond the slots for the deploy-time link checks, which
    // instantiate without one.
    let n = limits.max_concurrency.max(1).saturating_add(4);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        // A component holds a few core instances, memories and tables.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memory_size(limits.memory_limit_bytes)
        // A slot given back is reset for the next instance. Above these
        // sizes the reset is an madvise(MADV_DONTNEED), whose TLB shootdowns
        // across cores took ~30% of the CPU under load (perf: the IPIs of
        // ptep_clear_flush); below them the pages are reset in place and
        // stay resident. A small guest's memory and tables fit, so a warm
        // request makes no syscall to clean up, for at most 2 MiB + 64 KiB
        // resident per slot in use.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        // With PAGEMAP_SCAN (Linux 6.7+) only the pages the guest dirtied
        // are reset, not the whole 2 MiB: memset was then 16% of the CPU.
        // Older kernels (Lambda's among them) reset it all.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Whether this host lets us reserve the address space the pooling allocator
/// needs (some hosts with 39-bit address spaces or strict overcommit refuse;
/// wasmtime#8607). The same probe `wasmtime serve` uses: a 0-sized 64-bit
/// memory that reserves 2^42 bytes.
fn pooling_reservation_available() -> bool {
    const BITS: u32 = 42;
    let mut config = Config::new();
    config.wasm_memory64(true);
    config.memory_reservation(1 << BITS);
    let Ok(engine) = Engine::new(&config) else {
        return false;
    };
    let mut store = Store::new(&engine, ());
    let ty = wasmtime::MemoryType::new64(0, Some(1 << (BITS - 16)));
    wasmtime::Memory::new(&mut store, ty).is_ok()
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`], stopped
/// and joined on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn spawn(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &[u8] = include_bytes!("../../tests/fixtures/probe.wasm");
    const WAGI_PROBE: &[u8] = include_bytes!("../../tests/fixtures/wagi-probe.wasm");

    fn engine(pooling: PoolingMode) -> WasmEngine {
        WasmEngine::new(RuntimeLimits {
            pooling,
            ..RuntimeLimits::new(64 << 20, Duration::from_secs(5), 4)
        })
        .unwrap()
    }

    #[test]
    fn the_deploying_cli_and_the_server_make_the_same_code() {
        // The CLI checks modules on an engine without the instance pool;
        // servers run with it. Their artifacts must be interchangeable.
        let cli = engine(PoolingMode::Off);
        let server = engine(PoolingMode::Auto);
        let id = cli.artifact_id().expect("artifacts are on");
        if cfg!(all(
            target_os = "linux",
            any(target_arch = "x86_64", target_arch = "aarch64")
        )) {
            assert!(
                cli.portable() && server.portable(),
                "code for this very CPU would only match machines like it"
            );
        }
        assert_eq!(Some(id), server.artifact_id());
        assert!(id.starts_with(std::env::consts::ARCH), "{id}");
        for bytes in [PROBE, WAGI_PROBE] {
            let code = cli.load(bytes).unwrap().serialize().unwrap();
            assert_eq!(
                server.load(bytes).unwrap().serialize().unwrap(),
                code,
                "one module compiles to the same bytes on both"
            );
            // SAFETY: `code` was just serialized by an engine with this id.
            let loaded = unsafe { server.load_precompiled(&code) }.unwrap();
            assert_eq!(loaded.abi(), cli.load(bytes).unwrap().abi());
        }
    }

    #[test]
    fn artifacts_can_be_switched_off_and_bytes_that_are_no_artifact_fail() {
        let mut limits = engine(PoolingMode::Off).limits().clone();
        limits.precompiled = false;
        assert_eq!(WasmEngine::new(limits).unwrap().artifact_id(), None);
        // SAFETY: not an artifact: refused before anything is mapped.
        let err = unsafe { engine(PoolingMode::Off).load_precompiled(PROBE) }
            .err()
            .expect("a wasm binary is not an artifact");
        assert!(err.to_string().contains("not an artifact"), "{err}");
    }
}
