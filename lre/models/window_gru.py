"""A GRU run from the zero state over every window of a sequence, returning each window's
last state or the mean of its states: level 1 of the HGRU (by default 20-frame windows with
shift 10).

All windows of all utterances form one batch, so the recurrence takes ``window`` steps over
``batch * windows`` rows whatever the utterance length. Besides ``nn.GRU`` (cuDNN on GPU),
the recurrence is written out here for the CPU, where ``nn.GRU`` spends much of its time on
gathering windows and on small gate operations:

- the first step skips the recurrent product (the state is 0);
- ``b_hr`` and ``b_hz`` join the input bias, and ``tanh(a)`` is computed as
  ``2 sigmoid(2a) - 1`` with the factor 2 folded into the weights of the n gate (exact:
  scaling by 2 does not round; on CPU ``sigmoid`` is several times faster than ``tanh``);
- with overlapping windows the input projection ``W_ih x + b_ih`` can be computed once per
  frame and shared by the windows the frame belongs to;
- without gradients, the gate arithmetic is done in place.

Training uses autograd over these steps: a hand-written backward measured only 2-5% faster
(H = 64 and 256, one CPU thread), the recurrent products taking most of the time.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WindowGRU(nn.Module):
    """Level 1 of the HGRU: a GRU over every window of frames, each window's last state
    (``pooling="last"``), the mean of its states over the window's steps (``"mean"``) or
    that mean beside their standard deviation (``"stats"``: ``2 * hidden_size`` values).

    The parameters are those of an ``nn.GRU(input_size, hidden_size)`` (``self.gru``), run
    by one of these equivalent implementations (``impl``):

    - ``"native"``: gather the windows ``(B*N, window, D)`` and call ``nn.GRU``.
    - ``"unrolled"``: the recurrence written out with plain autograd operations; each step
      projects its frame of every window (a strided view when ``window`` is a multiple of
      ``window_shift``, else an index gather). Scriptable and exportable.
    - ``"unrolled_shared"``: as ``"unrolled"``, but the input projection is computed once
      per frame and shared by the windows the frame belongs to.
    - ``"auto"`` (default): ``"native"`` on GPU; on CPU ``"unrolled_shared"`` when no
      gradient is needed and ``"unrolled"`` when one is (autograd through the shared
      projection's strided views costs more than the projection saves).
    """

    IMPLS: ClassVar[tuple[str, ...]] = ("auto", "native", "unrolled", "unrolled_shared")
    POOLINGS: ClassVar[tuple[str, ...]] = ("last", "mean", "stats")

    def __init__(self, input_size: int, hidden_size: int, window: int, window_shift: int,
                 pooling: str = "last"):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"WindowGRU pooling must be one of {self.POOLINGS}, got "
                             f"{pooling!r}")
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.window = window
        self.window_shift = window_shift
        self.hidden_size = hidden_size
        self.output_size = hidden_size * (2 if pooling == "stats" else 1)
        self.pooling = pooling
        self.impl = "auto"

    def forward(self, x: Tensor, windows: int | Tensor) -> Tensor:
        """Last GRU state (or mean state) of each window.

        Args:
            x: ``(batch, frames, input_size)`` contiguous, zero-padded frames with
                ``frames = (windows - 1) * window_shift + window``.
            windows: number of windows ``N`` per utterance.

        Returns:
            ``(batch, windows, hidden_size)``; window ``n`` covers frames
            ``[n * window_shift, n * window_shift + window)``.
        """
        if self.impl not in self.IMPLS:
            raise ValueError(f"WindowGRU.impl must be one of {self.IMPLS}, got {self.impl!r}")
        return window_gru_states(self.gru, x, windows, self.window, self.window_shift,
                                 self.impl, self.pooling)


def window_gru_states(gru: nn.GRU, x: Tensor, windows: int | Tensor, window: int,
                      shift: int, impl: str, pooling: str = "last") -> Tensor:
    """Run the one-layer, unidirectional, batch-first ``gru`` from the zero state over
    every window of ``x``.

    Args:
        gru: ``nn.GRU(D, H, batch_first=True)``.
        x: ``(batch, frames, D)``, ``frames = (windows - 1) * shift + window``.
        windows: ``N``, windows per sequence.
        window, shift: window length and shift in steps of ``x``.
        impl: ``"auto"``, ``"native"``, ``"unrolled"`` or ``"unrolled_shared"`` (see
            :class:`WindowGRU`).
        pooling: ``"last"`` (each window's last state), ``"mean"`` (the mean of its
            ``window`` states) or ``"stats"`` (their mean and standard deviation).

    Returns:
        ``(batch, windows, H)``, ``(batch, windows, 2H)`` for ``"stats"``.
    """
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in gru.parameters()))
    if impl == "auto":
        impl = "native" if x.is_cuda else "unrolled" if needs_grad else "unrolled_shared"
    if impl == "native":
        starts = torch.arange(windows, device=x.device) * shift
        index = starts[:, None] + torch.arange(window, device=x.device)[None, :]
        frames = x.index_select(1, index.reshape(-1)).reshape(-1, window, x.shape[2])
        states, last = gru(frames)
        if pooling == "last":
            return last[-1].reshape(x.shape[0], -1, gru.hidden_size)
        mean, square = states.mean(dim=1), (states * states).mean(dim=1)
        pooled = mean if pooling == "mean" else _mean_std(mean, square)
        return pooled.reshape(x.shape[0], -1, pooled.shape[-1])

    hs = gru.hidden_size
    # Gate rows [r, z, n]: b_hr, b_hz join the input bias; the n rows are doubled so that
    # tanh(a) = 2 sigmoid(2a) - 1 needs no extra multiply.
    scale = torch.cat([x.new_ones(2 * hs), x.new_full((hs,), 2.0)])[:, None]
    w_ih = gru.weight_ih_l0 * scale
    b_ih = (gru.bias_ih_l0 + torch.cat([gru.bias_hh_l0[:2 * hs], x.new_zeros(hs)])) \
        * scale[:, 0]
    w_hh = gru.weight_hh_l0 * scale
    b_hn = 2.0 * gru.bias_hh_l0[2 * hs:]

    if impl == "unrolled_shared":
        proj = F.linear(x, w_ih, b_ih)                       # (B, T, 3H), once per frame

        def step_input(s: int) -> Tensor:
            return _frames_at_step(proj, s, window, shift, windows)
    elif impl == "unrolled":
        def step_input(s: int) -> Tensor:
            return F.linear(_frames_at_step(x, s, window, shift, windows), w_ih, b_ih)
    else:
        raise ValueError(f"unknown window GRU implementation {impl!r}")

    step = _gru_step if needs_grad else _gru_step_inplace
    w_hh_t = w_hh.t()
    h = step(step_input(0), None, w_hh_t, b_hn)
    total = h if pooling != "last" else None
    square = h * h if pooling == "stats" else None
    for s in range(1, window):
        h = step(step_input(s), h, w_hh_t, b_hn)
        if total is not None:
            total = total + h
        if square is not None:
            square = torch.addcmul(square, h, h)
    if pooling == "last":
        return h
    return total / window if square is None else _mean_std(total / window, square / window)


def _mean_std(mean: Tensor, square: Tensor) -> Tensor:
    """``[mean, std]`` from the mean and the mean square (variance floored at 1e-5, where
    the square root has a finite gradient)."""
    return torch.cat([mean, torch.clamp(square - mean * mean, min=1e-5).sqrt()], dim=-1)


def _frames_at_step(t: Tensor, s: int, window: int, shift: int, windows: int | Tensor
                    ) -> Tensor:
    """``(batch, windows, C)``: element ``s`` of every window of ``t (batch, T, C)``."""
    if window % shift == 0:
        # T = shift * (windows + window/shift - 1): a strided view, no copy.
        q, r = divmod(s, shift)
        return t.view(t.shape[0], -1, shift, t.shape[2])[:, q:q + windows, r]
    return t.index_select(1, torch.arange(windows, device=t.device) * shift + s)


def _gru_step(gi: Tensor, h: Tensor | None, w_hh_t: Tensor, b_hn: Tensor) -> Tensor:
    """One GRU step in plain autograd operations.

    Args:
        gi: ``(B, N, 3H)`` input part of the gates ``[r, z, 2n]`` (see the module docstring).
        h: ``(B, N, H)`` state, or None for the zero state (the recurrent product is 0).
        w_hh_t: ``(H, 3H)`` recurrent weights, transposed, n columns doubled.
        b_hn: ``(H,)`` doubled recurrent bias of the n gate.
    """
    hs = b_hn.shape[0]
    # split (not slicing): its backward is one concatenation, not a zero-filled copy per part
    gi_rz, gi_n = gi.split([2 * hs, hs], dim=-1)
    if h is None:
        r, z = torch.sigmoid(gi_rz).chunk(2, -1)
        a = torch.addcmul(gi_n, r, b_hn)
    else:
        gh_rz, gh_n = torch.matmul(h, w_hh_t).split([2 * hs, hs], dim=-1)
        r, z = torch.sigmoid(gi_rz + gh_rz).chunk(2, -1)
        a = torch.addcmul(gi_n, r, gh_n + b_hn)
    n = torch.sigmoid(a) * 2.0 - 1.0   # = tanh(a / 2), a being twice the usual pre-activation
    return n - z * n if h is None else torch.lerp(n, h, z)  # (1 - z) n + z h


def _gru_step_inplace(gi: Tensor, h: Tensor | None, w_hh_t: Tensor, b_hn: Tensor) -> Tensor:
    """``_gru_step`` without gradients: gate arithmetic in place in the one new buffer per
    step (fresh temporaries of this size cost more than the arithmetic on CPU)."""
    hs = b_hn.shape[0]
    # (the results of in-place operations are used, not new slices of their base: the ONNX
    # exporter tracks the former only)
    if h is None:
        r, z = torch.sigmoid(gi[..., :2 * hs]).chunk(2, -1)
        n = torch.addcmul(gi[..., 2 * hs:], r, b_hn.to(gi.dtype))
        n = n.sigmoid_().mul_(2.0).sub_(1.0)
        return n.sub_(z * n)
    gh = torch.matmul(h, w_hh_t)
    r, z = gh[..., :2 * hs].add_(gi[..., :2 * hs]).sigmoid_().chunk(2, -1)
    n = gh[..., 2 * hs:].add_(b_hn).mul_(r).add_(gi[..., 2 * hs:])
    n = n.sigmoid_().mul_(2.0).sub_(1.0)
    return n.lerp_(h.to(n.dtype), z)  # (dtypes differ only under autocast)
