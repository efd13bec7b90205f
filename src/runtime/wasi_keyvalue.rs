//! `wasi:keyvalue` (`store`, `atomics`, `batch` at `0.2.0-draft`, the
//! version wasmtime-wasi-keyvalue 48 and `wasmtime serve -Skeyvalue`
//! speak) over wasmgate's [`KvStore`].
//!
//! `open(name)` opens the namespace that a `kv_namespace` binding of the
//! running version names `name`; any other name is `no-such-store`, so a
//! guest never reaches a namespace its version was not given. Keys are 1 to
//! [`MAX_KEY_BYTES`] bytes, values at most [`MAX_VALUE_BYTES`]; beyond, the
//! call fails with `other` and nothing is written. `list-keys` returns
//! [`LIST_PAGE`] keys a page, in byte order; its cursor is the offset of
//! the next page. Batch calls are a call per key, not atomic (as the
//! interface allows).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::kv::{KvError, KvStore, LIST_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES};

mod generated {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

pub use generated::wasi::keyvalue::{atomics, batch, store};

/// An open namespace, as a guest holds it.
pub struct Bucket {
    namespace: String,
}

/// The namespaces a version's guests may open, by binding name, and the
/// store they live in.
#[derive(Default, Clone)]
pub struct KvGrants {
    pub store: Option<Arc<dyn KvStore>>,
    /// Binding name → namespace id.
    pub namespaces: BTreeMap<String, String>,
}

/// What the host functions see. Public (with the `store`, `atomics` and
/// `batch` host traits) so the `kv_store` fuzz target can call the host
/// functions as a guest would, limits included.
pub struct KvView<'a> {
    pub grants: &'a KvGrants,
    /// Tags the log line of a failed call.
    pub request_id: &'a str,
    pub table: &'a mut ResourceTable,
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

/// An open bucket's namespace and the store it lives in.
type Target = (String, Arc<dyn KvStore>);

/// The guest's form of `error`: what it asked wrong, in full; a backend
/// fault only as such (its details, table names and ARNs among them, go to
/// the log, not to a tenant).
fn other(request_id: &str, error: KvError) -> store::Error {
    match error {
        KvError::Invalid(message) => store::Error::Other(message),
        KvError::Unavailable(detail) => {
            tracing::warn!(request_id, error = %detail, "a guest's key-value call failed");
            store::Error::Other("the key-value store is unavailable; try again".into())
        }
    }
}

fn check_key(key: &str) -> Result<(), store::Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(store::Error::Other(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), store::Error> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(store::Error::Other(format!(
            "a value is at most {MAX_VALUE_BYTES} bytes; this one is {}; nothing was written",
            value.len()
        )));
    }
    Ok(())
}

impl KvView<'_> {
    /// The bucket's namespace and the store, or the guest's error.
    fn target(&self, bucket: &Resource<Bucket>) -> Answer<Target> {
        let namespace = self.table.get(bucket)?.namespace.clone();
        Ok(match &self.grants.store {
            Some(kv) => Ok((namespace, kv.clone())),
            None => Err(store::Error::Other(
                "this server has no key-value store".into(),
            )),
        })
    }
}

macro_rules! target {
    ($self:ident, $bucket:expr) => {
        match $self.target(&$bucket)? {
            Ok(target) => target,
            Err(error) => return Ok(Err(error)),
        }
    };
}

macro_rules! checked {
    ($check:expr) => {
        if let Err(error) = $check {
            return Ok(Err(error));
        }
    };
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        match self.grants.namespaces.get(&identifier) {
            Some(namespace) => Ok(Ok(self.table.push(Bucket {
                namespace: namespace.clone(),
            })?)),
            None => Ok(Err(store::Error::NoSuchStore)),
        }
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        checked!(check_key(&key));
        let (namespace, kv) = target!(self, bucket);
        Ok(kv
            .get(&namespace, &key)
            .await
            .map_err(|e| other(self.request_id, e)))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        checked!(check_key(&key));
        checked!(check_value(&value));
        let (namespace, kv) = target!(self, bucket);
        Ok(kv
            .set(&namespace, &key, &value)
            .await
            .map_err(|e| other(self.request_id, e)))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
        checked!(check_key(&key));
        let (namespace, kv) = target!(self, bucket);
        Ok(kv
            .delete(&namespace, &key)
            .await
            .map_err(|e| other(self.request_id, e)))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
        checked!(check_key(&key));
        let (namespace, kv) = target!(self, bucket);
        Ok(kv
            .exists(&namespace, &key)
            .await
            .map_err(|e| other(self.request_id, e)))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Answer<store::KeyResponse> {
        let (namespace, kv) = target!(self, bucket);
        let offset = cursor.unwrap_or(0);
        Ok(kv
            .list(&namespace, offset, LIST_PAGE)
            .await
            .map(|page| store::KeyResponse {
                cursor: page
                    .more
                    .then(|| offset.saturating_add(page.keys.len() as u64)),
                keys: page.keys,
            })
            .map_err(|e| other(self.request_id, e)))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Answer<u64> {
        checked!(check_key(&key));
        let (namespace, kv) = target!(self, bucket);
        Ok(kv
            .increment(&namespace, &key, delta)
            .await
            .map_err(|e| other(self.request_id, e)))
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        for key in &keys {
            checked!(check_key(key));
        }
        let (namespace, kv) = target!(self, bucket);
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            match kv.get(&namespace, &key).await {
                Ok(value) => values.push(value.map(|v| (key, v))),
                Err(error) => return Ok(Err(other(self.request_id, error))),
            }
        }
        Ok(Ok(values))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<()> {
        for (key, value) in &key_values {
            checked!(check_key(key));
            checked!(check_value(value));
        }
        let (namespace, kv) = target!(self, bucket);
        for (key, value) in key_values {
            if let Err(error) = kv.set(&namespace, &key, &value).await {
                return Ok(Err(other(self.request_id, error)));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        for key in &keys {
            checked!(check_key(key));
        }
        let (namespace, kv) = target!(self, bucket);
        for key in keys {
            if let Err(error) = kv.delete(&namespace, &key).await {
                return Ok(Err(other(self.request_id, error)));
            }
        }
        Ok(Ok(()))
    }
}

/// Adds `wasi:keyvalue/{store,atomics,batch}` to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, view)?;
    atomics::add_to_linker::<T, HasKv>(linker, view)?;
    batch::add_to_linker::<T, HasKv>(linker, view)?;
    Ok(())
}
