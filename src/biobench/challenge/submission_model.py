"""HDR challenge submission written by `biobench challenge baseline`: a frozen backbone plus a probe.

This file is copied as `model.py` into the submission folder, next to

- `metadata.json`: the backbone (`org`, `ckpt`, `pretrained`), its fingerprint at training
  time, the numeric precision the training features were computed in, the probe and the
  scikit-learn version that pickled it,
- `classifier.pkl`: the fitted scikit-learn pipeline (StandardScaler + probe),
- `requirements.txt`: the Python packages the backbone and probe need.

The CodaBench contract: `Model()`, then `load()`, then `predict(PIL.Image) -> float`
(higher = more likely hybrid; here the log-odds of hybrid, which never saturate). The environment needs biobench installed (it builds the backbone exactly as
it did for training features), plus torch and, for the backbone's org, open_clip_torch,
timm or torchvision, and the scikit-learn version in metadata.json. Set
`BIOBENCH_DEVICE` (e.g. `cuda`) to choose the device; by default CUDA when available.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Model:
    def __init__(self):
        self.meta = json.loads((HERE / "metadata.json").read_text())
        self.backbone = None
        self.clf = None

    def load(self) -> None:
        import sklearn
        import torch

        from biobench.backbones import load_vision_backbone
        from biobench.backbones.base import fingerprint

        spec = self.meta["backbone"]
        self.device = os.environ.get("BIOBENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        backbone = load_vision_backbone(spec["org"], spec["ckpt"], pretrained=spec["pretrained"])
        if fingerprint(backbone) != self.meta["backbone_fingerprint"]:
            warnings.warn(
                f"{spec['org']}:{spec['ckpt']} loaded here differs from the one the classifier was trained on "
                "(weights or preprocessing changed); predictions may be off.",
                stacklevel=2,
            )
        self.backbone = backbone.to(self.device)
        self.transform = backbone.make_img_transform()
        # Training features on CUDA were computed under bf16/fp16 autocast; match them.
        precision = self.meta.get("precision", "fp32")
        self.autocast = None
        if self.device.startswith("cuda") and precision != "fp32":
            self.autocast = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        if sklearn.__version__ != self.meta["sklearn_version"]:
            warnings.warn(
                f"classifier.pkl was written by scikit-learn {self.meta['sklearn_version']}, this is {sklearn.__version__}.",
                stacklevel=2,
            )
        with open(HERE / "classifier.pkl", "rb") as fd:
            self.clf = pickle.load(fd)

    def predict(self, image) -> float:
        import torch

        from biobench.challenge.classifier import hybrid_score

        x = self.transform(image.convert("RGB")).unsqueeze(0).to(self.device)
        with torch.inference_mode():
            if self.autocast is not None:
                with torch.autocast("cuda", dtype=self.autocast):
                    feats = self.backbone.img_encode(x).img_features
            else:
                feats = self.backbone.img_encode(x).img_features
        feats = feats.float().cpu().numpy().astype("float64")
        return float(hybrid_score(self.clf, feats)[0])  # log-odds: keeps its order where P(hybrid) rounds to 1
