-- GET with bearer tokens from the environment (BENCH_TOKENS, comma-separated),
-- taken in turn, so that the requests spread over several users
local tokens = {}
for token in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do
  table.insert(tokens, token)
end
local counter = 0

function request()
  counter = counter + 1
  if #tokens > 0 then
    wrk.headers["Authorization"] = "Bearer " .. tokens[counter % #tokens + 1]
  end
  return wrk.format()
end
