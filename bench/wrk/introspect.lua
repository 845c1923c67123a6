-- POST /oauth2/introspect (RFC 7662) of one valid token, client_secret_basic.
-- Args: <file with one "Basic ..." header value> <token>
local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(dir .. "common.lua")

function init(args)
  reset_counters()
  wrk.method = "POST"
  wrk.body = "token=" .. args[2] .. "&token_type_hint=access_token"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Accept"] = "application/json"
  wrk.headers["Authorization"] = read_lines(args[1])[1]
end

function response(status, headers, resp_body)
  -- Flask answers compact JSON; accept either spacing.
  if resp_body and string.find(resp_body, '"active": true', 1, true) then
    resp_body = '"active":true'
  end
  count_response(status, resp_body, '"active":true')
end
