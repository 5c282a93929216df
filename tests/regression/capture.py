"""The port-regression record: every stored number of NeWT, Ages and hybrids on their fixtures.

`python -m tests.regression.capture OUT.json` runs one config over the three fixtures
(builtin:pixel-stats on every task at several n_train and seeds, plus the test MLLM
server on NeWT and Ages) and writes each experiment's score, interval, n_train_actual,
sub-scores and every prediction. `pre_port.json` was written this way at commit 1db6cc6,
before the task layer was rebuilt; `tests/test_regression_port.py` runs the same function
on the current code and demands identical values.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
from pathlib import Path


def capture(work: Path, mllm_url: str) -> dict:
    from biobench import config, runner
    from biobench.store import Store
    from biobench.tasks import ages, hybrids, newt

    newt.make_fixture(work / "newt", seed=0)
    ages.make_fixture(work / "ages", seed=0)
    hybrids.make_fixture(work / "hybrids", seed=0)
    body = f"""
        device = "cpu"
        n_workers = 0
        n_jobs = 1
        n_bootstrap = 300
        report_to = "{work / "results"}"
        cache_dir = "{work / "cache"}"
        n_train = [-1, 8]
        seeds = [0, 1]

        [[models]]
        org = "builtin"
        ckpt = "pixel-stats"

        [[models]]
        org = "local"
        ckpt = "test-vlm"
        method = "mllm"
        base_url = "{mllm_url}"
        context_tokens = 100000
        max_rps = 500.0
        parallel = 8

        [data]
        newt = "{work / "newt"}"
        ages = "{work / "ages"}"
        hybrids = "{work / "hybrids"}"
        """
    path = work / "capture.toml"
    path.write_text(textwrap.dedent(body))
    summary = runner.run(config.load(path))
    assert summary.failed == 0, summary.errors
    out = {}
    with Store(work / "results" / "results.sqlite") as store:
        for row in store.rows():
            key = f"{row['task']}|{row['method']}|{row['n_train']}|{row['seed']}"
            preds = store.predictions(row["id"])
            out[key] = {
                "metric": row["metric"],
                "score": row["score"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "n_train_actual": row["n_train_actual"],
                "n_test": row["n_test"],
                "sub_scores": json.loads(row["sub_scores"]),
                "predictions": sorted([i, s, info] for i, s, info in preds),
            }
    return out


def main(argv: list[str]) -> int:
    from tests.mllm_server import shared_server

    server = shared_server()
    with tempfile.TemporaryDirectory() as tmp:
        result = capture(Path(tmp), server.url)
    Path(argv[0]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(result)} experiments written to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
