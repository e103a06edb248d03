"""ochre: a playable, action-conditioned world model of Minecraft-like worlds."""

__version__ = "0.1.0"
