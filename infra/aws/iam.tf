# The server reads modules, live pointers and the secrets bound to versions,
# and writes its own logs; the deployers (wasmgate deploy / rollback / history / routes) get a separate
# managed policy, and optionally a role to assume.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name_prefix        = "${var.name}-fn-"
  description        = "wasmgate server on Lambda: read modules, route pointers and bound secrets, write its own logs."
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

# The server's read access, as a managed policy so that a wasmgate server
# outside Lambda (the IAM user whose keys a Cloud Run service uses) can have
# exactly the same.
data "aws_iam_policy_document" "server" {
  statement {
    sid       = "ReadModules"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.modules.arn}/application/wasm/*"]
  }

  # GetItem reads a version's stored secret values (secret#v00000042); Query
  # reads a route's versions when the live pointer was set by hand.
  statement {
    sid = "ReadLivePointers"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:GetItem",
      "dynamodb:Query",
    ]
    resources = [aws_dynamodb_table.routes.arn]
  }

  # Auto-rollback: a server ends a failing rollout with one TransactWriteItems
  # (an UpdateItem of the live item, conditional on the rollout's id, and a
  # PutItem of its history record).
  statement {
    sid = "EndFailingRollouts"
    actions = [
      "dynamodb:UpdateItem",
      "dynamodb:PutItem",
    ]
    resources = [aws_dynamodb_table.routes.arn]
  }

  # wasi:keyvalue data lives in the route table under kv#{namespace}
  # partitions. Get, Put, Update and Query are granted on the whole table
  # above; what this adds is DeleteItem, on kv# items only.
  statement {
    sid = "GuestKeyValue"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
    ]
    resources = [aws_dynamodb_table.routes.arn]

    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["kv#*"]
    }
  }

  # secret_ref bindings: only the secrets and parameters in var.secret_arns.
  dynamic "statement" {
    for_each = length(var.secret_arns) > 0 ? [var.secret_arns] : []

    content {
      sid       = "ReadBoundSecrets"
      actions   = ["secretsmanager:GetSecretValue", "ssm:GetParameter"]
      resources = statement.value
    }
  }

  # SecureString parameters and secrets under a customer managed key; usable
  # only through those two services.
  dynamic "statement" {
    for_each = var.secrets_kms_key_arn != "" ? [var.secrets_kms_key_arn] : []

    content {
      sid       = "DecryptBoundSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values = [
          "secretsmanager.*.${data.aws_partition.current.dns_suffix}",
          "ssm.*.${data.aws_partition.current.dns_suffix}",
        ]
      }
    }
  }
}

data "aws_partition" "current" {}

resource "aws_iam_policy" "server" {
  name_prefix = "${var.name}-server-"
  description = "wasmgate servers: read modules under application/wasm/ and look up live route pointers."
  policy      = data.aws_iam_policy_document.server.json
}

resource "aws_iam_role_policy_attachment" "function_server" {
  role       = aws_iam_role.function.name
  policy_arn = aws_iam_policy.server.arn
}

data "aws_iam_policy_document" "function_logs" {
  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }
}

resource "aws_iam_role_policy" "function_logs" {
  name   = "wasmgate-logs"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function_logs.json
}

data "aws_iam_policy_document" "deployer" {
  statement {
    sid       = "ReadWriteModules"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.modules.arn}/application/wasm/*"]
  }

  # With s3:ListBucket, S3 answers a HeadObject of a key not yet stored with
  # 404 instead of 403, so a deploy (which checks before it uploads) can tell
  # "not stored yet" from "access denied".
  statement {
    sid       = "ListModulesSoMissingKeysAre404"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.modules.arn]
  }

  # A TransactWriteItems call is authorized per item (PutItem, and UpdateItem
  # for rollouts): IAM has no dynamodb:TransactWriteItems action.
  statement {
    sid = "ReadWriteRoutes"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
      "dynamodb:Scan",
    ]
    resources = [aws_dynamodb_table.routes.arn]
  }
}

resource "aws_iam_policy" "deployer" {
  name_prefix = "${var.name}-deployer-"
  description = "wasmgate deployers: upload modules under application/wasm/ and flip route pointers."
  policy      = data.aws_iam_policy_document.deployer.json
}

data "aws_iam_policy_document" "deploy_assume" {
  count = length(var.deployer_principal_arns) > 0 ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.deployer_principal_arns
    }
  }
}

resource "aws_iam_role" "deploy" {
  count = length(var.deployer_principal_arns) > 0 ? 1 : 0

  name_prefix          = "${var.name}-deploy-"
  description          = "Assumed by whoever runs wasmgate deploy / rollback against this stack."
  assume_role_policy   = data.aws_iam_policy_document.deploy_assume[0].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy_attachment" "deploy" {
  count = length(var.deployer_principal_arns) > 0 ? 1 : 0

  role       = aws_iam_role.deploy[0].name
  policy_arn = aws_iam_policy.deployer.arn
}
