//! wasi:keyvalue over SQLite: a short run of guest calls (get, set, delete,
//! exists, increment, list-keys with a cursor, get-many, set-many,
//! delete-many) on two buckets, through the host functions a guest calls
//! (so the key and value limits are the runtime's), against a `SqliteKv` on
//! an in-memory database and against a `BTreeMap` per namespace. Every
//! answer must agree with the model; a refused call (empty or too long key,
//! too large value, non-counter or overflowing increment) changes nothing;
//! at the end, `list` pages of a few keys walk exactly the model's keys, in
//! the model's (byte) order.
//!
//! Input: one op byte after another (bit 7 picks the bucket, the rest the
//! call), each followed by its arguments; keys and values are mostly drawn
//! from a small pool (so calls collide) or are a few literal bytes.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wasmgate::kv::{KvStore, LIST_PAGE, MAX_KEY_BYTES, MAX_VALUE_BYTES, SqliteKv};
use wasmgate::runtime::KvGrants;
use wasmgate::runtime::wasi_keyvalue::{Bucket, KvView, atomics, batch, store};
use wasmtime::component::{Resource, ResourceTable};

/// The most calls one input makes.
const MAX_OPS: usize = 24;
/// The most keys in one batch call.
const MAX_BATCH: usize = 4;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// A byte, or 0 once the input is used up (arguments never stop a call).
    fn arg(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn u64(&mut self) -> u64 {
        let mut le = [0u8; 8];
        let bytes = self.bytes(8);
        le[..bytes.len()].copy_from_slice(&bytes);
        u64::from_le_bytes(le)
    }

    fn key(&mut self) -> String {
        const POOL: &[&str] = &["a", "b", "B", "é", "a\0", "hits", "a/b", " "];
        let b = self.arg();
        match b % 16 {
            n @ 0..=7 => POOL[usize::from(n)].to_string(),
            8 => String::new(),
            9 => "k".repeat(MAX_KEY_BYTES),
            10 => "k".repeat(MAX_KEY_BYTES + 1),
            // 1024 bytes in 512 characters, then one byte over.
            11 => "é".repeat(MAX_KEY_BYTES / 2),
            12 => "é".repeat(MAX_KEY_BYTES / 2) + "x",
            _ => {
                let n = usize::from(b >> 4) % 8;
                String::from_utf8_lossy(&self.bytes(n)).into_owned()
            }
        }
    }

    fn value(&mut self) -> Vec<u8> {
        let b = self.arg();
        match b % 8 {
            0 => Vec::new(),
            1 => u64::from(b >> 3).to_string().into_bytes(),
            2 => u64::MAX.to_string().into_bytes(),
            3 => (u64::MAX - u64::from(b >> 3)).to_string().into_bytes(),
            // The largest value, and one byte more (both only now and then:
            // 256 KiB a write).
            4 if b >> 3 == 0 => vec![b'v'; MAX_VALUE_BYTES],
            5 if b >> 3 == 0 => vec![b'v'; MAX_VALUE_BYTES + 1],
            _ => {
                let n = usize::from(b >> 3) % 16;
                self.bytes(n)
            }
        }
    }

    fn delta(&mut self) -> u64 {
        let b = self.arg();
        match b % 4 {
            0 => u64::from(b >> 2),
            1 => u64::MAX,
            2 => self.u64(),
            _ => 0,
        }
    }

    fn cursor(&mut self) -> Option<u64> {
        let b = self.arg();
        match b % 4 {
            0 => None,
            1 => Some(u64::from(b >> 2)),
            2 => Some(u64::MAX),
            _ => Some(i64::MAX as u64 + u64::from(b >> 2)),
        }
    }
}

fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

fn value_ok(value: &[u8]) -> bool {
    value.len() <= MAX_VALUE_BYTES
}

/// What `increment` makes of a stored value: a decimal `u64`, as
/// `str::parse` reads one.
fn counter(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

/// The call's answer, which must be `Ok` exactly when `accepted`; a refusal
/// is `other` with a reason, never a trap or the "unavailable" of a
/// backend fault.
fn answer<T: std::fmt::Debug>(what: &str, result: Answer<T>, accepted: bool) -> Option<T> {
    match result.expect("a host call trapped") {
        Ok(value) => {
            assert!(accepted, "{what}: accepted, the model refuses: {value:?}");
            Some(value)
        }
        Err(store::Error::Other(message)) => {
            assert!(!accepted, "{what}: refused, the model accepts: {message}");
            assert!(!message.contains("unavailable"), "{what}: {message}");
            None
        }
        Err(error) => panic!("{what}: {error:?}"),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fn bucket(rep: u32) -> Resource<Bucket> {
    Resource::new_borrow(rep)
}

async fn run(data: &[u8]) {
    let kv = SqliteKv::open(":memory:").expect("an in-memory key-value table");
    let namespaces = ["ns-one", "ns-two"];
    let grants = KvGrants {
        store: Some(Arc::new(kv.clone()) as Arc<dyn KvStore>),
        namespaces: BTreeMap::from([
            ("one".to_string(), namespaces[0].to_string()),
            ("two".to_string(), namespaces[1].to_string()),
        ]),
    };
    let mut table = ResourceTable::new();
    let mut view = KvView {
        grants: &grants,
        request_id: "fuzz",
        table: &mut table,
    };
    let unknown = store::Host::open(&mut view, "ns-one".to_string()).await;
    assert!(matches!(unknown, Ok(Err(store::Error::NoSuchStore))));
    let mut reps = [0u32; 2];
    for (rep, name) in reps.iter_mut().zip(["one", "two"]) {
        let opened = store::Host::open(&mut view, name.to_string()).await;
        *rep = opened.expect("no trap").expect("a granted bucket").rep();
    }
    let mut models: [BTreeMap<String, Vec<u8>>; 2] = Default::default();

    let mut input = Input(data);
    for _ in 0..MAX_OPS {
        let Some(op) = input.byte() else { break };
        let which = usize::from(op >> 7);
        let (b, model) = (bucket(reps[which]), &mut models[which]);
        match op % 9 {
            0 => {
                let key = input.key();
                let got = store::HostBucket::get(&mut view, b, key.clone()).await;
                if let Some(got) = answer("get", got, key_ok(&key)) {
                    assert_eq!(got.as_ref(), model.get(&key), "get {key:?}");
                }
            }
            1 => {
                let (key, value) = (input.key(), input.value());
                let ok = key_ok(&key) && value_ok(&value);
                let set = store::HostBucket::set(&mut view, b, key.clone(), value.clone()).await;
                if answer("set", set, ok).is_some() {
                    model.insert(key, value);
                }
            }
            2 => {
                let key = input.key();
                let deleted = store::HostBucket::delete(&mut view, b, key.clone()).await;
                if answer("delete", deleted, key_ok(&key)).is_some() {
                    model.remove(&key);
                }
            }
            3 => {
                let key = input.key();
                let exists = store::HostBucket::exists(&mut view, b, key.clone()).await;
                if let Some(exists) = answer("exists", exists, key_ok(&key)) {
                    assert_eq!(exists, model.contains_key(&key), "exists {key:?}");
                }
            }
            4 => {
                let (key, delta) = (input.key(), input.delta());
                let sum = match model.get(&key) {
                    None => Some(delta),
                    Some(value) => counter(value).and_then(|n| n.checked_add(delta)),
                }
                .filter(|_| key_ok(&key));
                let got = atomics::Host::increment(&mut view, b, key.clone(), delta).await;
                if let Some(got) = answer("increment", got, sum.is_some()) {
                    assert_eq!(Some(got), sum, "increment {key:?} by {delta}");
                    model.insert(key, got.to_string().into_bytes());
                }
            }
            5 => {
                let cursor = input.cursor();
                let page = store::HostBucket::list_keys(&mut view, b, cursor).await;
                let page = answer("list-keys", page, true).expect("a page");
                let offset = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
                let expected: Vec<&String> = model.keys().skip(offset).take(LIST_PAGE).collect();
                assert_eq!(
                    page.keys.iter().collect::<Vec<_>>(),
                    expected,
                    "list-keys {cursor:?}"
                );
                let more = model.len().saturating_sub(offset) > LIST_PAGE;
                assert_eq!(page.cursor.is_some(), more, "list-keys {cursor:?}");
                if let Some(next) = page.cursor {
                    assert_eq!(next, cursor.unwrap_or(0) + LIST_PAGE as u64);
                }
            }
            6 => {
                let n = usize::from(input.arg()) % (MAX_BATCH + 1);
                let keys: Vec<String> = (0..n).map(|_| input.key()).collect();
                let ok = keys.iter().all(|k| key_ok(k));
                let got = batch::Host::get_many(&mut view, b, keys.clone()).await;
                if let Some(got) = answer("get-many", got, ok) {
                    let expected: Vec<Option<(String, Vec<u8>)>> = keys
                        .iter()
                        .map(|k| model.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    assert_eq!(got, expected, "get-many {keys:?}");
                }
            }
            7 => {
                let n = usize::from(input.arg()) % (MAX_BATCH + 1);
                let pairs: Vec<(String, Vec<u8>)> =
                    (0..n).map(|_| (input.key(), input.value())).collect();
                let ok = pairs.iter().all(|(k, v)| key_ok(k) && value_ok(v));
                let set = batch::Host::set_many(&mut view, b, pairs.clone()).await;
                if answer("set-many", set, ok).is_some() {
                    model.extend(pairs);
                }
            }
            _ => {
                let n = usize::from(input.arg()) % (MAX_BATCH + 1);
                let keys: Vec<String> = (0..n).map(|_| input.key()).collect();
                let ok = keys.iter().all(|k| key_ok(k));
                let deleted = batch::Host::delete_many(&mut view, b, keys.clone()).await;
                if answer("delete-many", deleted, ok).is_some() {
                    for key in &keys {
                        model.remove(key);
                    }
                }
            }
        }
    }

    // The whole store, read back: pages of a few keys cover each model's
    // keys exactly, in order, and every value is the model's.
    let limit = 1 + usize::from(data.first().copied().unwrap_or(0) % 3);
    for (namespace, model) in namespaces.iter().zip(&models) {
        let mut keys = Vec::new();
        loop {
            let page = kv
                .list(namespace, keys.len() as u64, limit)
                .await
                .expect("list");
            assert!(page.keys.len() <= limit);
            keys.extend(page.keys);
            assert_eq!(
                page.more,
                keys.len() < model.len(),
                "more, at {}",
                keys.len()
            );
            if !page.more {
                break;
            }
        }
        assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
        for (key, value) in model {
            assert_eq!(
                kv.get(namespace, key).await.expect("get").as_ref(),
                Some(value)
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(run(data));
});
