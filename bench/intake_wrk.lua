-- wrk's script for bench/intake.py: POST /incidents with varied reports, made here (in C
-- speed) so the figure measures the server, not a Python client on the same cores.
-- bench/intake.py writes the globals first: KEY, WEST, SOUTH, EAST, NORTH, CODES, CHANNELS.
-- Each wrk thread draws its own points, categories and channels (seeded by thread), and
-- counts the answers that are not 201; done() prints one JSON line for bench/intake.py.

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(11 + 7919 * id)
  failed = 0
  first_failure = ""
  wrk.method = "POST"
  wrk.path = "/incidents"
  wrk.headers["X-API-Key"] = KEY
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  local lon = WEST + math.random() * (EAST - WEST)
  local lat = SOUTH + math.random() * (NORTH - SOUTH)
  local body = string.format(
    '{"category": "%s", "channel": "%s", "location": {"lon": %.7f, "lat": %.7f},'
      .. ' "description": "bench report", "reporter": {"name": "bench", "phone": "13800000000"}}',
    CODES[math.random(#CODES)], CHANNELS[math.random(#CHANNELS)], lon, lat)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 201 then
    failed = failed + 1
    if first_failure == "" then
      first_failure = status .. " " .. string.sub(body, 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local failures, shown = 0, ""
  for _, thread in ipairs(threads) do
    failures = failures + thread:get("failed")
    if shown == "" then shown = thread:get("first_failure") end
  end
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, "failed": %d,'
      .. ' "socket_errors": %d, "first_failure": "%s"}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, failures,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    string.gsub(shown, '[%c"\\]', "?")))
end
