import io

import pytest
import torch

from hpstudy.trainables.config import TrainConfig
from hpstudy.trainables.schedulers import SCHEDULERS, build_scheduler

STEPS = 10  # batches per epoch in these tests


def lrs(cfg: TrainConfig, epochs: int) -> tuple[list[float], bool]:
    """lr at the start of each epoch, stepping the way the engine does."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=cfg.lr)
    scheduler, per_step = build_scheduler(opt, cfg, STEPS)
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        for _ in range(STEPS):
            opt.step()
            if per_step:
                scheduler.step()
        if not per_step:
            scheduler.step()
    return seen, per_step


def cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"lr": 0.1, "epochs": 8, **kw})


def test_constant():
    assert lrs(cfg(scheduler="constant"), 4) == ([0.1] * 4, False)


def test_step_decays_every_step_size_epochs():
    seen, per_step = lrs(cfg(scheduler="step", step_size=2, gamma=0.5), 5)
    assert not per_step and seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_multistep_at_milestones():
    seen, _ = lrs(cfg(scheduler="multistep", milestones=[2, 4], gamma=0.1), 5)
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_exponential_per_epoch():
    seen, _ = lrs(cfg(scheduler="exponential", gamma=0.95), 3)
    assert seen == pytest.approx([0.1, 0.095, 0.09025])


def test_cosine_reaches_floor_at_last_epoch():
    seen, per_step = lrs(cfg(scheduler="cosine", epochs=4), 5)
    assert not per_step and seen[0] == 0.1 and seen[2] == pytest.approx(0.05) and seen[4] == pytest.approx(0)


def test_cosine_warm_restarts_restart_at_t0():
    seen, _ = lrs(cfg(scheduler="cosine_warm_restarts", t_0=2, t_mult=2), 5)
    assert seen[0] == 0.1 and seen[1] == pytest.approx(0.05) and seen[2] == 0.1 and seen[4] == pytest.approx(0.05)


def test_cyclic_steps_per_batch_between_bounds():
    seen, per_step = lrs(cfg(scheduler="cyclic", base_lr=0.01, max_lr=0.1, step_size_up=STEPS), 3)
    assert per_step and seen == pytest.approx([0.01, 0.1, 0.01])  # one half cycle per epoch here


def test_warmup_cosine_warms_up_linearly_then_decays():
    seen, per_step = lrs(cfg(scheduler="warmup_cosine", warmup_epochs=1, epochs=4), 4)
    assert per_step and seen[0] == pytest.approx(0.1 / STEPS) and seen[1] == pytest.approx(0.1)
    assert seen[1] > seen[2] > seen[3]


def test_onecycle_peaks_mid_run():
    seen, per_step = lrs(cfg(scheduler="onecycle", epochs=4), 4)
    assert per_step and max(seen) == seen[1] and seen[0] < 0.1 / 10


@pytest.mark.parametrize("name", SCHEDULERS)
def test_state_round_trips_through_weights_only_load(name):
    c = cfg(scheduler=name)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=c.lr)
    scheduler, _ = build_scheduler(opt, c, STEPS)
    for _ in range(3):
        opt.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    restored, _ = build_scheduler(torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=c.lr), c, STEPS)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.get_last_lr() == scheduler.get_last_lr()
