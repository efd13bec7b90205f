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
    slots: Arc<tokio::sync::Semaphore>,
    _ticker: EpochTicker,
}

impl WasmEngine {
    /// Builds the engine. Fails only when `PoolingMode::On` was asked for and
    /// the pooling allocator cannot be set up, or on a wasmtime bug.
    pub fn new(limits: RuntimeLimits) -> anyhow::Result<Self> {
        let (engine, pooling) = match limits.pooling {
            PoolingMode::Off => (Engine::new(&base_config()).map_err(wasmtime_error)?, false),
            PoolingMode::On => (
                Engine::new(&pooling_config(&limits)).map_err(wasmtime_error)?,
                true,
            ),
            PoolingMode::Auto => {
                let attempt = if pooling_reservation_available() {
                    Engine::new(&pooling_config(&limits)).map_err(|e| e.to_string())
                } else {
                    Err("the host refused a 4 TiB virtual memory reservation".to_string())
                };
                match attempt {
                    Ok(engine) => (engine, true),
                    Err(reason) => {
                        tracing::warn!(%reason, "pooling allocator unavailable; allocating instances on demand");
                        (Engine::new(&base_config()).map_err(wasmtime_error)?, false)
                    }
                }
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasmtime_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(wasmtime_error)?;
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
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency as usize)),
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

    /// Guest instances alive now (slots taken).
    pub fn instances_running(&self) -> u64 {
        (self.limits.max_concurrency as u64).saturating_sub(self.slots.available_permits() as u64)
    }

    /// Waits for an instance slot; the permit is held until the store is gone.
    pub(crate) async fn acquire_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("BUG: the instance semaphore is never closed")
    }

    /// A fresh store for one request: memory limiter installed, and an epoch
    /// callback that yields every tick and interrupts the guest at `deadline`.
    pub(crate) fn new_store<T: Limited>(&self, state: T, deadline: Instant) -> Store<T> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limiter());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}

/// Store state that carries the per-instance memory limiter.
pub(crate) trait Limited: Send + 'static {
    fn limiter(&mut self) -> &mut MemoryLimiter;
}

fn wasmtime_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:#}")
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

fn pooling_config(limits: &RuntimeLimits) -> Config {
    let n = limits.max_concurrency.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        // A component holds a few core instances, memories and tables.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memory_size(limits.memory_limit_bytes);
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
