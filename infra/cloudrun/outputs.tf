output "url" {
  description = "The service's URL."
  value       = google_cloud_run_v2_service.wasmgate.uri
}

output "service_account" {
  description = "The service's runtime identity."
  value       = google_service_account.wasmgate.email
}
