-- wrk script for confirming `tributary bench` from outside (BENCHMARKS.md): events shaped
-- like the bench's own (catalogs::event_target), from a million visitors.
--   wrk -t2 -c64 -d10s -s src/tools/bench/wrk_events.lua http://127.0.0.1:8080
-- TRIBUTARY_WRK_VISITORS sets the population (default a million). Visitors are drawn
-- uniformly here (the bench draws them Zipf-distributed), so the sessions
-- and the store see more distinct visitors than in the bench: a harder workload, not an
-- easier one.
-- TRIBUTARY_WRK_DELAY_MS paces each connection (a wait after each answer), for a steady load
-- rather than as many requests as the server takes.
local visitors = tonumber(os.getenv("TRIBUTARY_WRK_VISITORS") or "") or 1000000
local delay_ms = tonumber(os.getenv("TRIBUTARY_WRK_DELAY_MS") or "")
if delay_ms then
  delay = function()
    return delay_ms
  end
end
local pages = { "cars", "news/today", "home", "cars/suv" }
local sections = { "sport", "finance", "home" }
local devices = { "mobile", "desktop", "tablet" }

request = function()
  local visitor = math.random(0, visitors - 1)
  local path = string.format(
    "/event?d_rtbd=json&d_uuid=1%037d&c_page=%s&c_basket=%d&c_section=%s&c_device=%s&c_k%d=v%d",
    visitor,
    pages[math.random(#pages)],
    math.random(0, 199),
    sections[math.random(#sections)],
    devices[math.random(#devices)],
    visitor % 10000,
    math.random(0, 9)
  )
  return wrk.format("GET", path)
end
