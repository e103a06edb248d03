"""The `ochre serve` wire protocol (docs/serve.md): limits, client messages parsed and checked, the
server's messages, close codes. Pure functions and dataclasses, no web library: the server and the
tests both speak through here.

A client message is one WebSocket text message holding a JSON object. Anything else, or a field of
the wrong kind, raises ProtocolError, whose text is the `reason` sent back before the server closes
the connection with POLICY (1008).
"""

from __future__ import annotations

import dataclasses
import json
import math

POLICY = 1008            # the client broke the protocol (RFC 6455 "policy violation")
TRY_LATER = 1013         # the server is full (RFC 6455 "try again later")
NORMAL = 1000            # the server ended a session on purpose (idle player, shutdown)

KEYS = ("w", "a", "s", "d", "left", "right", "up", "down")     # what ochre.runtime.actions.LiveInput reads
MAX_MOUSE = 10_000.0     # screen pixels per message: far beyond a flick; the encoding clips a step at ±15°
MAX_SEQ = 2**53          # a JavaScript number counts exactly up to here


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one player may send; past it the player is closed with POLICY."""

    max_message_bytes: int = 4096          # a real message is under 100 bytes
    # A page sends at most one input per display frame (60 Hz, 144 Hz on fast screens when the mouse
    # moves); the bucket lets that through and stops a loop that sends as fast as it can.
    messages_per_s: float = 200.0
    burst: int = 400
    idle_s: float = 120.0                  # no message for this long: the slot goes to someone else

    def __post_init__(self):
        if self.max_message_bytes < 64 or self.messages_per_s <= 0 or self.burst < 1 or self.idle_s <= 0:
            raise ValueError(f"serve limits out of range: {self}")


class ProtocolError(ValueError):
    """A message that breaks the protocol; str(e) is the reason the client is told."""


@dataclasses.dataclass(frozen=True)
class Input:
    keys: frozenset[str]                   # held now
    mouse: tuple[float, float]             # screen pixels moved since the previous message (dx right, dy down)
    seq: int | None = None


@dataclasses.dataclass(frozen=True)
class Action:
    action: tuple[float, float, float, float]   # [yaw, pitch, move_x, move_z], ochre/actions.py units
    seq: int | None = None


@dataclasses.dataclass(frozen=True)
class Reset:
    context: int | None = None             # None: a context frame picked at random


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _numbers(value, n: int, what: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n or not all(_number(v) for v in value):
        raise ProtocolError(f"{what} must be a list of {n} finite numbers")
    return tuple(float(v) for v in value)


def _seq(msg: dict) -> int | None:
    seq = msg.get("seq")
    if seq is None:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < MAX_SEQ:
        raise ProtocolError("seq must be a non-negative integer")
    return seq


def parse(text: str, contexts: int, limits: Limits = Limits()) -> Input | Action | Reset:
    """One text message -> Input | Action | Reset, or ProtocolError. `contexts`: how many context
    frames a reset may pick from."""
    if len(text.encode()) > limits.max_message_bytes:
        raise ProtocolError(f"message over {limits.max_message_bytes} bytes")
    try:
        msg = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("not JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object with a \"type\"")
    kind = msg.get("type")
    if kind == "input":
        keys = msg.get("keys", [])
        if not isinstance(keys, list) or len(keys) > len(KEYS) or not all(k in KEYS for k in keys):
            raise ProtocolError(f"keys must be a list of held keys among {' '.join(KEYS)}")
        dx, dy = _numbers(msg.get("mouse", [0, 0]), 2, "mouse [dx, dy]")
        if abs(dx) > MAX_MOUSE or abs(dy) > MAX_MOUSE:
            raise ProtocolError(f"mouse motion over {MAX_MOUSE:.0f} pixels in one message")
        return Input(frozenset(keys), (dx, dy), _seq(msg))
    if kind == "action":
        return Action(_numbers(msg.get("action"), 4, "action [yaw, pitch, move_x, move_z]"), _seq(msg))
    if kind == "reset":
        context = msg.get("context")
        if context is not None and (isinstance(context, bool) or not isinstance(context, int)
                                    or not 0 <= context < contexts):
            raise ProtocolError(f"context must be an integer in 0..{contexts - 1}")
        return Reset(context)
    raise ProtocolError(f"unknown message type {str(kind)[:32]!r}; expected input, action or reset")


def dumps(msg: dict) -> str:
    return json.dumps(msg, separators=(",", ":"))


def hello(player: int, fps: float, fmt: str, contexts: int, max_players: int) -> str:
    return dumps({"type": "hello", "player": player, "fps": fps, "format": fmt, "frame": [64, 64, 3],
                  "contexts": contexts, "max_players": max_players})


def error(reason: str) -> str:
    return dumps({"type": "error", "reason": reason})


def ack(seq: int, tick: int) -> str:
    return dumps({"type": "ack", "seq": seq, "tick": tick})


class Bucket:
    """Token bucket: `rate` messages a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.t = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
