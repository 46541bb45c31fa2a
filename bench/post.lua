-- wrk script: POST one JSON body per request, cycling through a file of bodies (one per line),
-- and print a machine-readable summary line at the end.
-- Usage: wrk -s bench/post.lua <url> -- <bodies-file>
-- With WRK_STATUS_COUNTS=1 in the environment it also counts responses by status (2xx, 4xx,
-- 503, other 5xx, anything else) and adds them to the summary as status_*; wrk's own
-- errors_status lumps every status >= 400 together. Counting makes wrk read every response's
-- headers and body; bench/load.py always turns it on, since only 2xx answers count as served.

local bodies = {}
local counter = 0
local thread_id = 0
local threads = {}
-- Per-thread counts, read by done() through thread:get (so they must be globals).
status_2xx, status_4xx, status_503, status_5xx_other, status_other = 0, 0, 0, 0, 0

function init(args)
    for line in io.lines(args[1]) do
        bodies[#bodies + 1] = line
    end
    -- Threads start at different offsets so they do not send the same sentence in lockstep.
    counter = math.floor(#bodies / 7) * thread_id
    if os.getenv("WRK_STATUS_COUNTS") ~= "1" then
        response = nil -- wrk then skips parsing headers and bodies
    end
end

function setup(thread)
    thread:set("thread_id", thread_id)
    thread_id = thread_id + 1
    threads[#threads + 1] = thread
end

function request()
    counter = counter + 1
    local body = bodies[(counter % #bodies) + 1]
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
    if status >= 200 and status < 300 then
        status_2xx = status_2xx + 1
    elseif status >= 400 and status < 500 then
        status_4xx = status_4xx + 1
    elseif status == 503 then
        status_503 = status_503 + 1
    elseif status >= 500 and status < 600 then
        status_5xx_other = status_5xx_other + 1
    else
        status_other = status_other + 1
    end
end

local function status_counts()
    if os.getenv("WRK_STATUS_COUNTS") ~= "1" then
        return ""
    end
    local totals = {status_2xx = 0, status_4xx = 0, status_503 = 0, status_5xx_other = 0, status_other = 0}
    for _, thread in ipairs(threads) do
        for name, _ in pairs(totals) do
            totals[name] = totals[name] + (thread:get(name) or 0)
        end
    end
    return string.format(
        ', "status_2xx": %d, "status_4xx": %d, "status_503": %d, "status_5xx_other": %d, "status_other": %d',
        totals.status_2xx, totals.status_4xx, totals.status_503, totals.status_5xx_other, totals.status_other)
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
        '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
        '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f%s}\n',
        summary.requests, summary.duration, errors.status, errors.connect, errors.read,
        errors.write, errors.timeout, latency:percentile(50), latency:percentile(95),
        latency:percentile(99), latency.max, latency.mean, status_counts()))
end
