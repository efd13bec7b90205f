#!/usr/bin/env bash
# `make demo`: build wasmgate, deploy the example function on the embedded
# default (./.wasmgate), start the server and answer a curl. The server keeps
# running until Ctrl-C; DEMO_ONESHOT=1 stops it after the first answer.
set -euo pipefail
cd "$(dirname "$0")/.."

addr=${DEMO_ADDR:-127.0.0.1:8080}
# Where cargo puts the build (it honours CARGO_TARGET_DIR, so do we).
bin=${CARGO_TARGET_DIR:-target}/release/wasmgate
export WASMGATE_DATA_DIR=${WASMGATE_DATA_DIR:-.wasmgate}

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "building wasmgate (release)"
cargo build --release

step "deploying examples/hello-rust/hello.wasm to /hello"
"$bin" deploy examples/hello-rust/hello.wasm --route /hello

if curl -s -o /dev/null "http://$addr/" 2>/dev/null; then
  echo "error: something is already listening on $addr; stop it or set DEMO_ADDR=127.0.0.1:PORT" >&2
  exit 1
fi

step "starting the server on $addr"
start=$(date +%s%N)
"$bin" serve --addr "$addr" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "http://$addr/hello" 2>/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "error: the server exited" >&2; exit 1; fi
  sleep 0.02
done
first_ms=$(( ($(date +%s%N) - start) / 1000000 ))

step "curl http://$addr/hello"
curl -fsS "http://$addr/hello"
echo "(first response ${first_ms} ms after the server started)"

if [ -n "${DEMO_ONESHOT:-}" ]; then
  exit 0
fi
cat <<TXT

wasmgate is serving http://$addr (Ctrl-C to stop). Try:
  curl http://$addr/hello/you?name=me
  $bin routes
  $bin history /hello
TXT
wait "$server"
