"""`ochre serve`: the dream in a browser, many players stepped in one batch (docs/serve.md).

protocol.py (messages, limits, close codes), players.py (who holds which batch row, the tick's
actions), frames.py (frame encodings), server.py (aiohttp: the page, /healthz, the WebSocket per
player, the tick loop), cli.py (the command), static/ (the page).
"""
