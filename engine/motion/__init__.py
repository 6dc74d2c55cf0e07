"""Motion: per-frame control vectors x_t (stdev units of a DirectionSet's directions).

``MotionDriver`` is the interface (reset / step once per video frame / flush on interruption);
``IdleDriver`` is the model-free baseline (envelope mouth, blinks, head sway);
``TrajectoryDriver`` plays recorded x_t or w_t (expression transfer onto another identity);
``LayeredDriver`` puts one driver's directions over another's (the LSTM's mouth over idle blinks).
"""
from .base import FLUSH_MS, ROLES, MotionDriver, flush_frames_for, resolve_names  # noqa: F401
from .idle import IdleDriver  # noqa: F401
from .layered import LayeredDriver  # noqa: F401
from .lstm import AudioLSTMConfig, AudioMotionModel  # noqa: F401
from .lstm_driver import AudioLSTMDriver  # noqa: F401
from .lstm_file import load_motion_model, save_motion_model  # noqa: F401
from .trajectory import TrajectoryDriver  # noqa: F401
