"""Classification metrics computed from tensors (no per-sample Python)."""

from __future__ import annotations

import torch


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts with true class on rows and predicted class on columns."""
    flat = targets.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(matrix: torch.Tensor) -> dict[str, list[float]]:
    """Precision, recall, F1 and support per class; 0 where a class was never predicted or present."""
    m = matrix.to(torch.float64)
    true_pos = m.diag()
    predicted, actual = m.sum(0), m.sum(1)
    precision = torch.where(predicted > 0, true_pos / predicted.clamp(min=1), torch.zeros_like(m[0]))
    recall = torch.where(actual > 0, true_pos / actual.clamp(min=1), torch.zeros_like(m[0]))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(m[0]))
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.to(torch.int64).tolist()}
