"""A backbone plugin for tests: pixel-stats that records every forward pass.

Loaded through a config's `plugins = [...]` (as users load their own backbones). When
BIOBENCH_TEST_COUNT_FILE is set, each forward pass appends its batch size to that file,
so tests can count forward passes even in a subprocess; BIOBENCH_TEST_LOAD_FILE counts
model loads the same way.
"""

import os

from biobench.backbones import register_vision_backbone
from biobench.backbones.builtin import PixelStats


class CountingPixelStats(PixelStats):
    def __init__(self, ckpt: str = "v1", *, pretrained: bool = True):
        super().__init__("pixel-stats")
        path = os.environ.get("BIOBENCH_TEST_LOAD_FILE")
        if path:
            with open(path, "a") as fd:
                fd.write(f"{ckpt}\n")

    def img_encode(self, batch):
        path = os.environ.get("BIOBENCH_TEST_COUNT_FILE")
        if path:
            with open(path, "a") as fd:
                fd.write(f"{len(batch)}\n")
        return super().img_encode(batch)


register_vision_backbone("counting", CountingPixelStats)
