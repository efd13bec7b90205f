//! Which route table and module store the settings select, and the engine
//! and gateway built on them. The embedded default: module files under the
//! data dir and routes in SQLite beside them.

use std::sync::Arc;

use crate::config::Settings;
use crate::deploy::Deployer;
use crate::gateway::{Gateway, GatewayOptions};
use crate::modules::{FsModuleStore, ModuleStore};
use crate::routes::{RouteTable, SqliteRouteTable};
use crate::runtime::{RuntimeLimits, WasmEngine};

/// The storage a process works against.
#[derive(Clone)]
pub struct Backends {
    pub table: Arc<dyn RouteTable>,
    pub store: Arc<dyn ModuleStore>,
}

impl Backends {
    /// The embedded default under `settings.data_dir`. Fails when the route
    /// database cannot be opened.
    pub fn open(settings: &Settings) -> anyhow::Result<Self> {
        let table = SqliteRouteTable::open(settings.database_path())?;
        let store = FsModuleStore::new(settings.modules_dir());
        Ok(Backends {
            table: Arc::new(table),
            store: Arc::new(store),
        })
    }

    /// Deploy, rollback and history over these backends.
    pub fn deployer(&self, engine: Arc<WasmEngine>) -> Deployer {
        Deployer::new(self.table.clone(), self.store.clone(), engine)
    }

    /// The request path over these backends.
    pub fn gateway(&self, engine: Arc<WasmEngine>, settings: &Settings) -> Gateway {
        Gateway::new(
            self.table.clone(),
            self.store.clone(),
            engine,
            GatewayOptions {
                route_ttl: settings.route_ttl(),
                module_cache_capacity: settings.module_cache_size,
            },
        )
    }
}

/// The wasmtime engine configured by `settings`.
pub fn engine(settings: &Settings) -> anyhow::Result<Arc<WasmEngine>> {
    Ok(Arc::new(WasmEngine::new(RuntimeLimits {
        memory_limit_bytes: settings.memory_limit_bytes(),
        timeout: settings.timeout(),
        max_concurrency: settings.max_concurrency as u32,
        pooling: settings.pooling,
    })?))
}
