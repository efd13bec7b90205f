terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.28 added aws_lambda_permission.invoked_via_function_url and makes
      # aws_lambda_function_url add the lambda:InvokeFunction statement a
      # public (authorization_type NONE) Function URL needs.
      version = ">= 6.28, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ app = "wasmgate" }, var.tags)
  }
}
