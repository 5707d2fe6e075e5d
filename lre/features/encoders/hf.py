"""Hugging Face transformers encoders: wav2vec2 / XLS-R / MMS / HuBERT / WavLM, and the
encoder of transformers' Whisper, from a local directory or a hub name."""

from __future__ import annotations

import numpy as np

from lre.features.encoders import SAMPLE_RATE, STATE_SAMPLES, EncoderOptions, mean_of_layers
from lre.pretrained import weights_sha256
from lre.utils import LreError

# wav2vec2-family convolutions: one state per 320 samples, each seeing 400 (25 ms).
_RECEPTIVE = 400


class TransformersEncoder:
    """Hidden states of a transformers speech encoder (one layer, or the mean of several)."""

    def __init__(self, options: EncoderOptions) -> None:
        try:
            import torch
            from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
        except ImportError:
            raise LreError("the transformers front end needs transformers: pip install "
                           "'lre[encoders]'") from None
        name = options.model
        try:
            config = AutoConfig.from_pretrained(name)
            self._extractor = AutoFeatureExtractor.from_pretrained(name)
            model = AutoModel.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise LreError(f"{name}: cannot load a transformers encoder ({e})") from None
        self._whisper = config.model_type == "whisper"
        self._model = (model.get_encoder() if self._whisper else model).eval()
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._model.to(self._device)
        self._layers = options.layers()
        self._layer_norm = options.layer_norm
        self._torch = torch
        self.sha256 = weights_sha256(name)
        self.dim = int(config.d_model if self._whisper else config.hidden_size)

    def _inputs(self, wave: np.ndarray, num_states: int) -> dict:
        if self._whisper:
            # transformers' Whisper encoder takes exactly 30 s of log-mel.
            feats = self._extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            return {"input_features": feats.input_features.to(self._device)}
        # Zeros to a whole number of states plus the first frame's extra context.
        padded = np.pad(wave, (0, num_states * STATE_SAMPLES + _RECEPTIVE - STATE_SAMPLES
                               - len(wave)))
        feats = self._extractor(padded, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        return {"input_values": feats.input_values.to(self._device)}

    def states(self, wave: np.ndarray, num_states: int) -> np.ndarray:
        with self._torch.inference_mode():
            out = self._model(**self._inputs(wave, num_states),
                              output_hidden_states=bool(self._layers))
        if self._layers:
            hidden = out.hidden_states
            bad = [i for i in self._layers if not -len(hidden) <= i < len(hidden)]
            if bad:
                raise LreError(f"--layer: the model has hidden states 0..{len(hidden) - 1}, "
                               f"not {bad[0]}")
            x = mean_of_layers(hidden, self._layers, self._layer_norm)
        else:
            x = out.last_hidden_state
        return np.ascontiguousarray(x[0, :num_states].float().cpu().numpy(), np.float32)
