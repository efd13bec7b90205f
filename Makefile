# wasmgate: the two commands a newcomer needs are `make demo` and `make test`.

CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2

.PHONY: all build demo test lint check-features iac-check lambda-zip ci examples fixtures clean-demo help

all: build

help:
	@echo "make demo      build, deploy the example on the embedded default, serve it and curl it"
	@echo "make test      run the whole test suite (sets up what it needs)"
	@echo "make lint      cargo fmt --check and clippy -D warnings"
	@echo "make iac-check cfn-lint, sam validate --lint, checkov, terraform fmt on template.yaml, infra/, Dockerfile"
	@echo "make lambda-zip  the arm64 Lambda bootstrap zip (target/lambda/wasmgate/bootstrap.zip)"
	@echo "make examples  rebuild examples/*.wasm (needs: rustup target add $(GUEST_TARGET))"
	@echo "make fixtures  rebuild tests/fixtures/*.wasm (same target)"

build:
	$(CARGO) build --release

demo:
	./scripts/demo.sh

# The AWS backend tests run against moto's S3/DynamoDB server, installed
# from PyPI into .venv on first use.
VENV := .venv
MOTO := $(VENV)/bin/moto_server
MOTO_VERSION := 5.2.5

$(MOTO):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'

test: $(MOTO)
	WASMGATE_TEST_MOTO_SERVER=$(abspath $(MOTO)) $(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The listener-only build (what the Cloud Run image ships) must compile.
check-features:
	$(CARGO) check --no-default-features --features http
	$(CARGO) check --no-default-features --features http,aws

# cfn-lint, sam validate --lint, checkov, terraform fmt, HCL parse (tools
# from PyPI, pinned, into .venv-iac on first use).
iac-check:
	./scripts/iac-check.sh

# The Lambda bootstrap (provided.al2023, arm64), zipped, built with
# cargo-lambda from PyPI (it brings zig for the cross link).
LAMBDA_VENV := .venv-lambda
CARGO_LAMBDA_VERSION := 1.9.2

$(LAMBDA_VENV)/bin/cargo-lambda:
	python3 -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda==$(CARGO_LAMBDA_VERSION)'

lambda-zip: $(LAMBDA_VENV)/bin/cargo-lambda
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(abspath $(LAMBDA_VENV))/bin:$$PATH" $(CARGO) lambda build --release --arm64 --output-format zip
	@ls -l target/lambda/wasmgate/bootstrap.zip

ci: lint check-features iac-check test

# Guest sources are separate cargo projects built for wasm32-wasip2; the
# built .wasm files are committed so the host build and CI never need the
# target installed.
examples:
	cd examples/hello-rust && $(CARGO) build --release --target $(GUEST_TARGET)
	cp examples/hello-rust/target/$(GUEST_TARGET)/release/hello_rust.wasm examples/hello-rust/hello.wasm

fixtures:
	cd tests/guests/probe && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/probe/target/$(GUEST_TARGET)/release/probe.wasm tests/fixtures/probe.wasm
	cd tests/guests/cli-command && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/cli-command/target/$(GUEST_TARGET)/release/cli-command.wasm tests/fixtures/cli-command.wasm

clean-demo:
	rm -rf .wasmgate
