# Modules (S3) and routes (DynamoDB), with the schema the README documents:
# objects at application/wasm/{len}b/sha256-{hex}.wasm; table keys route (S)
# and rev (S), the live pointer being the item rev = "live".

resource "aws_s3_bucket" "modules" {
  #checkov:skip=CKV_AWS_18: Server access logging needs a separate log bucket; point it at your account's central access-log bucket (aws_s3_bucket_logging) if you have one.
  #checkov:skip=CKV_AWS_144: Cross-region replication is a disaster-recovery choice for the operator; objects are immutable and re-deployable from their source.
  #checkov:skip=CKV2_AWS_62: Nothing consumes object events; deploys are recorded in the route table's history.
  #checkov:skip=CKV_AWS_145: Encrypted at rest with SSE-S3 (AES256); a KMS key would add kms:Decrypt and kms:GenerateDataKey for every server and deployer. Switch to aws:kms (and grant those) where policy requires a customer key.
  bucket_prefix = "${var.name}-modules-"
}

resource "aws_s3_bucket_versioning" "modules" {
  bucket = aws_s3_bucket.modules.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "modules" {
  bucket = aws_s3_bucket.modules.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "modules" {
  bucket = aws_s3_bucket.modules.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "modules" {
  bucket = aws_s3_bucket.modules.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "modules" {
  bucket = aws_s3_bucket.modules.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "modules_tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.modules.arn,
      "${aws_s3_bucket.modules.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "modules" {
  bucket = aws_s3_bucket.modules.id
  policy = data.aws_iam_policy_document.modules_tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.modules]
}

resource "aws_dynamodb_table" "routes" {
  #checkov:skip=CKV_AWS_119: Encrypted at rest with the AWS managed key (aws/dynamodb); a customer managed key would add a key to administer and kms permissions for every server and deployer, for route pointers that hold no secrets.
  name         = "${var.name}-routes"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "route"
  range_key    = "rev"

  attribute {
    name = "route"
    type = "S"
  }

  attribute {
    name = "rev"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  deletion_protection_enabled = var.table_deletion_protection
}
