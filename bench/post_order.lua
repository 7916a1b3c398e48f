-- POST /v1/orders with a fresh Idempotency-Key on every request
local token = os.getenv("BENCH_TOKEN")
local counter = 0
local prefix = ""
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  prefix = string.format("%d-%d-%d", os.time(), id or 0, math.random(1, 1e9))
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (token or "")
wrk.body = '{"items": [{"sku": "BENCH-1", "quantity": 2, "unit_price": "19.99"}, {"sku": "BENCH-2", "quantity": 1, "unit_price": "5.00"}]}'

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format()
end
