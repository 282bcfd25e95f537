import math

from hpstudy.trainables.divergence import DivergenceMonitor


def test_nan_stops_at_once():
    m = DivergenceMonitor(10, loss_factor=3, chance_steps=20)
    assert m.update(2.3, 10, 100) is None
    assert m.update(math.nan, 10, 100) == "diverged: loss=nan at step 2"


def test_explosion_past_factor_of_first_loss():
    m = DivergenceMonitor(10, loss_factor=3, chance_steps=0)
    assert m.update(2.0, 10, 100) is None
    assert m.update(5.9, 10, 100) is None
    assert "exceeds 3 x the first loss" in m.update(6.1, 10, 100)


def test_stuck_at_chance_stops_after_warmup_but_slow_learner_does_not():
    stuck = DivergenceMonitor(10, loss_factor=0, chance_steps=5)
    reasons = [stuck.update(2.31, 10, 100) for _ in range(5)]
    assert reasons[:4] == [None] * 4 and reasons[4].startswith("stalled: accuracy 0.100 at chance")
    slow = DivergenceMonitor(10, loss_factor=0, chance_steps=5)  # at chance but its loss falls
    assert all(slow.update(2.31 - 0.02 * i, 10, 100) is None for i in range(50))


def test_state_round_trip():
    a = DivergenceMonitor(10, 3, 5)
    for loss in (2.3, 2.4, 2.35):
        a.update(loss, 10, 100)
    b = DivergenceMonitor(10, 3, 5)
    b.load_state_dict(a.state_dict())
    assert [a.update(2.3, 10, 100) for _ in range(3)] == [b.update(2.3, 10, 100) for _ in range(3)]
