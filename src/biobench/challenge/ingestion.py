"""Ingestion program of the HDR butterfly hybrid-detection challenge: run a submission over images.

The CodaBench contract (https://github.com/Imageomics/HDR-anomaly-challenge): a
submission is a folder (zipped for upload) whose `model.py` defines `class Model` with
`load()` (read weights from the folder) and `predict(image: PIL.Image.Image) -> float`
(higher = more likely a hybrid). Ingestion imports `model.py`, builds `Model()`, calls
`load()` once, then `predict` on every image of a flat folder, and writes
`predictions.txt`: one `filename,score` line per image.

Details this implementation fixes:

- images are the folder's `.jpg` / `.jpeg` / `.png` files in any letter case, in sorted
  order (names may contain spaces; other files are listed and ignored);
- `predict` gets an RGB image, fully decoded;
- an unreadable image is skipped with a warning and counted (the scoring program then
  reports it as missing if it is in the reference);
- a submission that fails to import, build, load or predict stops ingestion with an error
  naming its `model.py` and, for `predict`, the image;
- scores are written at full precision (the original rounded to 4 decimals, creating
  ties), to a temporary file renamed into place at the end, so a crash never leaves a
  `predictions.txt` that looks complete.

Only the standard library and Pillow are imported here, so the CodaBench bundle ships this
file unchanged as `ingestion_program/ingestion.py`
(`python3 ingestion.py INPUT_DIR OUTPUT_DIR PROGRAM_DIR SUBMISSION_DIR`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from PIL import Image, UnidentifiedImageError

try:
    from biobench.errors import BiobenchError, DataError
except ImportError:  # copied alone into a CodaBench bundle, where biobench is not installed

    class BiobenchError(Exception):  # type: ignore[no-redef]
        """An error the user can fix."""

    class DataError(BiobenchError):  # type: ignore[no-redef]
        """Input data that cannot be used."""


logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PREDICTIONS = "predictions.txt"


class SubmissionError(BiobenchError):
    """A submission's model.py failed (import, Model(), load() or predict())."""


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """What one ingestion run did."""

    predictions: Path
    """The predictions file written."""
    n_scored: int
    """Images with a score."""
    skipped: tuple[str, ...]
    """Image files that could not be decoded (not scored)."""
    ignored: tuple[str, ...]
    """Files that are not images by their extension (not scored)."""
    seconds_load: float
    seconds_predict: float


def list_images(images_dir: Path) -> tuple[list[Path], list[str]]:
    """(image files of a flat folder in sorted order, names of other files ignored)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"Image folder not found: {images_dir}.")
    images, ignored = [], []
    for path in sorted(images_dir.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or not path.is_file():
            continue  # .DS_Store, sub-folders such as __MACOSX
        (images if path.suffix.lower() in IMAGE_SUFFIXES else ignored).append(path)
    return images, [p.name for p in ignored]


def install_requirements(submission_dir: Path) -> None:
    """`pip install -r requirements.txt` if the submission has one (the CodaBench contract)."""
    req = Path(submission_dir) / "requirements.txt"
    if req.is_file():
        logger.info("Installing the submission's %s", req)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-r", str(req)])


def load_submission(submission_dir: Path):
    """Import `submission_dir/model.py`, build `Model()` and call `load()`; returns the model."""
    submission_dir = Path(submission_dir).resolve()
    model_py = submission_dir / "model.py"
    if not model_py.is_file():
        raise SubmissionError(
            f"No model.py in {submission_dir}. A submission folder needs model.py defining class Model "
            "with load() and predict(image) -> float."
        )
    # The submission may import helper modules that sit next to its model.py.
    if str(submission_dir) not in sys.path:
        sys.path.insert(0, str(submission_dir))
    name = f"submission_model_{hashlib.sha1(str(model_py).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, model_py)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise _crash(model_py, "importing it", err) from err
    cls = getattr(module, "Model", None)
    if not isinstance(cls, type):
        raise SubmissionError(f"{model_py} defines no class Model; the challenge calls Model().load() and Model.predict(image).")
    try:
        model = cls()
    except Exception as err:
        raise _crash(model_py, "Model()", err) from err
    try:
        model.load()
    except Exception as err:
        raise _crash(model_py, "Model.load()", err) from err
    if not callable(getattr(model, "predict", None)):
        raise SubmissionError(f"{model_py}: Model has no predict(image) method.")
    return model


def _crash(model_py: Path, what: str, err: BaseException) -> SubmissionError:
    logger.debug("Submission traceback:\n%s", "".join(traceback.format_exception(err)))
    # The innermost frame inside the submission's folder is where its author should look.
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve().is_relative_to(model_py.parent)]
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else ""
    return SubmissionError(
        f"Submission {model_py} crashed in {what}{where}: {type(err).__name__}: {err}. "
        "Run with BIOBENCH_LOG=DEBUG to see the whole traceback."
    )


def ingest(submission_dir: Path, images_dir: Path, out_dir: Path) -> IngestResult:
    """Run the submission in `submission_dir` on every image in `images_dir`; write `out_dir/predictions.txt`."""
    images, ignored = list_images(images_dir)
    if ignored:
        logger.warning(
            "Ignoring %d file(s) in %s that are not .jpg/.jpeg/.png images: %s", len(ignored), images_dir, ", ".join(ignored[:5])
        )
    start = time.perf_counter()
    model = load_submission(submission_dir)
    seconds_load = time.perf_counter() - start
    model_py = Path(submission_dir).resolve() / "model.py"

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / PREDICTIONS
    tmp = out_dir / f".{PREDICTIONS}.tmp{os.getpid()}"
    skipped: list[str] = []
    start = time.perf_counter()
    last_log = start
    try:
        with open(tmp, "w", encoding="utf-8") as fd:
            for i, path in enumerate(images):
                try:
                    with Image.open(path) as raw:
                        img = raw.convert("RGB")
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                    logger.warning("Skipping unreadable image %s: %s", path, err)
                    skipped.append(path.name)
                    continue
                try:
                    value = model.predict(img)
                except Exception as err:
                    raise _crash(model_py, f"predict() on image {path.name!r} ({path})", err) from err
                fd.write(f"{path.name},{_as_score(value, model_py, path)!r}\n")
                if time.perf_counter() - last_log > 30:
                    last_log = time.perf_counter()
                    logger.info("%d / %d images scored", i + 1, len(images))
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds_predict = time.perf_counter() - start
    n_scored = len(images) - len(skipped)
    if skipped:
        logger.warning("%d of %d image(s) could not be read and have no score: %s", len(skipped), len(images), ", ".join(skipped[:5]))
    logger.info("Scored %d image(s) in %.1fs (model load %.1fs); wrote %s", n_scored, seconds_predict, seconds_load, final)
    return IngestResult(final, n_scored, tuple(skipped), tuple(ignored), seconds_load, seconds_predict)


def _as_score(value, model_py: Path, path: Path) -> float:
    """A submission's return value as a finite float (numpy scalars, 1-element arrays and tensors accepted)."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise SubmissionError(
            f"Submission {model_py}: predict() on image {path.name!r} returned {value!r}; it must return one number."
        ) from None
    if not math.isfinite(score):
        raise SubmissionError(f"Submission {model_py}: predict() on image {path.name!r} returned {score}; scores must be finite.")
    return score


def codabench_main(argv: list[str]) -> int:
    """`ingestion.py INPUT_DIR OUTPUT_DIR PROGRAM_DIR SUBMISSION_DIR` (CodaBench's call)."""
    if len(argv) != 4:
        print("usage: ingestion.py INPUT_DIR OUTPUT_DIR PROGRAM_DIR SUBMISSION_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level="INFO", format="%(levelname)s: %(message)s")
    input_dir, output_dir, _program_dir, submission_dir = map(Path, argv)
    try:
        install_requirements(submission_dir)
        result = ingest(submission_dir, input_dir, output_dir)
    except BiobenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{result.n_scored} images scored, {len(result.skipped)} unreadable, {len(result.ignored)} ignored")
    return 0


if __name__ == "__main__":
    sys.exit(codabench_main(sys.argv[1:]))
