-- wrk script: replay pre-generated requests from a file written by the harness.
--
--   wrk -s bench/requests.lua URL -- REQUEST_FILE THREADS
--
-- Each line of REQUEST_FILE is "METHOD<TAB>PATH<TAB>BODY" (BODY may be empty; compact JSON has
-- no tabs or newlines). Line i goes to thread i % THREADS, so threads never send the same
-- request (register envelopes are single-use); each thread cycles through its lines in file
-- order (the harness shuffles them). Set BENCH_WRK_PACE_MS to make every connection wait that
-- many ms before each request (a paced, roughly constant-rate run). done() prints one line
-- "BENCH_JSON {...}" with the counts and latency percentiles (microseconds) for the harness.

local pace_ms = tonumber(os.getenv("BENCH_WRK_PACE_MS") or "")
local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

local requests = {}
local position = 1

function init(args)
  local path, threads = args[1], tonumber(args[2] or "1")
  local index = thread_index or 0
  local n = 0
  for line in io.lines(path) do
    if n % threads == index then
      local method, target, body = line:match("^(%u+)\t([^\t]*)\t(.*)$")
      if method == nil then
        error("bad request line " .. (n + 1) .. " in " .. path)
      end
      local headers = {}
      if body == "" then
        body = nil
      else
        headers["Content-Type"] = "application/json"
      end
      requests[#requests + 1] = wrk.format(method, target, headers, body)
    end
    n = n + 1
  end
  if #requests == 0 then
    error("no requests for thread " .. index .. " in " .. path)
  end
end

function request()
  local r = requests[position]
  position = position % #requests + 1
  return r
end

if pace_ms ~= nil and pace_ms > 0 then
  function delay()
    return pace_ms
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean
  ))
end
