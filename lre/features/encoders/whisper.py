"""Whisper encoder states through faster-whisper (CTranslate2): int8/fp32 on CPU, fp16 on GPU."""

from __future__ import annotations

import numpy as np

from lre.features.encoders import STATE_SAMPLES, EncoderOptions
from lre.pretrained import resolve_model_dir
from lre.utils import LreError

_HOP = 160  # Whisper's log-mel hop at 16 kHz: two mel frames per encoder state


class WhisperEncoder:
    """The last encoder layer of a CTranslate2 Whisper model (faster-whisper's layout:
    ``config.json``, ``model.bin``, ``tokenizer.json``, ``vocabulary.txt``)."""

    def __init__(self, options: EncoderOptions) -> None:
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
        except ImportError:
            raise LreError("the whisper front end needs faster-whisper: pip install "
                           "'lre[whisper]' (tools/setup.sh installs it)") from None
        model_dir, self.sha256 = resolve_model_dir(options.model, "whisper", "model.bin")
        device = options.device
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = options.compute_type
        if device == "cuda" and compute_type == "int8":
            compute_type = "int8_float16"
        threads = options.threads or _torch_threads()
        try:
            self._model = WhisperModel(str(model_dir), device=device, compute_type=compute_type,
                                       cpu_threads=threads, num_workers=1)
        except (RuntimeError, ValueError, OSError) as e:
            raise LreError(f"{model_dir}: cannot load the Whisper model ({e})") from None
        self._mel = self._model.feature_extractor
        self._views = ctranslate2.StorageView
        self._window_frames = options.window_samples // _HOP
        self._pad = options.pad_to_window
        self.dim = int(self._encode(np.zeros(2 * _HOP, np.float32)).shape[-1])

    def _encode(self, wave: np.ndarray) -> np.ndarray:
        mel = self._mel(wave, padding=0)
        if self._pad and mel.shape[1] < self._window_frames:
            # Whisper's own padding: silence (zeros) after the audio, then the log-mel of it all.
            mel = self._mel(np.pad(wave, (0, self._window_frames * _HOP - len(wave))), padding=0)
        view = self._views.from_array(np.ascontiguousarray(mel[None], np.float32))
        return np.asarray(self._model.model.encode(view, to_cpu=True))[0]

    def states(self, wave: np.ndarray, num_states: int) -> np.ndarray:
        # Zeros up to whole states: Whisper gives one state per two 10 ms mel frames.
        wave = np.pad(wave, (0, num_states * STATE_SAMPLES - len(wave)))
        return np.ascontiguousarray(self._encode(wave)[:num_states], np.float32)

    def detect_language(self, wave: np.ndarray, langs: list[str] | None = None
                        ) -> list[tuple[str, float]]:
        """Whisper's own language detection (a 30 s encoder pass and one decoder step):
        ``(language, probability)`` pairs, best first, restricted to ``langs`` and
        renormalised over them when given."""
        _, _, probs = self._model.detect_language(np.asarray(wave, np.float32))
        if langs is not None:
            probs = [(lang, p) for lang, p in probs if lang in set(langs)]
            total = sum(p for _, p in probs) or 1.0
            probs = [(lang, p / total) for lang, p in probs]
        return probs


def _torch_threads() -> int:
    try:
        import torch
        return max(1, torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a core dependency
        return 1

