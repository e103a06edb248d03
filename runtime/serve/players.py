"""The players of one server: who holds which row of the stepper's batch, and what each asked for
since the last tick. No web library and no clock of its own (every call is given `now`), so the
tick's bookkeeping is tested without sockets.

A player's tick action comes from ochre.runtime.actions.LiveInput, the encoding `ochre play` uses:
each input message is one row (mouse pixels as counts, keys held), a tick with no message adds a
row with the keys still held, and the tick's action is that window encoded as `ochre prepare`
encodes recorded ticks. An `action` message (bots) replaces the window's encoding for that tick.
"""

from __future__ import annotations

import numpy as np

from ochre.runtime.actions import LiveInput
from ochre.runtime.serve.protocol import Action, Bucket, Input, Limits, ProtocolError, Reset


class Player:
    """One connection's input between ticks, its rate bucket and its counters."""

    def __init__(self, player_id: int, slot: int, fmt: str, limits: Limits, now: float, context: int | None = None):
        self.id, self.slot, self.format = player_id, slot, fmt
        self.bucket = Bucket(limits.messages_per_s, limits.burst, now)
        self.live = LiveInput()
        self.keys: frozenset[str] = frozenset()
        self.override: np.ndarray | None = None           # an `action` message's action for this tick
        self.seq: int | None = None                       # the newest seq received
        self.acked: int | None = None                     # the newest seq a frame answered
        self.reset: Reset | None = Reset(context)         # a new player starts from a context frame
        self.last_message = self.last_row = now
        self.frames = self.dropped = 0

    def receive(self, msg: Input | Action | Reset, now: float) -> None:
        """A parsed message (protocol.parse), counted against the rate bucket."""
        if not self.bucket.take(now):
            raise ProtocolError("flooding: over the message rate limit")
        self.last_message = now
        if isinstance(msg, Input):
            self.keys = msg.keys
            self._row(now, *msg.mouse)
        elif isinstance(msg, Action):
            self.override = np.asarray(msg.action, np.float32)
        else:
            self.reset = msg
        if getattr(msg, "seq", None) is not None:
            self.seq = msg.seq

    def _row(self, now: float, dx: float = 0.0, dy: float = 0.0) -> None:
        self.live.tick(now - self.last_row, dx, dy, self.keys)
        self.last_row = now

    def take_action(self, now: float) -> np.ndarray:
        """The tick's action, float32 (4,) in the units of ochre/actions.py; starts the next window."""
        if now > self.last_row:
            self._row(now)                                # keys held through the end of the tick
        action = self.live.action()
        if self.override is not None:
            action, self.override = self.override, None
        return action

    def take_ack(self) -> int | None:
        """The seq this tick's frame answers, once per new seq."""
        if self.seq is None or self.seq == self.acked:
            return None
        self.acked = self.seq
        return self.seq


class Roster:
    """Slots 0..max_players-1 of the stepper's batch and the players in them."""

    def __init__(self, max_players: int):
        self.max_players = max_players
        self.players: dict[int, Player] = {}              # slot -> player
        self._next_id = 0

    def join(self, fmt: str, limits: Limits, now: float, context: int | None = None) -> Player | None:
        """A new player in the lowest free slot, or None when the server is full."""
        free = next((s for s in range(self.max_players) if s not in self.players), None)
        if free is None:
            return None
        self._next_id += 1
        player = self.players[free] = Player(self._next_id, free, fmt, limits, now, context)
        return player

    def leave(self, player: Player) -> None:
        if self.players.get(player.slot) is player:
            del self.players[player.slot]

    def tick(self, now: float, pick_context) -> tuple[np.ndarray, list[Player], list[int], list[int]]:
        """The batch's actions float32 (B, 4) (the null action in empty slots), the players stepped,
        and the slots to restart with their context indices (pick_context() where a reset named none)."""
        actions = np.zeros((self.max_players, 4), np.float32)
        players = list(self.players.values())
        rows, contexts = [], []
        for p in players:
            actions[p.slot] = p.take_action(now)
            if p.reset is not None:
                rows.append(p.slot)
                contexts.append(p.reset.context if p.reset.context is not None else pick_context())
                p.reset = None
        return actions, players, rows, contexts

    def __len__(self) -> int:
        return len(self.players)
