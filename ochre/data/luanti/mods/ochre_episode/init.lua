-- ochre_episode (server-side): a plain view, and the player placed where the recorder asks.
--
-- The recorder writes one command line into ochre_command.txt in the world folder:
--   "<id> near <x> <z> <yaw> <pitch>"      an episode's start: dry land near (x, z), trying further
--                                          points when that is water or a cliff ("ochre_unplaced <id>"
--                                          when none is found)
--   "<id> at <x> <y> <z> <yaw> <pitch>"    a recorded pose, exactly (putting the game back at a pose)
-- This mod generates the map around the spot, then puts the player there looking at (yaw, pitch) in
-- degrees (pitch positive looking down), and logs "ochre_placed <id> <x> <y> <z>".

local hud = minetest.settings:get_bool("ochre_hud", false)
local command_file = minetest.get_worldpath() .. "/ochre_command.txt"
local done_id, busy = nil, false
local RADIUS = 32           -- nodes generated around the spot before the player arrives

-- No chat over the picture: the join messages and the server status line are not sent.
minetest.get_server_status = function() return "" end
minetest.send_join_message = function() end

minetest.register_on_joinplayer(function(player)
	player:hud_set_flags({hotbar = hud, crosshair = hud, wielditem = hud, healthbar = false,
		breathbar = false, minimap = false, minimap_radar = false})
	minetest.set_timeofday(tonumber(minetest.settings:get("ochre_time_of_day")) or 0.5)
end)

-- Dry land: the mapgen's spawn level (nil over water and cliffs) at least two nodes above the sea.
local lowest = (tonumber(minetest.settings:get("water_level")) or 1) + 2

local function ground(x, z)
	for k = 0, 63 do
		-- points on a widening spiral around (x, z): golden-angle turns, the radius growing by 24 nodes
		local r = math.ceil(math.sqrt(k))
		local a = k * 2.399963
		local px, pz = x + math.floor(24 * r * math.cos(a)), z + math.floor(24 * r * math.sin(a))
		local y = minetest.get_spawn_level(px, pz)
		if y and y >= lowest then
			return {x = px, y = y, z = pz}
		end
	end
end

local function place(player, id, pos, yaw, pitch)
	local lo, hi = vector.subtract(pos, RADIUS), vector.add(pos, RADIUS)
	minetest.emerge_area(lo, hi, function(_, _, remaining)
		if remaining > 0 then
			return
		end
		player:set_pos(pos)
		player:set_look_horizontal(math.rad(yaw))
		player:set_look_vertical(math.rad(pitch))
		minetest.log("action", string.format("ochre_placed %s %.4f %.4f %.4f", id, pos.x, pos.y, pos.z))
		busy = false
	end)
end

local function run(player, line)
	local id, verb, rest = line:match("^(%S+) (%S+) (.*)$")
	if not id or id == done_id then
		return
	end
	local v = {}
	for word in rest:gmatch("%S+") do
		v[#v + 1] = tonumber(word)
	end
	done_id, busy = id, true
	if verb == "near" and #v == 4 then
		local pos = ground(v[1], v[2])
		if pos then
			place(player, id, pos, v[3], v[4])
			return
		end
	elseif verb == "at" and #v == 5 then
		place(player, id, {x = v[1], y = v[2], z = v[3]}, v[4], v[5])
		return
	end
	minetest.log("action", string.format("ochre_unplaced %s", id))
	busy = false
end

minetest.register_globalstep(function()
	local player = minetest.get_connected_players()[1]
	if busy or not player then
		return
	end
	local f = io.open(command_file, "r")
	if not f then
		return
	end
	local line = f:read("*l")
	f:close()
	run(player, line or "")
end)
