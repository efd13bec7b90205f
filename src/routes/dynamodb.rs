//! `DynamoRouteTable` (feature `aws`): the route table in DynamoDB, laid out
//! so ops can read and flip it by hand.
//!
//! | item | `route` (S, partition) | `rev` (S, sort) | attributes |
//! |---|---|---|---|
//! | live pointer | `/api` | `live` | `module` (S), `version` (N), `updated_at`, `updated_by`, `metadata` (S, JSON), `metadata_of` (S); during a rollout `split_id`, `split_version`, `split_module`, `split_percent`, `split_sticky_header`, `split_max_error_rate`, `split_window_s`, `split_min_requests`, `split_metadata` |
//! | version N | `/api` | `v00000042` | `module`, `version`, `created_at`, `created_by`, `metadata` (S, JSON), `preview_token` |
//! | its preview copy | `/api` | `preview#{token}` | the version item's attributes, for a preview deploy until the version goes live |
//! | secrets of version N | `/api` | `secret#v00000042` | `values` (M of S): `secret_text` values |
//! | pointer change | `/api` | `change#{ms}#{rand}` | `at`, `actor`, `action`, `from_version`, `from_module`, `to_version`, `to_module`, `reason` |
//!
//! A lookup is one `BatchGetItem` of every candidate's live item. A flip is
//! one `TransactWriteItems`: the new live item, conditional on the one read,
//! plus its change record; a failed condition is a conflict and writes
//! nothing.
//!
//! The flip copies the version's metadata (its bindings, no secret values)
//! onto the live item, with `metadata_of` = `v{N} {module}` naming what it
//! belongs to, so a lookup stays one read. A hand flip that sets only
//! `module` and `version` leaves `metadata_of` stale: the copy is then
//! ignored and the version record is read instead.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem, Update,
};

use super::{
    ChangeNote, DEFAULT_MIN_REQUESTS, DEFAULT_WINDOW_SECS, LivePointer, NewVersion, PointerChange,
    RouteName, RouteTable, Secrets, Split, TableError, Version, describe, describe_split,
    now_rfc3339, split_move,
};

/// The sort key of a route's live pointer.
pub const LIVE_REV: &str = "live";
/// Most keys in one `BatchGetItem`.
const BATCH_LIMIT: usize = 100;
/// Rounds of retrying keys DynamoDB left unprocessed (throttling).
const UNPROCESSED_RETRIES: u32 = 5;

type Item = HashMap<String, AttributeValue>;

/// Routes, versions and pointer history in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoRouteTable {
    client: Client,
    table: String,
}

impl DynamoRouteTable {
    /// A table named `table`, through `client` (built by the caller).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoRouteTable {
            client,
            table: table.into(),
        }
    }

    fn unavailable<E, R>(&self, what: &str, error: SdkError<E, R>) -> TableError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        TableError::Unavailable(format!(
            "{what} on table {}: {}",
            self.table,
            DisplayErrorContext(&error)
        ))
    }

    /// Every item of `route` whose `rev` starts with `prefix`, in `rev` order.
    async fn query_prefix(&self, route: &RouteName, prefix: &str) -> Result<Vec<Item>, TableError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#route = :route AND begins_with(#rev, :prefix)")
                .expression_attribute_names("#route", "route")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":route", s(route.to_string()))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.unavailable("query", e))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// The highest version number of `route` (0 when none).
    async fn highest_version(&self, route: &RouteName) -> Result<u64, TableError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#route = :route AND begins_with(#rev, :v)")
            .expression_attribute_names("#route", "route")
            .expression_attribute_names("#rev", "rev")
            .expression_attribute_values(":route", s(route.to_string()))
            .expression_attribute_values(":v", s("v"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("query", e))?;
        let items = output.items.unwrap_or_default();
        match items.first() {
            Some(item) => Ok(version_from_item(item)?.number),
            None => Ok(0),
        }
    }

    async fn read_live(&self, route: &RouteName) -> Option<(String, Option<u64>)> {
        let live = self.lookup(std::slice::from_ref(route)).await.ok()?;
        live.into_iter().next().map(|p| (p.module, p.version))
    }
}

#[async_trait]
impl RouteTable for DynamoRouteTable {
    async fn lookup(&self, candidates: &[RouteName]) -> Result<Vec<LivePointer>, TableError> {
        // DynamoDB rejects a batch that names a key twice.
        let mut unique: Vec<&RouteName> = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            if !unique.contains(&candidate) {
                unique.push(candidate);
            }
        }
        let mut found = Vec::new();
        for chunk in unique.chunks(BATCH_LIMIT) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|route| {
                    HashMap::from([
                        ("route".to_string(), s(route.to_string())),
                        ("rev".to_string(), s(LIVE_REV)),
                    ])
                })
                .collect();
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                // A flip (by the CLI or by hand) must be seen within the TTL.
                .consistent_read(true)
                .build()
                .expect("BUG: keys are set");
            for attempt in 0..=UNPROCESSED_RETRIES {
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| self.unavailable("batch-get-item", e))?;
                if let Some(items) = output.responses.and_then(|mut r| r.remove(&self.table)) {
                    for item in &items {
                        // One bad item (a hand edit gone wrong) must not take
                        // down every route below it: skip it, loudly.
                        match live_from_item(item) {
                            Ok(pointer) => found.push(pointer),
                            Err(error) => {
                                tracing::error!(table = %self.table, %error, "skipping a malformed live item")
                            }
                        }
                    }
                }
                match output
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                {
                    Some(rest) if !rest.keys.is_empty() && attempt < UNPROCESSED_RETRIES => {
                        tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                        request = rest;
                    }
                    Some(rest) if !rest.keys.is_empty() => {
                        return Err(TableError::Unavailable(format!(
                            "table {} left {} keys unprocessed after {UNPROCESSED_RETRIES} retries (throttled?)",
                            self.table,
                            rest.keys.len()
                        )));
                    }
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    async fn list(&self) -> Result<Vec<LivePointer>, TableError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                // Guests' key-value items (`kv#...` partitions) may have
                // any key, `live` included: they are no routes.
                .filter_expression("#rev = :live AND NOT begins_with(#route, :kv)")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_names("#route", "route")
                .expression_attribute_values(":live", s(LIVE_REV))
                .expression_attribute_values(":kv", s("kv#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.unavailable("scan", e))?;
            for item in output.items.unwrap_or_default() {
                found.push(live_from_item(&item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        found.sort_by_key(|p| p.route.to_string());
        Ok(found)
    }

    async fn add_version(
        &self,
        route: &RouteName,
        version: NewVersion,
    ) -> Result<Version, TableError> {
        // Version numbers are claimed with a conditional put; a concurrent
        // deploy that claimed the same number makes us try the next one.
        for _ in 0..5 {
            let number = self.highest_version(route).await? + 1;
            let record = Version {
                route: route.clone(),
                number,
                module: version.module.to_string(),
                created_at: now_rfc3339(),
                created_by: version.actor.clone(),
                metadata: version.metadata.clone(),
                preview_token: version.preview_token.clone(),
            };
            // One transaction: the version (claiming its number), for a
            // preview its preview item (a copy keyed by the token, so a
            // preview request is one read) and, if any, its secret values.
            let build = |e: aws_sdk_dynamodb::error::BuildError| {
                TableError::Unavailable(format!("building the version write: {e}"))
            };
            let put_version = Put::builder()
                .table_name(&self.table)
                .set_item(Some(version_item(&record)))
                .condition_expression("attribute_not_exists(#rev)")
                .expression_attribute_names("#rev", "rev")
                .build()
                .map_err(build)?;
            let mut transaction = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put_version).build());
            if let Some(token) = &version.preview_token {
                let mut preview = version_item(&record);
                preview.insert("rev".into(), s(preview_rev(token)));
                let put_preview = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(preview))
                    .build()
                    .map_err(build)?;
                transaction = transaction
                    .transact_items(TransactWriteItem::builder().put(put_preview).build());
            }
            if !version.secrets.is_empty() {
                let values = version
                    .secrets
                    .iter()
                    .map(|(name, value)| (name.clone(), s(value)))
                    .collect();
                let put_secrets = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(HashMap::from([
                        ("route".to_string(), s(route.to_string())),
                        ("rev".to_string(), s(secret_rev(number))),
                        ("values".to_string(), AttributeValue::M(values)),
                    ])))
                    .build()
                    .map_err(build)?;
                transaction = transaction
                    .transact_items(TransactWriteItem::builder().put(put_secrets).build());
            }
            match transaction.send().await {
                Ok(_) => return Ok(record),
                Err(SdkError::ServiceError(e)) if is_condition_failure(e.err()) => continue,
                Err(error) => return Err(self.unavailable("transact-write-items", error)),
            }
        }
        Err(TableError::Conflict {
            route: route.to_string(),
            expected: "a free version number".into(),
            found: "every number taken by concurrent deploys".into(),
        })
    }

    async fn versions(&self, route: &RouteName) -> Result<Vec<Version>, TableError> {
        self.query_prefix(route, "v")
            .await?
            .iter()
            .map(version_from_item)
            .collect()
    }

    async fn flip(
        &self,
        route: &RouteName,
        expected: Option<&LivePointer>,
        to: &Version,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError> {
        let at = now_rfc3339();
        let name = route.to_string();
        let live: Item = HashMap::from([
            ("route".to_string(), s(&name)),
            ("rev".to_string(), s(LIVE_REV)),
            ("module".to_string(), s(&to.module)),
            ("version".to_string(), n(to.number)),
            ("updated_at".to_string(), s(&at)),
            ("updated_by".to_string(), s(&note.actor)),
            ("metadata".to_string(), s(to.metadata.to_string())),
            (
                "metadata_of".to_string(),
                s(metadata_of(to.number, &to.module)),
            ),
        ]);
        let mut put_live = Put::builder()
            .table_name(&self.table)
            .expression_attribute_names("#route", "route");
        put_live = match expected {
            None => put_live.condition_expression("attribute_not_exists(#route)"),
            Some(pointer) => {
                let (condition, values) = pointer_condition(pointer);
                let mut put = put_live
                    .expression_attribute_names("#module", "module")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_names("#split_id", "split_id");
                for (name, value) in values {
                    put = put.expression_attribute_values(name, value);
                }
                put.condition_expression(format!("attribute_exists(#route) AND {condition}"))
            }
        };
        let put_live = put_live
            .set_item(Some(live))
            .build()
            .map_err(|e| TableError::Unavailable(format!("building the flip: {e}")))?;

        let mut change: Item = HashMap::from([
            ("route".to_string(), s(&name)),
            ("rev".to_string(), s(change_rev())),
            ("at".to_string(), s(&at)),
            ("actor".to_string(), s(&note.actor)),
            ("action".to_string(), s(&note.action)),
            ("to_version".to_string(), n(to.number)),
            ("to_module".to_string(), s(&to.module)),
        ]);
        if let Some(pointer) = expected {
            change.insert("from_module".into(), s(&pointer.module));
            if let Some(v) = note.from_version.or(pointer.version) {
                change.insert("from_version".into(), n(v));
            }
        }
        if let Some(reason) = &note.reason {
            change.insert("reason".into(), s(reason));
        }
        let put_change = Put::builder()
            .table_name(&self.table)
            .set_item(Some(change))
            .build()
            .map_err(|e| TableError::Unavailable(format!("building the flip: {e}")))?;

        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_live).build())
            .transact_items(TransactWriteItem::builder().put(put_change).build());
        // A preview token reaches a version only until it goes live.
        if let Some(token) = &to.preview_token {
            let build = |e: aws_sdk_dynamodb::error::BuildError| {
                TableError::Unavailable(format!("building the flip: {e}"))
            };
            let delete_preview = Delete::builder()
                .table_name(&self.table)
                .key("route", s(&name))
                .key("rev", s(preview_rev(token)))
                .build()
                .map_err(build)?;
            let clear_token = Update::builder()
                .table_name(&self.table)
                .key("route", s(&name))
                .key("rev", s(format!("v{:08}", to.number)))
                .update_expression("REMOVE #token")
                .expression_attribute_names("#token", "preview_token")
                .build()
                .map_err(build)?;
            transaction = transaction
                .transact_items(TransactWriteItem::builder().delete(delete_preview).build())
                .transact_items(TransactWriteItem::builder().update(clear_token).build());
        }
        let result = transaction.send().await;
        match result {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if is_condition_failure(e.err()) => {
                let found = self.read_live(route).await;
                return Err(TableError::Conflict {
                    route: name,
                    expected: describe(expected.map(|p| (p.module.as_str(), p.version))),
                    found: describe(found.as_ref().map(|(m, v)| (m.as_str(), *v))),
                });
            }
            Err(error) => return Err(self.unavailable("transact-write-items", error)),
        }
        Ok(LivePointer {
            route: route.clone(),
            module: to.module.clone(),
            version: Some(to.number),
            updated_at: at,
            updated_by: note.actor,
            metadata: Some(to.metadata.clone()),
            split: None,
            bindings_version: Some(to.number),
        })
    }

    async fn set_split(
        &self,
        route: &RouteName,
        expected: &LivePointer,
        split: Option<Split>,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError> {
        let at = now_rfc3339();
        let name = route.to_string();
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            TableError::Unavailable(format!("building the split write: {e}"))
        };
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("route", s(&name))
            .key("rev", s(LIVE_REV))
            .expression_attribute_names("#module", "module")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#split_id", "split_id")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#updated_by", "updated_by")
            .expression_attribute_values(":at", s(&at))
            .expression_attribute_values(":by", s(&note.actor));
        let (condition, values) = pointer_condition(expected);
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        let mut expression = "SET #updated_at = :at, #updated_by = :by".to_string();
        match &split {
            Some(new) => {
                let mut values: Vec<(&str, AttributeValue)> = vec![
                    ("split_id", s(&new.id)),
                    ("split_version", n(new.version)),
                    ("split_module", s(&new.module)),
                    ("split_percent", AttributeValue::N(new.percent.to_string())),
                    ("split_window_s", n(new.window_secs)),
                    ("split_min_requests", n(new.min_requests)),
                    ("split_metadata", s(new.metadata.to_string())),
                ];
                if let Some(header) = &new.sticky_header {
                    values.push(("split_sticky_header", s(header)));
                }
                if let Some(rate) = new.max_error_rate {
                    values.push(("split_max_error_rate", AttributeValue::N(rate.to_string())));
                }
                for (attribute, value) in values {
                    expression.push_str(&format!(", #{attribute} = :{attribute}"));
                    update = update
                        .expression_attribute_names(format!("#{attribute}"), attribute)
                        .expression_attribute_values(format!(":{attribute}"), value);
                }
                let mut removed = Vec::new();
                if new.sticky_header.is_none() {
                    removed.push("split_sticky_header");
                }
                if new.max_error_rate.is_none() {
                    removed.push("split_max_error_rate");
                }
                if !removed.is_empty() {
                    expression.push_str(" REMOVE ");
                    expression.push_str(
                        &removed
                            .iter()
                            .map(|a| format!("#{a}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                    for attribute in removed {
                        update =
                            update.expression_attribute_names(format!("#{attribute}"), attribute);
                    }
                }
            }
            None => {
                expression.push_str(" REMOVE ");
                expression.push_str(
                    &SPLIT_ATTRIBUTES
                        .iter()
                        .map(|a| format!("#{a}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                for attribute in SPLIT_ATTRIBUTES {
                    if attribute != "split_id" {
                        update =
                            update.expression_attribute_names(format!("#{attribute}"), attribute);
                    }
                }
            }
        }
        let update = update
            .update_expression(expression)
            .condition_expression(condition)
            .build()
            .map_err(build)?;

        let (from, to) = split_move(expected, split.as_ref());
        let mut change: Item = HashMap::from([
            ("route".to_string(), s(&name)),
            ("rev".to_string(), s(change_rev())),
            ("at".to_string(), s(&at)),
            ("actor".to_string(), s(&note.actor)),
            ("action".to_string(), s(&note.action)),
            ("from_module".to_string(), s(&from.1)),
            ("to_module".to_string(), s(&to.1)),
        ]);
        if let Some(v) = from.0 {
            change.insert("from_version".into(), n(v));
        }
        if let Some(v) = to.0 {
            change.insert("to_version".into(), n(v));
        }
        if let Some(reason) = &note.reason {
            change.insert("reason".into(), s(reason));
        }
        let put_change = Put::builder()
            .table_name(&self.table)
            .set_item(Some(change))
            .build()
            .map_err(build)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().put(put_change).build())
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if is_condition_failure(e.err()) => {
                let found = self
                    .lookup(std::slice::from_ref(route))
                    .await
                    .ok()
                    .and_then(|f| f.into_iter().next());
                return Err(TableError::Conflict {
                    route: name,
                    expected: describe_split(Some(expected)),
                    found: describe_split(found.as_ref()),
                });
            }
            Err(error) => return Err(self.unavailable("transact-write-items", error)),
        }
        let mut pointer = expected.clone();
        pointer.split = split;
        pointer.updated_at = at;
        pointer.updated_by = note.actor;
        Ok(pointer)
    }

    async fn lookup_preview(
        &self,
        candidates: &[RouteName],
        token: &str,
    ) -> Result<Vec<Version>, TableError> {
        if token.is_empty() {
            return Ok(Vec::new());
        }
        let mut unique: Vec<&RouteName> = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            if !unique.contains(&candidate) {
                unique.push(candidate);
            }
        }
        let keys: Vec<Item> = unique
            .iter()
            .map(|route| {
                HashMap::from([
                    ("route".to_string(), s(route.to_string())),
                    ("rev".to_string(), s(preview_rev(token))),
                ])
            })
            .collect();
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_LIMIT) {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build()
                .expect("BUG: keys are set");
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| self.unavailable("batch-get-item", e))?;
            for item in output
                .responses
                .and_then(|mut r| r.remove(&self.table))
                .unwrap_or_default()
            {
                found.push(version_from_item(&item)?);
            }
        }
        Ok(found)
    }

    async fn secrets(&self, route: &RouteName, version: u64) -> Result<Secrets, TableError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("route", s(route.to_string()))
            .key("rev", s(secret_rev(version)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("get-item", e))?;
        let Some(item) = output.item else {
            return Ok(Secrets::new());
        };
        match item.get("values") {
            None => Ok(Secrets::new()),
            Some(AttributeValue::M(values)) => values
                .iter()
                .map(|(name, value)| match value {
                    AttributeValue::S(v) => Ok((name.clone(), v.clone())),
                    other => Err(TableError::Corrupt(format!(
                        "secret {name:?} of {route} v{version} should be a string (S), is {}",
                        attribute_kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(TableError::Corrupt(format!(
                "the secrets item of {route} v{version} has `values` of type {}, not a map (M)",
                attribute_kind(other)
            ))),
        }
    }

    async fn history(&self, route: &RouteName) -> Result<Vec<PointerChange>, TableError> {
        self.query_prefix(route, "change#")
            .await?
            .iter()
            .map(change_from_item)
            .collect()
    }

    fn location(&self) -> String {
        format!("dynamodb table {}", self.table)
    }
}

/// Whether a transaction was cancelled because what it checked changed: a
/// failed condition, or another transaction on the same items at the same
/// moment (`TransactionConflict`). Either way nothing was written, and the
/// caller reads again (a version number) or reports a conflict (a flip).
fn is_condition_failure(error: &TransactWriteItemsError) -> bool {
    match error {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            e.cancellation_reasons().iter().any(|r| {
                matches!(
                    r.code(),
                    Some("ConditionalCheckFailed") | Some("TransactionConflict")
                )
            })
        }
        _ => false,
    }
}

/// A sortable, unique sort key for a pointer change.
fn change_rev() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let unique = &crate::gateway::new_request_id()[..8];
    format!("change#{millis:013}#{unique}")
}

/// The condition that the live item is still `pointer` (module, version
/// and rollout id), over the names `#module`, `#version`, `#split_id`, with
/// its values.
fn pointer_condition(pointer: &LivePointer) -> (String, Vec<(&'static str, AttributeValue)>) {
    let mut condition = "#module = :module".to_string();
    let mut values = vec![(":module", s(&pointer.module))];
    match pointer.version {
        Some(v) => {
            condition.push_str(" AND #version = :version");
            values.push((":version", n(v)));
        }
        None => condition.push_str(" AND attribute_not_exists(#version)"),
    }
    // A rollout started since the read must not be wiped unseen.
    match &pointer.split {
        Some(split) => {
            condition.push_str(" AND #split_id = :expected_split");
            values.push((":expected_split", s(&split.id)));
        }
        None => condition.push_str(" AND attribute_not_exists(#split_id)"),
    }
    (condition, values)
}

/// Every attribute of a split on the live item.
const SPLIT_ATTRIBUTES: [&str; 9] = [
    "split_id",
    "split_version",
    "split_module",
    "split_percent",
    "split_sticky_header",
    "split_max_error_rate",
    "split_window_s",
    "split_min_requests",
    "split_metadata",
];

/// The sort key of a version's preview copy.
fn preview_rev(token: &str) -> String {
    format!("preview#{token}")
}

/// The split on a live item, if it has one.
fn split_from_item(item: &Item) -> Result<Option<Split>, TableError> {
    let Some(id) = opt_s(item, "split_id")? else {
        return Ok(None);
    };
    let percent = match item.get("split_percent") {
        Some(AttributeValue::N(v)) | Some(AttributeValue::S(v)) => v
            .parse::<f64>()
            .map_err(|_| TableError::Corrupt(format!("split_percent = {v:?} is not a number")))?,
        _ => return Err(TableError::Corrupt("a split without split_percent".into())),
    };
    let max_error_rate = match item.get("split_max_error_rate") {
        Some(AttributeValue::N(v)) | Some(AttributeValue::S(v)) => {
            Some(v.parse::<f64>().map_err(|_| {
                TableError::Corrupt(format!("split_max_error_rate = {v:?} is not a number"))
            })?)
        }
        _ => None,
    };
    Ok(Some(Split {
        id,
        version: opt_n(item, "split_version")?
            .ok_or_else(|| TableError::Corrupt("a split without split_version".into()))?,
        module: get_s(item, "split_module")?,
        percent,
        sticky_header: opt_s(item, "split_sticky_header")?,
        max_error_rate,
        window_secs: opt_n(item, "split_window_s")?.unwrap_or(DEFAULT_WINDOW_SECS),
        min_requests: opt_n(item, "split_min_requests")?.unwrap_or(DEFAULT_MIN_REQUESTS),
        metadata: opt_s(item, "split_metadata")?
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or(serde_json::Value::Null),
    }))
}

/// The sort key of version `number`'s secret values.
fn secret_rev(number: u64) -> String {
    format!("secret#v{number:08}")
}

/// What the live item's metadata copy belongs to.
fn metadata_of(version: u64, module: &str) -> String {
    format!("v{version} {module}")
}

fn attribute_kind(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "unknown",
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s(item: &Item, name: &str) -> Result<String, TableError> {
    opt_s(item, name)?.ok_or_else(|| {
        TableError::Corrupt(format!(
            "an item has no string attribute `{name}`: {item:?}"
        ))
    })
}

fn opt_s(item: &Item, name: &str) -> Result<Option<String>, TableError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
        Some(other) => Err(TableError::Corrupt(format!(
            "attribute `{name}` should be a string (S), is {other:?}"
        ))),
    }
}

fn opt_n(item: &Item, name: &str) -> Result<Option<u64>, TableError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) | Some(AttributeValue::S(v)) => {
            v.parse().map(Some).map_err(|_| {
                TableError::Corrupt(format!("attribute `{name}` = {v:?} is not a whole number"))
            })
        }
        Some(other) => Err(TableError::Corrupt(format!(
            "attribute `{name}` should be a number (N), is {other:?}"
        ))),
    }
}

fn route_of(item: &Item) -> Result<RouteName, TableError> {
    let text = get_s(item, "route")?;
    RouteName::parse(&text).map_err(|e| TableError::Corrupt(e.to_string()))
}

fn live_from_item(item: &Item) -> Result<LivePointer, TableError> {
    let module = get_s(item, "module")?;
    let version = opt_n(item, "version")?;
    // The copy counts only while it belongs to the pointer's value.
    let metadata: Option<serde_json::Value> = match (version, opt_s(item, "metadata_of")) {
        (Some(v), Ok(Some(of))) if of == metadata_of(v, &module) => opt_s(item, "metadata")
            .ok()
            .flatten()
            .and_then(|m| serde_json::from_str(&m).ok()),
        _ => None,
    };
    let bindings_version = metadata.is_some().then_some(version).flatten();
    Ok(LivePointer {
        route: route_of(item)?,
        module,
        version,
        updated_at: opt_s(item, "updated_at")?.unwrap_or_default(),
        updated_by: opt_s(item, "updated_by")?.unwrap_or_default(),
        metadata,
        split: split_from_item(item)?,
        bindings_version,
    })
}

fn version_item(version: &Version) -> Item {
    let mut item = HashMap::from([
        ("route".to_string(), s(version.route.to_string())),
        ("rev".to_string(), s(format!("v{:08}", version.number))),
        ("module".to_string(), s(&version.module)),
        ("version".to_string(), n(version.number)),
        ("created_at".to_string(), s(&version.created_at)),
        ("created_by".to_string(), s(&version.created_by)),
        ("metadata".to_string(), s(version.metadata.to_string())),
    ]);
    if let Some(token) = &version.preview_token {
        item.insert("preview_token".into(), s(token));
    }
    item
}

fn version_from_item(item: &Item) -> Result<Version, TableError> {
    let number = match opt_n(item, "version")? {
        Some(n) => n,
        None => get_s(item, "rev")?
            .trim_start_matches('v')
            .parse()
            .map_err(|_| TableError::Corrupt(format!("version item without a number: {item:?}")))?,
    };
    let metadata = opt_s(item, "metadata")?
        .and_then(|m| serde_json::from_str(&m).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Version {
        route: route_of(item)?,
        number,
        module: get_s(item, "module")?,
        created_at: opt_s(item, "created_at")?.unwrap_or_default(),
        created_by: opt_s(item, "created_by")?.unwrap_or_default(),
        metadata,
        preview_token: opt_s(item, "preview_token")?,
    })
}

fn change_from_item(item: &Item) -> Result<PointerChange, TableError> {
    Ok(PointerChange {
        at: opt_s(item, "at")?.unwrap_or_default(),
        actor: opt_s(item, "actor")?.unwrap_or_default(),
        action: opt_s(item, "action")?.unwrap_or_default(),
        from_version: opt_n(item, "from_version")?,
        from_module: opt_s(item, "from_module")?,
        to_version: opt_n(item, "to_version")?,
        to_module: get_s(item, "to_module")?,
        reason: opt_s(item, "reason")?,
    })
}
