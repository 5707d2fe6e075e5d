"""Export a trained model to ONNX and TorchScript (``lre export``) and run the ONNX file.

``lre export --model-dir exp/hgru [--out DIR] [--checkpoint final.pt]`` writes:

- ``model.onnx``: inputs ``feats (batch, frames, feat_dim)`` float32 and ``lengths (batch,)``
  int64, both batch and frames dynamic; outputs ``logits (batch, langs)``, ``attention
  (batch, segments)``, ``segment_mask (batch, segments)``, ``segment_frames (batch,
  segments, 2)``, ``segment_logits (batch, segments, langs)`` and ``embedding (batch, dim)``
  (the utterance vector the open-set scores use). Its metadata holds the
  languages, the model name and config and the SHA-256 of the checkpoint it came from.
- ``model.ts``: the same function as TorchScript (``torch.jit.load``), metadata in the
  extra file ``lre_meta.json``.

Both are checked after writing: they must give the checkpoint's outputs on inputs of
another batch size and length (to 1e-4), else the export fails with the reason. When
``--out`` is not the model dir, ``feats_config.json`` (and ``calibration.json``) are copied
beside them, so the output dir is enough for ``lre identify --backend onnx``.

:class:`OnnxRunner` runs a ``model.onnx`` with onnxruntime for :mod:`lre.identify`. Loading
and running an exported file needs neither torch nor the checkpoint: the languages and the
feature dimension come from the file's metadata, and the checkpoint (when there is one) is
only hashed to check that the file was exported from it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Only modules that do not import torch: the ONNX path of ``lre identify`` runs without it.
from lre.inference.runner import ChunkOutput, pad_batch, split_outputs
from lre.utils import LreError, atomic_open

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
TORCHSCRIPT_NAME = "model.ts"
META_FILE = "lre_meta.json"
INPUT_NAMES = ("feats", "lengths")
OUTPUT_NAMES = ("logits", "attention", "segment_mask", "segment_frames", "segment_logits",
                "embedding")
#: model.ts keeps the outputs it has always had (a tuple, read by position).
TORCHSCRIPT_OUTPUTS = OUTPUT_NAMES[:5]
OPSET = 17
CHECK_TOLERANCE = 1e-4


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wrapper(model: Any, embedding: bool = True):
    """The model as a function of ``(feats, lengths)`` returning a tuple of tensors: those
    of :data:`OUTPUT_NAMES`, or without the embedding (:data:`TORCHSCRIPT_OUTPUTS`)."""
    import torch

    class ExportedLidModel(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
            out = self.model(feats, lengths, with_segments=True)
            return (out.logits, out.attention, out.segment_mask, out.segment_frames,
                    out.segment_logits)

    class WithEmbedding(ExportedLidModel):
        def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
            out = self.model(feats, lengths, with_segments=True)
            return (out.logits, out.attention, out.segment_mask, out.segment_frames,
                    out.segment_logits, out.embedding)

    return (WithEmbedding if embedding else ExportedLidModel)(model).eval()


def _for_onnx(model: Any) -> Any:
    """A copy of ``model`` whose layers with several equivalent implementations (``impl``,
    e.g. the HGRU's window GRU: unrolled steps or ``nn.GRU``) use ``"native"``: it exports
    to ONNX's own GRU operator, which onnxruntime runs about 2-3x faster than the unrolled
    steps' many small nodes. The export check below compares with the model as it is."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if "native" in getattr(module, "IMPLS", ()) and hasattr(module, "impl"):
            module.impl = "native"
    return model


def _example_inputs(model: Any, feat_dim: int, batch: int, frames: int, seed: int):
    """Random features ``(batch, frames, feat_dim)`` and distinct lengths (the first full)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    frames = max(frames, int(getattr(model, "min_frames", 1)))
    x = torch.randn(batch, frames, feat_dim, generator=g)
    lengths = torch.tensor(
        [frames] + [max(1, frames - 37 * (i + 1)) for i in range(batch - 1)], dtype=torch.int64
    )
    return x, lengths


def _compare(name: str, ours: Sequence[np.ndarray], ref: Sequence[np.ndarray],
             names: Sequence[str] = OUTPUT_NAMES) -> None:
    for out_name, a, b in zip(names, ours, ref, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise LreError(f"{name}: output {out_name} has shape {a.shape} on a new input "
                           f"length, the model gives {b.shape} (shape baked in at export)")
        if a.dtype == bool or b.dtype == bool or np.issubdtype(b.dtype, np.integer):
            same = np.array_equal(a.astype(np.int64), b.astype(np.int64))
            err = 0.0 if same else float("inf")
        else:
            err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
        if not err <= CHECK_TOLERANCE:
            raise LreError(f"{name}: output {out_name} differs from the model by {err:.3g} "
                           "on a new input length")


def _reference(wrapper: Any, x: Any, lengths: Any) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [t.cpu().numpy() for t in wrapper(x, lengths)]


def onnx_bytes(model: Any, feat_dim: int, metadata: dict[str, str], opset: int = OPSET) -> bytes:
    """Export ``model`` to an ONNX model (bytes) with dynamic batch and frames.

    Checked with onnxruntime on an input of another batch size and length.
    """
    import onnx
    import torch

    x, lengths = _example_inputs(model, feat_dim, batch=2, frames=523, seed=0)
    with torch.no_grad():  # a model without an embedding exports the other outputs
        embedding = model(x, lengths).embedding is not None
    names = list(OUTPUT_NAMES if embedding else TORCHSCRIPT_OUTPUTS)
    wrapper = _wrapper(_for_onnx(model), embedding)
    buf = io.BytesIO()
    dyn = {
        "feats": {0: "batch", 1: "frames"},
        "lengths": {0: "batch"},
        "logits": {0: "batch"},
        "attention": {0: "batch", 1: "segments"},
        "segment_mask": {0: "batch", 1: "segments"},
        "segment_frames": {0: "batch", 1: "segments"},
        "segment_logits": {0: "batch", 1: "segments"},
        "embedding": {0: "batch"},
    }
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (x, lengths), buf, input_names=list(INPUT_NAMES),
                output_names=names, dynamic_axes={k: v for k, v in dyn.items()
                                                  if k in names or k in INPUT_NAMES},
                opset_version=opset,
                dynamo=False, do_constant_folding=True,
            )
    except Exception as e:
        raise LreError(f"onnx export: the model does not export ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:300]})") from e
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    # Another batch size and length than at export: catches shapes frozen by tracing.
    x2, l2 = _example_inputs(model, feat_dim, batch=3, frames=1234, seed=1)
    session = _session(data, num_threads=1)
    got = session.run(names, {"feats": x2.numpy(), "lengths": l2.numpy()})
    _compare("onnx export", got, _reference(_wrapper(model, embedding), x2, l2), names)
    return data


def torchscript_module(model: Any, feat_dim: int):
    """``model`` as TorchScript: scripted when its code allows, else traced; checked on
    another batch size and length."""
    import torch

    wrapper = _wrapper(model, embedding=False)
    x2, l2 = _example_inputs(model, feat_dim, batch=3, frames=1234, seed=1)
    ref = _reference(wrapper, x2, l2)
    errors = []
    for how in ("script", "trace"):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if how == "script":
                    ts = torch.jit.script(wrapper)
                else:
                    x, lengths = _example_inputs(model, feat_dim, batch=2, frames=523, seed=0)
                    ts = torch.jit.trace(wrapper, (x, lengths), check_trace=False)
                got = [t.cpu().numpy() for t in ts(x2, l2)]
            _compare(f"torchscript ({how})", got, ref, TORCHSCRIPT_OUTPUTS)
            return ts
        except Exception as e:  # scripting fails on plain-Python model code: then trace
            errors.append(f"{how}: {' '.join(str(e).split())[:200]}")
            logger.debug("torchscript %s failed: %s", how, e)
    raise LreError("torchscript export failed; " + "; ".join(errors))


def export_model(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    checkpoint: str = "final.pt",
    formats: Sequence[str] = ("onnx", "torchscript"),
    opset: int = OPSET,
) -> dict[str, Path]:
    """Write ``model.onnx`` and/or ``model.ts`` for ``<model_dir>/<checkpoint>``.

    Returns ``{"onnx": path, "torchscript": path}`` for the formats written.
    """
    import torch

    from lre.features.reader import FEATS_CONFIG
    from lre.inference.model_dir import CALIBRATION
    from lre.models import load_model

    model_dir = Path(model_dir)
    out = Path(out_dir) if out_dir is not None else model_dir
    ckpt = model_dir / checkpoint
    if not ckpt.is_file():
        from lre.fusion import is_fusion_dir

        if is_fusion_dir(model_dir):
            raise LreError(f"{model_dir}: a fusion dir has no model of its own; export each "
                           "model it fuses (lre identify --backend onnx then uses theirs)")
        raise LreError(f"{ckpt}: no such checkpoint")
    model, meta = load_model(ckpt, map_location="cpu")
    model.eval()
    feat_dim = int(meta["feat_dim"])
    metadata = {
        "format": "lre-export-1",
        "langs": json.dumps(list(meta["langs"])),
        "model_name": str(meta.get("model_name", "")),
        "model_config": json.dumps(meta.get("model_config", {}), sort_keys=True),
        "feat_dim": str(feat_dim),
        "checkpoint": checkpoint,
        "checkpoint_sha256": file_sha256(ckpt),
    }
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        if fmt == "onnx":
            data = onnx_bytes(model, feat_dim, metadata, opset=opset)
            with atomic_open(out / ONNX_NAME, "wb") as f:
                f.write(data)
            written["onnx"] = out / ONNX_NAME
        elif fmt == "torchscript":
            ts = torchscript_module(model, feat_dim)
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
                torch.jit.save(ts, buf, _extra_files={META_FILE: json.dumps(metadata)})
            with atomic_open(out / TORCHSCRIPT_NAME, "wb") as f:
                f.write(buf.getvalue())
            written["torchscript"] = out / TORCHSCRIPT_NAME
        else:
            raise LreError(f"export: unknown format {fmt!r} (onnx, torchscript)")
        logger.info("wrote %s", written[fmt if fmt == "onnx" else "torchscript"])
    if out.resolve() != model_dir.resolve():
        for name in (FEATS_CONFIG, CALIBRATION, "lang2id"):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, out / name)
    return written


# ----------------------------------------------------------------------------------------
# Running the ONNX model
# ----------------------------------------------------------------------------------------


def _session(model: bytes | str | os.PathLike, num_threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if num_threads:
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    src = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """Runs an exported ``model.onnx`` (implements :class:`lre.inference.runner.ModelRunner`)."""

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int | None = None):
        try:
            self.session = _session(model, num_threads)
        except Exception as e:
            name = "model.onnx" if isinstance(model, bytes) else os.fspath(model)
            raise LreError(f"{name}: cannot load ONNX model ({' '.join(str(e).split())[:200]})"
                           ) from e
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        try:
            self.langs = list(json.loads(self.metadata["langs"]))
        except (KeyError, ValueError) as e:
            raise LreError("model.onnx: no language list in its metadata (not written by "
                           "lre export)") from e
        #: Files exported before the embedding was an output run without it.
        self.has_embedding = "embedding" in {o.name for o in self.session.get_outputs()}
        dim = self.metadata.get("feat_dim")
        #: Feature dimension the model takes (None when the metadata does not say).
        self.feat_dim = int(dim) if dim and dim.isdigit() else None

    def run(self, feats: Sequence[np.ndarray], timeline: bool = False) -> list[ChunkOutput]:
        batch, lengths = pad_batch(feats)
        names = list(OUTPUT_NAMES[:5] if timeline else OUTPUT_NAMES[:4])
        if self.has_embedding:
            names.append("embedding")
        outs = dict(zip(names, self.session.run(names, {"feats": batch, "lengths": lengths}),
                        strict=True))
        return split_outputs(*(outs[k] for k in OUTPUT_NAMES[:4]), outs.get("segment_logits"),
                             outs.get("embedding"))


def load_onnx_runner(
    exp_dir: str | os.PathLike, checkpoint: str = "final.pt", num_threads: int | None = None
) -> OnnxRunner:
    """An :class:`OnnxRunner` for ``<exp_dir>/<checkpoint>``.

    Uses ``<exp_dir>/model.onnx`` when it was exported from that very checkpoint (or when
    there is no checkpoint, only the exported file): then torch is not imported. Otherwise
    exports in memory, which needs torch.
    """
    exp_dir = Path(exp_dir)
    onnx_path, ckpt = exp_dir / ONNX_NAME, exp_dir / checkpoint
    if onnx_path.is_file():
        runner = OnnxRunner(onnx_path, num_threads)
        if not ckpt.is_file() or runner.metadata.get("checkpoint_sha256") == file_sha256(ckpt):
            return runner
        logger.info("%s was exported from another checkpoint than %s; exporting again in "
                    "memory (run lre export to save it)", onnx_path, ckpt)
    elif not ckpt.is_file():
        raise LreError(f"{exp_dir}: neither {checkpoint} nor {ONNX_NAME}")
    from lre.models import load_model

    model, meta = load_model(ckpt, map_location="cpu")
    model.eval()
    data = onnx_bytes(model, int(meta["feat_dim"]), {
        "langs": json.dumps(list(meta["langs"])), "feat_dim": str(int(meta["feat_dim"])),
        "checkpoint": checkpoint, "checkpoint_sha256": file_sha256(ckpt)})
    return OnnxRunner(data, num_threads)


def cli_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="experiment dir, e.g. exp/hgru")
    parser.add_argument("--out", default=None, help="output dir (default: the model dir)")
    parser.add_argument("--checkpoint", default="final.pt", help="checkpoint to export")
    parser.add_argument("--format", choices=["onnx", "torchscript", "both"], default="both")
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset")


def cli_export(args: argparse.Namespace) -> int:
    formats = ("onnx", "torchscript") if args.format == "both" else (args.format,)
    paths = export_model(args.model_dir, args.out, checkpoint=args.checkpoint, formats=formats,
                         opset=args.opset)
    for p in paths.values():
        print(p)
    return 0


def load_torchscript(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """Load ``model.ts``: the module (``(feats, lengths)`` -> the five outputs) and its
    metadata."""
    import torch

    extra = {META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
            module = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise LreError(f"{path}: cannot load TorchScript ({' '.join(str(e).split())[:200]})"
                       ) from e
    meta = json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    if "langs" in meta:
        meta["langs"] = json.loads(meta["langs"])
    return module, meta
