"""What every language recognition model shares: the output record, the base class, config
checking, and the padding-aware building blocks (masks, bidirectional GRU, attention pooling).

Every model maps features ``(batch, frames, feat_dim)`` with true lengths ``(batch,)`` to
language logits *and* a weight per segment of the utterance, so that scoring, plots and
identification treat all models alike.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from lre.config import merge
from lre.models.geometry import SegmentGeometry
from lre.utils import LreError


class ModelOutput(NamedTuple):
    """What ``LidModel.forward`` returns (a tuple, so it traces and exports as one).

    logits: ``(batch, num_langs)`` unnormalised language scores.
    attention: ``(batch, segments)`` weight of each segment in the pooled decision; sums to 1
        over the real segments of an utterance and is exactly 0 on padding segments.
    segment_mask: ``(batch, segments)`` bool, True for real segments.
    segment_frames: ``(batch, segments, 2)`` int64 ``[start, end)`` frame span of each
        segment in the input frame sequence (spans are clipped to the utterance length).
    segment_logits: ``(batch, segments, num_langs)`` per-segment logits (0 on padding), only
        when ``forward(..., with_segments=True)``; else None.
    embedding: ``(batch, dim)`` the utterance vector the classifier reads (the pooled
        vector of the attention models, the x-vector of the TDNNs): what the open-set
        scores of :mod:`lre.openset` measure distances in; None for a model that has none.
    head_attention: ``(batch, heads, segments)`` each head's weights (``attention`` is their
        mean) for a model with several attention heads; else None.
    """

    logits: Tensor
    attention: Tensor
    segment_mask: Tensor
    segment_frames: Tensor
    segment_logits: Tensor | None = None
    embedding: Tensor | None = None
    head_attention: Tensor | None = None


class LidModel(nn.Module):
    """Base class of the models: holds the config and the sizes every caller needs.

    Attributes:
        name: registry name ("hgru", "bigru", ...), stored in model files.
        feat_dim: input feature dimension.
        num_langs: number of output languages.
        config: every size of the model (JSON/YAML-safe values only), enough to rebuild it.
        min_frames: shortest input the model uses without padding it (one segment for the
            HGRU); shorter inputs are zero-padded by the model, never an error.
        segment_hop, segment_span: segment ``k`` of the output spans input frames
            ``[k * segment_hop, k * segment_hop + segment_span)`` (see :meth:`geometry`).
    """

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: Config keys that count frames, with the seconds their defaults stand for (at 10 ms).
    FRAME_SECONDS: ClassVar[dict[str, float]] = {}

    def __init__(self, feat_dim: int, num_langs: int, config: dict[str, Any] | None = None):
        super().__init__()
        if not isinstance(feat_dim, int) or isinstance(feat_dim, bool) or feat_dim < 1:
            raise LreError(f"{self.name} model: feat_dim must be a positive integer, "
                           f"got {feat_dim!r}")
        if not isinstance(num_langs, int) or isinstance(num_langs, bool) or num_langs < 1:
            raise LreError(f"{self.name} model: num_langs must be a positive integer, "
                           f"got {num_langs!r}")
        self.feat_dim = feat_dim
        self.num_langs = num_langs
        self.config = resolve_config(self.name, self.DEFAULTS, config)
        self.min_frames = 1
        self.segment_hop = 100
        self.segment_span = 100

    def geometry(self, frame_shift: float = 0.01) -> SegmentGeometry:
        """How this model cuts ``frame_shift``-second frames into segments."""
        return SegmentGeometry(self.segment_hop, self.segment_span, frame_shift)

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """A fresh copy of the model's default config (every size)."""
        return copy.deepcopy(cls.DEFAULTS)

    def forward(self, feats: Tensor, lengths: Tensor, with_segments: bool = False
                ) -> ModelOutput:  # pragma: no cover
        """``feats (batch, frames, feat_dim)`` float, ``lengths (batch,)`` int64;
        ``with_segments`` also fills ``ModelOutput.segment_logits``."""
        raise NotImplementedError

    def _add_segment_logits(self, out: ModelOutput, feats: Tensor, lengths: Tensor
                            ) -> ModelOutput:
        """``out`` with ``segment_logits`` from a second pass (models whose segment
        classifier does not reuse the pooled path's states)."""
        return out._replace(segment_logits=self.segment_logits(feats, lengths))

    def segment_logits(self, feats: Tensor, lengths: Tensor) -> Tensor:  # pragma: no cover
        """Per-segment language logits ``(batch, segments, num_langs)`` (0 on padding)."""
        raise NotImplementedError

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"feat_dim={self.feat_dim}, num_langs={self.num_langs}, config={self.config}"


# --------------------------------------------------------------------------------------------
# Config handling


def resolve_config(model: str, defaults: dict[str, Any],
                   config: dict[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated with ``config`` by :func:`lre.config.merge`, the rules every
    config follows: strings (``--set key=value``) are parsed, values coerced to the
    default's type, and unknown keys (with the closest known one) or wrong types raise
    :class:`LreError` (``hgru config: window = 'wide' is not an integer``)."""
    out = copy.deepcopy(defaults)
    merge(out, config or {}, f"{model} config")
    return out


def require(model: str, condition: bool, message: str) -> None:
    """Raise ``LreError("<model> config: <message>")`` unless ``condition``."""
    if not condition:
        raise LreError(f"{model} config: {message}")


def require_positive(model: str, config: dict[str, Any], *keys: str) -> None:
    """Every ``config[key]`` must be >= 1."""
    for key in keys:
        require(model, config[key] >= 1, f"{key} must be at least 1, got {config[key]}")


def require_dropout(model: str, config: dict[str, Any], key: str = "dropout") -> None:
    require(model, 0.0 <= config[key] < 1.0, f"{key} must be in [0, 1), got {config[key]}")


# --------------------------------------------------------------------------------------------
# Masks and padding-aware layers


def frame_mask(lengths: Tensor, frames: int | Tensor) -> Tensor:
    """``(batch, frames)`` bool, True where the frame index is below the utterance length."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def zero_padding(feats: Tensor, lengths: Tensor) -> Tensor:
    """``feats`` with every frame at or beyond its utterance's length set to exactly 0.

    Makes outputs independent of whatever the caller put in the padding (even NaN).
    """
    mask = frame_mask(lengths, feats.shape[1])
    return torch.where(mask[:, :, None], feats, torch.zeros((), dtype=feats.dtype,
                                                             device=feats.device))


def reversal_index(lengths: Tensor, steps: int | Tensor) -> Tensor:
    """``(batch, steps)`` int64: index ``t`` -> ``length - 1 - t`` inside the utterance, ``t``
    on padding. Gathering with it reverses each sequence within its own length (its own
    inverse), so a backward GRU starts at the true end and never sees padding first."""
    t = torch.arange(steps, device=lengths.device)[None, :]
    n = lengths[:, None]
    return torch.where(t < n, n - 1 - t, t)


def gather_steps(x: Tensor, index: Tensor) -> Tensor:
    """``x (batch, steps, dim)`` reordered along ``steps`` by ``index (batch, steps)``."""
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


class BidirectionalGRU(nn.Module):
    """Stacked bidirectional GRU over padded sequences without packing (exports to ONNX).

    The backward direction runs a forward GRU over each sequence reversed within its own
    length, so the states of real steps never depend on padding.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_grus = nn.ModuleList(nn.GRU(s, hidden_size, batch_first=True)
                                          for s in sizes)
        self.backward_grus = nn.ModuleList(nn.GRU(s, hidden_size, batch_first=True)
                                           for s in sizes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x (batch, steps, input_size)``, ``lengths (batch,)`` -> ``(batch, steps,
        2 * hidden_size)``; forward states first, then backward."""
        rev = reversal_index(lengths, x.shape[1])
        for i, (fwd, bwd) in enumerate(zip(self.forward_grus, self.backward_grus,
                                           strict=True)):
            if i > 0:
                x = self.dropout(x)
            out_f, _ = fwd(x)
            out_b, _ = bwd(gather_steps(x, rev))
            x = torch.cat([out_f, gather_steps(out_b, rev)], dim=2)
        return x


class AttentionPooling(nn.Module):
    """``a_k = softmax_k(tanh(W h_k + b) . u)`` over real steps; returns ``sum_k a_k h_k``.

    With ``heads > 1`` (multi-head attention, Lin et al., ICLR 2017): ``heads`` context
    vectors ``u_j`` over the shared projection, each its own weights ``a_{j,k}`` and its own
    pooled vector; the output is the ``heads`` pooled vectors side by side, and the weight
    of a step is the mean over heads (what plots and records read; each head's kept too).
    """

    def __init__(self, input_size: int, attention_size: int, heads: int = 1):
        super().__init__()
        self.proj = nn.Linear(input_size, attention_size)
        self.context = nn.Linear(attention_size, heads, bias=False)
        self.heads = heads
        self.output_size = heads * input_size

    def single_step(self, h: Tensor) -> Tensor:
        """What pooling one real step ``h (..., input_size)`` alone gives: ``h`` itself
        (once per head)."""
        return h if self.heads == 1 else torch.cat([h] * self.heads, dim=-1)

    def scores(self, h: Tensor) -> Tensor:
        """Unnormalised scores ``(batch, steps)`` of ``h (batch, steps, input_size)`` (one
        head)."""
        return self.context(torch.tanh(self.proj(h))).squeeze(-1)

    def head_weights(self, h: Tensor, mask: Tensor) -> Tensor:
        """``(batch, heads, steps)`` weights of each head, exactly 0 where ``mask`` is
        False."""
        scores = self.context(torch.tanh(self.proj(h))).transpose(1, 2)
        return masked_softmax(scores, mask[:, None, :])

    def pool(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``h (batch, steps, dim)``, ``mask (batch, steps)`` bool (at least one True per row)
        -> ``(pooled (batch, output_size), head weights (batch, heads, steps))``."""
        weights = self.head_weights(h, mask)
        h = torch.where(mask[:, :, None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        return torch.bmm(weights, h).reshape(h.shape[0], -1), weights

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled (batch, output_size), weights (batch, steps))``: the weights are the
        mean over heads, exactly 0 where ``mask`` is False."""
        pooled, weights = self.pool(h, mask)
        return pooled, weights.mean(dim=1)


class AttentiveStatsPooling(AttentionPooling):
    """Attentive statistics pooling (Okabe et al., Interspeech 2018) with the scores of
    :class:`AttentionPooling`: returns ``[mu, sigma]``, the attention-weighted mean and
    standard deviation of the real steps, ``(batch, 2 * input_size)`` (per head, side by
    side, with several heads)."""

    EPS = 1e-5  # variance floor: sqrt has no finite gradient at 0 (one-step utterances)

    def __init__(self, input_size: int, attention_size: int, heads: int = 1):
        super().__init__(input_size, attention_size, heads)
        self.output_size = 2 * heads * input_size

    def single_step(self, h: Tensor) -> Tensor:
        """A step pooled alone: mean ``h``, standard deviation ``sqrt(EPS)`` (per head)."""
        one = torch.cat([h, torch.full_like(h, self.EPS ** 0.5)], dim=-1)
        return one if self.heads == 1 else torch.cat([one] * self.heads, dim=-1)

    def pool(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.head_weights(h, mask)
        h = torch.where(mask[:, :, None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        mean = torch.bmm(weights, h)                                   # (B, heads, D)
        second = torch.bmm(weights, h * h)
        std = torch.sqrt(torch.clamp(second - mean * mean, min=self.EPS))
        return torch.cat([mean, std], dim=2).reshape(h.shape[0], -1), weights


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` with masked entries exactly 0; a fully masked row gives all 0."""
    any_real = mask.any(dim=dim, keepdim=True)
    # A fully masked row would be all -inf (NaN softmax): give it finite scores, zero it after.
    safe = mask | ~any_real
    weights = torch.softmax(scores.masked_fill(~safe, float("-inf")), dim=dim)
    return torch.where(mask, weights, torch.zeros((), dtype=weights.dtype,
                                                  device=weights.device))


def block_layout(lengths: Tensor, frames: int | Tensor, block: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Fixed non-overlapping blocks of ``block`` frames over a batch (the baselines' segments).

    Returns ``(count (batch,), mask (batch, blocks) bool, spans (batch, blocks, 2) int64)``;
    ``blocks = ceil(frames / block)`` (at least 1); an utterance has ``ceil(length / block)``
    real blocks (at least 1), the last one clipped to its length.
    """
    blocks = num_blocks(frames, block)
    count = torch.clamp((lengths + block - 1) // block, min=1)
    k = torch.arange(blocks, device=lengths.device)
    mask = k[None, :] < count[:, None]
    start = torch.minimum(k[None, :] * block, lengths[:, None])
    end = torch.minimum(start + block, lengths[:, None])
    return count, mask, torch.stack([start, end], dim=2).to(torch.int64)


def num_blocks(frames: int | Tensor, hop: int) -> int | Tensor:
    """``ceil(frames / hop)``, at least 1 (``frames`` is a traced size tensor when exporting,
    then always >= 1)."""
    if isinstance(frames, int):
        return max(1, -(-frames // hop))
    return (frames - 1) // hop + 1
