"""The routes: one evaluation loop per kind of model, shared by every task.

- `probe`: frozen image features -> preprocess -> a probe per sub-task -> metric.
- `mllm`: the same sub-tasks and examples as prompts to a multimodal LLM.
- `text`: image features against a CLIP-style text tower (zero-shot classification, retrieval, re-ranking).

This module runs a route for one model on one task over several (n_train, seed)
experiments and turns each `TaskReport` into the store's `Report` (key, config,
provenance, fingerprints). Probe experiments share one embedding pass: each task's
images are embedded (or read from the cache) once for all its n_train and seed values.
Routes never write the database; the launcher (`biobench.runner`) does.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence

from biobench import provenance
from biobench.config import Config, Experiment
from biobench.evaluation import EvalContext
from biobench.examples import Examples
from biobench.store import ExperimentKey, Report
from biobench.tasks import get_task


def load_model(model, device: str):
    """The backbone of a cvml or zero-shot `model` (a `config.Model`), on `device`."""
    from biobench.backbones import load_vision_backbone

    return load_vision_backbone(model.org, model.ckpt, pretrained=model.pretrained).to(device)


def context(cfg: Config, key: ExperimentKey, device: str) -> EvalContext:
    """The experiment's context (n_train from its key: a task that ignores n_train is keyed at -1)."""
    s = cfg.settings
    return EvalContext(n_train=key.n_train, seed=key.seed, n_bootstrap=s.n_bootstrap, n_jobs=s.n_jobs, debug=s.debug, device=device)


def data_fingerprint(image_set_fp: str, examples: Examples) -> str:
    """A digest of the images (their cache keys) and of the examples table (labels, splits, sub-tasks)."""
    h = hashlib.sha256(image_set_fp.encode())
    h.update(examples.table.write_ndjson().encode())  # JSON: multi-label rows are lists
    return h.hexdigest()


def run_config(exp: Experiment, options, settings: dict, **route) -> dict:
    """What a stored report records about how it was run (the route adds its own part)."""
    return {"experiment": dataclasses.asdict(exp), "task": dataclasses.asdict(options), "settings": settings, **route}


def embedding_info(emb) -> dict:
    """What a stored report records about its image features: counts, the preprocessing path, per-stage seconds (with the
    batch size used), and how the backbone ran (`EmbedResult.extraction`: precision, channels-last, compile)."""
    return {
        "n_cached": emb.n_cached,
        "n_embedded": emb.n_embedded,
        "decode": emb.decode,
        "timings": emb.timings,
        "extraction": getattr(emb, "extraction", {}),
    }


def probe_reports(
    backbone,
    task_name: str,
    experiments: Sequence[Experiment],
    keys: Sequence[ExperimentKey],
    cfg: Config,
    examples: Examples | None = None,
) -> Iterator[Report]:
    """Embed the task's images once with `backbone`, then one Report per experiment as each is ready.

    `examples`: the task's data when the caller has read it already (to check it before loading a model)."""
    from biobench.routes import probe

    def evaluate(spec, options, examples, features, ctx, cache):
        return probe.evaluate(spec, options, examples, features, ctx), {}

    yield from _embedded_reports(backbone, task_name, experiments, keys, cfg, examples, evaluate)


def text_reports(
    backbone,
    task_name: str,
    experiments: Sequence[Experiment],
    keys: Sequence[ExperimentKey],
    cfg: Config,
    examples: Examples | None = None,
) -> Iterator[Report]:
    """The text route: embed the task's images once (cache first), its texts as asked (cache first), one Report per experiment."""
    from biobench.routes import text
    from biobench.text_embed import get_text_features

    counts = {"n_cached": 0, "n_embedded": 0}

    def evaluate(spec, options, examples, features, ctx, cache):
        def encode(texts):
            out = get_text_features(backbone, list(texts), cache, device=ctx.device, dataset=task_name)
            counts["n_cached"] += out.n_cached
            counts["n_embedded"] += out.n_encoded
            return out.features

        return text.evaluate(spec, options, examples, features, encode, ctx), {"texts": dict(counts)}

    yield from _embedded_reports(backbone, task_name, experiments, keys, cfg, examples, evaluate)


def with_skips(result, examples: Examples):
    """`result` with the reader's counted skips (`Examples.skipped`) added to its sub-scores' `skipped` (reason -> count)."""
    if not examples.skipped:
        return result
    mine = dict(result.sub_scores.get("skipped") or {})
    for reason, n in examples.skipped.items():
        mine[reason] = mine.get(reason, 0) + n
    return dataclasses.replace(result, sub_scores={**result.sub_scores, "skipped": mine})


def embed_settings(cfg: Config):
    """How a job embeds a task's images (the same in an evaluation job and in a shard job, so they share cache entries)."""
    from biobench.embed import EmbedSettings

    s = cfg.settings
    return EmbedSettings(
        s.resolved_device(), s.batch_size, s.n_workers, s.cache_keys, decode=s.decode, channels_last=s.channels_last, compile=s.compile
    )


def _embedded_reports(backbone, task_name, experiments, keys, cfg: Config, examples: Examples | None, evaluate) -> Iterator[Report]:
    """What the feature routes share: read (unless given), embed the images once (cache first), then per
    experiment `evaluate(spec, options, examples, features, ctx, cache) -> (TaskReport, extra embedding info)`."""
    from biobench.cache import FeatureCache
    from biobench.embed import get_features

    s = cfg.settings
    device = s.resolved_device()
    spec = get_task(task_name)
    options = cfg.task_options_for(task_name)
    examples = spec.read(options) if examples is None else examples
    cache = FeatureCache(s.resolved_cache_dir())
    emb = get_features(backbone, examples.images, cache, embed_settings(cfg))
    data_fp = data_fingerprint(emb.image_set_fingerprint, examples)
    seconds_embed = emb.seconds
    for exp, key in zip(experiments, keys, strict=True):
        result, extra = evaluate(spec, options, examples, emb.features, context(cfg, key, device), cache)
        yield Report(
            key,
            with_skips(result, examples),
            config=run_config(exp, options, {**dataclasses.asdict(s), "device": device}, embedding={**embedding_info(emb), **extra}),
            provenance=provenance.provenance(device),
            data_fingerprint=data_fp,
            backbone_fingerprint=emb.backbone_fingerprint,
            seconds_embed=seconds_embed,
        )
        seconds_embed = 0.0  # later experiments reuse the features in memory


def mllm_reports(
    client,
    task_name: str,
    experiments: Sequence[Experiment],
    keys: Sequence[ExperimentKey],
    cfg: Config,
    examples: Examples | None = None,
) -> Iterator[Report]:
    """One Report per experiment of an MLLM on the task, as each finishes (answers cached as they arrive)."""
    from biobench.routes import mllm

    s = cfg.settings
    spec = get_task(task_name)
    options = cfg.task_options_for(task_name)
    examples = spec.read(options) if examples is None else examples
    data_fp = data_fingerprint(examples.images.fingerprint(examples.images.keys(s.cache_keys)), examples)
    for exp, key in zip(experiments, keys, strict=True):
        spent = client.stats.spent_usd
        ctx = context(cfg, key, "api")
        result = spec.mllm(options, examples, client, ctx) if spec.mllm is not None else mllm.evaluate(spec, examples, client, ctx)
        yield Report(
            key,
            with_skips(result, examples),
            config=run_config(
                exp,
                options,
                dataclasses.asdict(s),
                mllm={"route": client.route, **dataclasses.asdict(client.spec), "spent_now_usd": client.stats.spent_usd - spent},
            ),
            provenance=provenance.provenance("api"),
            data_fingerprint=data_fp,
            prompting=exp.model.prompting,
        )
