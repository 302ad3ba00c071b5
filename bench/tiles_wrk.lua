-- wrk's script for bench/vector_tiles.py: GET the benchmark's tile paths over and over
-- (warm tiles), so the figure measures the server, not a Python client on the same cores.
-- bench/vector_tiles.py writes the global PATHS first. Each thread starts at its own
-- place in the list; answers other than 200 and 204 are counted; done() prints one JSON
-- line.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  failed = 0
  at = (id * 7919) % #PATHS
  wrk.headers["Accept-Encoding"] = "gzip"
end

function request()
  at = at % #PATHS + 1
  return wrk.format("GET", PATHS[at])
end

function response(status, headers, body)
  if status ~= 200 and status ~= 204 then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local failures = 0
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failed")
  end
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, "failed": %d,'
      .. ' "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, failures,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
