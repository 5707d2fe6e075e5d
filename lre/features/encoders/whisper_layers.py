"""Any hidden layer of a CTranslate2 Whisper encoder, run by transformers' Whisper modules.

CTranslate2 returns only the encoder's last layer. For the others, the weights of the same
``model.bin`` are read (CTranslate2's variable file: a header, then name, shape, type and
bytes of each variable) into transformers' ``WhisperEncoder``, and its modules are run on
the audio there is: transformers' own ``forward`` insists on 30 s of log-mel, and unpadded
states are what the CTranslate2 front end stores (docs/FRONT_ENDS.md).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from lre.features.encoders import STATE_SAMPLES, EncoderOptions, mean_of_layers, num_states
from lre.pretrained import resolve_model_dir
from lre.utils import LreError

# CTranslate2's DataType enum, in its order (include/ctranslate2/types.h).
_CT2_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)


def read_ct2_variables(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``, as
    arrays (``bfloat16`` ones are refused: numpy has no such type)."""
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            def take(fmt: str):
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

            def text() -> str:
                return f.read(take("<H"))[:-1].decode("utf-8")

            take("<I")  # binary version
            text()  # spec name
            take("<I")  # spec revision
            for _ in range(take("<I")):
                name = text()
                shape = tuple(take("<I") for _ in range(take("<B")))
                dtype = _CT2_DTYPES[take("<B")]
                size = take("<I")
                if not name.startswith(prefix):
                    f.seek(size, 1)
                    continue
                if dtype is None:
                    raise LreError(f"{path}: variable {name} is bfloat16; convert the model "
                                   "with --quantization float16 or float32")
                out[name] = np.frombuffer(f.read(size), dtype).reshape(shape)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        raise LreError(f"{path}: not a CTranslate2 model file (or a truncated one)") from None
    return out


def _state_dict(v: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """transformers' ``WhisperEncoder`` names for CTranslate2's encoder variables."""
    sd = {"conv1.weight": v["encoder/conv1/weight"], "conv1.bias": v["encoder/conv1/bias"],
          "conv2.weight": v["encoder/conv2/weight"], "conv2.bias": v["encoder/conv2/bias"],
          "embed_positions.weight": v["encoder/position_encodings/encodings"],
          "layer_norm.weight": v["encoder/layer_norm/gamma"],
          "layer_norm.bias": v["encoder/layer_norm/beta"]}
    for i in range(layers):
        ct2, hf = f"encoder/layer_{i}/", f"layers.{i}."
        att, ffn = ct2 + "self_attention/", ct2 + "ffn/"
        # CTranslate2 fuses the query, key and value projections into one (key bias zero).
        q, k, val = np.split(v[att + "linear_0/weight"], 3)
        qb, _, vb = np.split(v[att + "linear_0/bias"], 3)
        sd.update({
            hf + "self_attn.q_proj.weight": q, hf + "self_attn.q_proj.bias": qb,
            hf + "self_attn.k_proj.weight": k,
            hf + "self_attn.v_proj.weight": val, hf + "self_attn.v_proj.bias": vb,
            hf + "self_attn.out_proj.weight": v[att + "linear_1/weight"],
            hf + "self_attn.out_proj.bias": v[att + "linear_1/bias"],
            hf + "self_attn_layer_norm.weight": v[att + "layer_norm/gamma"],
            hf + "self_attn_layer_norm.bias": v[att + "layer_norm/beta"],
            hf + "fc1.weight": v[ffn + "linear_0/weight"],
            hf + "fc1.bias": v[ffn + "linear_0/bias"],
            hf + "fc2.weight": v[ffn + "linear_1/weight"],
            hf + "fc2.bias": v[ffn + "linear_1/bias"],
            hf + "final_layer_norm.weight": v[ffn + "layer_norm/gamma"],
            hf + "final_layer_norm.bias": v[ffn + "layer_norm/beta"],
        })
    return sd


def load_whisper_encoder(model_bin: Path):
    """transformers' ``WhisperEncoder`` (float32, eval mode) with the encoder weights of a
    CTranslate2 Whisper ``model.bin``."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    v = read_ct2_variables(model_bin, "encoder/")
    try:
        layers = 1 + max(int(m.group(1)) for k in v if (m := re.match(r"encoder/layer_(\d+)/", k)))
        d_model, mels = v["encoder/conv1/weight"].shape[:2]
        config = WhisperConfig(
            num_mel_bins=int(mels), d_model=int(d_model), encoder_layers=layers,
            encoder_attention_heads=int(v["encoder/num_heads"]),
            encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
            max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]))
        sd = _state_dict(v, layers)
    except (KeyError, ValueError):
        raise LreError(f"{model_bin}: not the encoder of a CTranslate2 Whisper model") from None
    encoder = HFEncoder(config)
    encoder.load_state_dict({k: torch.from_numpy(a.astype(np.float32)) for k, a in sd.items()})
    return encoder.eval()


class WhisperLayersEncoder:
    """Encoder states of a CTranslate2 Whisper model at hidden state(s) ``options.layers()``:
    0 is the input embedding (convolutions and positions), ``i`` the output of layer ``i``,
    the last index the last layer after the encoder's final layer norm (what CTranslate2
    returns); several are averaged."""

    def __init__(self, options: EncoderOptions) -> None:
        try:
            import torch
            import transformers  # noqa: F401  (load_whisper_encoder's modules)
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError:
            raise LreError("the whisper front end needs faster-whisper and transformers: "
                           "pip install 'lre[whisper,encoders]'") from None
        model_dir, self.sha256 = resolve_model_dir(options.model, "whisper", "model.bin")
        self._torch = torch
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._encoder = load_whisper_encoder(model_dir / "model.bin").to(self._device)
        if options.threads:
            torch.set_num_threads(options.threads)
        self._layers = options.layers()
        self._layer_norm = options.layer_norm
        top = len(self._encoder.layers)
        bad = [i for i in self._layers if not 0 <= i <= top]
        if bad:
            raise LreError(f"--layer: {options.model} has hidden states 0..{top}, not {bad[0]}")
        self._mel = FeatureExtractor(feature_size=self._encoder.config.num_mel_bins)
        self.dim = int(self._encoder.config.d_model)

    def hidden_states(self, wave: np.ndarray, upto: int | None = None) -> list:
        """The hidden states ``(states, dim)`` of ``wave`` up to index ``upto`` (all when
        None): the input embedding, then each layer's output, the last one after the final
        layer norm. Layers above ``upto`` are not run. ``wave`` is zero-padded to whole
        20 ms states first, so there is one per ``num_states(len(wave))``."""
        enc, torch = self._encoder, self._torch
        top = len(enc.layers) if upto is None else upto
        wave = np.pad(wave, (0, num_states(len(wave)) * STATE_SAMPLES - len(wave)))
        mel = torch.from_numpy(np.ascontiguousarray(self._mel(wave, padding=0), np.float32))
        mel = mel.to(self._device)
        with torch.inference_mode():
            x = torch.nn.functional.gelu(enc.conv1(mel[None]))
            x = torch.nn.functional.gelu(enc.conv2(x)).transpose(1, 2)
            if x.shape[1] > enc.embed_positions.num_embeddings:
                raise LreError(f"a window of {x.shape[1]} states is longer than the encoder's "
                               f"{enc.embed_positions.num_embeddings}")
            x = x + enc.embed_positions.weight[: x.shape[1]]
            hidden = [x]
            for layer in enc.layers[:top]:
                x = layer(x, None)
                hidden.append(x)
            if top == len(enc.layers):
                hidden[-1] = enc.layer_norm(x)
        return [h[0].cpu() for h in hidden]

    def states(self, wave: np.ndarray, num_states: int) -> np.ndarray:
        hidden = self.hidden_states(wave, max(self._layers))
        x = mean_of_layers(hidden, self._layers, self._layer_norm)
        return np.ascontiguousarray(x[:num_states].numpy(), np.float32)
