# syntax=docker/dockerfile:1
# wasmgate for Cloud Run (or any container platform): the HTTP listener with
# the S3/DynamoDB backend and the embedded default, no Lambda front. It
# listens on 0.0.0.0:$PORT (Cloud Run sets PORT; 8080 otherwise).
#
#   docker build -t wasmgate .
#   docker run --rm -p 8080:8080 wasmgate
#   docker run --rm -p 8080:8080 -e WASMGATE_BACKEND=aws -e WASMGATE_BUCKET=... \
#     -e WASMGATE_TABLE=... -e AWS_REGION=... -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY wasmgate
#
# Cloud Run ignores Docker's HEALTHCHECK (it probes the port itself: see the
# startup_probe in infra/cloudrun), and the runtime image has no shell or curl
# to run one with.
#checkov:skip=CKV_DOCKER_2: Cloud Run ignores HEALTHCHECK and probes the port itself (infra/cloudrun startup_probe); the distroless runtime has no shell or HTTP client to run one.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features --features http,aws \
 && install -D -m 0755 target/release/wasmgate /out/wasmgate \
 && install -d -m 0750 /out/data

# glibc + libgcc, no shell, no package manager; runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/wasmgate /usr/local/bin/wasmgate
# The embedded default's data dir, writable by the service user. An image
# with functions baked in deploys them at build time (see infra/README.md).
COPY --from=build --chown=65532:65532 /out/data /var/lib/wasmgate
ENV WASMGATE_DATA_DIR=/var/lib/wasmgate
WORKDIR /var/lib/wasmgate
USER 65532:65532
EXPOSE 8080
CMD ["wasmgate", "serve"]
