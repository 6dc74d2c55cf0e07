"""WebRTC edge of StyleCast: aiohttp signalling (:mod:`streaming.server`), aiortc tracks and the
latest-wins slot (:mod:`streaming.tracks`), the per-client worker (:mod:`streaming.sessions`),
loopback-only ICE (:mod:`streaming.ice`) and the embedding API for bots (:mod:`streaming.embed`).

Nothing in ``engine/`` imports this package; it is the thin asyncio layer around
:class:`engine.session.AvatarSession`.
"""
