"""HDR challenge baselines: frozen backbone features (through the harness) + a probe -> a submission folder.

As the challenge's BioCLIP-SVC and DINOv2-SGD baselines
(https://github.com/Imageomics/HDR-anomaly-challenge, `baselines/`), for any backbone
biobench can load: features of the training images come from `biobench.embed.get_features`
(so they are cached and reused), a probe from `biobench.challenge.classifier` is fit on
them, and the folder written is ready to zip and upload:

```
OUT/model.py          biobench.challenge.submission_model (the CodaBench Model class)
OUT/classifier.pkl    the fitted scikit-learn pipeline
OUT/metadata.json     backbone spec + fingerprint, precision, probe, versions, training counts
OUT/requirements.txt  packages the model needs (all satisfied in an image with biobench installed)
```
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import pickle
import shutil
from pathlib import Path

import numpy as np

from biobench import atomic
from biobench.challenge import classifier as classifier_mod
from biobench.challenge import data
from biobench.errors import DataError

SUBMISSION_FILES = ("model.py", "classifier.pkl", "metadata.json", "requirements.txt")
_ORG_PACKAGES = {"open-clip": ["open_clip_torch"], "timm": ["timm"], "torchvision": ["torchvision"]}


@dataclasses.dataclass(frozen=True)
class BaselineResult:
    out: Path
    n_train: int
    n_hybrid: int
    train_score: np.ndarray
    """What the submission's predict() gives each training image: its log-odds of hybrid (a sanity check)."""
    seconds_embed: float
    n_embedded: int
    """Images run through the backbone (0 when every feature came from the cache)."""


def train_baseline(
    model: str,
    train_csv: Path,
    images: Path,
    out: Path,
    *,
    classifier: classifier_mod.Kind = "svc",
    pretrained: bool = True,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    n_workers: int = 2,
    cache_dir: Path | None = None,
    overwrite: bool = False,
) -> BaselineResult:
    """Embed the training images with `model` (ORG:CKPT), fit `classifier`, write the submission folder `out`."""
    import sklearn
    import torch

    from biobench.backbones import load_vision_backbone
    from biobench.backbones.base import fingerprint
    from biobench.cache import FeatureCache
    from biobench.config import Model
    from biobench.embed import EmbedSettings, get_features, precision_label

    spec = Model.parse(model, pretrained=pretrained)
    out = Path(out)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out} already holds files (an earlier submission?); choose another --out, or pass --overwrite to replace them.")
    image_set = data.training_images(train_csv, images)
    y = data.labels(image_set)
    image_set.keys()  # missing image files fail now, naming them, before a large model loads
    backbone = load_vision_backbone(spec.org, spec.ckpt, pretrained=spec.pretrained).to(device)
    emb = get_features(backbone, image_set, FeatureCache(cache_dir), EmbedSettings(device, batch_size, n_workers))
    clf = classifier_mod.fit(classifier, emb.features, y, seed=seed, where=str(train_csv))

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("submission_model.py"), out / "model.py")
    atomic.write_bytes(out / "classifier.pkl", pickle.dumps(clf))
    meta = {
        "backbone": {"org": spec.org, "ckpt": spec.ckpt, "pretrained": spec.pretrained},
        "backbone_fingerprint": fingerprint(backbone),
        "precision": precision_label(torch.device(device)),
        "feature_dim": int(emb.features.shape[1]),
        "classifier": classifier,
        "seed": seed,
        "sklearn_version": sklearn.__version__,
        "biobench_version": importlib.metadata.version("biobench"),
        "train_csv": str(train_csv),
        "n_train": len(y),
        "n_hybrid": int(y.sum()),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    atomic.write_bytes(out / "metadata.json", (json.dumps(meta, indent=2) + "\n").encode())
    packages = ["torch", *_ORG_PACKAGES.get(spec.org, []), f"scikit-learn=={sklearn.__version__}", "pillow", "numpy"]
    requirements = (
        "# Installed by the challenge's ingestion program before model.py is imported.\n"
        "# biobench itself must be in the docker image (pip install biobench, or its wheel): model.py\n"
        "# builds the backbone through it, exactly as for the training features.\n" + "\n".join(packages) + "\n"
    )
    atomic.write_bytes(out / "requirements.txt", requirements.encode())
    return BaselineResult(out, len(y), int(y.sum()), classifier_mod.hybrid_score(clf, emb.features), emb.seconds, emb.n_embedded)
