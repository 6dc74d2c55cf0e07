"""streaming.capacity.Capacity: the cost model, the learned ceiling and the refusal messages."""
from __future__ import annotations

from streaming.capacity import Capacity


def test_the_cost_model_counts_idle_and_other_processes():
    cap = Capacity(25.0, cores=2)              # 1.7 cores for streams
    assert cap.fits() == 1 and cap.refusal(0, []) is None          # unknown cost: one at a time
    cap.per_session = 0.4
    assert cap.fits() == 4
    cap.other = 0.5                                                  # a neighbour takes half a core
    assert cap.fits() == 3
    assert cap.refusal(2, [25.0, 25.1]) is None
    msg = cap.refusal(3, [25.0, 25.0, 24.9])
    assert "server at capacity" in msg and "other processes use 0.50" in msg


def test_a_slow_stream_refuses_and_a_learned_ceiling_expires():
    cap = Capacity(25.0, cores=2)
    cap.per_session = 0.3
    assert "21.0 fps" in cap.refusal(1, [21.0])                      # already overloaded
    assert cap.slow([22.5]) and not cap.slow([23.5, 25.0]) and not cap.slow([None, 0.0])
    cap.learn_ceiling(2, now=100.0)
    assert cap.fits(now=101.0) == 2
    assert "slowed below 24 fps with 3 sessions" in cap.refusal(2, [25.0, 25.0])
    assert cap.fits(now=100.0 + cap.ceiling_s + 1) == 5              # tried again later


def test_live_samples_replace_the_probe(monkeypatch):
    import streaming.capacity as capacity

    clock = {"cpu": 0.0, "busy": 0.0}
    monkeypatch.setattr(capacity.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(capacity, "_machine_busy", lambda: clock["busy"])
    cap = Capacity(25.0, cores=2)
    cap.per_session, cap.source = 1.0, "probe"
    cap.sample(2, now=0.0)
    clock.update(cpu=1.2, busy=1.5)             # 2 streams used 1.2 cores in 1 s; others 0.3
    cap.sample(2, now=1.0)
    assert cap.source == "live" and abs(cap.per_session - 0.6) < 1e-9 and abs(cap.other - 0.09) < 1e-9
