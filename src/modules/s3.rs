//! `S3ModuleStore` (feature `aws`): modules as objects in an S3 bucket, at
//! exactly their key (`application/wasm/{len}b/sha256-{hex}.wasm`), with
//! `Content-Type: application/wasm`.
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

use super::{ModuleKey, ModuleStore, PutOutcome, StoreError};

/// The `Content-Type` modules are stored with.
const WASM_CONTENT_TYPE: &str = "application/wasm";

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

#[async_trait]
impl ModuleStore for S3ModuleStore {
    async fn get(&self, key: &ModuleKey) -> Result<Bytes, StoreError> {
        let object = key.to_string();
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
        // Never read more than the key says the module holds.
        let length = output.content_length().unwrap_or(-1);
        if u64::try_from(length).ok() != Some(key.len()) {
            return Err(StoreError::Corrupt {
                key: object,
                reason: format!(
                    "the stored object is {length} bytes, its key says {}",
                    key.len()
                ),
            });
        }
        let data = output.body.collect().await.map_err(|e| {
            StoreError::Unavailable(format!("reading s3://{}/{object}: {e}", self.bucket))
        })?;
        Ok(data.into_bytes())
    }

    async fn put(&self, key: &ModuleKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        let object = key.to_string();
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await;
        match head {
            // Already there: it only counts as stored when its bytes are right.
            Ok(_) => {
                let existing = self.get(key).await?;
                return match key.verify(&existing) {
                    Ok(()) => Ok(PutOutcome::AlreadyStored),
                    Err(e) => Err(StoreError::Corrupt {
                        key: object,
                        reason: e.to_string(),
                    }),
                };
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {}
            // Without s3:ListBucket S3 answers 403 for a missing key; the
            // conditional put below still never overwrites anything.
            Err(error) if status_of(&error) == Some(403) => {}
            Err(error) => {
                return Err(unavailable(
                    &format!("checking s3://{}/{object}", self.bucket),
                    error,
                ));
            }
        }
        let checksum = aws_smithy_types::base64::encode(sha2::Sha256::digest(&bytes));
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .content_type(WASM_CONTENT_TYPE)
            .checksum_sha256(checksum)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Uploaded),
            // Another deploy of the same bytes stored it first.
            Err(error) if status_of(&error) == Some(412) => Ok(PutOutcome::AlreadyStored),
            Err(error) if status_of(&error) == Some(403) => Err(self.denied("PutObject", &object)),
            Err(error) => Err(unavailable(
                &format!("uploading s3://{}/{object}", self.bucket),
                error,
            )),
        }
    }

    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}
