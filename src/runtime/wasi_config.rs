//! `wasi:config/store`: a component reads its version's `plain_text`,
//! `json` and `secret_text` bindings by name (the same values its
//! environment holds). Two versions of the interface are provided, the
//! same functions under each: `0.2.0-rc.1` (what wasmtime-wasi-config and
//! `wasmtime serve -Sconfig` speak) and `0.2.0-draft-2024-09-27` (what
//! Spin SDK 3 to 7 import).

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

mod rc1 {
    wasmtime::component::bindgen!({
        path: "wit/config",
        world: "wasi:config/imports",
        imports: { default: trappable },
    });
}

mod draft {
    wasmtime::component::bindgen!({
        path: "wit/config-draft-2024-09-27",
        world: "wasi:config/imports",
        imports: { default: trappable },
    });
}

/// A version's configuration values, by binding name, shared by all its
/// requests.
pub type ConfigValues = Arc<HashMap<String, String>>;

/// What the host functions see: the values of the running version.
pub(crate) struct ConfigView<'a>(pub(crate) &'a HashMap<String, String>);

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

impl ConfigView<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn get_all(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort();
        all
    }
}

impl rc1::wasi::config::store::Host for ConfigView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, rc1::wasi::config::store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, rc1::wasi::config::store::Error>> {
        Ok(Ok(ConfigView::get_all(self)))
    }
}

impl draft::wasi::config::store::Host for ConfigView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, draft::wasi::config::store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, draft::wasi::config::store::Error>> {
        Ok(Ok(ConfigView::get_all(self)))
    }
}

/// Adds both versions of `wasi:config/store` to `linker`.
pub(crate) fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    rc1::wasi::config::store::add_to_linker::<T, HasConfig>(linker, view)?;
    draft::wasi::config::store::add_to_linker::<T, HasConfig>(linker, view)?;
    Ok(())
}
