-- SPDX-License-Identifier: Apache-2.0
-- wrk script for tools/bench/http_bench --scenario audit: GET /Patient/<id> (a Patient read),
-- rotating through a file of patient ids (one per line), each request with the same
-- Authorization header. Every request is formatted once, in init, so that wrk spends no time
-- on Lua string work while it measures.
--
--   wrk ... -s tools/bench/patient_read.lua https://127.0.0.1:PORT -- IDS_FILE [TOKEN_FILE]
--
-- IDS_FILE: FHIR logical ids of patients, one per line (at most 1,000,000 are read; lines
-- that are not FHIR ids, [A-Za-z0-9.-]{1,64}, are skipped). TOKEN_FILE: a file holding one
-- bearer token; without it no Authorization header is sent. Each wrk thread starts at a
-- different offset in the list, so threads do not ask for the same patient at the same time.

local MAX_IDS = 1000000

local thread_count = 0
local requests = {}
local n = 0
local i = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
end

local function read_first_line(path)
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  local line = f:read("*l")
  f:close()
  return line
end

local function is_fhir_id(s)
  return #s >= 1 and #s <= 64 and s:match("^[%w%.%-]+$") ~= nil
end

function init(args)
  local ids_file = assert(args[1], "usage: -- IDS_FILE [TOKEN_FILE]")
  local headers = {}
  if args[2] ~= nil and args[2] ~= "" then
    local token = read_first_line(args[2])
    assert(token ~= nil and token ~= "", "empty token file " .. args[2])
    headers["Authorization"] = "Bearer " .. token
  end
  local f = assert(io.open(ids_file, "r"), "cannot open " .. ids_file)
  for line in f:lines() do
    if n >= MAX_IDS then break end
    if is_fhir_id(line) then
      n = n + 1
      requests[n] = wrk.format("GET", "/Patient/" .. line, headers)
    end
  end
  f:close()
  assert(n > 0, "no patient ids in " .. ids_file)
  -- thread_index: set by setup(), which wrk calls for this thread just before init.
  local index = tonumber(thread_index) or 0
  i = (index * 7919) % n  -- a different starting point per thread
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end
