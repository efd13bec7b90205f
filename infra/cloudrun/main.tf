# wasmgate's HTTP listener on Cloud Run. The container listens on 0.0.0.0:$PORT
# (Cloud Run sets PORT to the container_port below).

locals {
  aws = var.backend == "aws"

  plain_env = merge(
    tomap({
      WASMGATE_BACKEND         = var.backend
      WASMGATE_ROUTE_TTL_MS    = tostring(var.route_ttl_ms)
      WASMGATE_TIMEOUT_MS      = tostring(var.request_timeout_ms)
      WASMGATE_MEMORY_LIMIT_MB = tostring(var.guest_memory_limit_mb)
      WASMGATE_MAX_CONCURRENCY = tostring(var.concurrency)
      WASMGATE_LOG             = var.log_level
    }),
    local.aws ? tomap({
      WASMGATE_BUCKET = var.aws_bucket
      WASMGATE_TABLE  = var.aws_table
      AWS_REGION      = var.aws_region
      }) : tomap({
      WASMGATE_DATA_DIR = var.data_dir
    }),
  )

  # Environment variable => Secret Manager secret (backend = aws only).
  secret_env = local.aws ? tomap({
    AWS_ACCESS_KEY_ID     = var.aws_access_key_id_secret
    AWS_SECRET_ACCESS_KEY = var.aws_secret_access_key_secret
  }) : tomap({})
}

# The service's own identity: no project roles, only access to its two secrets.
resource "google_service_account" "wasmgate" {
  account_id   = "${var.name}-run"
  display_name = "wasmgate on Cloud Run"
  description  = "Runtime identity of the ${var.name} Cloud Run service."
}

resource "google_secret_manager_secret_iam_member" "wasmgate" {
  for_each = local.secret_env

  project   = var.project
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.wasmgate.email}"
}

resource "google_cloud_run_v2_service" "wasmgate" {
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.wasmgate.email
    # Second generation: full Linux compatibility, which wasmtime's memory
    # reservations (WASMGATE_POOLING=auto) are happiest with.
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "${var.request_timeout_s}s"
    max_instance_request_concurrency = var.concurrency

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.plain_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = var.aws_secret_version
            }
          }
        }
      }

      startup_probe {
        tcp_socket {
          port = 8080
        }
        period_seconds    = 2
        timeout_seconds   = 1
        failure_threshold = 15
      }
    }
  }

  lifecycle {
    precondition {
      condition     = !local.aws || (var.aws_region != "" && var.aws_bucket != "" && var.aws_table != "")
      error_message = "backend = aws needs aws_region, aws_bucket and aws_table (the outputs of infra/aws or of the SAM stack)."
    }
  }

  # A revision whose secrets it cannot read never starts.
  depends_on = [google_secret_manager_secret_iam_member.wasmgate]
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.public ? 1 : 0

  project  = google_cloud_run_v2_service.wasmgate.project
  location = google_cloud_run_v2_service.wasmgate.location
  name     = google_cloud_run_v2_service.wasmgate.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
