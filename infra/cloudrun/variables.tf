variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Cloud Run region."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Service name (also the service account's prefix)."
  type        = string
  default     = "wasmgate"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,24}$", var.name))
    error_message = "name: a lowercase letter, then lowercase letters, digits or hyphens, at most 25 characters."
  }
}

variable "image" {
  description = "The wasmgate image built from the repository's Dockerfile, e.g. europe-west1-docker.pkg.dev/PROJECT/wasmgate/wasmgate:0.1.0."
  type        = string
}

variable "backend" {
  description = <<-EOT
    Where routes and modules come from.
    aws: S3 + DynamoDB (the stack from infra/aws or template.yaml), with AWS
         credentials read from two Secret Manager secrets (see the aws_* variables).
    embedded: the data dir baked into the image (WASMGATE_DATA_DIR); a deploy is
         a new image. Every instance has its own copy.
  EOT
  type        = string
  default     = "aws"

  validation {
    condition     = contains(["aws", "embedded"], var.backend)
    error_message = "backend: aws or embedded."
  }
}

variable "aws_region" {
  description = "backend = aws: region of the bucket and table."
  type        = string
  default     = ""
}

variable "aws_bucket" {
  description = "backend = aws: WASMGATE_BUCKET (the modules_bucket output of infra/aws)."
  type        = string
  default     = ""
}

variable "aws_table" {
  description = "backend = aws: WASMGATE_TABLE (the routes_table output of infra/aws)."
  type        = string
  default     = ""
}

variable "aws_access_key_id_secret" {
  description = "backend = aws: Secret Manager secret (in var.project) holding the AWS access key id, mounted as AWS_ACCESS_KEY_ID."
  type        = string
  default     = "wasmgate-aws-access-key-id"
}

variable "aws_secret_access_key_secret" {
  description = "backend = aws: Secret Manager secret holding the AWS secret access key, mounted as AWS_SECRET_ACCESS_KEY."
  type        = string
  default     = "wasmgate-aws-secret-access-key"
}

variable "aws_secret_version" {
  description = "backend = aws: version of both secrets to mount (a number pins it; latest follows rotations on the next revision)."
  type        = string
  default     = "latest"
}

variable "data_dir" {
  description = "backend = embedded: WASMGATE_DATA_DIR inside the image."
  type        = string
  default     = "/var/lib/wasmgate"
}

variable "concurrency" {
  description = "Requests one instance serves at once (max_instance_request_concurrency, and WASMGATE_MAX_CONCURRENCY). Worst-case guest memory is concurrency x guest_memory_limit_mb: keep it under memory."
  type        = number
  default     = 32
}

variable "min_instances" {
  description = "Instances kept warm (0 scales to zero; 1 avoids cold starts, billed while idle)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Most instances Cloud Run starts."
  type        = number
  default     = 10
}

variable "cpu" {
  description = "CPU limit of one instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory limit of one instance."
  type        = string
  default     = "2Gi"
}

variable "request_timeout_s" {
  description = "Cloud Run's request timeout, in seconds; keep it above request_timeout_ms."
  type        = number
  default     = 60
}

variable "request_timeout_ms" {
  description = "WASMGATE_TIMEOUT_MS: a guest's wall-clock deadline per request (504 past it)."
  type        = number
  default     = 30000
}

variable "route_ttl_ms" {
  description = "WASMGATE_ROUTE_TTL_MS: how long an instance caches a route lookup."
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

variable "public" {
  description = "Let anyone invoke the service (roles/run.invoker for allUsers). false: callers need an identity token."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse terraform destroy of the service (the service is stateless: routes and modules live elsewhere)."
  type        = bool
  default     = false
}
