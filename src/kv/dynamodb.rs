//! `DynamoKv` (feature `aws`): the key-value store in a DynamoDB table with
//! the route table's key schema (`route` partition, `rev` sort, both S), so
//! it can share the route table or live in `WASMGATE_KV_TABLE`.
//!
//! | item | `route` (S, partition) | `rev` (S, sort) | attributes |
//! |---|---|---|---|
//! | a key | `kv#{namespace}` | the key | `value` (B), or `counter` (N) once `increment` touched it; `updated_at` (S) |
//!
//! No route name contains `#`, so these items never meet a route's. Reads
//! are strongly consistent. `increment` is one `UpdateItem` (`ADD counter`)
//! conditional on the item holding no byte value; a value set as decimal
//! bytes is turned into a counter by an update conditional on those very
//! bytes, and retried when another writer got there first.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{KeyPage, KvError, KvStore, overflow, parse_counter};

/// Rounds of the increment that meets a byte value changed under it.
const INCREMENT_ATTEMPTS: usize = 10;

type Item = HashMap<String, AttributeValue>;

/// Keys and values in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoKv {
    client: Client,
    table: String,
}

impl DynamoKv {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoKv {
            client,
            table: table.into(),
        }
    }

    fn unavailable<E, R>(&self, what: &str, error: SdkError<E, R>) -> KvError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        KvError::Unavailable(format!(
            "{what} on table {}: {}",
            self.table,
            DisplayErrorContext(&error)
        ))
    }

    async fn read(&self, namespace: &str, key: &str) -> Result<Option<Item>, KvError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(item_key(namespace, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("GetItem", e))?;
        Ok(output.item)
    }
}

fn partition(namespace: &str) -> AttributeValue {
    AttributeValue::S(format!("kv#{namespace}"))
}

fn item_key(namespace: &str, key: &str) -> Item {
    HashMap::from([
        ("route".to_string(), partition(namespace)),
        ("rev".to_string(), AttributeValue::S(key.to_string())),
    ])
}

/// The bytes an item holds: its value, or its counter in decimal.
fn item_value(item: &Item) -> Option<Vec<u8>> {
    if let Some(AttributeValue::B(blob)) = item.get("value") {
        return Some(blob.as_ref().to_vec());
    }
    if let Some(AttributeValue::N(number)) = item.get("counter") {
        return Some(number.clone().into_bytes());
    }
    None
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    error: &SdkError<E, R>,
) -> bool {
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

#[async_trait]
impl KvStore for DynamoKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .read(namespace, key)
            .await?
            .as_ref()
            .and_then(item_value))
    }

    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let mut item = item_key(namespace, key);
        item.insert("value".into(), AttributeValue::B(Blob::new(value)));
        item.insert(
            "updated_at".into(),
            AttributeValue::S(crate::routes::now_rfc3339()),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.unavailable("PutItem", e))?;
        Ok(())
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key(namespace, key)))
            .send()
            .await
            .map_err(|e| self.unavailable("DeleteItem", e))?;
        Ok(())
    }

    async fn exists(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.read(namespace, key).await?.is_some())
    }

    async fn list(&self, namespace: &str, offset: u64, limit: usize) -> Result<KeyPage, KvError> {
        // DynamoDB pages by key, not by position: skip `offset` keys
        // (reading only the key attribute), then take a page and one more.
        let mut skipped = 0u64;
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#route = :route")
                .expression_attribute_names("#route", "route")
                .expression_attribute_names("#rev", "rev")
                .projection_expression("#rev")
                .expression_attribute_values(":route", partition(namespace))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.unavailable("Query", e))?;
            for item in output.items.unwrap_or_default() {
                let Some(AttributeValue::S(key)) = item.get("rev") else {
                    continue;
                };
                if skipped < offset {
                    skipped += 1;
                } else if keys.len() <= limit {
                    keys.push(key.clone());
                }
            }
            if keys.len() > limit {
                keys.truncate(limit);
                return Ok(KeyPage { keys, more: true });
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(KeyPage { keys, more: false }),
            }
        }
    }

    async fn increment(&self, namespace: &str, key: &str, delta: u64) -> Result<u64, KvError> {
        let ceiling = (u64::MAX - delta).to_string();
        for _ in 0..INCREMENT_ATTEMPTS {
            // The usual case: no byte value, the counter absent or in range.
            let added = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key(namespace, key)))
                .update_expression("ADD #counter :delta SET #at = :at")
                .condition_expression(
                    "attribute_not_exists(#value) AND (attribute_not_exists(#counter) OR #counter <= :ceiling)",
                )
                .expression_attribute_names("#counter", "counter")
                .expression_attribute_names("#value", "value")
                .expression_attribute_names("#at", "updated_at")
                .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
                .expression_attribute_values(":ceiling", AttributeValue::N(ceiling.clone()))
                .expression_attribute_values(":at", AttributeValue::S(crate::routes::now_rfc3339()))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await;
            match added {
                Ok(output) => {
                    return match output.attributes.as_ref().and_then(|a| a.get("counter")) {
                        Some(AttributeValue::N(n)) => n.parse().map_err(|_| {
                            KvError::Unavailable(format!("DynamoDB returned counter {n:?}"))
                        }),
                        _ => Err(KvError::Unavailable(
                            "DynamoDB returned no counter after ADD".into(),
                        )),
                    };
                }
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(self.unavailable("UpdateItem", e)),
            }
            // A byte value (set by `set`), or a counter at the ceiling.
            let Some(item) = self.read(namespace, key).await? else {
                continue; // deleted meanwhile: the ADD will now succeed
            };
            let Some(AttributeValue::B(bytes)) = item.get("value") else {
                // A counter: past the ceiling is an overflow; below it,
                // another writer converted the bytes meanwhile: ADD again.
                if let Some(AttributeValue::N(n)) = item.get("counter")
                    && n.parse::<u64>().is_ok_and(|n| n > u64::MAX - delta)
                {
                    return Err(overflow(key));
                }
                continue;
            };
            let sum = parse_counter(key, bytes.as_ref())?
                .checked_add(delta)
                .ok_or_else(|| overflow(key))?;
            let converted = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key(namespace, key)))
                .update_expression("SET #counter = :sum, #at = :at REMOVE #value")
                .condition_expression("#value = :old")
                .expression_attribute_names("#counter", "counter")
                .expression_attribute_names("#value", "value")
                .expression_attribute_names("#at", "updated_at")
                .expression_attribute_values(":sum", AttributeValue::N(sum.to_string()))
                .expression_attribute_values(":old", AttributeValue::B(bytes.clone()))
                .expression_attribute_values(":at", AttributeValue::S(crate::routes::now_rfc3339()))
                .send()
                .await;
            match converted {
                Ok(_) => return Ok(sum),
                Err(e) if is_condition_failure(&e) => {}
                Err(e) => return Err(self.unavailable("UpdateItem", e)),
            }
        }
        Err(KvError::Unavailable(format!(
            "incrementing {key:?}: the value kept changing under {INCREMENT_ATTEMPTS} attempts"
        )))
    }
}
