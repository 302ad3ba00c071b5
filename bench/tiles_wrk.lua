-- wrk's script for bench/vector_tiles.py, so the figures measure the servers, not a Python
-- client on the same cores. bench/vector_tiles.py writes the globals PATHS, THREADS and
-- ONCE first.
-- ONCE false (warm tiles): the paths over and over, each thread from its own place in the
-- list. ONCE true (first requests): each path asked exactly once, one connection a thread:
-- thread i asks paths i, i + THREADS, ... and stops once its last is answered.
-- Answers other than 200 and 204 are counted; done() prints one JSON line.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  mine = {}
  if ONCE then
    for i = id, #PATHS, THREADS do
      table.insert(mine, PATHS[i])
    end
  end
  at = (id * 7919) % #PATHS
  mine_count, sent, answered, failed = #mine, 0, 0, 0
  -- wrk calls the first thread's request() once to check it, and sends nothing of it.
  checked = not ONCE or id ~= 1
  wrk.headers["Accept-Encoding"] = "gzip"
end

function request()
  if not ONCE then
    at = at % #PATHS + 1
    return wrk.format("GET", PATHS[at])
  end
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
  if ONCE and answered >= #mine then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local failures, counted = 0, 0
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failed")
    counted = counted + math.min(thread:get("answered"), thread:get("mine_count"))
  end
  if not ONCE then
    counted = summary.requests
  end
  -- With ONCE wrk still runs for all of -d however early its threads stop: the rate is
  -- read from the mean latency of the connections, each always waiting on one answer.
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.6f, "mean_ms": %.4f, "p50_ms": %.3f, "p99_ms": %.3f,'
      .. ' "failed": %d, "socket_errors": %d}\n',
    counted, summary.duration / 1e6, latency.mean / 1000, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, failures,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
