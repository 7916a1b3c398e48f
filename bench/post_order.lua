-- POST /v1/orders with a fresh Idempotency-Key on every request, for users taken
-- in turn from BENCH_TOKENS (comma-separated)
local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  table.insert(tokens, token)
end
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
wrk.body = '{"items": [{"sku": "BENCH-1", "quantity": 2, "unit_price": "19.99"}, {"sku": "BENCH-2", "quantity": 1, "unit_price": "5.00"}]}'

function request()
  counter = counter + 1
  wrk.headers["Authorization"] = "Bearer " .. tokens[counter % #tokens + 1]
  wrk.headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format()
end
