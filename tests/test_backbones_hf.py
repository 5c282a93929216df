"""The `hf` org: tiny random-init `transformers` models saved with save_pretrained (no network), loaded as `hf:DIR`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from biobench import cli, fastpath, report
from biobench.backbones import backbone_class, load_vision_backbone
from biobench.config import Model
from biobench.errors import BackboneError
from biobench.tasks import get_task

transformers = pytest.importorskip("transformers")
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def tiny_tokenizer():
    """A byte-level BPE CLIP tokenizer with no merges: every character is a token (built offline)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab |= {c: i + 2 for i, c in enumerate(chars)}
    vocab |= {c + "</w>": i + 2 + len(chars) for i, c in enumerate(chars)}
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    tok = tiny_tokenizer()
    ids = dict(vocab_size=len(tok), bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    clip = transformers.CLIPModel(transformers.CLIPConfig(text_config=TEXT | ids, vision_config=VISION, projection_dim=16))
    clip.save_pretrained(root / "clip")
    ip = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(root / "clip")
    siglip = transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT | ids | {"projection_size": 32}, vision_config=VISION))
    torch.nn.init.normal_(siglip.logit_bias)
    siglip.save_pretrained(root / "siglip")
    tok.save_pretrained(root / "siglip")
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "siglip")
    dino = transformers.Dinov2Model(transformers.Dinov2Config(**VISION))
    dino.save_pretrained(root / "dino")
    transformers.BitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
    ).save_pretrained(root / "dino")
    return {"clip": root / "clip", "siglip": root / "siglip", "dino": root / "dino"}


def images(*sizes):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


TEXTS = ["a red bird", "Tamias striatus with common name eastern chipmunk", "blue"]


@torch.inference_mode()
def test_clip_image_and_text_features_equal_a_direct_transformers_computation(models):
    ours = load_vision_backbone("hf", str(models["clip"]))
    model = transformers.AutoModel.from_pretrained(models["clip"])
    processor = transformers.AutoProcessor.from_pretrained(models["clip"])
    pics = images((40, 50), (64, 33))
    pixels = processor(images=pics, return_tensors="pt")["pixel_values"]
    batch = torch.stack([ours.make_img_transform()(p) for p in pics])
    torch.testing.assert_close(batch, pixels, rtol=0, atol=0)
    out = ours.img_encode(batch)
    torch.testing.assert_close(out.img_features, model.get_image_features(pixel_values=pixels).pooler_output)
    assert out.patch_features.shape == (2, 16, 32)  # the CLS token dropped
    tokens = processor.tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    torch.testing.assert_close(ours.txt_encode(TEXTS), model.get_text_features(**tokens).pooler_output)
    assert backbone_class("hf").has_text_tower(str(models["clip"]))
    assert float(ours.logit_scale) == float(model.logit_scale) and ours.logit_bias is None


@torch.inference_mode()
def test_siglip_pads_texts_to_the_full_context_and_exposes_its_bias(models):
    ours = load_vision_backbone("hf", str(models["siglip"]))
    model = transformers.AutoModel.from_pretrained(models["siglip"])
    tok = transformers.AutoTokenizer.from_pretrained(models["siglip"])
    texts = ["a red bird", "blue", "green finch"]  # all shorter than the context (16)
    full = tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert ours.tokenize(texts)["input_ids"].shape == (3, 16)
    torch.testing.assert_close(ours.txt_encode(texts), model.get_text_features(**full).pooler_output)
    # SigLIP pools the last position, so padding only to the longest text would give other embeddings.
    longest = model.get_text_features(**tok(texts, padding=True, return_tensors="pt")).pooler_output
    assert not torch.allclose(longest, ours.txt_encode(texts), atol=1e-3)
    pixels = transformers.AutoImageProcessor.from_pretrained(models["siglip"])(images=images((20, 90)), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours.img_encode(pixels).img_features, model.get_image_features(pixel_values=pixels).pooler_output)
    assert ours.logit_bias is not None and float(ours.logit_bias) == float(model.logit_bias) != 0.0


@torch.inference_mode()
def test_dinov2_features_are_the_normalised_cls_token_and_it_has_no_text_tower(models):
    ours = load_vision_backbone("hf", str(models["dino"]))
    model = transformers.AutoModel.from_pretrained(models["dino"])
    pixels = transformers.AutoImageProcessor.from_pretrained(models["dino"])(images=images((40, 50)), return_tensors="pt")["pixel_values"]
    out = ours.img_encode(pixels)
    hidden = model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(out.img_features, hidden[:, 0])  # pooler_output = final LayerNorm'ed CLS
    torch.testing.assert_close(out.patch_features, hidden[:, 1:])
    assert not backbone_class("hf").has_text_tower(str(models["dino"]))
    with pytest.raises(BackboneError, match="no text tower"):
        ours.txt_encode(["a bird"])


@pytest.mark.parametrize("name", ["clip", "dino", "siglip"])
def test_the_fast_path_replays_the_processor(models, name):
    """Resize, centre crop (anchored as transformers anchors it) and normalise on tensors equal the processor's output."""
    transform = load_vision_backbone("hf", str(models[name])).make_img_transform()
    plan = fastpath.plan(transform)
    assert isinstance(plan, fastpath.Plan), plan
    for pic in images((40, 50), (37, 64), (71, 36), (33, 33)):
        u8 = torch.from_numpy(np.asarray(pic)).permute(2, 0, 1).contiguous()
        fast = fastpath.normalise(fastpath.geometry(u8, plan, None)[None], plan)[0]
        torch.testing.assert_close(fast, transform(pic), rtol=0, atol=1e-5)
    if name == "dino":  # torchvision's half-to-even anchor is a pixel off where h - size is odd (71 -> 36 * 71 / 36)
        pic = images((36, 75))[0]
        u8 = torch.from_numpy(np.asarray(pic)).permute(2, 0, 1).contiguous()
        rounded = fastpath.Plan(
            tuple(fastpath.CenterCrop(g.size) if isinstance(g, fastpath.CenterCrop) else g for g in plan.geometry), plan.mean, plan.std
        )
        assert not torch.allclose(fastpath.normalise(fastpath.geometry(u8, rounded, None)[None], plan)[0], transform(pic), atol=1e-3)


def test_fast_and_exact_extraction_agree_through_the_engine(models, tmp_path):
    from biobench.cache import FeatureCache
    from biobench.embed import EmbedSettings, get_features

    get_task("nabirds").fixture(tmp_path / "nab")
    spec = get_task("nabirds")
    ims = spec.read(spec.options(data=tmp_path / "nab")).images
    clip = load_vision_backbone("hf", str(models["clip"]))
    out = {d: get_features(clip, ims, FeatureCache(tmp_path / d), EmbedSettings(n_workers=0, decode=d)) for d in ("exact", "fast")}
    assert out["fast"].timings["n_fast"] == len(ims)  # the processor's plan was used, no fallback
    a, b = (torch.nn.functional.normalize(torch.as_tensor(np.asarray(out[d].features)), dim=1) for d in ("exact", "fast"))
    assert (a * b).sum(1).min() > 0.9999


def test_experiment_keys_pin_a_local_folder_by_its_files_and_a_hub_id_by_its_cached_revision(models, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "copy"
    folder.mkdir()
    for f in models["dino"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    key = Model("hf", str(folder)).key_ckpt
    assert key.startswith(str(folder) + "#weights=")
    (folder / "preprocessor_config.json").write_text((folder / "preprocessor_config.json").read_text().replace("36", "40"))
    assert Model("hf", str(folder)).key_ckpt != key
    # A Hub id: the commit the local cache resolves (no network), else the name with a warning.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someorg--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text((models["clip"] / "config.json").read_text())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert Model("hf", "someorg/tiny-clip").key_ckpt == "someorg/tiny-clip#revision=0123456789ab"
    assert Model("hf", f"someorg/tiny-clip@{commit}").key_ckpt == f"someorg/tiny-clip@{commit}"
    assert backbone_class("hf").has_text_tower("someorg/tiny-clip")  # from the cached config
    with caplog.at_level(logging.WARNING, logger="biobench.weights"):
        assert Model("hf", "someorg/not-cached").key_ckpt == "someorg/not-cached"
    assert "not in the local Hugging Face cache" in caplog.text and "@COMMIT" in caplog.text


@torch.inference_mode()
def test_pretrained_false_is_a_seeded_random_initialisation_of_the_same_architecture(models):
    pixels = torch.zeros(2, 3, 32, 32).uniform_(generator=torch.Generator().manual_seed(0))
    saved = load_vision_backbone("hf", str(models["dino"])).img_encode(pixels).img_features
    first = load_vision_backbone("hf", str(models["dino"]), pretrained=False)
    again = load_vision_backbone("hf", str(models["dino"]), pretrained=False).img_encode(pixels).img_features
    torch.testing.assert_close(first.img_encode(pixels).img_features, again, rtol=0, atol=0)
    assert first.img_encode(pixels).img_features.shape == saved.shape and not torch.allclose(saved, again)
    assert Model("hf", str(models["dino"]), pretrained=False).key_ckpt.startswith(f"{models['dino']}#random-init#weights=")


def test_bad_checkpoints_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no config.json"):
        backbone_class("hf").check_ckpt(str(tmp_path / "empty"))
    with pytest.raises(BackboneError, match="not a folder"):
        backbone_class("hf").check_ckpt(str(tmp_path / "missing"))
    with pytest.raises(BackboneError, match="neither a local folder nor"):
        backbone_class("hf").check_ckpt("not a repo id")


def test_zero_shot_and_a_probe_task_run_end_to_end_and_a_second_run_embeds_nothing(models, tmp_path, monkeypatch, capsys):
    for name in ("nabirds", "plankton"):
        get_task(name).fixture(tmp_path / name)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'device = "cpu"\nn_workers = 0\nn_jobs = 1\nn_bootstrap = 50\nreport_to = "{tmp_path / "results"}"\n'
        f'cache_dir = "{tmp_path / "cache"}"\n\n'
        f'[[models]]\norg = "hf"\nckpt = "{models["clip"]}"\nmethod = "zero-shot"\n\n'
        f'[[models]]\norg = "hf"\nckpt = "{models["dino"]}"\nmethod = "zero-shot"\n\n'
        f'[[models]]\norg = "hf"\nckpt = "{models["dino"]}"\n\n'
        f'[data]\nnabirds = "{tmp_path / "nabirds"}"\nplankton = "{tmp_path / "plankton"}"\n'
    )
    assert cli.main(["run", str(cfg), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("no code") and "nabirds" in line and "dino" in line and "zero-shot" in line for line in lines), lines
    assert cli.main(["run", str(cfg)]) == 0
    rows = report.load(tmp_path / "results" / "results.sqlite")
    got = {(r["task"], r["model"].split("/")[-1].split("#")[0], r["method"]) for r in rows}
    assert {("nabirds", "clip", "zero-shot"), ("plankton", "dino", "cvml")} <= got, got
    assert all(np.isfinite(r["score"]) and r["model"].count("#weights=") == 1 for r in rows)
    (tmp_path / "results" / "results.sqlite").unlink()  # the results go; the caches stay
    from biobench.backbones.hf import HuggingFace

    def no_forward(*_):
        raise AssertionError("a forward pass on a second run")

    monkeypatch.setattr(HuggingFace, "img_encode", no_forward)
    monkeypatch.setattr(HuggingFace, "txt_encode", no_forward)
    assert cli.main(["run", str(cfg)]) == 0
    stored = [json.loads(r["config"])["embedding"] for r in report.load(tmp_path / "results" / "results.sqlite")]
    assert stored and all(e["n_embedded"] == 0 for e in stored)
