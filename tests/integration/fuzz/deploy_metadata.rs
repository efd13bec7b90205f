//! Deploy metadata (`DeployMetadata::parse`, `SecretRef::parse`): refused,
//! or within the documented caps.

use super::*;
use wasmgate::runtime::bindings::{
    Binding, CGI_VARIABLES, DeployMetadata, MAX_BINDING_VALUE, MAX_BINDINGS, MAX_BINDINGS_TOTAL,
    MAX_BODY_BYTES_CAP, MAX_OUTBOUND_HOSTS, SecretRef, VersionSpec,
};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        "[A-Za-z_]{1,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "name", "text", "json", "secret_ref", "part", "module",
            "main_module", "body_part", "bindings", "extra",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => (0..3usize).prop_map(|k| "x".repeat(MAX_BINDING_VALUE - 1 + k)),
        1 => Just("a\0b".to_string()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z_][A-Za-z0-9_]{0,6}",
        1 => prop::sample::select(CGI_VARIABLES.to_vec()).prop_map(str::to_string),
        1 => prop::sample::select(vec!["http_x", "1A", "", "wasi_snapshot_preview1", "a-b", "é"])
            .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn secret_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "ssm:/a",
            "ssm:",
            "secretsmanager:db",
            "vault:x",
            "arn:aws:ssm:eu-west-1:1:parameter/a",
            "arn:aws:secretsmanager:eu-west-1:1:secret:a",
            "arn:aws:s3:::b",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

/// A binding object: mostly well-formed, sometimes with a field off.
fn binding() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        (name(), text()).prop_map(|(n, t)| json!({"type": "plain_text", "name": n, "text": t})),
        (name(), json_value()).prop_map(|(n, j)| json!({"type": "json", "name": n, "json": j})),
        (
            name(),
            prop::option::of(text()),
            prop::option::of(secret_ref())
        )
            .prop_map(|(n, t, r)| {
                let mut b = json!({"type": "secret_text", "name": n});
                if let Some(t) = t {
                    b["text"] = t.into();
                }
                if let Some(r) = r {
                    b["secret_ref"] = r.into();
                }
                b
            }),
        (name(), "[a-z]{0,3}")
            .prop_map(|(n, p)| json!({"type": "wasm_module", "name": n, "part": p})),
        json_value(),
    ]
}

fn outbound_host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "https://api.example.com", "*://*.internal.example:*", "http://[::1]:8080",
            "http://10.0.0.7:8080", "http://h:0", "https://*", "ftp://x", "https://a/b",
            "https://[zz]", "http://*.", "https://h:65536", "HTTPS://API.Example.com",
        ])
        .prop_map(str::to_string),
        1 => "(https?|\\*)://[a-z0-9.*:\\[\\]]{0,12}",
        1 => any::<String>(),
    ]
}

fn metadata() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of("[a-z]{0,3}"),
        prop::option::of("[a-z]{0,3}"),
        prop::collection::vec(binding(), 0..MAX_BINDINGS + 3),
        prop::option::of(prop_oneof![
            prop::collection::vec(outbound_host(), 0..4),
            prop::collection::vec(outbound_host(), MAX_OUTBOUND_HOSTS..MAX_OUTBOUND_HOSTS + 2),
        ]),
        prop::option::of(prop_oneof![
            prop::sample::select(vec![0, 1, MAX_BODY_BYTES_CAP, MAX_BODY_BYTES_CAP + 1]),
            any::<u64>(),
        ]),
    )
        .prop_map(|(main, body, bindings, outbound, max_body)| {
            let mut m = serde_json::json!({"bindings": bindings});
            if let Some(main) = main {
                m["main_module"] = main.into();
            }
            if let Some(body) = body {
                m["body_part"] = body.into();
            }
            if let Some(outbound) = outbound {
                m["allowed_outbound_hosts"] = outbound.into();
            }
            if let Some(max_body) = max_body {
                m["max_body_bytes"] = max_body.into();
            }
            m
        })
}

/// What [`DeployMetadata::parse`] promises of what it accepts.
fn check_accepted(meta: &DeployMetadata) -> Result<(), TestCaseError> {
    prop_assert!(meta.bindings.len() <= MAX_BINDINGS);
    prop_assert!(meta.allowed_outbound_hosts.len() <= MAX_OUTBOUND_HOSTS);
    prop_assert!(
        meta.max_body_bytes
            .is_none_or(|n| (1..=MAX_BODY_BYTES_CAP).contains(&n))
    );
    prop_assert!(meta.main_module.as_deref() != Some(""));
    let mut names = std::collections::BTreeSet::new();
    let mut total = 0;
    for binding in &meta.bindings {
        prop_assert!(
            names.insert(binding.name()),
            "{} bound twice",
            binding.name()
        );
        let value = match binding {
            Binding::PlainText { text, .. } => text.clone(),
            Binding::Json { json, .. } => json.to_string(),
            Binding::SecretText {
                text, secret_ref, ..
            } => {
                prop_assert!(text.is_some() != secret_ref.is_some());
                if let Some(reference) = secret_ref {
                    prop_assert!(SecretRef::parse(reference).is_ok());
                }
                text.clone().unwrap_or_default()
            }
            Binding::WasmModule { name, part, module } => {
                prop_assert!(!name.is_empty() && name.len() <= 256 && !part.is_empty());
                prop_assert!(module.is_none());
                continue;
            }
            Binding::KvNamespace { name, namespace_id } => {
                prop_assert!(!name.is_empty() && name.len() <= 128);
                prop_assert!(
                    !namespace_id.is_empty()
                        && namespace_id.len() <= 128
                        && !namespace_id.contains('#'),
                    "{namespace_id:?}"
                );
                continue;
            }
        };
        let name = binding.name();
        prop_assert!(
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{:?}",
            name
        );
        let upper = name.to_ascii_uppercase();
        prop_assert!(!CGI_VARIABLES.contains(&upper.as_str()) && !upper.starts_with("HTTP_"));
        prop_assert!(value.len() <= MAX_BINDING_VALUE && !value.contains('\0'));
        total += value.len();
    }
    prop_assert!(total <= MAX_BINDINGS_TOTAL);
    let (spec, secrets) = meta.clone().into_stored(&BTreeMap::new());
    prop_assert_eq!(
        VersionSpec::from_stored(&spec.to_stored()),
        Ok(spec.clone())
    );
    prop_assert!(!spec.has_stored_secrets() || !secrets.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(meta) = DeployMetadata::parse(&bytes) {
            check_accepted(&meta)?;
        }
    }

    #[test]
    fn arbitrary_json_is_refused_or_within_the_caps(value in prop_oneof![json_value(), metadata()]) {
        if let Ok(meta) = DeployMetadata::parse(value.to_string().as_bytes()) {
            check_accepted(&meta)?;
        }
    }

    #[test]
    fn secret_refs_name_what_they_point_at(reference in secret_ref()) {
        match SecretRef::parse(&reference) {
            Ok(SecretRef::Ssm(name)) => prop_assert!(
                reference.strip_prefix("ssm:") == Some(name.as_str())
                    || (name == reference && reference.starts_with("arn:aws") && reference.contains(":ssm:"))
            ),
            Ok(SecretRef::SecretsManager(name)) => prop_assert!(
                reference.strip_prefix("secretsmanager:") == Some(name.as_str())
                    || (name == reference && reference.starts_with("arn:aws") && reference.contains(":secretsmanager:"))
            ),
            Err(_) => {}
        }
        if let Ok(SecretRef::Ssm(name) | SecretRef::SecretsManager(name)) = SecretRef::parse(&reference) {
            prop_assert!(!name.is_empty());
        }
    }
}
