-- wrk's script for bench/vector_tiles.py's first requests: each tile path asked exactly
-- once, by a C client that leaves the cores to the servers (the Python client's own time
-- per request was most of a street tile's). bench/vector_tiles.py writes the globals
-- PATHS and THREADS first, and runs one connection a thread: thread i asks paths i,
-- i + THREADS, ... one after another and stops once its last is answered. done() prints
-- one JSON line.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  mine = {}
  for i = id, #PATHS, THREADS do
    table.insert(mine, PATHS[i])
  end
  mine_count, sent, answered, failed = #mine, 0, 0, 0
  -- wrk calls the first thread's request() once to check it, and sends nothing of it.
  checked = id ~= 1
  wrk.headers["Accept-Encoding"] = "gzip"
end

function request()
  if not checked then
    checked = true
    return wrk.format("GET", mine[1])
  end
  sent = sent + 1
  if sent > #mine then  -- all answered (one connection): stopped already
    wrk.thread:stop()
    return wrk.format("GET", mine[#mine])
  end
  return wrk.format("GET", mine[sent])
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 and status ~= 204 then
    failed = failed + 1
  end
  if answered >= #mine then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local failures, counted = 0, 0
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failed")
    counted = counted + math.min(thread:get("answered"), thread:get("mine_count"))
  end
  -- wrk runs for its whole -d however early its threads stop: the rate is read from the
  -- mean latency of the connections, each always waiting on one answer (Little's law).
  io.write(string.format(
    'WRK {"requests": %d, "mean_ms": %.4f, "p50_ms": %.3f, "p99_ms": %.3f, "failed": %d,'
      .. ' "socket_errors": %d}\n',
    counted, latency.mean / 1000, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, failures,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
