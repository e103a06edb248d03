"""`ochre synth`: a procedural Minecraft-like world, rendered on the CPU, written as real recordings.

One module per idea, each usable alone:
  world     `make_world(seed)`, the block world, and `walk`, a player's camera path through it
  policy    `policy(rng, steps)`: a balanced random player, camera [pitch, yaw] degrees per tick
  renderer  `render(world, poses, size)`: an exact heightmap ray caster, vectorised in numpy
  writers   `write_minerl` / `write_vpt`: docs/data.md#recordings recordings from any frames and controls
  episodes  `render_episode` ties the three together; `synthesize` / `run` are the command

Conventions: state t is the frame rendered before action t; action t takes state t to t+1, so
S actions give S + 1 frames. Positive pitch looks down (content moves up), positive yaw turns
right (content moves left). Everything is a function of (seed, episode index): bit-exact
regardless of --workers.
"""

from ochre.data.synth.episodes import (
    Episode,
    SynthConfig,
    dataset_mix,
    episode_actions,
    episode_name,
    horizon_share,
    loading_frames,
    render_episode,
    run,
    synthesize,
)
from ochre.data.synth.policy import BEHAVIOURS, KEY_NAMES, Actions, action_mix, policy
from ochre.data.synth.renderer import horizon_in_view, render
from ochre.data.synth.world import EYE_HEIGHT, Poses, World, ground_height, make_world, walk
from ochre.data.synth.writers import VPT_KEYS, write_minerl, write_vpt

__all__ = [
    "Actions", "BEHAVIOURS", "EYE_HEIGHT", "Episode", "KEY_NAMES", "Poses", "SynthConfig", "VPT_KEYS", "World",
    "action_mix", "dataset_mix", "episode_actions", "episode_name", "ground_height", "horizon_in_view",
    "horizon_share", "loading_frames", "make_world", "policy", "render", "render_episode", "run", "synthesize",
    "walk", "write_minerl", "write_vpt",
]
