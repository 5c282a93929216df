"""Zero-shot sets of BioCLIP 2 and BioCAP: NABirds, eight Meta-Album mini sets and IDLE-OO camera traps.

Gu, Stevens, Campolongo et al. "BioCLIP 2: Emergent properties from scaling hierarchical
contrastive learning." 2025 (https://github.com/Imageomics/bioclip-2, `src/evaluation/`), and
Zhang et al. "BioCAP" (https://github.com/Imageomics/biocap, `data/classification_annotation/`).
The images come from NABirds (Van Horn et al. CVPR 2015), Meta-Album (Ullah et al. NeurIPS
2022 Datasets and Benchmarks: FNG, INS, INS_2, MED_LF, PLK, PLT_DOC, PLT_NET, PLT_VIL, each
`_Mini`) and IDLE-OO Camera Traps (Imageomics, huggingface.co/datasets/imageomics/IDLE-OO-Camera-Traps,
five balanced LILA sets). One task per set, all read the same way.

Data layout (BioCLIP's annotation layout, `biobench.layouts.bioclip`):

```
DIR/metadata.csv        ,filepath,scientific_name,common_name,kingdom,phylum,cls,order,family,genus,species
DIR/<filepath>          the images (paths relative to DIR)
idle-oo-camera-traps:   DIR/<LILA set>-balanced.csv (ENA24, desert-lion, island, ohio-small-animals,
                        orinoquia), each its own sub-task ("set") with its own classes
```

Getting the data: the annotation CSVs are in the two repositories above; the images from each
source (`biobench download` does not fetch them yet). Place them as above.

Zero-shot protocol (the text route: `method = "zero-shot"` models): every row is a test image; class
names in the form `names` selects (BioCLIP's text types; default scientific + common, "Tamias
striatus with common name eastern chipmunk") in each template of `templates` (OpenAI's 80, or
one), averaged per class; top-1 by cosine similarity. Metric: accuracy (top-5 and per-class
accuracy in the sub-scores), interval by a class-stratified bootstrap.

Few-shot protocol (the probe route: `method = "cvml"` models, `n_train` = shots per class, 1 and
5 in BioCLIP 2; -1 runs 5): BioCLIP 2's SimpleShot over `folds` (5) seeded k-shot folds, each
class's other images the test set, from the same cached image features (`biobench.fewshot`).

Bad inputs, each a `DataError` naming the file and line:
a CSV missing, a column the name form needs missing, an empty name, an image not on disk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from biobench import fixtures
from biobench.examples import Examples
from biobench.layouts import missing_data
from biobench.layouts.bioclip import NameForm, read_metadata
from biobench.metrics import STRATIFIED_ACCURACY
from biobench.probes import SimpleShot
from biobench.tasks import register_task
from biobench.tasks.spec import TaskSpec

VERSION = 1
BIOCLIP2 = """@article{gu2025bioclip,
  title={{BioCLIP} 2: Emergent Properties from Scaling Hierarchical Contrastive Learning},
  author={Gu, Jianyang and Stevens, Samuel and Campolongo, Elizabeth G and Thompson, Matthew J and Zhang, Net and Wu, Jiaman and Kopanev, Andrei and Mai, Zheda and White, Alexander E and Balhoff, James and others},
  journal={arXiv preprint arXiv:2505.23883},
  year={2025}
}"""
SOURCES = {
    "nabirds": """@inproceedings{van2015building,
  title={Building a bird recognition app and large scale dataset with citizen scientists},
  author={Van Horn, Grant and Branson, Steve and Farrell, Ryan and Haber, Scott and Barry, Jessie and Ipeirotis, Panos and Perona, Pietro and Belongie, Serge},
  booktitle={CVPR},
  year={2015}
}""",
    "meta-album": """@inproceedings{meta-album-2022,
  title={Meta-Album: Multi-domain Meta-Dataset for Few-Shot Image Classification},
  author={Ullah, Ihsan and Carrion, Dustin and Escalera, Sergio and Guyon, Isabelle M and Huisman, Mike and Mohr, Felix and van Rijn, Jan N and Sun, Haozhe and Vanschoren, Joaquin and Vu, Phan Anh},
  booktitle={NeurIPS Datasets and Benchmarks Track},
  year={2022}
}""",
    "idle-oo": """@misc{idleoo2025,
  title={{IDLE-OO} Camera Traps},
  author={{Imageomics Institute}},
  howpublished={\\url{https://huggingface.co/datasets/imageomics/IDLE-OO-Camera-Traps}},
  year={2025}
}""",
}
SETS = {
    "nabirds": ("nabirds", "NABirds: 555 North American bird categories"),
    **{f"meta-album-{k.lower().replace('_', '-')}": ("meta-album", f"Meta-Album {k}_Mini") for k in
       ("FNG", "INS", "INS_2", "MED_LF", "PLK", "PLT_DOC", "PLT_NET", "PLT_VIL")},
    "idle-oo-camera-traps": ("idle-oo", "IDLE-OO camera traps: five balanced LILA sets"),
}  # fmt: skip
CAMERA_TRAP_SETS = ("ENA24", "desert-lion", "island", "ohio-small-animals", "orinoquia")


@dataclasses.dataclass(frozen=True)
class Options:
    data: Path = Path(".")
    """The set's folder: metadata.csv (or the camera traps' <set>-balanced.csv files) and the images."""
    names: NameForm = "scientific+common"
    """Which class name the prompts use: BioCLIP's text types."""
    templates: Literal["openai", "single"] = "openai"
    """Prompt templates: "openai" (the 80 of CLIP) or "single" ("a photo of {}.")."""
    folds: int = 5
    """Few-shot (probe route): seeded draws of the k-shot support sets (BioCLIP 2's nfold), each scored on the rest."""


def _csvs(name: str, data: Path) -> list[Path]:
    if name != "idle-oo-camera-traps":
        return [data / "metadata.csv"]
    found = sorted(data.glob("*-balanced.csv"))
    if not found:
        raise missing_data(name, data, data / "ENA24-balanced.csv")
    return found


def make_read(name: str):
    def read(options: Options) -> Examples:
        data = Path(options.data)
        return read_metadata(name, data, _csvs(name, data), options.names, subtasks=name == "idle-oo-camera-traps")

    return read


def make_fixture(name: str):
    def fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
        """Coloured taxa (every name form names the colour), 6 images each, in the real CSV layout."""
        rng, root = np.random.default_rng(seed), Path(root)
        sets = CAMERA_TRAP_SETS[:2] if name == "idle-oo-camera-traps" else ("",)
        for s, subset in enumerate(sets):
            taxa = fixtures.COLOURED_TAXA[s : s + 5]
            labels = np.repeat(np.arange(len(taxa)), 6)
            named = rng.permutation(labels) if shuffle_labels else labels
            lines = [",filepath,scientific_name,common_name,kingdom,phylum,cls,order,family,genus,species"]
            for i, (c, n) in enumerate(zip(labels, named)):
                _, genus, epithet, common, _ = taxa[n]
                path = f"{subset or 'images'}/{i:04d}.jpg"
                fixtures.save_jpeg(fixtures.colour_image(rng, taxa[c][4]), root / path)
                lines.append(f"{i},{path},{genus.lower()} {epithet},{common},animalia,chordata,aves,passeriformes,"
                             f"{genus.lower()}idae,{genus.lower()},{epithet}")  # fmt: skip
            csv = root / (f"{subset}-balanced.csv" if subset else "metadata.csv")
            csv.write_text("\n".join(lines) + "\n")

    return fixture


def make_few_shot(name: str):
    def few_shot(options: Options, examples: Examples, features, ctx):
        """BioCLIP 2's few-shot SimpleShot at n_train shots per class (`biobench.fewshot`)."""
        from biobench import fewshot

        return fewshot.evaluate(name, examples, features, ctx, n_folds=options.folds)

    return few_shot


for _name, (_source, _what) in SETS.items():
    register_task(TaskSpec(
        _name, VERSION, BIOCLIP2 + "\n" + SOURCES[_source], Options, make_read(_name), make_fixture(_name),
        routes=("text", "probe"), probe=SimpleShot(), evaluate=make_few_shot(_name), metric=STRATIFIED_ACCURACY,
        kind="classification",
    ))  # fmt: skip
