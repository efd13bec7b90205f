output "http_api_url" {
  description = "The HTTP API, ending in / (every path goes to wasmgate); null in response-stream mode."
  value       = local.http_api ? "${aws_apigatewayv2_api.http[0].api_endpoint}/" : null
}

output "function_url" {
  description = "The Function URL; null when function_url_invoke_mode is NONE."
  value       = local.function_url ? aws_lambda_function_url.wasmgate[0].function_url : null
}

output "modules_bucket" {
  description = "WASMGATE_BUCKET for wasmgate deploy."
  value       = aws_s3_bucket.modules.id
}

output "routes_table" {
  description = "WASMGATE_TABLE for wasmgate deploy."
  value       = aws_dynamodb_table.routes.name
}

output "deploy_env" {
  description = "Paste after `export` before wasmgate deploy / rollback."
  value       = "WASMGATE_BACKEND=aws WASMGATE_BUCKET=${aws_s3_bucket.modules.id} WASMGATE_TABLE=${aws_dynamodb_table.routes.name} AWS_REGION=${var.region}"
}

output "function_name" {
  value = aws_lambda_function.wasmgate.function_name
}

output "server_policy_arn" {
  description = "Managed policy for a wasmgate server outside Lambda (Cloud Run, a container)."
  value       = aws_iam_policy.server.arn
}

output "deployer_policy_arn" {
  description = "Managed policy for whoever runs wasmgate deploy / rollback."
  value       = aws_iam_policy.deployer.arn
}

output "deploy_role_arn" {
  description = "Role to assume for wasmgate deploy / rollback; null without deployer_principal_arns."
  value       = length(aws_iam_role.deploy) > 0 ? aws_iam_role.deploy[0].arn : null
}
