"""A backbone plugin for executor tests: pixel-stats that waits at its first forward pass while a gate file exists.

BIOBENCH_TEST_GATE names the file (inherited by worker processes and submitit jobs), so a
test can hold a job mid-run, kill it there, then let the others go by deleting the file.
A job held there says so with a file GATE.waiting.JOB (JOB: its Slurm job id as submitit
writes it, e.g. 12_3, else its process id).
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
        if gate and os.path.exists(gate):
            array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
            job = f"{array[0]}_{array[1]}" if all(array) else os.environ.get("SLURM_JOB_ID", str(os.getpid()))
            open(f"{gate}.waiting.{job}", "w").close()
        while gate and os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.1)
        return super().img_encode(batch)


register_vision_backbone("gated", GatedPixelStats)
