-- wrk script: POST one JSON body per request, cycling through a file of bodies (one per line),
-- and print a machine-readable summary line at the end.
-- Usage: wrk -s bench/post.lua <url> -- <bodies-file>

local bodies = {}
local counter = 0
local thread_id = 0

function init(args)
    for line in io.lines(args[1]) do
        bodies[#bodies + 1] = line
    end
    -- Threads start at different offsets so they do not send the same sentence in lockstep.
    counter = math.floor(#bodies / 7) * thread_id
end

function setup(thread)
    thread:set("thread_id", thread_id)
    thread_id = thread_id + 1
end

function request()
    counter = counter + 1
    local body = bodies[(counter % #bodies) + 1]
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
        '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
        '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
        summary.requests, summary.duration, errors.status, errors.connect, errors.read,
        errors.write, errors.timeout, latency:percentile(50), latency:percentile(95),
        latency:percentile(99), latency.max, latency.mean))
end
