-- Each request registers a new name, unique per thread and run. ENDPOINT
-- (default /subscribe) lets the same load go to the ceiling handler.
local endpoint = os.getenv("ENDPOINT") or "/subscribe"
local i = 0
prefix = ""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("prefix", os.getenv("RUN") .. "t" .. threads .. "n")
end
function request()
  i = i + 1
  return wrk.format("GET", endpoint .. "?name=" .. prefix .. i)
end
