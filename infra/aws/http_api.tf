# An HTTP API whose $default route sends every method and path to the
# function (payload format 2.0). Not created in response-stream mode.

resource "aws_apigatewayv2_api" "http" {
  count = local.http_api ? 1 : 0

  name          = var.name
  description   = "wasmgate: every method and path goes to the function."
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "wasmgate" {
  count = local.http_api ? 1 : 0

  api_id                 = aws_apigatewayv2_api.http[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.wasmgate.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "default" {
  #checkov:skip=CKV_AWS_309: wasmgate serves public HTTP functions; authentication is the guest's job (add an authorizer here if every route needs one).
  count = local.http_api ? 1 : 0

  api_id    = aws_apigatewayv2_api.http[0].id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.wasmgate[0].id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts every log group at rest with service-owned keys; a customer managed KMS key is left to accounts whose policy requires one.
  count = local.http_api ? 1 : 0

  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
}

resource "aws_apigatewayv2_stage" "default" {
  count = local.http_api ? 1 : 0

  api_id      = aws_apigatewayv2_api.http[0].id
  name        = "$default"
  auto_deploy = true

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access[0].arn
    format = jsonencode({
      requestId        = "$context.requestId"
      ip               = "$context.identity.sourceIp"
      time             = "$context.requestTime"
      method           = "$context.httpMethod"
      path             = "$context.path"
      status           = "$context.status"
      bytes            = "$context.responseLength"
      latencyMs        = "$context.integrationLatency"
      integrationError = "$context.integrationErrorMessage"
    })
  }
}

resource "aws_lambda_permission" "http_api" {
  count = local.http_api ? 1 : 0

  statement_id  = "AllowHttpApiInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.wasmgate.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http[0].execution_arn}/*"
}
