"""Evaluation of the model being trained through biobench's own text-route tasks (zero-shot, retrieval).

Every `eval_every` steps (and after the last step) rank 0 exports the chosen projector's head as an
open_clip `local-dir:` folder (RUN/eval/PROJECTOR/, overwritten each time), loads it through the
`open-clip` backbone exactly as `biobench run` would (`open-clip:local-dir:RUN/eval/tax`), and runs the
text route (`routes.text.evaluate`: the task's own retrieval evaluation, else zero-shot classification)
on each configured task. Image and text features go to a feature cache in a temporary folder removed
after the evaluation (each step's weights are new, so caching them would only fill the disk). The
result is one metrics row per evaluation: {'step', 'eval': {TASK: {'score', 'ci_low', 'ci_high',
'metric'}}}. Task data are read once per run and reused.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from biobench.errors import ConfigError

logger = logging.getLogger("biobench.train")


def parse_tasks(specs: tuple[str, ...]) -> dict[str, Path]:
    """'TASK=DATA_DIR' items -> {task: dir}; each task must exist and take the text route."""
    from biobench.tasks import get_task

    out: dict[str, Path] = {}
    for item in specs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"eval_tasks item {item!r} is not TASK=DATA_DIR (e.g. nabirds=/data/nabirds).")
        spec = get_task(name)
        if "text" not in spec.routes:
            raise ConfigError(f"eval_tasks: task {name!r} has no text route (zero-shot/retrieval); `biobench tasks` lists the routes.")
        if not Path(path).exists():
            raise ConfigError(f"eval_tasks: data folder {path} of task {name!r} does not exist.")
        out[name] = Path(path)
    return out


class Evaluator:
    """Runs the configured text-route tasks on an exported checkpoint; keeps the tasks' examples between calls."""

    def __init__(
        self, tasks: dict[str, Path], out: Path, *, projector: str = "tax", device: str = "cpu", n_bootstrap: int = 0, batch_size: int = 64
    ):
        from biobench.tasks import get_task

        self.out = Path(out)
        self.projector = projector
        self.device = device
        self.n_bootstrap = n_bootstrap
        self.batch_size = batch_size
        self.tasks = {}
        for name, data in tasks.items():
            spec = get_task(name)
            options = spec.options(data=data)
            self.tasks[name] = (spec, options, spec.read(options))

    def __call__(self, model, model_cfg: dict, step: int) -> dict:
        """Scores of `model` (a DualProjectionCLIP) at `step`: {'step', 'eval': {task: {...}}, 'eval_seconds'}.
        The global RNG states (torch, CUDA, Python, NumPy) are as they were: evaluating does not change training."""
        import random

        import numpy as np
        import torch

        start = time.perf_counter()
        was_training = model.training
        states = random.getstate(), np.random.get_state()
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        try:  # whatever the evaluation draws (the backbone loader forks torch's RNG already), training must not see it
            with torch.random.fork_rng(devices=devices):
                return self._evaluate(model, model_cfg, step, start)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            model.train(was_training)

    def _evaluate(self, model, model_cfg: dict, step: int, start: float) -> dict:
        from biobench.backbones import load_vision_backbone
        from biobench.cache import FeatureCache
        from biobench.embed import EmbedSettings, get_features
        from biobench.evaluation import EvalContext
        from biobench.routes import text
        from biobench.text_embed import get_text_features
        from biobench.train import model as model_mod

        folder = model_mod.export(model, model_cfg, self.out / "eval" / self.projector, self.projector)
        scores: dict[str, dict] = {}
        backbone = load_vision_backbone("open-clip", f"local-dir:{folder}").to(self.device)
        backbone.eval()
        with tempfile.TemporaryDirectory(prefix="biobench-train-eval-") as tmp:
            cache = FeatureCache(Path(tmp))
            settings = EmbedSettings(self.device, self.batch_size, n_workers=0)
            ctx = EvalContext(n_train=-1, seed=0, n_bootstrap=self.n_bootstrap, device=self.device)
            for name, (spec, options, examples) in self.tasks.items():
                feats = get_features(backbone, examples.images, cache, settings).features

                def encode(texts, name=name):
                    return get_text_features(backbone, list(texts), cache, device=self.device, dataset=name).features

                rep = text.evaluate(spec, options, examples, feats, encode, ctx)
                scores[name] = {"score": rep.score, "ci_low": rep.ci_low, "ci_high": rep.ci_high, "metric": rep.metric}
                logger.info("Step %d: %s %s = %.4f", step, name, rep.metric, rep.score)
        return {"step": step, "eval": scores, "eval_seconds": time.perf_counter() - start}
