"""A chunk file decoded to 16 kHz mono float samples: faster-whisper's own decode_audio (PyAV), without the
full garbage collection it runs after every file.

faster-whisper collects after each decode because PyAV once kept a resampler alive until a collection
(SYSTRAN/faster-whisper#390). With PyAV 18 the resident size stays flat without it (400 decodes of a
10-s chunk: 75 MB throughout, measured here), while a full collection costs ~0.05 s in a run's engine
process and ~0.3 s in a process holding more objects, twice a chunk (its transcription and its speaker
embeddings). Young objects are still collected, as the interpreter's own collector would.
"""

from __future__ import annotations

import gc
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16_000  # what faster-whisper decodes to, and what the speaker embeddings take
_YOUNG_ONLY = SimpleNamespace(collect=lambda generation=2: gc.collect(0))


def decode_16k(path: Path | str) -> np.ndarray:
    """The samples of an audio file, mono at 16 kHz, as faster-whisper reads them."""
    import faster_whisper.audio as fw_audio  # heavy (PyAV, CTranslate2): kept off the import path

    fw_audio.gc = _YOUNG_ONLY  # the module's only use of gc is that collection
    return fw_audio.decode_audio(str(path), sampling_rate=SAMPLE_RATE)
