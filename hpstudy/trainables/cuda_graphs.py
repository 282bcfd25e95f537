"""Capture a model's training forward and backward as CUDA graphs.

Small models on a GPU are bound by the CPU launching kernels, not by the GPU: a LeNet-5 step at batch
128 is 66 kernels, 0.7 ms of GPU work and 2.6 ms of launching on an H100 (bench/gpu.py). Replaying a
captured graph launches them at once. ``torch.cuda.make_graphed_callables`` does the capture; the loss,
the optimizer and the scheduler stay eager, so every optimizer and scheduler works unchanged.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def capture_training_graphs(model: torch.nn.Module, sample: torch.Tensor) -> bool:
    """Make ``model(x)`` in training mode replay CUDA graphs for inputs shaped like ``sample`` (other
    shapes must call :func:`eager_forward`). Returns False, leaving the model as it was, when the
    capture fails. The warm-up passes of the capture update BatchNorm statistics and draw dropout
    masks; both are put back, so a captured run computes what it would have without the warm-up."""
    # The sample becomes the graph's input buffer, which every replay overwrites with its batch: a view
    # into the training images (a prenormalized set's first batch) would be overwritten with it.
    sample = sample.clone()
    buffers = [b.detach().clone() for b in model.buffers()]
    rng = torch.cuda.get_rng_state(sample.device)
    model.train()
    try:
        with torch.cuda.device(sample.device):  # capture on the model's GPU, not the current one
            torch.cuda.make_graphed_callables(model, (sample,))
        ok = True
    except Exception as exc:  # an op that cannot be captured: train eagerly instead
        log.warning("CUDA graphs not used for %s: %s", type(model).__name__, exc)
        ok = False
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    torch.cuda.set_rng_state(rng, sample.device)
    return ok


def eager_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own forward, bypassing a captured graph (for a batch of another shape)."""
    return type(model).forward(model, x)
