"""WebRTC edge of StyleCast (aiohttp signalling, aiortc tracks, sessions). Built in a later issue."""
