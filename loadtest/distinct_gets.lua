-- wrk script for loadtest/cache_workers.sh: a GET of the model listing
-- with a query no request had before (`?n=<thread>-<counter>`), so every
-- request is a cache miss whose answer is stored.
--
--   wrk -t1 -c4 -d5s -s loadtest/distinct_gets.lua http://127.0.0.1:19302 -- API_KEY

local counter = 0
local thread_id = 0
local key = "sk-bench"

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
end

function init(args)
  if args[1] ~= nil and args[1] ~= "" then
    key = args[1]
  end
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/v1/models?n=" .. tostring(id) .. "-" .. tostring(counter),
    { ["Authorization"] = "Bearer " .. key })
end
