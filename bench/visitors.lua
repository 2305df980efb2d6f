math.randomseed(os.time())
request = function()
  local id = string.format("1%037d", math.random(1, 100000))
  return wrk.format("GET", "/event?d_rtbd=json&d_cts=2&c_page=cars&c_basket=150&d_uuid=" .. id)
end
