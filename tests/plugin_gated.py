"""A backbone plugin for executor tests: pixel-stats that waits at its first forward pass while a gate file exists.

BIOBENCH_TEST_GATE names the file (inherited by worker processes and submitit jobs), so a
test can hold a job mid-run, kill it there, then let the others go by deleting the file.
"""

import os
import time

from biobench.backbones import register_vision_backbone
from biobench.backbones.builtin import PixelStats


class GatedPixelStats(PixelStats):
    def __init__(self, ckpt: str = "v1", *, pretrained: bool = True):
        super().__init__("pixel-stats")

    def img_encode(self, batch):
        gate = os.environ.get("BIOBENCH_TEST_GATE")
        deadline = time.monotonic() + 90
        while gate and os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.1)
        return super().img_encode(batch)


register_vision_backbone("gated", GatedPixelStats)
