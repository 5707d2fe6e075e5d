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

Variants (config keys, all off by default in ``HGRU.DEFAULTS``):

- ``front="conv"``: ``front_layers`` 1-D convolutions over frames (``front_channels``,
  ``front_kernel``; ReLU, then a per-frame layer norm over the channels when
  ``front_norm="layer"``; the first with ``front_stride``) before level 1. With stride ``s``
  level 1 runs over every ``s``-th convolved frame (windows of ``window / s`` steps): half
  the recurrent steps at ``s = 2``.
  Window, shift and segments stay counted in input frames.
- ``pooling="stats"``: attentive statistics pooling: ``z = [sum_k a_k h_k, sigma]`` with
  ``sigma`` the attention-weighted standard deviation of the ``h_k``. A segment scored on
  its own is the one-segment case: ``[h_k, sqrt(eps)]``.
- ``attention_heads``: several attention heads over the segments, each with its own
  context vector over the shared projection; the pooled vectors of the heads side by side
  feed the classifier, and a segment's attention weight is the mean of the heads' weights
  (each head's in ``ModelOutput.head_attention``).
- ``layer_norm``: layer normalisation of the window and segment vectors.
- ``window_pooling``: what level 1 keeps of a window: ``"last"`` (its last state, as in the
  paper), ``"mean"`` (the mean of its states over the window's frames, so that every frame
  of the window reaches the window vector directly) or ``"stats"`` (that mean beside their
  standard deviation: twice the size).
- ``window_bidirectional``: level 1 reads each window both ways (a second window GRU over
  the time-reversed frames); the window vector is the forward GRU's last state beside the
  backward GRU's (its state after the window's first frame): ``(B, N, 2*H1)``.
- ``segment_bidirectional``: level 2 reads each segment's window vectors both ways; the
  segment vector is the forward GRU's last state beside the backward GRU's (its state
  after the segment's first window): ``(B, K, 2*H2)``.
- ``segment_pooling``: what level 2 keeps of a segment: ``"last"`` (its last state, as in
  the paper), ``"mean"`` (the mean of its states over the segment's windows) or
  ``"stats"`` (that mean beside their standard deviation: twice the size), so that the
  start of a segment reaches the segment vector without passing every later step.

Segment k covers windows ``10k .. 10k+9``, i.e. frames ``[100k, 100k + 110)``; segments do
not overlap in windows. Levels 1 and 2 are each one batched GRU over all windows / segments
of all utterances; only level 3 runs along an utterance.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lre.models.base import (
    AttentionPooling,
    AttentiveStatsPooling,
    BidirectionalGRU,
    LidModel,
    ModelOutput,
    num_blocks,
    require,
    require_dropout,
    require_positive,
    zero_padding,
)
from lre.models.window_gru import WindowGRU


class HGRU(LidModel):
    """Attention-based hierarchical GRU; see the module docstring for the data flow.

    Config keys (defaults in ``HGRU.DEFAULTS``):
        window, window_shift: level-1 window length and shift in frames (20, 10).
        segment_windows: consecutive windows per segment (10 -> 1 s segments).
        hidden1, hidden2, hidden3: GRU sizes of levels 1, 2 and 3 (level 3 per direction).
        attention: size of the attention projection ``W``.
        dense: size of the ReLU layer before the output layer.
        dropout: dropout on window vectors, segment vectors and the dense layer.
        front, front_layers, front_channels, front_kernel, front_stride, front_norm:
            optional convolutional front (``"none"`` or ``"conv"``; ``front_norm``
            ``"none"`` or ``"layer"``); ``window`` and ``window_shift`` must be multiples of
            ``front_stride``.
        pooling: ``"attention"`` (weighted mean) or ``"stats"`` (weighted mean and std).
        attention_heads: heads of the attention over segments (their pooled vectors side by
            side; a segment's attention is the mean of its heads' weights).
        layer_norm: layer-normalise window and segment vectors.
        window_pooling: ``"last"``, ``"mean"`` or ``"stats"`` of a window's level-1 states.
        window_bidirectional: a bidirectional level 1 (window vectors of ``2 * hidden1``).
        segment_bidirectional: a bidirectional level 2 (segment vectors of ``2 * hidden2``).
        segment_pooling: ``"last"``, ``"mean"`` or ``"stats"`` of the level-2 states.
        timeline_context: segments each side of a segment that its own posteriors (the
            language timeline) see: 0 classifies each level-3 state ``h_k`` of the whole
            recording; ``c > 0`` classifies, for each segment, the ``2c + 1`` segments
            around it (shifted to fit inside the recording) as an utterance of their own,
            so that what is said past a change of language does not leak into a segment.
        last_segment_min_fraction: a trailing partial segment is kept when at least this
            share of its frames is real speech (and always when it is the only segment);
            otherwise the frames after the last kept segment are left out. Whole-segment
            inputs, e.g. ``(k - 1) * 100 + 110`` frames, give exactly ``k`` segments.
    """

    name = "hgru"
    FRAME_SECONDS: ClassVar[dict[str, float]] = {"window": 0.2, "window_shift": 0.1}
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
        "front": "none",
        "front_layers": 1,
        "front_channels": 64,
        "front_kernel": 5,
        "front_stride": 1,
        "front_norm": "none",
        "pooling": "attention",
        "layer_norm": False,
        "window_pooling": "last",
        "window_bidirectional": False,
        "segment_bidirectional": False,
        "segment_pooling": "last",
        "attention_heads": 1,
        "timeline_context": 0,
    }
    FRONTS: ClassVar[tuple[str, ...]] = ("none", "conv")
    FRONT_NORMS: ClassVar[tuple[str, ...]] = ("none", "layer")
    POOLINGS: ClassVar[tuple[str, ...]] = ("attention", "stats")
    SEGMENT_POOLINGS: ClassVar[tuple[str, ...]] = ("last", "mean", "stats")
    WINDOW_POOLINGS: ClassVar[tuple[str, ...]] = WindowGRU.POOLINGS

    def __init__(self, feat_dim: int, num_langs: int, config: dict[str, Any] | None = None):
        super().__init__(feat_dim, num_langs, config)
        c = self.config
        require_positive(self.name, c, "window", "window_shift", "segment_windows", "hidden1",
                         "hidden2", "hidden3", "attention", "dense", "attention_heads")
        require(self.name, c["window_shift"] <= c["window"],
                f"window_shift ({c['window_shift']}) must not exceed window ({c['window']}): "
                "frames between windows would be ignored")
        require_dropout(self.name, c)
        self._check_variant(c)
        require(self.name, c["timeline_context"] >= 0,
                f"timeline_context must be >= 0, got {c['timeline_context']}")
        frac = c["last_segment_min_fraction"]
        require(self.name, 0.0 < frac <= 1.0,
                f"last_segment_min_fraction must be in (0, 1], got {frac}")

        self.window = c["window"]
        self.window_shift = c["window_shift"]
        self.segment_windows = c["segment_windows"]
        self.timeline_context = c["timeline_context"]
        # Segment k covers frames [k * hop, k * hop + span).
        self.segment_hop = self.segment_windows * self.window_shift
        self.segment_span = (self.segment_windows - 1) * self.window_shift + self.window
        overlap = self.segment_span - self.segment_hop
        # A trailing segment needs more real frames than it shares with the previous one.
        self.last_segment_min_frames = max(math.ceil(frac * self.segment_span), overlap + 1)
        self.min_frames = self.segment_span

        stride = c["front_stride"] if c["front"] == "conv" else 1
        self.front_stride = stride
        self.front: nn.ModuleList | None = None
        self.front_norms: nn.ModuleList | None = None
        level1_in = feat_dim
        if c["front"] == "conv":
            width, k = c["front_channels"], c["front_kernel"]
            self.front = nn.ModuleList(
                nn.Conv1d(feat_dim if i == 0 else width, width, k, stride=stride if i == 0
                          else 1, padding=k // 2) for i in range(c["front_layers"]))
            if c["front_norm"] == "layer":
                # per frame, so that an utterance's front never depends on its batch
                self.front_norms = nn.ModuleList(nn.LayerNorm(width)
                                                 for _ in range(c["front_layers"]))
            level1_in = width
        level1 = (level1_in, c["hidden1"], self.window // stride, self.window_shift // stride,
                  c["window_pooling"])
        self.window_gru = WindowGRU(*level1)
        # the backward level 1: the same windows of the time-reversed frames
        self.window_gru_backward = WindowGRU(*level1) if c["window_bidirectional"] else None
        window_size = self.window_gru.output_size * (2 if c["window_bidirectional"] else 1)
        bidirectional = bool(c["segment_bidirectional"])
        self.segment_gru = nn.GRU(window_size, c["hidden2"], batch_first=True,
                                  bidirectional=bidirectional)
        segment_size = (c["hidden2"] * (2 if bidirectional else 1)
                        * (2 if c["segment_pooling"] == "stats" else 1))
        self.utterance_gru = BidirectionalGRU(segment_size, c["hidden3"])
        norm = c["layer_norm"]
        self.window_norm = nn.LayerNorm(window_size) if norm else nn.Identity()
        self.segment_norm = nn.LayerNorm(segment_size) if norm else nn.Identity()
        pooling = AttentiveStatsPooling if c["pooling"] == "stats" else AttentionPooling
        self.attention = pooling(2 * c["hidden3"], c["attention"], c["attention_heads"])
        self.classifier = nn.Sequential(
            nn.Linear(self.attention.output_size, c["dense"]),
            nn.ReLU(),
            nn.Dropout(c["dropout"]),
            nn.Linear(c["dense"], num_langs),
        )
        self.dropout = nn.Dropout(c["dropout"])

    def _check_variant(self, c: dict[str, Any]) -> None:
        require(self.name, c["front"] in self.FRONTS,
                f"front must be one of {', '.join(self.FRONTS)}, got {c['front']!r}")
        require(self.name, c["pooling"] in self.POOLINGS,
                f"pooling must be one of {', '.join(self.POOLINGS)}, got {c['pooling']!r}")
        require(self.name, c["segment_pooling"] in self.SEGMENT_POOLINGS,
                f"segment_pooling must be one of {', '.join(self.SEGMENT_POOLINGS)}, got "
                f"{c['segment_pooling']!r}")
        require(self.name, c["window_pooling"] in self.WINDOW_POOLINGS,
                f"window_pooling must be one of {', '.join(self.WINDOW_POOLINGS)}, got "
                f"{c['window_pooling']!r}")
        require(self.name, c["front_norm"] in self.FRONT_NORMS,
                f"front_norm must be one of {', '.join(self.FRONT_NORMS)}, got "
                f"{c['front_norm']!r}")
        if c["front"] != "conv":
            return
        require_positive(self.name, c, "front_layers", "front_channels", "front_kernel",
                         "front_stride")
        require(self.name, c["front_kernel"] % 2 == 1,
                f"front_kernel must be odd, got {c['front_kernel']}")
        stride = c["front_stride"]
        require(self.name, c["window"] % stride == 0 and c["window_shift"] % stride == 0,
                f"window ({c['window']}) and window_shift ({c['window_shift']}) must be "
                f"multiples of front_stride ({stride})")

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
            ``(s (batch, segments, hidden2 or 2 * hidden2), lengths (batch,) as clipped)`` with
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

        if self.front is not None:
            x = self._front(x, lengths)                                     # (B, T/s, C)
        v = self.window_gru(x, windows)                                     # (B, N, H1)
        if self.window_gru_backward is not None:
            # x spans exactly the windows, so window n of the reversed frames is window
            # N-1-n read backwards
            back = self.window_gru_backward(x.flip(1).contiguous(), windows).flip(1)
            v = torch.cat([v, back], dim=2)                                 # (B, N, 2*H1)
        v = self.dropout(self.window_norm(v))
        s = self._pool_segment(v.reshape(-1, self.segment_windows, v.shape[2]))
        s = s.reshape(x.shape[0], -1, s.shape[1])                            # (B, K, S)
        return self.segment_norm(s), lengths

    def _pool_segment(self, v: Tensor) -> Tensor:
        """Level 2 over ``v (segments, segment_windows, hidden1)`` -> ``(segments, S)``."""
        states, last = self.segment_gru(v)
        pooling = self.config["segment_pooling"]
        if pooling == "last":
            # last: (directions, segments, H2); both directions' final states side by side
            return torch.cat(list(last), dim=1)
        mean = states.mean(dim=1)
        if pooling == "mean":
            return mean
        var = (states - mean[:, None]).pow(2).mean(dim=1)
        return torch.cat([mean, var.clamp(min=1e-5).sqrt()], dim=1)

    def _front(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Convolutional front: ``(batch, T, feat_dim)`` zero-padded frames -> ``(batch,
        T / stride, front_channels)``, zero on steps at or past each utterance's end (as
        the frames are without a front), so padding never depends on the batch."""
        real = (lengths + self.front_stride - 1) // self.front_stride
        for i, conv in enumerate(self.front):
            x = torch.relu(conv(x.transpose(1, 2))).transpose(1, 2)
            if self.front_norms is not None:
                x = self.front_norms[i](x)
            # zero past the end after every layer: the next one must see what it would see
            # for the utterance alone
            x = zero_padding(x, real)
        return x.contiguous()

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Levels 1 to 3.

        Args:
            feats: ``(batch, frames, feat_dim)``.
            lengths: ``(batch,)`` true lengths in frames.

        Returns:
            ``h (batch, segments, 2 * hidden3)`` level-3 states, ``mask (batch, segments)``
            bool (True on real segments), ``spans (batch, segments, 2)`` int64 frame spans.
        """
        s, counts, spans = self._segments(feats, lengths)
        return (*self._utterance_states(s, counts), spans)

    def _utterance_states(self, s: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """Level 3 over ``s (batch, segments, S)``: ``(h (batch, segments, 2 * hidden3),
        mask (batch, segments))``."""
        h = self.utterance_gru(s, counts)
        return h, torch.arange(s.shape[1], device=s.device)[None, :] < counts[:, None]

    def _segments(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Levels 1 and 2 with dropout: ``(s (batch, segments, S), counts (batch,) real
        segments, spans (batch, segments, 2) int64 frame spans)``."""
        s, lengths = self.segment_vectors(feats, lengths)
        s = self.dropout(s)
        counts = self.segment_counts(lengths)
        k = torch.arange(s.shape[1], device=s.device)
        start = torch.minimum(k[None, :] * self.segment_hop, lengths[:, None])
        end = torch.minimum(k[None, :] * self.segment_hop + self.segment_span,
                            lengths[:, None])
        return s, counts, torch.stack([start, end], dim=2)

    def forward(self, feats: Tensor, lengths: Tensor, with_segments: bool = False
                ) -> ModelOutput:
        """``feats (batch, frames, feat_dim)``, ``lengths (batch,)`` -> :class:`ModelOutput`
        with logits ``(batch, num_langs)`` and per-segment attention ``(batch, segments)``;
        ``with_segments`` adds the per-segment logits (see ``timeline_context``)."""
        s, counts, spans = self._segments(feats, lengths)
        h, mask = self._utterance_states(s, counts)
        pooled, heads = self.attention.pool(h, mask)
        seg_logits = self._timeline_logits(s, counts, h) if with_segments else None
        return ModelOutput(self.classifier(pooled), heads.mean(dim=1), mask, spans, seg_logits,
                           pooled, heads if heads.shape[1] > 1 else None)

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Per-segment logits ``(batch, segments, num_langs)`` (see ``timeline_context``),
        0 on padding segments."""
        s, counts, _ = self._segments(feats, lengths)
        return self._timeline_logits(s, counts)

    def _timeline_logits(self, s: Tensor, counts: Tensor, h: Tensor | None = None) -> Tensor:
        """Per-segment logits ``(batch, segments, num_langs)`` of ``s (batch, segments, S)``,
        0 on padding segments: with ``timeline_context`` 0 each level-3 state ``h_k``
        (``h``, computed when not given) classified as a one-segment utterance would be,
        else each segment's window of segments alone."""
        if self.timeline_context:
            logits = self._local_segment_logits(s, counts)
        else:
            if h is None:
                h, _ = self._utterance_states(s, counts)
            logits = self.classifier(self.attention.single_step(h))
        real = torch.arange(s.shape[1], device=s.device)[None, :] < counts[:, None]
        return torch.where(real[:, :, None], logits,
                           torch.zeros((), dtype=logits.dtype, device=logits.device))

    def _local_segment_logits(self, s: Tensor, counts: Tensor) -> Tensor:
        """Each segment's logits from the ``W = 2c + 1`` segments around it alone.

        Args:
            s: ``(batch, segments, S)`` segment vectors.
            counts: ``(batch,)`` real segments of each utterance.

        Returns:
            ``(batch, segments, num_langs)`` logits (padding segments' are not used).
        """
        c = self.timeline_context
        width = 2 * c + 1
        batch, segments = s.shape[:2]
        k = torch.arange(segments, device=s.device)[None, :]
        # a window of `width` segments centred on k, moved inside [0, count)
        first = torch.clamp(torch.minimum(k - c, counts[:, None] - width), min=0)
        index = torch.clamp(first[:, :, None] + torch.arange(width, device=s.device),
                            max=segments - 1)                              # (B, K, W)
        windows = torch.gather(s[:, None].expand(-1, segments, -1, -1), 2,
                               index[..., None].expand(-1, -1, -1, s.shape[2]))
        real = torch.clamp(counts, max=width)[:, None].expand(-1, segments).reshape(-1)
        windows = windows.reshape(batch * segments, width, s.shape[2])
        h = self.utterance_gru(windows, real)                               # (B*K, W, 2*H3)
        mask = torch.arange(width, device=s.device)[None, :] < real[:, None]
        logits = self.classifier(self.attention.pool(h, mask)[0])
        return logits.reshape(batch, segments, -1)
