"""WebRTC edge of StyleCast: aiohttp signalling (:mod:`streaming.server`), aiortc tracks
(:mod:`streaming.tracks`), the latest-wins slot and audio-out buffer between the worker and the
senders (:mod:`streaming.slots`), time bases (:mod:`streaming.clock`), frame stamps
(:mod:`streaming.stamps`), the no-wait receive jitter buffer (:mod:`streaming.jitter`), the
per-client worker (:mod:`streaming.sessions`), loopback-only ICE (:mod:`streaming.ice`) and the
embedding API for bots (:mod:`streaming.embed`).

Nothing in ``engine/`` imports this package (``engine.serve``, the command line, starts it); it
is the thin asyncio layer around :class:`engine.session.AvatarSession`.
"""
