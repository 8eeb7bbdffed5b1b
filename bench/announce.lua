-- wrk script for bench/relay_load.py: 10,000 simulated peers over 100 swarms, each request
-- an announce from a random peer of a random swarm (compact, left random: seeders and
-- leechers). Peer ids and info-hashes are fixed per run so swarms fill up.
local swarms, peers = 100, 10000
local hashes, ids = {}, {}

local function pct(s)
  return (s:gsub(".", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local function bytes20(seed, tag)
  local t = {}
  for i = 1, 20 do
    t[i] = string.char((seed * 131 + i * 17 + tag) % 256)
  end
  return table.concat(t)
end

init = function(args)
  math.randomseed(42)
  for i = 1, swarms do hashes[i] = pct(bytes20(i, 7) .. "") end
  for i = 1, peers do
    -- Distinct ids: the index in the first four bytes.
    local id = string.char(i % 256, math.floor(i / 256) % 256, 1, 2) .. bytes20(i, 3):sub(5)
    ids[i] = pct(id)
  end
end

request = function()
  local p = math.random(peers)
  local h = (p % swarms) + 1
  local left = (p % 3 == 0) and 0 or 1000
  local path = "/announce?info_hash=" .. hashes[h] .. "&peer_id=" .. ids[p]
    .. "&port=" .. (10000 + p) .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50"
  -- One announce per connection, as BitTorrent clients do (and opentracker closes anyway).
  return wrk.format("GET", path, { ["Connection"] = "close" })
end
