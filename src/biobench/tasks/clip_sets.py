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

Getting the data (`biobench download NAME --dir DIR`):

- `idle-oo-camera-traps`: fetched. The five CSVs from BioCAP's repository
  (`data/classification_annotation/camera_trap/`), then every image a CSV lists from LILA's
  public bucket (its `url_gcp` column, md5-checked against `hashsum_original`), saved at its
  `filepath`; files already there are kept, failures are counted and listed, and a rerun
  fetches only what is missing. (LILA's originals, not IDLE-OO's resized PNGs: the images
  differ in size, which a backbone's own resize removes.)
- `nabirds`: the Cornell Lab hands NABirds out after a form, so the download prints the steps
  and the layout (`DataError`).
- `meta-album-*`: printed steps too: each mini set comes from the Meta-Album site as one zip.

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
from biobench.download import Resource, fetch_many, manual_steps, md5sum
from biobench.errors import DataError
from biobench.examples import Examples
from biobench.layouts import missing_data
from biobench.layouts.bioclip import NameForm, read_metadata
from biobench.layouts.tables import read_csv
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
_BIOCAP = "https://raw.githubusercontent.com/Imageomics/biocap/main/data/classification_annotation/camera_trap"
CAMERA_TRAP_RESOURCES = tuple(
    Resource(f"{_BIOCAP}/{s}-balanced.csv", f"{s}-balanced.csv", None, (f"{s}-balanced.csv",), extract=False) for s in CAMERA_TRAP_SETS
)
"""The camera traps' annotation CSVs (BioCAP publishes no md5); their images follow (`fetch_camera_trap_images`)."""
META_ALBUM = "https://meta-album.github.io/"


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


def fetch_camera_trap_images(root: Path) -> None:
    """Every image the camera-trap CSVs list, from its `url_gcp` into DIR/<filepath>, md5-checked (`hashsum_original`)."""
    root = Path(root)
    jobs = []
    for csv in _csvs("idle-oo-camera-traps", root):
        df = read_csv("idle-oo-camera-traps", root, csv, ("url_gcp", "filepath", "hashsum_original"))
        bad = df.filter(df["url_gcp"].is_null() | df["filepath"].is_null())
        if bad.height:
            raise DataError(f"idle-oo-camera-traps: {csv} line {bad['_line'][0]} has no url_gcp or filepath; fix or remove the row.")
        jobs += [(u, root / f, m or None) for u, f, m in zip(df["url_gcp"], df["filepath"], df["hashsum_original"])]
    fetch_many("idle-oo-camera-traps images", jobs, workers=8)


def manual_download(name: str):
    def download(root: Path) -> None:
        if (Path(root) / "metadata.csv").is_file():
            return  # laid out by hand already: `read` checks every listed image
        if name == "nabirds":
            raise manual_steps(
                name, root, "the Cornell Lab hands NABirds out only after a form accepting its terms",
                ["Fill in the form at https://dl.allaboutbirds.org/nabirds and download nabirds.tar.gz from the link it sends.",
                 "tar -xzf nabirds.tar.gz -C {dir} (it unpacks as nabirds/images/<class id>/<image>.jpg)",
                 "Copy BioCLIP 2's NABirds metadata.csv (github.com/Imageomics/bioclip-2 or github.com/Imageomics/biocap, "
                 "data/classification_annotation/nabirds/) to {dir}/metadata.csv.",
                 "Make the CSV's filepath column resolve under {dir}: move or link the images so {dir}/<filepath> exists."],
                "  {dir}/metadata.csv   ,filepath,scientific_name,common_name,kingdom,phylum,cls,order,family,genus,species\n"
                "  {dir}/<filepath>     every image the CSV lists",
            )  # fmt: skip
        code = SETS[name][1].split()[-1]
        raise manual_steps(
            name, root, f"biobench has no stable address for the Meta-Album {code} archive",
            [f"Open {META_ALBUM}, find {code} and download its Mini version (a zip of images/ and labels.csv).",
             "unzip it into {dir}.",
             f"Copy BioCLIP 2's metadata.csv for {code} (github.com/Imageomics/bioclip-2 or github.com/Imageomics/biocap, "
             "data/classification_annotation/meta-album/) to {dir}/metadata.csv.",
             "Make the CSV's filepath column resolve under {dir}: move or link the images so {dir}/<filepath> exists."],
            "  {dir}/metadata.csv   ,filepath,scientific_name,common_name,kingdom,phylum,cls,order,family,genus,species\n"
            "  {dir}/<filepath>     every image the CSV lists",
        )  # fmt: skip

    return download


def make_fixture(name: str):
    def fixture(root: Path, *, seed: int = 0, shuffle_labels: bool = False) -> None:
        """Coloured taxa (every name form names the colour), 6 images each, in the real CSV layout."""
        rng, root = np.random.default_rng(seed), Path(root)
        sets = CAMERA_TRAP_SETS[:2] if name == "idle-oo-camera-traps" else ("",)
        for s, subset in enumerate(sets):
            taxa = fixtures.COLOURED_TAXA[s : s + 5]
            labels = np.repeat(np.arange(len(taxa)), 6)
            named = rng.permutation(labels) if shuffle_labels else labels
            # The camera traps' CSVs (BioCAP's) start with LILA's image URLs and end with md5s; the others are BioCLIP 2's.
            lila = "url_gcp,image_id," if subset else ","
            lines = [f"{lila}filepath,scientific_name,common_name,kingdom,phylum,cls,order,family,genus,species"
                     + (",uuid,hashsum_original" if subset else "")]  # fmt: skip
            for i, (c, n) in enumerate(zip(labels, named)):
                _, genus, epithet, common, _ = taxa[n]
                path = f"{subset or 'images'}/{i:04d}.jpg"
                fixtures.save_jpeg(fixtures.colour_image(rng, taxa[c][4]), root / path)
                first = (
                    f"https://storage.googleapis.com/public-datasets-lila/{subset}/images/{i}.jpg,{subset} : {i}," if subset else f"{i},"
                )
                lines.append(f"{first}{path},{genus.lower()} {epithet},{common},animalia,chordata,aves,passeriformes,"
                             f"{genus.lower()}idae,{genus.lower()},{epithet}"
                             + (f",{i:04d},{md5sum(root / path)}" if subset else ""))  # fmt: skip
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
    _cameras = _name == "idle-oo-camera-traps"
    register_task(TaskSpec(
        _name, VERSION, BIOCLIP2 + "\n" + SOURCES[_source], Options, make_read(_name), make_fixture(_name),
        routes=("text", "probe"), probe=SimpleShot(), evaluate=make_few_shot(_name), metric=STRATIFIED_ACCURACY,
        kind="classification",
        resources=CAMERA_TRAP_RESOURCES if _cameras else (),
        download=fetch_camera_trap_images if _cameras else manual_download(_name),
    ))  # fmt: skip
