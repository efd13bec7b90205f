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
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(output) => output,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                return Err(StoreError::NotFound(object));
            }
            Err(error) => {
                return Err(unavailable(
                    &format!("fetching s3://{}/{object}", self.bucket),
                    error,
                ));
            }
        };
        let data = output.body.collect().await.map_err(|e| {
            StoreError::Unavailable(format!("reading s3://{}/{object}: {e}", self.bucket))
        })?;
        Ok(data.into_bytes())
    }

    async fn put(&self, key: &ModuleKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        let object = key.to_string();
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(head) => {
                let length = head.content_length().unwrap_or(-1);
                if u64::try_from(length).ok() != Some(key.len()) {
                    return Err(StoreError::Corrupt {
                        key: object,
                        reason: format!(
                            "the stored object is {length} bytes, its key says {}",
                            key.len()
                        ),
                    });
                }
                return Ok(PutOutcome::AlreadyStored);
            }
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {}
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
            Err(error)
                if error
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 412) =>
            {
                Ok(PutOutcome::AlreadyStored)
            }
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
