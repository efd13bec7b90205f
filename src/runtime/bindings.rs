//! Deploy metadata and bindings: what a version grants its guest at run time.
//!
//! The metadata has the form of Cloudflare's script upload:
//!
//! ```json
//! {"main_module": "main",
//!  "bindings": [
//!    {"type": "plain_text",  "name": "GREETING", "text": "hello"},
//!    {"type": "json",        "name": "CONFIG",   "json": {"retries": 3}},
//!    {"type": "secret_text", "name": "API_KEY",  "text": "s3cr3t"},
//!    {"type": "secret_text", "name": "DB_PASS",  "secret_ref": "ssm:/prod/db-pass"},
//!    {"type": "wasm_module", "name": "isqrt",    "part": "wasmprogram"},
//!    {"type": "kv_namespace", "name": "CACHE",   "namespace_id": "cache-prod"}]}
//! ```
//!
//! (`body_part` is accepted as the older name of `main_module`.)
//!
//! The first four types become environment variables of the guest
//! (components and WAGI modules alike); a `wasm_module` binding satisfies the
//! main core module's imports from the module of that name with an instance
//! of the bound part.
//!
//! [`DeployMetadata::parse`] checks what a user sends; [`VersionSpec`] is the
//! form stored with the version: `secret_text` values are taken out (stored
//! apart, see [`Secrets`]) and each `wasm_module` names its part's object key.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Most bindings one version may carry.
pub const MAX_BINDINGS: usize = 64;
/// Longest value of one text, JSON or secret binding.
pub const MAX_BINDING_VALUE: usize = 64 * 1024;
/// Most bytes of all a version's binding values together: the live
/// DynamoDB item carries the live and the candidate version's bindings and
/// must stay under DynamoDB's 400 KB item limit.
pub const MAX_BINDINGS_TOTAL: usize = 96 * 1024;

/// The CGI variables wasmgate sets for WAGI modules: no binding may take
/// these names (nor any `HTTP_*` name).
pub const CGI_VARIABLES: &[&str] = &[
    "AUTH_TYPE",
    "CONTENT_LENGTH",
    "CONTENT_TYPE",
    "GATEWAY_INTERFACE",
    "PATH_INFO",
    "PATH_TRANSLATED",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REMOTE_USER",
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "SERVER_SOFTWARE",
    "X_MATCHED_ROUTE",
    "X_RAW_PATH_INFO",
    "X_FULL_URL",
];

/// Import module names a `wasm_module` binding may not take: they are WASI's.
const RESERVED_IMPORT_MODULES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

/// Secret values by binding name: stored apart from the version record and
/// never printed.
pub type Secrets = BTreeMap<String, String>;

/// One binding, as sent in deploy metadata and as stored with a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Binding {
    /// An environment variable `name` = `text`.
    PlainText { name: String, text: String },
    /// An environment variable `name` = the JSON value, serialised.
    Json {
        name: String,
        json: serde_json::Value,
    },
    /// An environment variable `name` = a secret: either `text` (stored apart
    /// from the version, never shown) or `secret_ref`, an AWS Secrets
    /// Manager secret or SSM parameter the server reads (and caches).
    SecretText {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_ref: Option<String>,
    },
    /// The uploaded part `part` (a core module) satisfies the main module's
    /// imports from module `name`. Stored with `module`, the part's key.
    WasmModule {
        name: String,
        part: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        module: Option<String>,
    },
    /// `wasi:keyvalue/store.open(name)` opens the namespace `namespace_id`.
    KvNamespace { name: String, namespace_id: String },
}

impl Binding {
    pub fn name(&self) -> &str {
        match self {
            Binding::PlainText { name, .. }
            | Binding::Json { name, .. }
            | Binding::SecretText { name, .. }
            | Binding::WasmModule { name, .. }
            | Binding::KvNamespace { name, .. } => name,
        }
    }

    /// `name:type`, for reports and history (never a value).
    pub fn label(&self) -> String {
        format!("{}:{}", self.name(), self.kind())
    }

    fn kind(&self) -> &'static str {
        match self {
            Binding::PlainText { .. } => "plain_text",
            Binding::Json { .. } => "json",
            Binding::SecretText { .. } => "secret_text",
            Binding::WasmModule { .. } => "wasm_module",
            Binding::KvNamespace { .. } => "kv_namespace",
        }
    }
}

/// Why deploy metadata was refused. Nothing was stored or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("the metadata is not valid JSON: {0}")]
    Json(String),
    #[error("the metadata {0}")]
    Shape(String),
    #[error("binding {index}{name}: {message}")]
    Binding {
        index: usize,
        name: String,
        message: String,
    },
    #[error("{0}")]
    Parts(String),
}

/// Deploy metadata, checked: the main part's name and the bindings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeployMetadata {
    /// The part holding the main module (`main_module` or `body_part`).
    pub main_module: Option<String>,
    pub bindings: Vec<Binding>,
    /// The script name of an upload through the admin API, kept with the
    /// version.
    pub script: Option<String>,
    /// Hosts the guest may call over wasi:http (none by default), see
    /// [`crate::runtime::outbound`].
    pub allowed_outbound_hosts: Vec<String>,
    /// Whether outbound requests may reach private addresses (10/8, ...)
    /// that no entry names, see [`crate::runtime::outbound`].
    pub allow_private_networks: bool,
    /// This version's request body limit, under `WASMGATE_MAX_BODY_BYTES`.
    pub max_body_bytes: Option<u64>,
    /// This version's memory cap for a whole instance (every memory and
    /// table), in MiB, under `WASMGATE_MEMORY_LIMIT_MB`.
    pub memory_limit_mb: Option<u64>,
    /// This version's deadline per request, in milliseconds, under
    /// `WASMGATE_TIMEOUT_MS`.
    pub timeout_ms: Option<u64>,
}

/// Largest `max_body_bytes` a version may ask for.
pub const MAX_BODY_BYTES_CAP: u64 = 1 << 30;
/// Most `allowed_outbound_hosts` entries.
pub const MAX_OUTBOUND_HOSTS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(default)]
    main_module: Option<String>,
    #[serde(default)]
    body_part: Option<String>,
    #[serde(default)]
    bindings: Vec<serde_json::Value>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allow_private_networks: bool,
    #[serde(default)]
    max_body_bytes: Option<u64>,
    #[serde(default)]
    memory_limit_mb: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl DeployMetadata {
    /// Parses and checks metadata JSON: known fields only, each binding of a
    /// known type with its fields, names unique and usable as environment
    /// variable names, values within [`MAX_BINDING_VALUE`].
    pub fn parse(json: &[u8]) -> Result<Self, MetadataError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| MetadataError::Json(e.to_string()))?;
        if !value.is_object() {
            return Err(MetadataError::Shape(
                "must be a JSON object like {\"main_module\": \"main\", \"bindings\": []}".into(),
            ));
        }
        let raw: RawMetadata = serde_json::from_value(value).map_err(|e| {
            MetadataError::Shape(format!(
                "has a problem: {e} (known fields: main_module, body_part, bindings, allowed_outbound_hosts, allow_private_networks, max_body_bytes, memory_limit_mb, timeout_ms)"
            ))
        })?;
        let main_module = match (raw.main_module, raw.body_part) {
            (Some(a), Some(b)) if a != b => {
                return Err(MetadataError::Shape(format!(
                    "names two main parts: main_module {a:?} and body_part {b:?} (body_part is the older name of main_module; give one)"
                )));
            }
            (Some(a), _) | (None, Some(a)) => Some(a),
            (None, None) => None,
        };
        if main_module.as_deref().is_some_and(str::is_empty) {
            return Err(MetadataError::Shape("has an empty main_module".into()));
        }
        if raw.allowed_outbound_hosts.len() > MAX_OUTBOUND_HOSTS {
            return Err(MetadataError::Shape(format!(
                "has {} allowed_outbound_hosts; at most {MAX_OUTBOUND_HOSTS} are allowed",
                raw.allowed_outbound_hosts.len()
            )));
        }
        crate::runtime::outbound::OutboundPolicy::parse(&raw.allowed_outbound_hosts)
            .map_err(MetadataError::Shape)?;
        if let Some(limit) = raw.max_body_bytes
            && !(1..=MAX_BODY_BYTES_CAP).contains(&limit)
        {
            return Err(MetadataError::Shape(format!(
                "has max_body_bytes {limit}; it must be from 1 to {MAX_BODY_BYTES_CAP} (1 GiB)"
            )));
        }
        if let Some(mb) = raw.memory_limit_mb
            && !(1..=4096).contains(&mb)
        {
            return Err(MetadataError::Shape(format!(
                "has memory_limit_mb {mb}; it must be from 1 to 4096"
            )));
        }
        if let Some(ms) = raw.timeout_ms
            && !(1..=900_000).contains(&ms)
        {
            return Err(MetadataError::Shape(format!(
                "has timeout_ms {ms}; it must be from 1 to 900000"
            )));
        }
        if raw.bindings.len() > MAX_BINDINGS {
            return Err(MetadataError::Shape(format!(
                "has {} bindings; at most {MAX_BINDINGS} are allowed",
                raw.bindings.len()
            )));
        }
        let total: usize = raw.bindings.iter().map(|b| b.to_string().len()).sum();
        if total > MAX_BINDINGS_TOTAL {
            return Err(MetadataError::Shape(format!(
                "has {total} bytes of bindings; at most {} KiB in all are allowed",
                MAX_BINDINGS_TOTAL >> 10
            )));
        }
        let mut bindings = Vec::with_capacity(raw.bindings.len());
        let mut names = BTreeSet::new();
        for (index, value) in raw.bindings.into_iter().enumerate() {
            let name_hint = value
                .get("name")
                .and_then(|n| n.as_str())
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let fail = |message: String| MetadataError::Binding {
                index,
                name: name_hint.clone(),
                message,
            };
            if !value.is_object() {
                return Err(fail("must be an object with a `type` and a `name`".into()));
            }
            if value.get("type").is_none() {
                return Err(fail(
                    "has no `type` (plain_text, json, secret_text, wasm_module or kv_namespace)"
                        .into(),
                ));
            }
            let binding: Binding =
                serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
            check_binding(&binding).map_err(fail)?;
            if !names.insert(binding.name().to_string()) {
                return Err(fail(format!(
                    "the name {:?} is bound twice",
                    binding.name()
                )));
            }
            bindings.push(binding);
        }
        Ok(DeployMetadata {
            main_module,
            bindings,
            script: None,
            allowed_outbound_hosts: raw.allowed_outbound_hosts,
            allow_private_networks: raw.allow_private_networks,
            max_body_bytes: raw.max_body_bytes,
            memory_limit_mb: raw.memory_limit_mb,
            timeout_ms: raw.timeout_ms,
        })
    }

    /// The parts `wasm_module` bindings name, by binding name.
    pub fn module_parts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.bindings.iter().filter_map(|b| match b {
            Binding::WasmModule { name, part, .. } => Some((name.as_str(), part.as_str())),
            _ => None,
        })
    }

    /// Checks the uploaded part names against the bindings: every part a
    /// binding names was uploaded, every uploaded part is used, and none is
    /// named like the main module.
    pub fn check_parts<'a>(
        &self,
        uploaded: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), MetadataError> {
        let uploaded: BTreeSet<&str> = uploaded.into_iter().collect();
        if let Some(main) = &self.main_module
            && uploaded.contains(main.as_str())
        {
            return Err(MetadataError::Parts(format!(
                "part {main:?} is the main module (main_module); it cannot also be a bound part"
            )));
        }
        let mut used = BTreeSet::new();
        for (name, part) in self.module_parts() {
            if !uploaded.contains(part) {
                return Err(MetadataError::Parts(format!(
                    "binding {name:?} names part {part:?}, which was not uploaded (give it with --part {part}=FILE)"
                )));
            }
            used.insert(part);
        }
        if let Some(unused) = uploaded.iter().find(|p| !used.contains(*p)) {
            return Err(MetadataError::Parts(format!(
                "part {unused:?} was uploaded but no wasm_module binding uses it"
            )));
        }
        Ok(())
    }

    /// Splits the metadata into the form stored with the version (secret
    /// values taken out, each part replaced by its object key from
    /// `part_keys`) and the secret values.
    pub fn into_stored(self, part_keys: &BTreeMap<String, String>) -> (VersionSpec, Secrets) {
        let mut secrets = Secrets::new();
        let bindings = self
            .bindings
            .into_iter()
            .map(|binding| match binding {
                Binding::SecretText {
                    name,
                    text: Some(text),
                    ..
                } => {
                    secrets.insert(name.clone(), text);
                    Binding::SecretText {
                        name,
                        text: None,
                        secret_ref: None,
                    }
                }
                Binding::WasmModule { name, part, .. } => {
                    let module = part_keys.get(&part).cloned();
                    Binding::WasmModule { name, part, module }
                }
                other => other,
            })
            .collect();
        (
            VersionSpec {
                main_module: self.main_module,
                bindings,
                script: self.script,
                allowed_outbound_hosts: self.allowed_outbound_hosts,
                allow_private_networks: self.allow_private_networks,
                max_body_bytes: self.max_body_bytes,
                memory_limit_mb: self.memory_limit_mb,
                timeout_ms: self.timeout_ms,
                precompiled: Vec::new(),
                abi: None,
            },
            secrets,
        )
    }
}

fn check_binding(binding: &Binding) -> Result<(), String> {
    let name = binding.name();
    match binding {
        Binding::WasmModule { part, .. } => {
            if name.is_empty() || name.len() > 256 || name.contains('\0') {
                return Err("a wasm_module name must be 1-256 characters".into());
            }
            if RESERVED_IMPORT_MODULES.contains(&name) {
                return Err(format!(
                    "{name:?} is WASI's import module; pick another name"
                ));
            }
            if part.is_empty() {
                return Err("has an empty `part`".into());
            }
        }
        Binding::KvNamespace { namespace_id, .. } => {
            check_store_name(name)?;
            check_namespace_id(namespace_id)?;
        }
        _ => check_env_name(name)?,
    }
    let value_len = match binding {
        Binding::PlainText { text, .. } => text.len(),
        Binding::Json { json, .. } => json.to_string().len(),
        Binding::SecretText {
            text, secret_ref, ..
        } => match (text, secret_ref) {
            (Some(_), Some(_)) => {
                return Err("give either `text` or `secret_ref`, not both".into());
            }
            (None, None) => {
                return Err(
                    "needs `text` (the secret) or `secret_ref` (an AWS Secrets Manager secret or SSM parameter)"
                        .into(),
                );
            }
            (Some(text), None) => text.len(),
            (None, Some(reference)) => {
                SecretRef::parse(reference)?;
                0
            }
        },
        Binding::WasmModule { .. } | Binding::KvNamespace { .. } => 0,
    };
    if value_len > MAX_BINDING_VALUE {
        return Err(format!(
            "its value is {value_len} bytes; at most {MAX_BINDING_VALUE} are allowed"
        ));
    }
    if let Binding::PlainText { text, .. }
    | Binding::SecretText {
        text: Some(text), ..
    } = binding
        && text.contains('\0')
    {
        return Err("its text contains a NUL character, which an environment cannot hold".into());
    }
    Ok(())
}

/// The name a guest opens a key-value store by: 1-128 printable ASCII
/// characters.
fn check_store_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{name:?} is not a usable store name (1-128 printable ASCII characters, no spaces)"
        ));
    }
    Ok(())
}

/// A key-value namespace id: 1-128 of `A-Z a-z 0-9 . _ -`.
fn check_namespace_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(format!(
            "namespace_id {id:?} must be 1-128 characters of letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// Binding names that become environment variables: `[A-Za-z_][A-Za-z0-9_]*`,
/// not a CGI variable, not `HTTP_*`.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !valid {
        return Err(format!(
            "{name:?} is not a usable environment variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    let upper = name.to_ascii_uppercase();
    if CGI_VARIABLES.contains(&upper.as_str()) || upper.starts_with("HTTP_") {
        return Err(format!(
            "{name:?} is a CGI variable wasmgate sets for WAGI modules; pick another name"
        ));
    }
    Ok(())
}

/// Where a `secret_ref` points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An AWS Secrets Manager secret: its name or ARN (the string value).
    SecretsManager(String),
    /// An SSM Parameter Store parameter: its name or ARN (decrypted).
    Ssm(String),
}

impl SecretRef {
    /// Accepts `secretsmanager:NAME`, `ssm:NAME`, or a full
    /// `arn:aws:secretsmanager:...` / `arn:aws:ssm:...:parameter/...` ARN.
    pub fn parse(reference: &str) -> Result<SecretRef, String> {
        let bad = || {
            format!(
                "secret_ref {reference:?} is not `secretsmanager:NAME`, `ssm:NAME`, or an arn:aws:secretsmanager / arn:aws:ssm ARN"
            )
        };
        if let Some(name) = reference.strip_prefix("secretsmanager:") {
            return (!name.is_empty())
                .then(|| SecretRef::SecretsManager(name.to_string()))
                .ok_or_else(bad);
        }
        if let Some(name) = reference.strip_prefix("ssm:") {
            return (!name.is_empty())
                .then(|| SecretRef::Ssm(name.to_string()))
                .ok_or_else(bad);
        }
        let parts: Vec<&str> = reference.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, "secretsmanager", _, _, rest]
                if partition.starts_with("aws") && rest.starts_with("secret:") =>
            {
                Ok(SecretRef::SecretsManager(reference.to_string()))
            }
            ["arn", partition, "ssm", _, _, rest]
                if partition.starts_with("aws") && rest.starts_with("parameter/") =>
            {
                Ok(SecretRef::Ssm(reference.to_string()))
            }
            _ => Err(bad()),
        }
    }
}

/// Deploy metadata as stored with a version (and copied onto the live
/// pointer): no secret values, parts by object key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_module: Option<String>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// The script name, when uploaded through the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_networks: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// The version's memory cap per instance, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
    /// The version's deadline per request, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The precompiled artifacts the deploy stored beside the main module,
    /// with their digests (see `modules/artifact.rs`). Written by wasmgate
    /// only: deploy metadata cannot set it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub precompiled: Vec<crate::modules::Precompiled>,
    /// What the deploy found the main module to be (`wasi:http 0.3
    /// component`, ...), for the history. Written by wasmgate only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
}

impl VersionSpec {
    /// Reads the stored form. Versions recorded before bindings existed
    /// hold `{}`, which is an empty spec.
    pub fn from_stored(metadata: &serde_json::Value) -> Result<Self, String> {
        if metadata.is_null() {
            return Ok(VersionSpec::default());
        }
        serde_json::from_value(metadata.clone())
            .map_err(|e| format!("the version's stored metadata is unreadable: {e}"))
    }

    pub fn to_stored(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("BUG: a VersionSpec always serialises")
    }

    /// Whether any binding's value is stored apart (`secret_text` with `text`).
    pub fn has_stored_secrets(&self) -> bool {
        self.bindings.iter().any(|b| {
            matches!(
                b,
                Binding::SecretText {
                    secret_ref: None,
                    ..
                }
            )
        })
    }

    /// The bound modules: (import module name, object key).
    pub fn modules(&self) -> Vec<(String, String)> {
        self.bindings
            .iter()
            .filter_map(|b| match b {
                Binding::WasmModule {
                    name,
                    module: Some(key),
                    ..
                } => Some((name.clone(), key.clone())),
                _ => None,
            })
            .collect()
    }

    /// The key-value namespaces: (store name, namespace id).
    pub fn kv_namespaces(&self) -> impl Iterator<Item = (&str, &str)> {
        self.bindings.iter().filter_map(|b| match b {
            Binding::KvNamespace { name, namespace_id } => {
                Some((name.as_str(), namespace_id.as_str()))
            }
            _ => None,
        })
    }

    /// A one-line summary for `history`: binding names and types, no values.
    pub fn summary(&self) -> String {
        self.bindings
            .iter()
            .map(Binding::label)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The environment a guest of this version sees: plain and JSON bindings
/// from the spec, secrets from `secrets` (stored) and `resolved` (by
/// reference). Fails when a secret is missing.
pub fn environment(
    spec: &VersionSpec,
    secrets: &Secrets,
    resolved: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for binding in &spec.bindings {
        let value = match binding {
            Binding::PlainText { text, .. } => text.clone(),
            Binding::Json { json, .. } => json.to_string(),
            Binding::SecretText {
                name,
                secret_ref: None,
                ..
            } => secrets
                .get(name)
                .cloned()
                .ok_or_else(|| format!("the stored value of secret {name:?} is missing"))?,
            Binding::SecretText {
                name,
                secret_ref: Some(reference),
                ..
            } => resolved
                .get(name)
                .cloned()
                .ok_or_else(|| format!("secret {name:?} ({reference}) was not resolved"))?,
            Binding::WasmModule { .. } | Binding::KvNamespace { .. } => continue,
        };
        env.push((binding.name().to_string(), value));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DeployMetadata, MetadataError> {
        DeployMetadata::parse(json.as_bytes())
    }

    #[test]
    fn accepts_every_binding_type_and_body_part() {
        let meta = parse(
            r#"{"body_part": "script", "bindings": [
                {"type": "plain_text", "name": "GREETING", "text": "hi"},
                {"type": "json", "name": "CONFIG", "json": {"a": [1, 2]}},
                {"type": "secret_text", "name": "KEY", "text": "s3cr3t"},
                {"type": "secret_text", "name": "DB", "secret_ref": "ssm:/prod/db"},
                {"type": "wasm_module", "name": "isqrt", "part": "wasmprogram"}]}"#,
        )
        .unwrap();
        assert_eq!(meta.main_module.as_deref(), Some("script"));
        assert_eq!(meta.bindings.len(), 5);
        meta.check_parts(["wasmprogram"]).unwrap();

        let keys = BTreeMap::from([("wasmprogram".to_string(), "application/wasm/k".to_string())]);
        let (spec, secrets) = meta.into_stored(&keys);
        assert_eq!(secrets.get("KEY").map(String::as_str), Some("s3cr3t"));
        let stored = spec.to_stored().to_string();
        assert!(!stored.contains("s3cr3t"), "secret kept out: {stored}");
        assert!(stored.contains("application/wasm/k"));
        assert_eq!(
            spec.modules(),
            vec![("isqrt".to_string(), "application/wasm/k".to_string())]
        );
        let resolved = BTreeMap::from([("DB".to_string(), "pw".to_string())]);
        let env = environment(&spec, &secrets, &resolved).unwrap();
        assert_eq!(
            env,
            vec![
                ("GREETING".to_string(), "hi".to_string()),
                ("CONFIG".to_string(), r#"{"a":[1,2]}"#.to_string()),
                ("KEY".to_string(), "s3cr3t".to_string()),
                ("DB".to_string(), "pw".to_string()),
            ]
        );
        assert_eq!(VersionSpec::from_stored(&spec.to_stored()).unwrap(), spec);
    }

    #[test]
    fn deploy_metadata_cannot_name_precompiled_code() {
        // Only a deploy records artifacts, with the digests of what it
        // compiled itself: metadata that names one is refused outright.
        let err = parse(
            r#"{"precompiled": [{"key": "application/wasm/1b/sha256-x.cwasm", "len": 1, "sha256": "00"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("precompiled"), "{err}");
        let (spec, _) = parse("{}").unwrap().into_stored(&BTreeMap::new());
        assert!(spec.precompiled.is_empty());
    }

    #[test]
    fn refuses_each_bad_binding_with_a_clear_message() {
        let cases = [
            (
                r#"{"bindings": [{"type": "r2_bucket", "name": "A"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"bindings": [{"type": "kv_namespace", "name": "A"}]}"#,
                "missing field `namespace_id`",
            ),
            (
                r#"{"bindings": [{"type": "kv_namespace", "name": "A", "namespace_id": "kv#x"}]}"#,
                "namespace_id \"kv#x\" must be",
            ),
            (
                r#"{"bindings": [{"type": "kv_namespace", "name": "my store", "namespace_id": "x"}]}"#,
                "not a usable store name",
            ),
            (
                r#"{"bindings": [{"type": "plain_text", "name": "A"}]}"#,
                "missing field `text`",
            ),
            (
                r#"{"bindings": [{"name": "A", "text": "x"}]}"#,
                "has no `type`",
            ),
            (
                r#"{"bindings": [{"type": "plain_text", "name": "1A", "text": "x"}]}"#,
                "environment variable name",
            ),
            (
                r#"{"bindings": [{"type": "plain_text", "name": "PATH_INFO", "text": "x"}]}"#,
                "CGI variable",
            ),
            (
                r#"{"bindings": [{"type": "plain_text", "name": "HTTP_X", "text": "x"}]}"#,
                "CGI variable",
            ),
            (
                r#"{"bindings": [{"type": "plain_text", "name": "A", "text": "x", "extra": 1}]}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"bindings": [{"type": "secret_text", "name": "A"}]}"#,
                "needs `text`",
            ),
            (
                r#"{"bindings": [{"type": "secret_text", "name": "A", "text": "x", "secret_ref": "ssm:a"}]}"#,
                "not both",
            ),
            (
                r#"{"bindings": [{"type": "secret_text", "name": "A", "secret_ref": "vault:a"}]}"#,
                "is not `secretsmanager:NAME`",
            ),
            (
                r#"{"bindings": [{"type": "wasm_module", "name": "m"}]}"#,
                "missing field `part`",
            ),
            (
                r#"{"bindings": [{"type": "wasm_module", "name": "wasi_snapshot_preview1", "part": "p"}]}"#,
                "WASI's import module",
            ),
            (
                r#"{"bindings": [{"type": "plain_text", "name": "A", "text": "x"}, {"type": "json", "name": "A", "json": 1}]}"#,
                "bound twice",
            ),
            (
                r#"{"main_module": "a", "body_part": "b"}"#,
                "names two main parts",
            ),
            (r#"{"main": "a"}"#, "unknown field `main`"),
            (r#"["a"]"#, "must be a JSON object"),
            (r#"{"bindings": "#, "not valid JSON"),
        ];
        let many = (0..3)
            .map(|i| {
                format!(
                    r#"{{"type": "plain_text", "name": "B{i}", "text": "{}"}}"#,
                    "x".repeat(40_000)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let error = parse(&format!(r#"{{"bindings": [{many}]}}"#))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KiB in all"), "{error}");
        for (json, expected) in cases {
            let error = parse(json).expect_err(json).to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn parts_must_match_the_bindings() {
        let meta = parse(
            r#"{"main_module": "main", "bindings": [{"type": "wasm_module", "name": "isqrt", "part": "lib"}]}"#,
        )
        .unwrap();
        assert!(meta.check_parts(["lib"]).is_ok());
        let missing = meta.check_parts([]).unwrap_err().to_string();
        assert!(missing.contains("not uploaded"), "{missing}");
        let unused = meta.check_parts(["lib", "other"]).unwrap_err().to_string();
        assert!(
            unused.contains("no wasm_module binding uses it"),
            "{unused}"
        );
        let main = meta.check_parts(["lib", "main"]).unwrap_err().to_string();
        assert!(main.contains("is the main module"), "{main}");
    }

    #[test]
    fn secret_refs() {
        assert_eq!(
            SecretRef::parse("ssm:/a/b").unwrap(),
            SecretRef::Ssm("/a/b".into())
        );
        assert_eq!(
            SecretRef::parse("secretsmanager:prod/db").unwrap(),
            SecretRef::SecretsManager("prod/db".into())
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
        assert_eq!(
            SecretRef::parse(arn).unwrap(),
            SecretRef::SecretsManager(arn.into())
        );
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db";
        assert_eq!(SecretRef::parse(arn).unwrap(), SecretRef::Ssm(arn.into()));
        assert!(SecretRef::parse("arn:aws:s3:::bucket").is_err());
        assert!(SecretRef::parse("ssm:").is_err());
    }
}
