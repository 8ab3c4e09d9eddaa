-- wrk script: POST /v2/fulfillment/users with a unique user_id per request,
-- so every request is a real creation (validation, title-casing, store), not a
-- cheap "taken" answer. Used by bench/sandbox.sh and bench/engine.sh.
--
--   wrk -t1 -c50 -d10s -s bench/wrk_create.lua http://127.0.0.1:PORT -- TOKEN [ID_PREFIX]
--
-- user_id = ID_PREFIX (default "bench") .. "-" .. wrk thread .. "-" .. counter.
-- At the end it prints "wrk: 200 answers N, other answers M".
local threads = {}

function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
end

function init(args)
    token = args[1]
    prefix = args[2] or "bench"
    n, ok, other = 0, 0, 0
    headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}
end

function request()
    n = n + 1
    local body = string.format(
        '{"user_id":"%s-%d-%d","first_name":"john","last_name":"smith","phone_number":"+18005550100","locale":"en-US"}',
        prefix, tid, n)
    return wrk.format("POST", "/v2/fulfillment/users", headers, body)
end

function response(status)
    if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
    local total_ok, total_other = 0, 0
    for _, t in ipairs(threads) do
        total_ok = total_ok + t:get("ok")
        total_other = total_other + t:get("other")
    end
    io.write(string.format("wrk: 200 answers %d, other answers %d\n", total_ok, total_other))
end
