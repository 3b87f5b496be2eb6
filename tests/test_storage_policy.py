"""The runs' S3 grants, declared once (blocks.storage.run_prefixes), as the IAM policy operators attach
(`vibeinsight storage policy`): the same prefixes SeaweedFS enforces in test_storage_least_privilege."""

from __future__ import annotations

import pytest

from blocks.storage import RESULTS_PREFIX, WORKSPACE_PREFIX, run_prefixes, runs_policy

pytestmark = pytest.mark.unit


def test_the_runs_write_only_their_own_output_and_read_the_uploads():
    granted = run_prefixes(["uploads/", "incoming/"])
    assert granted["write"] == [RESULTS_PREFIX, WORKSPACE_PREFIX]
    assert set(granted["read"]) == {"uploads/", "incoming/", RESULTS_PREFIX, WORKSPACE_PREFIX}


def test_the_iam_policy_names_exactly_those_prefixes():
    policy = runs_policy("vibeinsight-audio", ["uploads/"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["RunsRead"]["Action"] == ["s3:GetObject"]
    assert sorted(by_sid["RunsRead"]["Resource"]) == sorted(
        f"arn:aws:s3:::vibeinsight-audio/{p}*" for p in ("uploads/", RESULTS_PREFIX, WORKSPACE_PREFIX))
    assert by_sid["RunsWrite"]["Resource"] == [f"arn:aws:s3:::vibeinsight-audio/{p}*"
                                               for p in (RESULTS_PREFIX, WORKSPACE_PREFIX)]
    assert "s3:PutObject" in by_sid["RunsWrite"]["Action"] and all(
        s["Effect"] == "Allow" and "s3:ListBucket" not in s["Action"] for s in policy["Statement"])
