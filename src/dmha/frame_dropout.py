"""Frame dropout: cached-feature augmentation that removes a random fraction of each clip's speech frames.

The head sees the frozen encoder's frames of one clip identically every epoch, and memorises them
(train macro-F1 0.999 on RAVDESS). Dropping frames gives each step a different view at no
encoder cost. The dropped frames are removed, not masked: every softmax of the head ignores masked
positions anyway, so the result is the same as masking, and the T×T attention gets cheaper.
"""
from __future__ import annotations

import torch


def drop_frames(speech: torch.Tensor, mask: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """speech (B, L, T, D), mask (B, T) → the kept frames in their order, left-aligned: (B, L, T', D), (B, T').

    Each valid frame is kept with probability 1 - p (torch's global generator, so seeded runs repeat);
    every clip keeps at least its first frame. p = 0 returns the inputs unchanged."""
    if p <= 0:
        return speech, mask
    b, layers, t, d = speech.shape
    keep = (torch.rand(b, t, device=mask.device) >= p) & mask
    first = mask.float().argmax(1)  # the first valid frame of each clip
    keep[torch.arange(b, device=mask.device), first] |= mask.any(1)
    lengths = keep.sum(1)
    new_t = max(int(lengths.max()), 1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :new_t]  # kept frames first, in order
    index = order[:, None, :, None].expand(b, layers, new_t, d)
    new_mask = torch.arange(new_t, device=mask.device)[None, :] < lengths[:, None]
    return speech.gather(2, index), new_mask
