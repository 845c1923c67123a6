-- POST /oauth2/token with client_secret_basic and a DPoP proof (RFC 9449). A
-- proof's jti is accepted once, so every request sends the next pre-made one.
-- Args: <file with one "Basic ..." header value> <file of proofs, one a line> <threads>
local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(dir .. "common.lua")

local proofs, n, i, step

function init(args)
  reset_counters()
  local basic = read_lines(args[1])[1]
  proofs = read_lines(args[2])
  n = #proofs
  step = tonumber(args[3] or "1")
  -- Thread k takes lines k+1, k+1+step, ...: threads never share a jti.
  i = (thread_index or 0) + 1 - step
  wrk.method = "POST"
  wrk.body = "grant_type=client_credentials&scope=read"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Accept"] = "application/json"
  wrk.headers["Authorization"] = basic
end

function request()
  i = i + step
  if i > n then
    -- Out of fresh proofs: a replay, which the server must refuse.
    i = (i - 1) % n + 1
  end
  wrk.headers["DPoP"] = proofs[i]
  return wrk.format()
end

function response(status, headers, resp_body)
  count_response(status, resp_body, '"DPoP"')
end
