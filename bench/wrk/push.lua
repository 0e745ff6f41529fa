-- wrk script: POST a permit whose plate and permit number change on every request,
-- so a de-duplicating receiver does real work for each one.
-- Arguments after `--`: API token, run nonce (keeps bodies unique across runs).
-- done() prints one line starting with BENCH_JSON that bench/wrkload.py parses.

local token = "bench-token"
local nonce = "run"
local counter = 0
local thread_tag = "0"
local next_thread = 0

function setup(thread)
  thread:set("thread_tag", tostring(next_thread))
  next_thread = next_thread + 1
end

function init(args)
  if args[1] then token = args[1] end
  if args[2] then nonce = args[2] end
  thread_tag = wrk.thread:get("thread_tag") or "0"
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

function request()
  counter = counter + 1
  local body = string.format(
    '{"apiToken":"%s","Amount":"14.50","CurrencyID":"CAD","LicencePlate":"W%s%s%d",'
      .. '"zone":"Lot 4","permitNo":"%s-%s-%d",'
      .. '"startTime":"2018-07-02T09:00:00","endTime":"2018-07-02T09:30:00"}',
    token, nonce, thread_tag, counter, nonce, thread_tag, counter)
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
