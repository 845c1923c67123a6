-- POST /oauth2/token with private_key_jwt (RFC 7523). A jti is accepted
-- once, so every request sends the next pre-generated assertion.
-- Args: <file of assertions, one a line> <threads> [<extra form parameters, e.g. client_id=x>]
local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(dir .. "common.lua")

local PREFIX = "grant_type=client_credentials&scope=read"
  .. "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
  .. "&client_assertion="
local assertions, n, i, step

function init(args)
  reset_counters()
  assertions = read_lines(args[1])
  n = #assertions
  step = tonumber(args[2] or "1")
  if args[3] and args[3] ~= "" then
    -- A federated assertion (docs/api.md §1.3) names its client beside it.
    PREFIX = args[3] .. "&" .. PREFIX
  end
  -- Thread k takes lines k+1, k+1+step, ...: threads never share a jti.
  i = (thread_index or 0) + 1 - step
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Accept"] = "application/json"
end

function request()
  i = i + step
  if i > n then
    -- Out of fresh assertions: a replay, which the server must refuse.
    i = (i - 1) % n + 1
  end
  wrk.body = PREFIX .. assertions[i]
  return wrk.format()
end

function response(status, headers, resp_body)
  count_response(status, resp_body, '"access_token"')
end
