-- ochre_pose (client-side): every client step, number the frame and log the pose it renders.
--
-- The game's loop reads the mouse and keys, moves the player, runs this globalstep, then draws the
-- frame. So the pose logged here is the pose of the frame drawn right after it, and the step number
-- drawn into the top strip of the window (a row of black and white cells, bit i in cell i) lets the
-- recorder tell which step each grabbed frame shows. The strip lies outside the recorded picture.

local bits = tonumber(minetest.settings:get("ochre_marker_bits"))
local strip = tonumber(minetest.settings:get("ochre_marker_strip_percent"))
local WHITE = "default_stone.png^[colorize:#ffffff:255"
local BLACK = "default_stone.png^[colorize:#000000:255"
local cells, shown, step = {}, {}, 0

local function show(player, n)
	for i = 1, bits do
		local bit = math.floor(n / 2 ^ (i - 1)) % 2
		if shown[i] ~= bit then
			player:hud_change(cells[i], "text", bit == 1 and WHITE or BLACK)
			shown[i] = bit
		end
	end
end

minetest.register_globalstep(function(dtime)
	local player = minetest.localplayer
	if not player then
		return
	end
	if #cells == 0 then
		for i = 1, bits do
			cells[i] = player:hud_add({
				hud_elem_type = "image", text = BLACK, position = {x = (i - 1) / bits, y = 0},
				alignment = {x = 1, y = 1}, scale = {x = -100 / bits, y = -strip}, z_index = 1000,
			})
			shown[i] = 0
		end
	end
	step = step + 1
	show(player, step)
	local pos, c = player:get_pos(), player:get_control()
	-- step dtime x y z look_horizontal pitch controls liquid; angles in degrees, pitch positive looking down.
	minetest.log("action", string.format("ochre_pose %d %.6f %.5f %.5f %.5f %.6f %.6f %s%s%s%s%s%s %d",
		step, dtime, pos.x, pos.y, pos.z,
		math.deg(minetest.camera:get_look_horizontal()), -math.deg(minetest.camera:get_look_vertical()),
		c.up and "w" or "-", c.left and "a" or "-", c.down and "s" or "-", c.right and "d" or "-",
		c.jump and "j" or "-", c.sneak and "c" or "-", player:is_in_liquid() and 1 or 0))
end)
