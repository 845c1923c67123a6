-- POST /oauth2/token with client_secret_basic.
-- Args: <file of "Basic ..." header values, one a line> [body]
-- One line: every request as that client; many: round-robin over them.
local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(dir .. "common.lua")

local headers_list, n, i, body

function init(args)
  reset_counters()
  headers_list = read_lines(args[1])
  body = args[2] or "grant_type=client_credentials&scope=read"
  n = #headers_list
  i = 0
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Accept"] = "application/json"
  wrk.headers["Authorization"] = headers_list[1]
end

function request()
  if n == 1 then
    return wrk.format()
  end
  i = i % n + 1
  wrk.headers["Authorization"] = headers_list[i]
  return wrk.format()
end

function response(status, headers, resp_body)
  count_response(status, resp_body, '"access_token"')
end
