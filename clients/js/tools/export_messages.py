"""Write the users' fixed sentences (vibeinsight/errors.py) to clients/js/src/messages.json.

The Python side keeps them in `vibeinsight.errors.MESSAGES`; the TypeScript client reads this
JSON copy. tests/test_client_js.py fails when the two disagree; run this to refresh the copy:

    .venv/bin/python clients/js/tools/export_messages.py
"""

from __future__ import annotations

import json
from pathlib import Path

from vibeinsight.errors import GENERIC, MESSAGES

TARGET = Path(__file__).resolve().parents[1] / "src" / "messages.json"


def exported() -> str:
    doc = {
        "_comment": "Generated from vibeinsight/errors.py by clients/js/tools/export_messages.py; do not edit.",
        "generic": {"en": GENERIC[0], "ja": GENERIC[1]},
        "codes": {code: {"en": en, "ja": ja} for code, (en, ja) in MESSAGES.items()},
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


if __name__ == "__main__":
    TARGET.write_text(exported(), encoding="utf-8")
    print(f"wrote {TARGET}")
