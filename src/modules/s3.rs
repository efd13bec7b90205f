//! `S3ModuleStore` (feature `aws`): modules as objects in an S3 bucket, at
//! exactly their key (`application/wasm/{len}b/sha256-{hex}.wasm`), with
//! `Content-Type: application/wasm`.
//!
//! Precompiled artifacts sit beside their module
//! (`...sha256-{hex}.{engine}.cwasm`, see `artifact.rs`).
//!
//! A put first asks whether the object exists (then nothing is uploaded),
//! and writes a new one with `If-None-Match: *`, so an object is never
//! overwritten even when two deploys of the same bytes race. The upload
//! carries its SHA-256 so S3 itself rejects bytes damaged in transit.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use sha2::Digest as _;

use super::{ArtifactKey, ModuleKey, ModuleStore, PutOutcome, StoreError};

/// The `Content-Type` modules are stored with.
const WASM_CONTENT_TYPE: &str = "application/wasm";
/// The `Content-Type` precompiled artifacts are stored with.
const ARTIFACT_CONTENT_TYPE: &str = "application/octet-stream";

/// Modules stored in an S3 bucket.
#[derive(Clone)]
pub struct S3ModuleStore {
    client: Client,
    bucket: String,
}

impl S3ModuleStore {
    /// A store over `bucket`, through `client` (built by the caller).
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3ModuleStore {
            client,
            bucket: bucket.into(),
        }
    }
}

impl S3ModuleStore {
    fn denied(&self, action: &str, object: &str) -> StoreError {
        StoreError::Denied(format!(
            "s3:{action} on s3://{}/{object} was refused (403): check the role's permissions on the bucket's application/wasm/ prefix",
            self.bucket
        ))
    }
}

/// The HTTP status of a failed call, when a response came back.
fn status_of<E>(error: &SdkError<E>) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
}

fn unavailable<E, R>(what: &str, error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(format!("{what}: {}", DisplayErrorContext(&error)))
}

impl S3ModuleStore {
    /// The object `object`, which must be `len` bytes long.
    async fn get_object(&self, object: String, len: u64) -> Result<Bytes, StoreError> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                return Err(StoreError::NotFound(object));
            }
            Err(error) if status_of(&error) == Some(403) => {
                return Err(self.denied("GetObject", &object));
            }
            Err(error) => {
                return Err(unavailable(
                    &format!("fetching s3://{}/{object}", self.bucket),
                    error,
                ));
            }
        };
        // Never read more than expected.
        let length = output.content_length().unwrap_or(-1);
        if u64::try_from(length).ok() != Some(len) {
            return Err(StoreError::Corrupt {
                key: object,
                reason: format!("the stored object is {length} bytes, not the expected {len}"),
            });
        }
        let data = output.body.collect().await.map_err(|e| {
            StoreError::Unavailable(format!("reading s3://{}/{object}: {e}", self.bucket))
        })?;
        Ok(data.into_bytes())
    }

    /// Whether `object` exists (as far as the caller may know: without
    /// s3:ListBucket S3 answers 403 for a missing key, and the conditional
    /// put of [`S3ModuleStore::put_new`] still never overwrites anything).
    async fn exists(&self, object: &str) -> Result<bool, StoreError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await;
        match head {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {
                Ok(false)
            }
            Err(error) if status_of(&error) == Some(403) => Ok(false),
            Err(error) => Err(unavailable(
                &format!("checking s3://{}/{object}", self.bucket),
                error,
            )),
        }
    }

    /// Uploads `bytes` as `object` with `If-None-Match: *` and their SHA-256,
    /// so nothing is overwritten and S3 rejects bytes damaged in transit.
    async fn put_new(
        &self,
        object: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<PutOutcome, StoreError> {
        let checksum = aws_smithy_types::base64::encode(sha2::Sha256::digest(&bytes));
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object)
            .content_type(content_type)
            .checksum_sha256(checksum)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Uploaded),
            // Another deploy stored it first.
            Err(error) if status_of(&error) == Some(412) => Ok(PutOutcome::AlreadyStored),
            Err(error) if status_of(&error) == Some(403) => Err(self.denied("PutObject", object)),
            Err(error) => Err(unavailable(
                &format!("uploading s3://{}/{object}", self.bucket),
                error,
            )),
        }
    }
}

#[async_trait]
impl ModuleStore for S3ModuleStore {
    async fn get(&self, key: &ModuleKey) -> Result<Bytes, StoreError> {
        self.get_object(key.to_string(), key.len()).await
    }

    async fn put(&self, key: &ModuleKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        let object = key.to_string();
        if self.exists(&object).await? {
            // Already there: it only counts as stored when its bytes are right.
            let existing = self.get(key).await?;
            return match key.verify(&existing) {
                Ok(()) => Ok(PutOutcome::AlreadyStored),
                Err(e) => Err(StoreError::Corrupt {
                    key: object,
                    reason: e.to_string(),
                }),
            };
        }
        self.put_new(&object, bytes, WASM_CONTENT_TYPE).await
    }

    async fn get_artifact(&self, key: &ArtifactKey, len: u64) -> Result<Bytes, StoreError> {
        self.get_object(key.to_string(), len).await
    }

    async fn put_artifact(
        &self,
        key: &ArtifactKey,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        let object = key.to_string();
        if self.exists(&object).await? {
            return Ok(PutOutcome::AlreadyStored);
        }
        self.put_new(&object, bytes, ARTIFACT_CONTENT_TYPE).await
    }

    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}
