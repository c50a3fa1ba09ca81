-- wrk script for scripts/bench/wrk.sh: every request is the same MCP
-- `tools/call` (110 bytes of JSON-RPC) POSTed the way a Streamable HTTP
-- client sends it; when the run ends, one JSON line with the numbers
-- wrk.sh reports (latency percentiles in microseconds).
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello, bench"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = "wrk-bench-session"
wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"

bad = 0 -- global: done() reads it from each thread

response = function(status, headers, body)
    if status ~= 200 or not string.find(body, '"result"', 1, true) then
        bad = bad + 1
    end
end

-- `response` runs in each thread's own Lua state; counts come back through
-- the threads table.
local threads = {}
setup = function(thread)
    table.insert(threads, thread)
end

done = function(summary, latency, requests)
    local wrong = 0
    for _, t in ipairs(threads) do
        wrong = wrong + (t:get("bad") or 0)
    end
    io.write(string.format(
        '{"requests":%d,"duration_us":%d,"errors":%d,"non_result":%d,'
            .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
        summary.requests, summary.duration,
        summary.errors.connect + summary.errors.read + summary.errors.write
            + summary.errors.status + summary.errors.timeout,
        wrong,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean))
end
