variable "region" {
  description = "AWS region to deploy into."
  type        = string
}

variable "name" {
  description = "Name prefix of every resource (function, table, log groups, roles)."
  type        = string
  default     = "wasmgate"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,38}$", var.name))
    error_message = "name: lowercase letters, digits and hyphens, at most 39 characters."
  }
}

variable "tags" {
  description = "Extra tags for every resource (app = wasmgate is always set)."
  type        = map(string)
  default     = {}
}

variable "lambda_zip" {
  description = "The bootstrap zip built by `make lambda-zip` (cargo lambda build --release --arm64 --output-format zip)."
  type        = string
  default     = "../../target/lambda/wasmgate/bootstrap.zip"
}

variable "memory_size" {
  description = "Lambda memory in MB (CPU scales with it; a cold start compiles the module)."
  type        = number
  default     = 1024

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size: 128 to 10240 MB."
  }
}

variable "function_timeout" {
  description = "Lambda timeout in seconds. The HTTP API waits at most 30 s; a Function URL up to 900 s."
  type        = number
  default     = 30

  validation {
    condition     = var.function_timeout >= 1 && var.function_timeout <= 900
    error_message = "function_timeout: 1 to 900 seconds."
  }
}

variable "request_timeout_ms" {
  description = "WASMGATE_TIMEOUT_MS: a guest's wall-clock deadline per request (504 past it)."
  type        = number
  default     = 29000
}

variable "route_ttl_ms" {
  description = "WASMGATE_ROUTE_TTL_MS: how long a warm container caches a route lookup."
  type        = number
  default     = 2000
}

variable "guest_memory_limit_mb" {
  description = "WASMGATE_MEMORY_LIMIT_MB: the most linear memory one guest instance may grow to."
  type        = number
  default     = 128
}

variable "log_level" {
  description = "WASMGATE_LOG, a tracing filter such as info or wasmgate=debug."
  type        = string
  default     = "info"
}

variable "log_retention_days" {
  description = "Retention of the function and API access log groups."
  type        = number
  default     = 365
}

variable "function_url_invoke_mode" {
  description = <<-EOT
    NONE: no Function URL. BUFFERED: a Function URL beside the HTTP API.
    RESPONSE_STREAM: a streaming Function URL, and the function runs with
    WASMGATE_LAMBDA_INVOKE_MODE=response-stream; the HTTP API cannot read
    streamed replies, so it is not created then.
  EOT
  type        = string
  default     = "NONE"

  validation {
    condition     = contains(["NONE", "BUFFERED", "RESPONSE_STREAM"], var.function_url_invoke_mode)
    error_message = "function_url_invoke_mode: NONE, BUFFERED or RESPONSE_STREAM."
  }
}

variable "function_url_auth_type" {
  description = "NONE: a public Function URL (like the HTTP API). AWS_IAM: SigV4-signed requests only."
  type        = string
  default     = "NONE"

  validation {
    condition     = contains(["NONE", "AWS_IAM"], var.function_url_auth_type)
    error_message = "function_url_auth_type: NONE or AWS_IAM."
  }
}

variable "deployer_principal_arns" {
  description = "IAM users or roles allowed to assume the deploy role. Empty: no role; attach the deployer policy (output) to your CI role instead."
  type        = list(string)
  default     = []
}

variable "secret_arns" {
  description = <<-EOT
    ARNs of the Secrets Manager secrets and SSM parameters that deploy metadata
    binds by reference (secret_ref); the server policy gets
    secretsmanager:GetSecretValue and ssm:GetParameter on exactly these. A
    secret's ARN ends in a random 6-character suffix: give the full ARN or
    arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-??????. An SSM parameter
    /prod/db-pass is arn:aws:ssm:REGION:ACCOUNT:parameter/prod/db-pass.
    Empty: no secret or parameter can be read.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.secret_arns : can(regex("^arn:aws[a-zA-Z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:|ssm:[a-z0-9-]+:[0-9]{12}:parameter/).+$", arn))])
    error_message = "secret_arns: Secrets Manager secret or SSM parameter ARNs only."
  }
}

variable "secrets_kms_key_arn" {
  description = <<-EOT
    ARN of the customer managed KMS key that encrypts those secrets or
    SecureString parameters; the server policy gets kms:Decrypt on that key
    only, through Secrets Manager and SSM. Empty: none (the AWS managed keys
    aws/secretsmanager and aws/ssm need no grant).
  EOT
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(arn:aws[a-zA-Z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+)?$", var.secrets_kms_key_arn))
    error_message = "secrets_kms_key_arn: empty or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "table_deletion_protection" {
  description = "DynamoDB deletion protection on the routes table (set false, apply, then destroy to remove it). The bucket is only destroyed when empty."
  type        = bool
  default     = true
}
