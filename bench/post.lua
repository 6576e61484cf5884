-- wrk script for bench/load.py: POST a JSON body built from a template, a fresh one per request.
--
--   wrk ... -s bench/post.lua URL -- TEMPLATE_FILE VALUES_FILE|- PREFIX NTHREADS MARKER
--
-- TEMPLATE_FILE holds the body; its @VALUE@ (if any) is replaced per request by the next line
-- of VALUES_FILE (each line used once: thread t takes lines t+1, t+1+NTHREADS, ...) or, with
-- "-", by a value unique to the run (PREFIX, thread, counter). A response counts as a failure
-- unless it is HTTP 200 and its body contains MARKER. done() prints one line:
-- BENCH_RESULT {json}.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local head, tail, values, prefix, nthreads, marker
local counter = 0
failures = 0
exhausted = 0

local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end

function init(args)
  local template = slurp(args[1])
  local first, last = string.find(template, "@VALUE@", 1, true)
  if first then
    head, tail = string.sub(template, 1, first - 1), string.sub(template, last + 1)
  else
    head = template
  end
  if args[2] ~= "-" then
    values = {}
    for line in io.lines(args[2]) do
      if line ~= "" then table.insert(values, line) end
    end
  end
  prefix = args[3]
  nthreads = tonumber(args[4])
  marker = args[5]
end

function request()
  local body = head
  if tail then
    local value
    if values then
      local index = tid + counter * nthreads + 1
      value = values[index]
      if value == nil then
        exhausted = exhausted + 1
        value = values[(index - 1) % #values + 1]
      end
    else
      value = prefix .. "-" .. tid .. "-" .. counter
    end
    body = head .. value .. tail
  end
  counter = counter + 1
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, marker, 1, true) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed, short = 0, 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failures")
    short = short + thread:get("exhausted")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"failures":%d,"exhausted":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, failed, short,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
