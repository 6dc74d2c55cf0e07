"""The server's configuration and the state its handlers share (``app[STATE_KEY]``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer

from .capacity import Capacity
from .ice import is_loopback_host
from .limits import OfferLimiter
from .registry import SessionRegistry
from .web_root import check_web_root, find_web_root

__all__ = ["ServerConfig", "ServerState", "STATE_KEY"]


@dataclass
class ServerConfig:
    """What ``create_app`` needs. ``engine`` may be a ready AvatarEngine (tests share one)."""

    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8080
    generator: str = "demo"
    resolution: Optional[int] = None
    fps: float = 25.0
    max_sessions: Optional[int] = 4          # upper bound; None: as many as the measured capacity fits
    admission: bool = True                   # refuse (503) a session the machine cannot keep at fps
    identity: Union[int, str] = 0      # a seed or the path of a .npy latent (w / ws)
    truncation: float = 0.7
    driver: str = "default"
    web_root: Optional[Path] = None           # None: the installed web_client package (find_web_root)
    engine: Any = None
    synthesize: Optional[Callable] = None    # AvatarEngine(synthesize=...) hook (overload tests)
    stamp: bool = False                       # frame index in the image (tests, benchmarks)
    grace_s: float = 0.06
    idle_timeout_s: float = 5.0
    quiet_hold_s: float = 1.0                 # no packets this long: the stream stops rendering (held)
    connect_timeout_s: float = 5.0            # an offer that never connects frees its slot after this
    stats_interval_s: float = 1.0
    body_timeout_s: float = 10.0              # POST bodies not received in this time: 408
    http_idle_timeout_s: float = 15.0         # connections with no whole request this long are closed
    loopback_ice: Optional[bool] = None       # None: decided from ``host``
    ice_servers: Optional[list] = None        # STUN/TURN URLs; None: none on loopback, aiortc's default otherwise
    allowed_origins: tuple = ()               # browser origins besides the page's own that may POST /offer
    offer_limits: bool = True                 # per-address limits on new sessions (streaming.limits)
    photo_upload: bool = True                 # POST /photo (streaming.photo_upload)
    photo_max_bytes: int = 12 * 2**20
    photo_steps: int = 300                    # W steps of a page upload's inversion (as engine.invert)
    photo_wplus_steps: int = 200              # ... then W+ steps
    photo_timeout_s: float = 300.0            # an inversion running longer is stopped


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.web_root = check_web_root(config.web_root) if config.web_root is not None else find_web_root()
        self.registry = SessionRegistry(config.max_sessions if config.max_sessions is not None else 1)
        self.capacity = Capacity(config.fps, device=config.device) if config.admission else None
        self.limiter = OfferLimiter() if config.offer_limits else None
        self.engine = config.engine
        self.clients: dict[str, Any] = {}        # sid -> streaming.connection.ClientConnection
        self.closing = False
        self.bad_requests = 0
        self.refused_capacity = 0                # offers answered 503 by the admission check
        self.evicted_capacity = 0                # sessions closed because the streams slowed down
        self.photos: Any = None                  # streaming.photo_upload.PhotoJobs (create_app sets it)
        self.loopback = config.loopback_ice if config.loopback_ice is not None else is_loopback_host(config.host)

    def foreign_origin(self, request: web.Request) -> Optional[str]:
        """The request's ``Origin`` when a browser sent it from a page that is neither the server's
        own nor in ``allowed_origins`` (None: same origin, allowed, or not a browser)."""
        origin = request.headers.get("Origin")
        if origin is None or origin == f"{request.scheme}://{request.host}" or origin in self.config.allowed_origins:
            return None
        return origin

    def rtc_configuration(self) -> RTCConfiguration:
        """No STUN round trips for a loopback server (nothing to discover); else the configured
        servers, or aiortc's default STUN server when none are configured."""
        servers = self.config.ice_servers
        if servers is None:
            return RTCConfiguration(iceServers=[]) if self.loopback else RTCConfiguration()
        return RTCConfiguration(iceServers=[RTCIceServer(u) for u in servers])


#: ``app[STATE_KEY]``: the server's ServerState (config, registry, engine, clients).
STATE_KEY = web.AppKey("stylecast", ServerState)
