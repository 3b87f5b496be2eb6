"""OpenAI's transcription endpoint faked at the HTTP layer on 127.0.0.1 (the real openai SDK calls it).

Answers as https://platform.openai.com/docs/api-reference/audio documents: verbose_json (segments with
avg_logprob, no_speech_prob…) for whisper-1, json with logprobs and token usage for gpt-4o(-mini)-
transcribe, and errors as {"error": {message, type, param, code}}. Every request is recorded.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP

from tests.http_standin import HTTPStandin, QuietHandler


class FakeServer(HTTPStandin):
    """A threaded HTTP server; subclasses answer `handle(method, path, headers, body)`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.plan: list[tuple[int, dict, dict]] = []  # canned answers served first, in order
        self._release = threading.Event()
        self.delay_s = 0.0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                arrived = time.monotonic()
                body = self.read_body()
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    if outer.delay_s:  # a slow API on purpose: requests overlap
                        outer._release.wait(outer.delay_s)
                    status, headers, payload = outer.answer(self.command, self.path, dict(self.headers), body, arrived)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                self.send_body(status, json.dumps(payload, ensure_ascii=False).encode(), headers=headers)

        super().__init__(Handler)

    @property
    def delay_s(self) -> float:
        """How long each request is held before its answer. Setting it to 0 answers the held ones now:
        a test done holding calls (its run killed or cancelled) need not wait out their delay."""
        return self._delay_s

    @delay_s.setter
    def delay_s(self, seconds: float) -> None:
        self._delay_s = seconds
        if seconds:
            self._release.clear()
        else:
            self._release.set()

    def answer(self, method, path, headers, body, arrived: float) -> tuple[int, dict, dict]:
        record = self.record(method, path, headers, body)
        record["at"] = arrived  # when the request came in (monotonic): tests measure a client's wait with it
        with self.lock:
            self.requests.append(record)
            canned = self.plan.pop(0) if self.plan else None
        return canned or self.handle(record)

    def record(self, method, path, headers, body) -> dict:
        return {"method": method, "path": path, "headers": {k.lower(): v for k, v in headers.items()}, "body": body}

    def handle(self, record: dict) -> tuple[int, dict, dict]:
        raise NotImplementedError


def parse_multipart(headers: dict, body: bytes) -> dict:
    """Form fields (lists for repeated names) and the file part of a multipart/form-data body."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + body)
    fields: dict = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            fields[name] = {"filename": part.get_filename(), "content_type": part.get_content_type(),
                            "data": part.get_payload(decode=True)}
        else:
            fields.setdefault(name, []).append(part.get_payload(decode=True).decode())
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 and not k.endswith("[]") else v) for k, v in fields.items()}


def probe(data: bytes) -> dict:
    """codec and duration of the uploaded audio, as the real service would decode it."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration",
                              "-of", "json", f.name], capture_output=True, text=True)
    info = json.loads(out.stdout or "{}")
    streams = info.get("streams") or [{}]
    return {"codec": streams[0].get("codec_name"), "duration": float(info.get("format", {}).get("duration", 0) or 0)}


LANGUAGE_NAMES = {"ja": "japanese", "en": "english"}


class FakeOpenAI(FakeServer):
    """POST /v1/audio/transcriptions. `script` gives the words said per request (cycled)."""

    def __init__(self, script: list[str] | None = None, language: str = "ja"):
        super().__init__()
        self.script = script or ["本日の会議を始めます。", "次の議題は予算です。"]
        self.language = language

    def record(self, method, path, headers, body) -> dict:
        rec = super().record(method, path, headers, body)
        rec["form"] = parse_multipart(rec["headers"], body)
        f = rec["form"].get("file")
        rec["audio"] = probe(f["data"]) if f else {}
        return rec

    def handle(self, rec: dict) -> tuple[int, dict, dict]:
        form = rec["form"]
        if rec["path"] != "/v1/audio/transcriptions":
            return 404, {}, error("Not found", "invalid_request_error")
        if not rec["headers"].get("authorization", "").startswith("Bearer "):
            return 401, {}, error("You didn't provide an API key.", "invalid_request_error")
        if not rec["audio"].get("codec"):
            return 400, {}, error("Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', "
                                  "'mpga', 'oga', 'ogg', 'wav', 'webm']", "invalid_request_error")
        duration = rec["audio"]["duration"]
        text = self.script[(len(self.requests) - 1) % len(self.script)]
        if form.get("response_format") == "verbose_json":
            half = round(duration / 2, 2)
            parts = [text[: len(text) // 2], text[len(text) // 2:]]
            segments = [{"id": i, "seek": 0, "start": s, "end": e, "text": " " + t, "tokens": [50364, 2421, 1546],
                         "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.2, "no_speech_prob": 0.01}
                        for i, (s, e, t) in enumerate([(0.0, half, parts[0]), (half, round(duration, 2), parts[1])])]
            body = {"task": "transcribe", "language": LANGUAGE_NAMES.get(form.get("language", self.language), "japanese"),
                    "duration": duration, "text": text, "segments": segments,
                    "usage": {"type": "duration", "seconds": round(duration)}}
            if "word" in (form.get("timestamp_granularities[]") or []):  # documented shape: {word, start, end}
                tokens = text.split() if " " in text else list(text)
                step = duration / max(1, len(tokens))
                body["words"] = [{"word": w, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
                                 for i, w in enumerate(tokens)]
            return 200, {}, body
        body = {"text": text, "usage": {"type": "tokens", "input_tokens": 140, "input_token_details":
                                        {"text_tokens": 0, "audio_tokens": 140}, "output_tokens": 20, "total_tokens": 160}}
        if "logprobs" in (form.get("include[]") or []):
            body["logprobs"] = [{"token": c, "logprob": -0.1, "bytes": list(c.encode())} for c in text[:5]]
        return 200, {}, body


def error(message: str, type_: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def rate_limited(retry_after: str) -> tuple[int, dict, dict]:
    """A 429 with OpenAI's Retry-After header (seconds); "0" where the wait is not what a test is about."""
    return 429, {"retry-after": retry_after}, error(
        "Rate limit reached for whisper-1 in organization org-x on requests per min (RPM): Limit 50, Used 50, "
        "Requested 1. Please try again in 1.2s.", "requests", "rate_limit_exceeded")
