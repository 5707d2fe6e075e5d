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
      gathers its frame of every window. The first step skips the recurrent product (the
      state is 0). Faster on CPU than ``nn.GRU``, in training too.
    - ``"unrolled_shared"``: as ``"unrolled"``, but the input projection ``W_ih x + b_ih`` is
      computed once per frame and gathered for both windows a frame belongs to.
    - ``"auto"`` (default): ``"native"`` on GPU; on CPU ``"unrolled_shared"`` when no gradient
      is needed and ``"unrolled"`` when one is.

    The unrolled forms export to ONNX as plain Gather/Gemm/Sigmoid/Tanh nodes.
    """

    IMPLS: ClassVar[tuple[str, ...]] = ("auto", "native", "unrolled", "unrolled_shared")

    def __init__(self, input_size: int, hidden_size: int, window: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.window = window
        self.hidden_size = hidden_size
        self.impl = "auto"

    def _pick_impl(self, x: Tensor) -> str:
        if self.impl != "auto":
            if self.impl not in self.IMPLS:
                raise ValueError(f"WindowGRU.impl must be one of {self.IMPLS}, got {self.impl!r}")
            return self.impl
        if x.is_cuda:
            return "native"
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.gru.parameters()))
        return "unrolled" if needs_grad else "unrolled_shared"

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        """Last GRU state of each window.

        Args:
            x: ``(batch, frames, input_size)`` frames (padding already zeroed).
            index: ``(window, windows)`` int64; ``index[s, n]`` is the frame at step ``s`` of
                window ``n`` (valid indices into ``frames``).

        Returns:
            ``(batch, windows, hidden_size)``.
        """
        impl = self._pick_impl(x)
        batch = x.shape[0]
        gru = self.gru
        if impl == "native":
            windows = x.index_select(1, index.t().reshape(-1))
            windows = windows.reshape(-1, self.window, x.shape[2])
            _, last = gru(windows)
            return last[-1].reshape(batch, -1, self.hidden_size)
        if impl == "unrolled_shared":
            proj = F.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)  # (B, T, 3H), once per frame

            def step_input(s: int) -> Tensor:
                return proj.index_select(1, index[s]).reshape(-1, proj.shape[2])
        else:
            def step_input(s: int) -> Tensor:
                frames = x.index_select(1, index[s]).reshape(-1, x.shape[2])
                return F.linear(frames, gru.weight_ih_l0, gru.bias_ih_l0)

        h = _gru_step(step_input(0), None, gru.weight_hh_l0, gru.bias_hh_l0)
        for s in range(1, self.window):
            h = _gru_step(step_input(s), h, gru.weight_hh_l0, gru.bias_hh_l0)
        return h.reshape(batch, -1, self.hidden_size)


def _gru_step(gi: Tensor, h: Tensor | None, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step (PyTorch's gate layout and operation order).

    ``gi (rows, 3H)`` is the input projection ``W_ih x + b_ih``; ``h (rows, H)`` the state, or
    None for the zero state (then ``W_hh h = 0`` and the product is skipped).
    """
    i_r, i_z, i_n = gi.chunk(3, 1)
    if h is None:
        h_r, h_z, h_n = b_hh.chunk(3)
    else:
        h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    if h is None:
        return n - z * n
    return n + z * (h - n)


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

        self.window_gru = WindowGRU(feat_dim, c["hidden1"], self.window)
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

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Levels 1 to 3.

        Args:
            feats: ``(batch, frames, feat_dim)``.
            lengths: ``(batch,)`` true lengths in frames.

        Returns:
            ``h (batch, segments, 2 * hidden3)`` level-3 states, ``mask (batch, segments)``
            bool (True on real segments), ``spans (batch, segments, 2)`` int64 frame spans.
        """
        frames = feats.shape[1]
        lengths = lengths.to(device=feats.device, dtype=torch.int64).clamp(min=0).clamp(max=frames)
        segments = num_blocks(frames, self.segment_hop)
        windows = segments * self.segment_windows

        # Frames past an utterance's end are zero; one extra zero frame stands for every
        # frame past the end of the batch (indices are clipped onto it).
        x = zero_padding(feats, lengths)
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)
        starts = torch.arange(windows, device=x.device) * self.window_shift
        steps = torch.arange(self.window, device=x.device)
        index = torch.clamp(starts[None, :] + steps[:, None], max=frames)  # (window, N)

        v = self.dropout(self.window_gru(x, index))                          # (B, N, H1)
        _, last = self.segment_gru(v.reshape(-1, self.segment_windows, v.shape[2]))
        s = self.dropout(last[-1].reshape(x.shape[0], -1, last.shape[2]))   # (B, K, H2)

        counts = self.segment_counts(lengths)
        k = torch.arange(segments, device=x.device)
        mask = k[None, :] < counts[:, None]
        h = self.utterance_gru(s, counts)                                   # (B, K, 2*H3)

        start = torch.minimum(k[None, :] * self.segment_hop, lengths[:, None])
        end = torch.minimum(k[None, :] * self.segment_hop + self.segment_span,
                            lengths[:, None])
        spans = torch.stack([start, end], dim=2)
        return h, mask, spans

    def forward(self, feats: Tensor, lengths: Tensor) -> ModelOutput:
        """``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> :class:`ModelOutput`
        with logits ``(batch, num_langs)`` and per-segment attention ``(batch, segments)``."""
        h, mask, spans = self.encode(feats, lengths)
        pooled, weights = self.attention(h, mask)
        return ModelOutput(self.classifier(pooled), weights, mask, spans)

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """The classifier applied to each level-3 state ``h_k``: ``(batch, segments,
        num_langs)`` logits, 0 on padding segments."""
        h, mask, _ = self.encode(feats, lengths)
        logits = self.classifier(h)
        return torch.where(mask[:, :, None], logits, torch.zeros((), dtype=logits.dtype,
                                                                 device=logits.device))
