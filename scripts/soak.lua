-- wrk script for `make soak` (scripts/soak.sh): a fixed mix of requests to
-- the two test guests, mostly answers that must be 200 with a fraction of
-- faulting ones; it counts every response by kind and status and keeps a
-- latency histogram per kind.
--
-- wrk's response() is not told which request it answers (a thread drives
-- several connections), so every request carries
-- `x-request-id: soak-KIND-THREAD-SEQ`: the server echoes x-request-id on
-- every response, its own error answers included, and response() reads the
-- kind (and when the request was sent) back from it.
--
-- Routes (deployed by soak.sh): localhost/p -> tests/fixtures/probe.wasm
-- (wasi:http component), localhost/w -> tests/fixtures/wagi-probe.wasm (WAGI).
-- Both guests pick their behaviour by the last path segment.

-- name, path, expected status, weight (per 2000 requests): 80% must be 200,
-- 20% fault. oom is kept rare: both probes touch every page up to the
-- memory limit, tens of ms of kernel time each (more in a VM). The loops
-- have weight 0 here: each one burns a core until the deadline
-- (WASMGATE_TIMEOUT_MS), so they are sent at a fixed rate instead, one per
-- thread every `loop_every` seconds, alternating /p and /w, whatever the
-- throughput.
local kinds = {
  { "p_echo",   "/p/echo",               200, 800 },
  { "w_echo",   "/w/echo",               200, 500 },
  { "p_big",    "/p/big?bytes=16384",    200, 140 },
  { "w_big",    "/w/big?bytes=16384",    200, 100 },
  { "p_big64k", "/p/big?bytes=65536",    200, 20 },
  { "w_stderr", "/w/stderr",             200, 40 },
  { "p_trap",   "/p/trap",               500, 100 },
  { "p_panic",  "/p/panic",              500, 60 },
  { "p_oom",    "/p/oom",                500, 6 },
  { "w_trap",   "/w/trap",               500, 80 },
  { "w_exit1",  "/w/exit1",              500, 80 },
  { "w_oom",    "/w/oom",                500, 4 },
  { "p_loop",   "/p/loop",               504, 0 },
  { "w_loop",   "/w/loop",               504, 0 },
}

local by_name = {}
for i, k in ipairs(kinds) do
  by_name[k[1]] = i
end

-- setup/done phase (the main Lua state): keep the threads to aggregate.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- running phase (one Lua state per thread). Flat tables only: wrk's
-- thread:get() copies nested tables wrongly (wrk 4.1 segfaults).
counts = {}  -- counts["KIND STATUS"] = n; KIND "?" when unattributed
hist = {}    -- hist["KIND B"] = n: latency histogram, 4 buckets per octave
maxlat = {}  -- maxlat[KIND] = slowest response, microseconds
local sent = {} -- sent[seq] = when request seq was handed to wrk

-- A monotonic clock (LuaJIT ffi; os.clock is CPU time, os.time seconds).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
  int clock_gettime(int clock, soak_timespec *ts);
]]
local ts = ffi.new("soak_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
local schedule = {}
local pos = 0
local seq = 0
local prefix = {}
local loop_every = 10  -- seconds; `wrk ... -- N` sets it, 0 sends no loops
local next_loop = 0
local loops_sent = 0

function init(args)
  loop_every = tonumber(args[1] or "") or loop_every
  next_loop = os.time() + 1 + (thread_id or 0) % math.max(loop_every, 1)
  -- A shuffled schedule (seeded per thread, so runs are reproducible)
  -- spreads the faulting requests through the run.
  math.randomseed(1000 + (thread_id or 0))
  for i, k in ipairs(kinds) do
    for _ = 1, k[4] do
      table.insert(schedule, i)
    end
  end
  for i = #schedule, 2, -1 do
    local j = math.random(i)
    schedule[i], schedule[j] = schedule[j], schedule[i]
  end
  pos = math.random(#schedule)
  for i, k in ipairs(kinds) do
    prefix[i] = "soak-" .. k[1] .. "-" .. (thread_id or 0) .. "-"
  end
end

function request()
  seq = seq + 1
  local i
  local now = loop_every > 0 and os.time() or 0
  if loop_every > 0 and now >= next_loop then
    next_loop = now + loop_every
    loops_sent = loops_sent + 1
    i = by_name[loops_sent % 2 == 1 and "p_loop" or "w_loop"]
  else
    pos = pos % #schedule + 1
    i = schedule[pos]
  end
  sent[seq] = now_us()
  return wrk.format("GET", kinds[i][2], {
    ["Host"] = "localhost",
    ["x-request-id"] = prefix[i] .. seq,
  })
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-Id"] or ""
  local name, n = string.match(id, "^soak%-([%w_]+)%-%d+%-(%d+)$")
  if not (name and by_name[name]) then
    name = "?"
  end
  local key = name .. " " .. status
  counts[key] = (counts[key] or 0) + 1
  local t0 = n and sent[tonumber(n)]
  if t0 and name ~= "?" then
    sent[tonumber(n)] = nil
    local us = math.max(now_us() - t0, 1)
    local b = name .. " " .. math.floor(4 * math.log(us) / math.log(2))
    hist[b] = (hist[b] or 0) + 1
    if us > (maxlat[name] or 0) then
      maxlat[name] = us
    end
  end
end

-- The latency below which fraction q of the histogram h ({bucket = n}) lies
-- (the upper edge of its bucket), in microseconds.
local function percentile(h, q)
  local buckets, total = {}, 0
  for b, n in pairs(h) do
    table.insert(buckets, b)
    total = total + n
  end
  table.sort(buckets)
  local seen = 0
  for _, b in ipairs(buckets) do
    seen = seen + h[b]
    if seen >= q * total then
      return 2 ^ ((b + 1) / 4)
    end
  end
  return 0
end

-- Machine-readable lines (prefixed "SOAK ") for soak.sh to parse.
function done(summary, latency, requests)
  local total = {} -- total[kind name][status] = n
  local lat = {}   -- lat[kind name][bucket] = n
  local slowest = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts") or {}) do
      local name, status = string.match(key, "^(%S+) (%d+)$")
      total[name] = total[name] or {}
      total[name][status] = (total[name][status] or 0) + n
    end
    for key, n in pairs(thread:get("hist") or {}) do
      local name, b = string.match(key, "^(%S+) (%-?%d+)$")
      lat[name] = lat[name] or {}
      lat[name][tonumber(b)] = (lat[name][tonumber(b)] or 0) + n
    end
    for name, us in pairs(thread:get("maxlat") or {}) do
      slowest[name] = math.max(slowest[name] or 0, us)
    end
  end
  local e = summary.errors
  io.write(string.format(
    "SOAK summary duration_us=%d requests=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format(
    "SOAK latency_us mean=%.0f p50=%d p90=%d p99=%d p999=%d max=%d\n",
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
  for _, k in ipairs(kinds) do
    local parts = {}
    for status, n in pairs(total[k[1]] or {}) do
      table.insert(parts, status .. "=" .. n)
    end
    table.sort(parts)
    io.write(string.format("SOAK kind %s %s %d %s\n", k[1], k[2], k[3],
      table.concat(parts, ",")))
    local h = lat[k[1]] or {}
    local max = slowest[k[1]] or 0
    io.write(string.format("SOAK kindlat %s p50_us=%.0f p99_us=%.0f max_us=%.0f\n", k[1],
      math.min(percentile(h, 0.5), max), math.min(percentile(h, 0.99), max), max))
  end
  local parts = {}
  for status, n in pairs(total["?"] or {}) do
    table.insert(parts, status .. "=" .. n)
  end
  io.write("SOAK unattributed " .. table.concat(parts, ",") .. "\n")
end
