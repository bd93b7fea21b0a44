-- Each request pings with the next token of the seeded gateways. ENDPOINT
-- (default /ping) lets the same load, built the same way, be sent to the
-- ceiling handler.
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local endpoint = os.getenv("ENDPOINT") or "/ping"
local i = 0
offset = 0
function setup(thread)
  thread:set("offset", math.random(#tokens))
end
function request()
  i = i + 1
  local t = tokens[((offset + i) % #tokens) + 1]
  return wrk.format("GET", endpoint .. "?token=" .. t .. "&local_ip=192.168.1.20")
end
