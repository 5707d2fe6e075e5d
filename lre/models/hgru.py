"""The attention-based hierarchical GRU (HGRU) language recognition model.

After Padi, Mohan and Ganapathy, "End-to-end language recognition using attention based
hierarchical gated recurrent unit models", ICASSP 2019. With the default geometry::

    x          (B, T, D)           frames, 10 ms each
    windows    (B, N, 20, D)       20-frame windows (200 ms), shift 10 (100 ms)
    level 1    GRU over each window, last state               -> (B, N, H1)
    segments   (B, K, 10, H1)      10 consecutive window vectors = one 1 s segment
    level 2    GRU over each segment's 10 vectors, last state -> (B, K, H2)
    level 3    bidirectional GRU over the K segment vectors   -> h (B, K, 2*H3)
    attention  a_k = softmax_k(tanh(W h_k + b) . u), padding segments masked out
    pooled     z = sum_k a_k h_k  -> dense ReLU -> linear     -> language logits

Segment k covers windows ``10k .. 10k+9``, i.e. frames ``[100k, 100k + 110)``; segments do
not overlap in windows. Levels 1 and 2 are each one batched GRU over all windows / segments
of all utterances; only level 3 runs along an utterance.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lre.models.base import (
    AttentionPooling,
    BidirectionalGRU,
    LidModel,
    ModelOutput,
    num_blocks,
    require,
    require_dropout,
    require_positive,
    zero_padding,
)


class WindowGRU(nn.Module):
    """Level 1: a GRU run over every window of frames, returning each window's last state.

    All windows of all utterances form one batch. The parameters are those of an
    ``nn.GRU(input_size, hidden_size)`` (``self.gru``), run by one of these equivalent
    implementations (``impl``):

    - ``"native"``: gather the windows ``(B*N, window, D)`` and call ``nn.GRU`` (cuDNN on GPU).
    - ``"unrolled"``: the GRU recurrence written out over the ``window`` steps; each step
      takes its frame of every window (a strided view when ``window`` is a multiple of
      ``window_shift``, else an index gather) and projects it.
    - ``"unrolled_shared"``: as ``"unrolled"``, but the input projection ``W_ih x + b_ih`` is
      computed once per frame and shared by the windows the frame belongs to.
    - ``"auto"`` (default): ``"native"`` on GPU; on CPU ``"unrolled_shared"`` when no gradient
      is needed (with in-place gate arithmetic) and ``"unrolled"`` when one is.

    The unrolled forms skip the recurrent product at the first step (the state is 0), fold
    ``b_hr`` and ``b_hz`` into the input bias, and compute ``tanh(a)`` as ``2 sigmoid(2a) - 1``
    with the factor 2 folded into the weights (exact: scaling by 2 does not round); on CPU
    ``sigmoid`` is several times faster than ``tanh``. They export to ONNX as plain
    Slice/Gather/MatMul/Sigmoid nodes.
    """

    IMPLS: ClassVar[tuple[str, ...]] = ("auto", "native", "unrolled", "unrolled_shared")

    def __init__(self, input_size: int, hidden_size: int, window: int, window_shift: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.window = window
        self.window_shift = window_shift
        self.hidden_size = hidden_size
        self.impl = "auto"

    def _pick_impl(self, x: Tensor) -> tuple[str, bool]:
        """``(implementation, whether a gradient is needed)``."""
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.gru.parameters()))
        if self.impl != "auto":
            if self.impl not in self.IMPLS:
                raise ValueError(f"WindowGRU.impl must be one of {self.IMPLS}, got {self.impl!r}")
            return self.impl, needs_grad
        if x.is_cuda:
            return "native", needs_grad
        return ("unrolled" if needs_grad else "unrolled_shared"), needs_grad

    def forward(self, x: Tensor, windows: int | Tensor) -> Tensor:
        """Last GRU state of each window.

        Args:
            x: ``(batch, frames, input_size)`` contiguous, zero-padded frames with
                ``frames = (windows - 1) * window_shift + window``.
            windows: number of windows ``N`` per utterance.

        Returns:
            ``(batch, windows, hidden_size)``; window ``n`` covers frames
            ``[n * window_shift, n * window_shift + window)``.
        """
        impl, needs_grad = self._pick_impl(x)
        gru = self.gru
        if impl == "native":
            starts = torch.arange(windows, device=x.device) * self.window_shift
            index = starts[:, None] + torch.arange(self.window, device=x.device)[None, :]
            frames = x.index_select(1, index.reshape(-1)).reshape(-1, self.window, x.shape[2])
            _, last = gru(frames)
            return last[-1].reshape(x.shape[0], -1, self.hidden_size)

        hs = self.hidden_size
        # Gate rows [r, z, n]: b_hr, b_hz join the input bias; the n rows are doubled so that
        # tanh(a) = 2 sigmoid(2a) - 1 needs no extra multiply.
        scale = torch.cat([x.new_ones(2 * hs), x.new_full((hs,), 2.0)])[:, None]
        w_ih = gru.weight_ih_l0 * scale
        b_ih = (gru.bias_ih_l0 + torch.cat([gru.bias_hh_l0[:2 * hs], x.new_zeros(hs)])) \
            * scale[:, 0]
        w_hh_t = (gru.weight_hh_l0 * scale).t()
        b_hn = 2.0 * gru.bias_hh_l0[2 * hs:]

        if impl == "unrolled_shared":
            proj = F.linear(x, w_ih, b_ih)                       # (B, T, 3H), once per frame

            def step_input(s: int) -> Tensor:
                return self._frames_at_step(proj, s, windows)
        else:
            def step_input(s: int) -> Tensor:
                return F.linear(self._frames_at_step(x, s, windows), w_ih, b_ih)

        step = _gru_step if needs_grad else _gru_step_inplace
        h = step(step_input(0), None, w_hh_t, b_hn)
        for s in range(1, self.window):
            h = step(step_input(s), h, w_hh_t, b_hn)
        return h

    def _frames_at_step(self, t: Tensor, s: int, windows: int | Tensor) -> Tensor:
        """``(batch, windows, C)``: frame ``s`` of every window, from ``t (batch, frames, C)``."""
        shift = self.window_shift
        if self.window % shift == 0:
            # frames = shift * (windows + window/shift - 1): a view, no copy.
            q, r = divmod(s, shift)
            return t.view(t.shape[0], -1, shift, t.shape[2])[:, q:q + windows, r]
        index = torch.arange(windows, device=t.device) * shift + s
        return t.index_select(1, index)


def _gru_step(gi: Tensor, h: Tensor | None, w_hh_t: Tensor, b_hn: Tensor) -> Tensor:
    """One GRU step (autograd-safe).

    Args:
        gi: ``(B, N, 3H)`` input part of the gates ``[r, z, 2n]`` (see ``WindowGRU``).
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
    if h is None:
        rz = torch.sigmoid(gi[..., :2 * hs])
        r, z = rz.chunk(2, -1)
        a = torch.addcmul(gi[..., 2 * hs:], r, b_hn.to(gi.dtype))
        n = a.sigmoid_().mul_(2.0).sub_(1.0)
        return n.sub_(z * n)
    gh = torch.matmul(h, w_hh_t)
    r, z = gh[..., :2 * hs].add_(gi[..., :2 * hs]).sigmoid_().chunk(2, -1)
    n = gh[..., 2 * hs:].add_(b_hn).mul_(r).add_(gi[..., 2 * hs:])
    n = n.sigmoid_().mul_(2.0).sub_(1.0)
    return n.lerp_(h.to(n.dtype), z)  # (dtypes differ only under autocast)


class HGRU(LidModel):
    """Attention-based hierarchical GRU; see the module docstring for the data flow.

    Config keys (defaults in ``HGRU.DEFAULTS``):
        window, window_shift: level-1 window length and shift in frames (20, 10).
        segment_windows: consecutive windows per segment (10 -> 1 s segments).
        hidden1, hidden2, hidden3: GRU sizes of levels 1, 2 and 3 (level 3 per direction).
        attention: size of the attention projection ``W``.
        dense: size of the ReLU layer before the output layer.
        dropout: dropout on window vectors, segment vectors and the dense layer.
        last_segment_min_fraction: a trailing partial segment is kept when at least this
            share of its frames is real speech (and always when it is the only segment);
            otherwise the frames after the last kept segment are left out. Whole-segment
            inputs, e.g. ``(k - 1) * 100 + 110`` frames, give exactly ``k`` segments.
    """

    name = "hgru"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "window": 20,
        "window_shift": 10,
        "segment_windows": 10,
        "hidden1": 256,
        "hidden2": 256,
        "hidden3": 256,
        "attention": 128,
        "dense": 512,
        "dropout": 0.1,
        "last_segment_min_fraction": 0.5,
    }

    def __init__(self, feat_dim: int, num_langs: int, config: dict[str, Any] | None = None):
        super().__init__(feat_dim, num_langs, config)
        c = self.config
        require_positive(self.name, c, "window", "window_shift", "segment_windows", "hidden1",
                         "hidden2", "hidden3", "attention", "dense")
        require(self.name, c["window_shift"] <= c["window"],
                f"window_shift ({c['window_shift']}) must not exceed window ({c['window']}): "
                "frames between windows would be ignored")
        require_dropout(self.name, c)
        frac = c["last_segment_min_fraction"]
        require(self.name, 0.0 < frac <= 1.0,
                f"last_segment_min_fraction must be in (0, 1], got {frac}")

        self.window = c["window"]
        self.window_shift = c["window_shift"]
        self.segment_windows = c["segment_windows"]
        # Segment k covers frames [k * hop, k * hop + span).
        self.segment_hop = self.segment_windows * self.window_shift
        self.segment_span = (self.segment_windows - 1) * self.window_shift + self.window
        overlap = self.segment_span - self.segment_hop
        # A trailing segment needs more real frames than it shares with the previous one.
        self.last_segment_min_frames = max(math.ceil(frac * self.segment_span), overlap + 1)
        self.min_frames = self.segment_span

        self.window_gru = WindowGRU(feat_dim, c["hidden1"], self.window, self.window_shift)
        self.segment_gru = nn.GRU(c["hidden1"], c["hidden2"], batch_first=True)
        self.utterance_gru = BidirectionalGRU(c["hidden2"], c["hidden3"])
        self.attention = AttentionPooling(2 * c["hidden3"], c["attention"])
        self.classifier = nn.Sequential(
            nn.Linear(2 * c["hidden3"], c["dense"]),
            nn.ReLU(),
            nn.Dropout(c["dropout"]),
            nn.Linear(c["dense"], num_langs),
        )
        self.dropout = nn.Dropout(c["dropout"])

    # ----------------------------------------------------------------------------------------
    def segment_counts(self, lengths: Tensor) -> Tensor:
        """Real segments ``(batch,)`` of utterances of ``lengths (batch,)`` frames (>= 1)."""
        m = self.last_segment_min_frames
        return torch.clamp((lengths - m) // self.segment_hop + 1, min=1)

    def segment_vectors(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Levels 1 and 2: one vector per segment.

        Args:
            feats: ``(batch, frames, feat_dim)``.
            lengths: ``(batch,)`` true lengths in frames (clipped to ``[0, frames]``).

        Returns:
            ``(s (batch, segments, hidden2), lengths (batch,) as clipped)`` with
            ``segments = ceil(frames / segment_hop)`` (at least 1), padding segments included.
        """
        frames = feats.shape[1]
        lengths = lengths.to(device=feats.device, dtype=torch.int64).clamp(min=0)
        lengths = lengths.clamp(max=frames)
        segments = num_blocks(frames, self.segment_hop)
        windows = segments * self.segment_windows

        # Frames past an utterance's end are zero, and zeros fill up the last window.
        x = zero_padding(feats, lengths)
        pad = (windows - 1) * self.window_shift + self.window - frames
        x = torch.cat([x, x.new_zeros(x.shape[0], pad, x.shape[2])], dim=1)

        v = self.dropout(self.window_gru(x, windows))                       # (B, N, H1)
        _, last = self.segment_gru(v.reshape(-1, self.segment_windows, v.shape[2]))
        return last[-1].reshape(x.shape[0], -1, last.shape[2]), lengths    # (B, K, H2)

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Levels 1 to 3.

        Args:
            feats: ``(batch, frames, feat_dim)``.
            lengths: ``(batch,)`` true lengths in frames.

        Returns:
            ``h (batch, segments, 2 * hidden3)`` level-3 states, ``mask (batch, segments)``
            bool (True on real segments), ``spans (batch, segments, 2)`` int64 frame spans.
        """
        s, lengths = self.segment_vectors(feats, lengths)
        s = self.dropout(s)
        counts = self.segment_counts(lengths)
        k = torch.arange(s.shape[1], device=s.device)
        mask = k[None, :] < counts[:, None]
        h = self.utterance_gru(s, counts)                                   # (B, K, 2*H3)

        start = torch.minimum(k[None, :] * self.segment_hop, lengths[:, None])
        end = torch.minimum(k[None, :] * self.segment_hop + self.segment_span,
                            lengths[:, None])
        return h, mask, torch.stack([start, end], dim=2)

    def forward(self, feats: Tensor, lengths: Tensor, with_segments: bool = False
                ) -> ModelOutput:
        """``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> :class:`ModelOutput`
        with logits ``(batch, num_langs)`` and per-segment attention ``(batch, segments)``;
        ``with_segments`` adds the per-segment logits from the same level-3 states."""
        h, mask, spans = self.encode(feats, lengths)
        pooled, weights = self.attention(h, mask)
        seg_logits = self._classify_segments(h, mask) if with_segments else None
        return ModelOutput(self.classifier(pooled), weights, mask, spans, seg_logits)

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """The classifier applied to each level-3 state ``h_k``: ``(batch, segments,
        num_langs)`` logits, 0 on padding segments."""
        h, mask, _ = self.encode(feats, lengths)
        return self._classify_segments(h, mask)

    def _classify_segments(self, h: Tensor, mask: Tensor) -> Tensor:
        """``h (batch, segments, 2*hidden3)`` -> logits ``(batch, segments, num_langs)``."""
        logits = self.classifier(h)
        return torch.where(mask[:, :, None], logits, torch.zeros((), dtype=logits.dtype,
                                                                 device=logits.device))
