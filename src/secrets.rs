//! Resolving `secret_ref` bindings: values the server reads from AWS Secrets
//! Manager or SSM Parameter Store when it first serves a version, and keeps
//! for [`SECRET_TTL`] (so a rotated secret is picked up within it).
//!
//! The AWS clients are built on first use, from the default credential
//! chain: a server that serves no `secret_ref` never needs AWS credentials,
//! even on the embedded backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::runtime::bindings::SecretRef;

/// How long a resolved secret (and a version's whole environment) is kept.
pub const SECRET_TTL: Duration = Duration::from_secs(300);

/// Why a secret could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// The service could not be reached or refused: retry later (503).
    #[error("reading secret {reference}: {message}")]
    Unavailable { reference: String, message: String },
    /// The secret does not exist or has no string value (502).
    #[error("secret {reference}: {message}")]
    Missing { reference: String, message: String },
    /// This build cannot read secrets by reference.
    #[error("{0}")]
    Unsupported(String),
}

/// Reads the value a `secret_ref` names.
#[async_trait]
pub trait SecretResolver: Send + Sync + 'static {
    async fn resolve(&self, reference: &SecretRef) -> Result<String, SecretError>;
}

/// The resolver this build has: AWS (feature `aws`), else one that says why not.
pub fn default_resolver() -> Arc<dyn SecretResolver> {
    #[cfg(feature = "aws")]
    {
        Arc::new(aws::AwsSecrets::new())
    }
    #[cfg(not(feature = "aws"))]
    {
        Arc::new(NoSecrets)
    }
}

/// Refuses every reference: this build has no AWS support.
pub struct NoSecrets;

#[async_trait]
impl SecretResolver for NoSecrets {
    async fn resolve(&self, _: &SecretRef) -> Result<String, SecretError> {
        Err(SecretError::Unsupported(
            "this wasmgate was built without the `aws` feature, so it cannot read secret_ref bindings"
                .into(),
        ))
    }
}

#[cfg(feature = "aws")]
mod aws {
    use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
    use tokio::sync::OnceCell;

    use super::*;

    /// Secrets Manager and SSM clients, made on first use.
    pub struct AwsSecrets {
        clients: OnceCell<(aws_sdk_secretsmanager::Client, aws_sdk_ssm::Client)>,
    }

    impl AwsSecrets {
        pub fn new() -> Self {
            AwsSecrets {
                clients: OnceCell::new(),
            }
        }

        async fn clients(&self) -> &(aws_sdk_secretsmanager::Client, aws_sdk_ssm::Client) {
            self.clients
                .get_or_init(|| async {
                    let config = crate::backend::aws_sdk_config().await;
                    (
                        aws_sdk_secretsmanager::Client::new(&config),
                        aws_sdk_ssm::Client::new(&config),
                    )
                })
                .await
        }
    }

    /// Sorts an SDK error: not found / access denied are the secret's
    /// problem (502); anything else (network, throttling) is retryable (503).
    fn classify<E, R>(reference: &str, error: SdkError<E, R>) -> SecretError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug,
    {
        let code = error
            .as_service_error()
            .and_then(|e| e.code())
            .unwrap_or("");
        let message = DisplayErrorContext(&error).to_string();
        let missing = matches!(
            code,
            "ResourceNotFoundException"
                | "ParameterNotFound"
                | "ParameterVersionNotFound"
                | "AccessDeniedException"
                | "InvalidRequestException"
                | "ValidationException"
        );
        if missing {
            SecretError::Missing {
                reference: reference.to_string(),
                message,
            }
        } else {
            SecretError::Unavailable {
                reference: reference.to_string(),
                message,
            }
        }
    }

    #[async_trait]
    impl SecretResolver for AwsSecrets {
        async fn resolve(&self, reference: &SecretRef) -> Result<String, SecretError> {
            let (secrets_manager, ssm) = self.clients().await;
            match reference {
                SecretRef::SecretsManager(id) => {
                    let output = secrets_manager
                        .get_secret_value()
                        .secret_id(id)
                        .send()
                        .await
                        .map_err(|e| classify(id, e))?;
                    output.secret_string.ok_or_else(|| SecretError::Missing {
                        reference: id.clone(),
                        message: "it holds binary data, not a string".into(),
                    })
                }
                SecretRef::Ssm(name) => {
                    let output = ssm
                        .get_parameter()
                        .name(name)
                        .with_decryption(true)
                        .send()
                        .await
                        .map_err(|e| classify(name, e))?;
                    output
                        .parameter
                        .and_then(|p| p.value)
                        .ok_or_else(|| SecretError::Missing {
                            reference: name.clone(),
                            message: "the parameter has no value".into(),
                        })
                }
            }
        }
    }
}
