#!/usr/bin/env bash
# Cold and warm request latency of the release binary on the aws backend,
# against moto's S3/DynamoDB server on 127.0.0.1 (`make test` installs it in
# .venv). Cold = the first request after start: route lookup (BatchGetItem),
# module fetch from S3, SHA-256 check and compile. Warm = everything cached.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/wasmgate
venv=.venv
requests=${REQUESTS:-500}
[ -x "$bin" ] || cargo build --release
[ -x "$venv/bin/moto_server" ] || make "$venv/bin/moto_server"
unset RUST_BACKTRACE

work=$(mktemp -d)
cleanup() { kill "${server:-}" "${moto:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$venv/bin/moto_server" -H 127.0.0.1 -p 0 2>"$work/moto.log" &
moto=$!
for _ in $(seq 1 100); do grep -q "Running on" "$work/moto.log" && break; sleep 0.1; done
endpoint=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/moto.log" | head -1)

export AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export WASMGATE_BACKEND=aws WASMGATE_BUCKET=latency-modules WASMGATE_TABLE=latency-routes WASMGATE_LOG=warn
"$venv/bin/python" - <<'PY'
import boto3
s3 = boto3.client("s3")
s3.create_bucket(Bucket="latency-modules")
boto3.client("dynamodb").create_table(
    TableName="latency-routes", BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("route", "rev")],
    KeySchema=[{"AttributeName": "route", "KeyType": "HASH"}, {"AttributeName": "rev", "KeyType": "RANGE"}])
PY
"$bin" deploy examples/hello-rust/hello.wasm --route /hello >/dev/null

port=$(( 20000 + RANDOM % 20000 ))
"$bin" serve --addr "127.0.0.1:$port" &
server=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done

ms() { curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/hello" | awk '{printf "%.2f\n", $1 * 1000}'; }
cold=$(ms)
for _ in $(seq 1 "$requests"); do ms; done | sort -n > "$work/warm.txt"
pct() { awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; print a[i]}' "$work/warm.txt"; }
echo "aws backend against moto, release build, one curl per request (includes curl's connect)"
echo "cold first request: ${cold} ms"
echo "warm ($requests requests): p50 $(pct 50) ms, p99 $(pct 99) ms"
