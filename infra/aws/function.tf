locals {
  function_url = var.function_url_invoke_mode != "NONE"
  streaming    = var.function_url_invoke_mode == "RESPONSE_STREAM"
  # A function in response-stream mode answers in the streaming wire format,
  # which only a RESPONSE_STREAM Function URL reads.
  http_api = !local.streaming
}

resource "aws_cloudwatch_log_group" "function" {
  #checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts every log group at rest with service-owned keys; a customer managed KMS key is left to accounts whose policy requires one.
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "wasmgate" {
  #checkov:skip=CKV_AWS_50: No X-Ray yet: wasmgate emits no trace segments, so active tracing would only record the invocation envelope.
  #checkov:skip=CKV_AWS_115: Reserved concurrency is a capacity decision for the operator (it also caps the account's pool); set reserved_concurrent_executions when you know your traffic.
  #checkov:skip=CKV_AWS_116: Invoked synchronously by the HTTP API and the Function URL only; a dead-letter queue applies to asynchronous invocations, and every failure is already an HTTP response.
  #checkov:skip=CKV_AWS_117: Reaches only S3 and DynamoDB (and Secrets Manager / SSM for secret_ref bindings) through their public endpoints over TLS; no VPC resources to reach, and a VPC would need NAT or endpoints for nothing.
  #checkov:skip=CKV_AWS_173: The environment holds no secrets (bucket and table names, limits); Lambda encrypts it at rest with its AWS managed key.
  #checkov:skip=CKV_AWS_272: Code signing needs an AWS Signer profile and a signed artefact in S3; the zip is uploaded straight from `make lambda-zip`.
  function_name    = var.name
  description      = "wasmgate: serves WebAssembly (wasi:http) functions; routes in DynamoDB, modules in S3."
  role             = aws_iam_role.function.arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = ["arm64"]
  filename         = var.lambda_zip
  source_code_hash = filebase64sha256(var.lambda_zip)
  memory_size      = var.memory_size
  timeout          = var.function_timeout

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function.name
  }

  environment {
    variables = {
      WASMGATE_BACKEND            = "aws"
      WASMGATE_BUCKET             = aws_s3_bucket.modules.id
      WASMGATE_TABLE              = aws_dynamodb_table.routes.name
      WASMGATE_ROUTE_TTL_MS       = tostring(var.route_ttl_ms)
      WASMGATE_TIMEOUT_MS         = tostring(var.request_timeout_ms)
      WASMGATE_MEMORY_LIMIT_MB    = tostring(var.guest_memory_limit_mb)
      WASMGATE_LAMBDA_INVOKE_MODE = local.streaming ? "response-stream" : "buffered"
      WASMGATE_LOG                = var.log_level
    }
  }

  depends_on = [aws_iam_role_policy.function_logs, aws_iam_role_policy_attachment.function_server]
}

resource "aws_lambda_function_url" "wasmgate" {
  #checkov:skip=CKV_AWS_258: wasmgate serves public HTTP functions, exactly like the HTTP API beside it; authentication is the guest's job. Set function_url_auth_type = "AWS_IAM" to require signed requests.
  count = local.function_url ? 1 : 0

  function_name      = aws_lambda_function.wasmgate.function_name
  authorization_type = var.function_url_auth_type
  invoke_mode        = var.function_url_invoke_mode
}

# A public Function URL needs lambda:InvokeFunctionUrl for everyone; the
# provider (>= 6.28) adds the matching lambda:InvokeFunction statement, with
# InvokedViaFunctionUrl, when it creates a URL whose auth type is NONE.
resource "aws_lambda_permission" "function_url_public" {
  #checkov:skip=CKV_AWS_301: Public on purpose, and only through the Function URL (FunctionUrlAuthType NONE condition): wasmgate is a public HTTP gateway.
  count = local.function_url && var.function_url_auth_type == "NONE" ? 1 : 0

  statement_id           = "FunctionUrlAllowPublicAccess"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.wasmgate.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}
