"""The text route: text towers, the text-embedding cache, zero-shot classification and planning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from biobench import cli, report
from biobench.backbones import backbone_class, load_vision_backbone
from biobench.cache import FeatureCache
from biobench.errors import DataError
from biobench.evaluation import EvalContext
from biobench.routes import text
from biobench.tasks import get_task
from biobench.text_embed import get_text_features


def test_colour_clip_matches_colour_words_to_colours():
    clip = load_vision_backbone("builtin", "colour-clip")
    red, blue = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    red[:, 0], blue[:, 2] = 0.85, 0.85
    img = clip.img_encode(torch.cat([red, blue])).img_features
    txt = clip.txt_encode(["a red bird", "Parus caeruleus", "a bird"])
    sims = torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(txt, dim=1).T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
    assert torch.all(txt[2] == 0)  # no colour named: matches nothing
    assert backbone_class("builtin").has_text_tower("colour-clip")
    assert not backbone_class("builtin").has_text_tower("pixel-stats")
    assert not backbone_class("timm").has_text_tower("resnet18")
    assert backbone_class("open-clip").has_text_tower("ViT-B-16/openai")


def test_text_cache_is_keyed_by_exact_text_and_backbone(tmp_path, monkeypatch):
    clip = load_vision_backbone("builtin", "colour-clip")
    cache = FeatureCache(tmp_path)
    calls = []
    real = clip.txt_encode
    monkeypatch.setattr(clip, "txt_encode", lambda texts: calls.append(list(texts)) or real(texts))
    first = get_text_features(clip, ["red", "blue", "red"], cache)
    assert (first.n_encoded, first.n_cached) == (2, 0) and calls == [["red", "blue"]]
    np.testing.assert_allclose(np.linalg.norm(first.features, axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(first.features[0], first.features[2])
    again = get_text_features(clip, ["blue", "red", "Red"], cache)
    assert (again.n_encoded, again.n_cached) == (1, 2) and calls[-1] == ["Red"]  # case is part of the key
    np.testing.assert_array_equal(again.features[:2], first.features[[1, 0]])
    with pytest.raises(Exception, match="no text tower"):
        get_text_features(load_vision_backbone("builtin", "pixel-stats"), ["red"], cache)


def zero_shot(data, **options):
    spec = get_task("nabirds")
    opts = spec.options(data=data, **options)
    examples = spec.read(opts)
    clip = load_vision_backbone("builtin", "colour-clip")
    from biobench.embed import EmbedSettings, get_features

    feats = get_features(clip, examples.images, FeatureCache(data / "cache"), EmbedSettings(n_workers=0)).features

    def encode(texts):
        return get_text_features(clip, list(texts), FeatureCache(data / "cache")).features

    return spec, opts, examples, feats, encode


def test_zero_shot_with_colour_clip_beats_chance_and_shuffled_names_do_not(tmp_path):
    get_task("nabirds").fixture(tmp_path / "real")
    get_task("nabirds").fixture(tmp_path / "shuffled", shuffle_labels=True)
    spec, opts, ex, feats, encode = zero_shot(tmp_path / "real")
    good = text.evaluate(spec, opts, ex, feats, encode, EvalContext(n_bootstrap=200))
    assert good.score > 0.9 and good.ci_low > 0.5  # 5 classes: chance 0.2
    assert good.sub_scores["metrics"]["top5_accuracy"] == 1.0 and len(good.sub_scores["class"]) == 5
    assert all(len(i["top5"]) == 5 for i in good.example_info)
    bad = text.evaluate(*zero_shot(tmp_path / "shuffled"), EvalContext(n_bootstrap=200))
    assert bad.score < 0.5


@pytest.mark.parametrize("form", ["scientific", "common", "taxonomic", "taxonomic+common"])
def test_every_name_form_is_read_and_prompted(tmp_path, form):
    get_task("nabirds").fixture(tmp_path)
    spec, opts, ex, feats, encode = zero_shot(tmp_path, names=form, templates="single")
    names = ex.names("")
    assert len(names) == 5 and ("with common name" in names[0]) == form.endswith("+common")
    assert text.evaluate(spec, opts, ex, feats, encode, EvalContext(n_bootstrap=50)).score > 0.9


def test_class_names_that_do_not_match_the_labels_are_an_error(tmp_path):
    import dataclasses

    get_task("nabirds").fixture(tmp_path)
    spec, opts, ex, feats, encode = zero_shot(tmp_path)
    short = dataclasses.replace(ex, classnames={"": tuple(ex.names(""))[:3]})
    with pytest.raises(DataError, match="class-name list does not match the labels"):
        text.evaluate(spec, opts, short, feats, encode, EvalContext())
    blank = dataclasses.replace(ex, classnames={"": ("",) + tuple(ex.names(""))[1:]})
    with pytest.raises(DataError, match="empty name"):
        text.evaluate(spec, opts, blank, feats, encode, EvalContext())


def test_missing_name_column_and_missing_image_are_errors(tmp_path):
    get_task("nabirds").fixture(tmp_path)
    csv = tmp_path / "metadata.csv"
    lines = csv.read_text().splitlines()
    (tmp_path / "images" / "0003.jpg").unlink()
    with pytest.raises(DataError, match="0003.jpg"):
        get_task("nabirds").read(get_task("nabirds").options(data=tmp_path))
    csv.write_text("\n".join(line.rsplit(",", 9)[0] for line in lines) + "\n")  # only the index and filepath
    with pytest.raises(DataError, match="scientific_name"):
        get_task("nabirds").read(get_task("nabirds").options(data=tmp_path))


def config(tmp_path, data: dict, models: str) -> str:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 100\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n{models}\n[data]\n' + "\n".join(f'{k} = "{v}"' for k, v in data.items()) + "\n"
    )
    return str(path)


ZERO_SHOT = '[[models]]\norg = "builtin"\nckpt = "colour-clip"\nmethod = "zero-shot"\n\n'
PIXELS = '[[models]]\norg = "builtin"\nckpt = "pixel-stats"\nmethod = "zero-shot"\n\n'


def test_dry_run_shows_no_code_for_a_backbone_without_a_text_tower(tmp_path, capsys):
    get_task("nabirds").fixture(tmp_path / "nab")
    cfg = config(tmp_path, {"nabirds": tmp_path / "nab"}, ZERO_SHOT + PIXELS)
    assert cli.main(["run", cfg, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("no code") and "pixel-stats (zero-shot)" in line for line in out.splitlines()), out
    assert any(line.startswith("run") and "colour-clip (zero-shot)" in line for line in out.splitlines()), out


def test_a_second_run_embeds_no_image_and_no_text(tmp_path, monkeypatch):
    get_task("nabirds").fixture(tmp_path / "nab")
    cfg = config(tmp_path, {"nabirds": tmp_path / "nab"}, ZERO_SHOT)
    assert cli.main(["run", cfg]) == 0
    (tmp_path / "results" / "results.sqlite").unlink()  # the results go; the caches stay
    from biobench.backbones.builtin import ColourClip

    def no_forward(*_):
        raise AssertionError("a forward pass on a second run")

    monkeypatch.setattr(ColourClip, "img_encode", no_forward)
    monkeypatch.setattr(ColourClip, "txt_encode", no_forward)
    assert cli.main(["run", cfg]) == 0
    (row,) = report.load(tmp_path / "results" / "results.sqlite")
    stored = json.loads(row["config"])
    assert stored["embedding"]["n_embedded"] == 0 and stored["embedding"]["texts"]["n_embedded"] == 0
    assert stored["embedding"]["texts"]["n_cached"] > 0 and row["score"] > 0.9


def test_the_80_templates_are_open_clips_openai_imagenet_templates_in_order():
    """Against the installed open_clip's own list (callables: each applied to '{}' gives the template)."""
    metadata = pytest.importorskip("open_clip.zero_shot_metadata")
    theirs = tuple(f("{}") for f in metadata.OPENAI_IMAGENET_TEMPLATES)
    assert text.OPENAI_TEMPLATES == theirs and len(set(theirs)) == 80
