//! Deploy metadata parsing: never panics; what it accepts keeps the
//! documented caps and survives the stored form.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use wasmgate::runtime::bindings::{
    Binding, DeployMetadata, MAX_BINDING_VALUE, MAX_BINDINGS, MAX_BINDINGS_TOTAL,
    MAX_BODY_BYTES_CAP, MAX_OUTBOUND_HOSTS, SecretRef, VersionSpec,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SecretRef::parse(text);
    }
    let Ok(meta) = DeployMetadata::parse(data) else {
        return;
    };
    assert!(meta.bindings.len() <= MAX_BINDINGS);
    assert!(meta.allowed_outbound_hosts.len() <= MAX_OUTBOUND_HOSTS);
    assert!(
        meta.max_body_bytes
            .is_none_or(|n| (1..=MAX_BODY_BYTES_CAP).contains(&n))
    );
    let mut names = BTreeSet::new();
    let mut total = 0;
    for binding in &meta.bindings {
        assert!(
            names.insert(binding.name()),
            "{} bound twice",
            binding.name()
        );
        let value = match binding {
            Binding::PlainText { text, .. } => text.len(),
            Binding::Json { json, .. } => json.to_string().len(),
            Binding::SecretText {
                text, secret_ref, ..
            } => {
                assert!(text.is_some() != secret_ref.is_some());
                if let Some(reference) = secret_ref {
                    assert!(SecretRef::parse(reference).is_ok());
                }
                text.as_ref().map_or(0, String::len)
            }
            Binding::WasmModule { .. } | Binding::KvNamespace { .. } => 0,
        };
        assert!(value <= MAX_BINDING_VALUE);
        total += value;
    }
    assert!(total <= MAX_BINDINGS_TOTAL);
    let (spec, _secrets) = meta.into_stored(&BTreeMap::new());
    assert_eq!(VersionSpec::from_stored(&spec.to_stored()), Ok(spec));
});
