"""Tests for the open_clip, timm and torchvision backbone adapters, and for user backbones.

Everything runs offline: networks are randomly initialised (`pretrained=False`), or built
from weights files written to tmp_path, or (for the download-failure messages) asked for
pretrained weights with the hub switched off. Every check compares the adapter's output
with what the underlying library itself computes, on a separate reference model where
that matters, so that a broken adapter cannot agree with itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import biobench
from biobench.backbones import base, fingerprint, list_vision_backbones, load_vision_backbone
from biobench.errors import BackboneError


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Two RGB images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), mode="RGB"),
        Image.fromarray(rng.integers(0, 256, (90, 64, 3), dtype=np.uint8), mode="RGB"),
    ]


def make_batch(backbone, images) -> torch.Tensor:
    transform = backbone.make_img_transform()
    return torch.stack([transform(img) for img in images])


def assert_same_weights(module: torch.nn.Module, expected: dict[str, torch.Tensor], *, ignore=()) -> None:
    got = module.state_dict()
    keys = {k for k in expected if not k.startswith(tuple(ignore))}
    assert keys <= set(got), sorted(keys - set(got))
    for key in keys:
        assert torch.equal(got[key], expected[key]), key


def capture_input(module: torch.nn.Module) -> list[torch.Tensor]:
    """Record what a module receives on each forward call."""
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    return seen


########
# timm #
########


def test_timm_vit_random_init_cls_and_patches(images):
    import timm

    backbone = load_vision_backbone("timm", "vit_tiny_patch16_224", pretrained=False)
    assert backbone.name == "timm:vit_tiny_patch16_224#random-init"
    assert not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())

    # The transform is timm's own eval transform for this model.
    own = timm.data.create_transform(**timm.data.resolve_data_config({}, model=backbone.model), is_training=False)
    x = make_batch(backbone, images)
    assert x.shape == (2, 3, 224, 224)
    assert torch.equal(x, torch.stack([own(img) for img in images]))

    out = backbone.img_encode(x)
    assert out.img_features.shape == (2, 192)
    assert out.patch_features is not None and out.patch_features.shape == (2, 196, 192)
    tokens = backbone.model.forward_features(x)  # (2, 1 + 196, 192): CLS then patches
    assert tokens.shape == (2, 197, 192)
    torch.testing.assert_close(out.img_features, tokens[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(out.patch_features, tokens[:, 1:], rtol=0, atol=0)
    assert not torch.equal(out.img_features[0], out.img_features[1])


def test_timm_cnn_uses_pooled_pre_logits(images):
    backbone = load_vision_backbone("timm", "resnet18", pretrained=False)
    x = make_batch(backbone, images)
    out = backbone.img_encode(x)
    assert out.img_features.shape == (2, 512)
    assert out.patch_features is None
    model = backbone.model
    expected = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(out.img_features, expected, rtol=0, atol=0)
    # The head was built with num_classes=0, so the full forward is the same vector.
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_timm_random_init_is_seeded_by_loader():
    rng_before = torch.random.get_rng_state()
    torch.manual_seed(1)
    first = load_vision_backbone("timm", "vit_tiny_patch16_224", pretrained=False)
    torch.manual_seed(2)  # a different global seed must not change the network
    second = load_vision_backbone("timm", "vit_tiny_patch16_224", pretrained=False)
    assert_same_weights(second.model, first.model.state_dict())
    assert fingerprint(first) == fingerprint(second)
    # The loader forks the RNG: loading leaves the caller's random stream alone.
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    load_vision_backbone("timm", "resnet18", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.random.set_rng_state(rng_before)


def test_timm_unknown_model_suggests_close_names():
    with pytest.raises(BackboneError, match="timm has no model 'vit_tiny_patch16_22'") as info:
        load_vision_backbone("timm", "vit_tiny_patch16_22", pretrained=False)
    assert "vit_tiny_patch16_224" in str(info.value)


@pytest.mark.parametrize(("suffix", "pretrained"), [(".safetensors", True), (".pth", False)])
def test_timm_local_weights_file(tmp_path, images, suffix, pretrained):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=0).eval()
    state = source.state_dict()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)

    backbone = load_vision_backbone("timm", f"vit_tiny_patch16_224@{path}", pretrained=pretrained)
    assert backbone.ckpt == f"vit_tiny_patch16_224@{path}"
    assert_same_weights(backbone.model, state)
    random_init = load_vision_backbone("timm", "vit_tiny_patch16_224", pretrained=False)
    assert fingerprint(backbone) != fingerprint(random_init)

    x = make_batch(backbone, images)
    with torch.no_grad():
        expected = source.forward_features(x)[:, 0]
    torch.testing.assert_close(backbone.img_encode(x).img_features, expected)


def test_timm_missing_local_file(tmp_path):
    with pytest.raises(BackboneError, match="not a file"):
        load_vision_backbone("timm", f"vit_tiny_patch16_224@{tmp_path / 'missing.safetensors'}", pretrained=False)


###############
# torchvision #
###############


def test_torchvision_resnet18_head_removed(images):
    from torchvision import models

    backbone = load_vision_backbone("torchvision", "resnet18", pretrained=False)
    assert isinstance(backbone.model.fc, torch.nn.Identity)
    assert repr(backbone.make_img_transform()) == repr(models.ResNet18_Weights.DEFAULT.transforms())

    x = make_batch(backbone, images)
    assert x.shape == (2, 3, 224, 224)
    out = backbone.img_encode(x)
    assert out.img_features.shape == (2, 512)
    assert out.patch_features is None

    # Reference: torchvision's own resnet18 with the same trunk; its classifier's input.
    ref = models.resnet18().eval()
    missing, unexpected = ref.load_state_dict(backbone.model.state_dict(), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    fc_input = capture_input(ref.fc)
    with torch.no_grad():
        ref(x)
    torch.testing.assert_close(out.img_features, fc_input[0])


def test_torchvision_mobilenet_drops_only_last_linear(images):
    from torchvision import models

    backbone = load_vision_backbone("torchvision", "mobilenet_v3_small", pretrained=False)
    assert repr(backbone.make_img_transform()) == repr(models.MobileNet_V3_Small_Weights.DEFAULT.transforms())
    x = make_batch(backbone, images)
    out = backbone.img_encode(x)

    ref = models.mobilenet_v3_small().eval()
    ref.load_state_dict(backbone.model.state_dict(), strict=False)
    last_linear = ref.classifier[-1]
    assert isinstance(last_linear, torch.nn.Linear)
    last_input = capture_input(last_linear)
    with torch.no_grad():
        ref(x)
    assert out.img_features.shape == (2, last_linear.in_features) == (2, 1024)
    torch.testing.assert_close(out.img_features, last_input[0])


@pytest.mark.parametrize(("pretrained", "wrapped"), [(True, False), (False, True)])
def test_torchvision_local_weights(tmp_path, images, pretrained, wrapped):
    from torchvision import models

    torch.manual_seed(99)
    source = models.resnet18().eval()
    state = source.state_dict()
    path = tmp_path / "state.pth"
    torch.save({"state_dict": state} if wrapped else state, path)

    backbone = load_vision_backbone("torchvision", f"resnet18@{path}", pretrained=pretrained)
    assert_same_weights(backbone.model, state, ignore=("fc.",))
    assert fingerprint(backbone) != fingerprint(load_vision_backbone("torchvision", "resnet18", pretrained=False))

    x = make_batch(backbone, images)
    fc_input = capture_input(source.fc)
    with torch.no_grad():
        source(x)
    torch.testing.assert_close(backbone.img_encode(x).img_features, fc_input[0])


def test_torchvision_unknown_arch_lists_close_matches():
    with pytest.raises(BackboneError, match="torchvision has no classification model 'resnet19'") as info:
        load_vision_backbone("torchvision", "resnet19", pretrained=False)
    assert "resnet18" in str(info.value)


def test_torchvision_unknown_weights_lists_choices():
    with pytest.raises(BackboneError, match="no weights 'IMAGENET1K_V9'") as info:
        load_vision_backbone("torchvision", "resnet50/IMAGENET1K_V9", pretrained=False)
    assert "IMAGENET1K_V1" in str(info.value) and "IMAGENET1K_V2" in str(info.value)


def test_torchvision_pretrained_without_weights_name_explains_syntax():
    with pytest.raises(BackboneError, match="names no weights") as info:
        load_vision_backbone("torchvision", "resnet18", pretrained=True)
    msg = str(info.value)
    assert "resnet18/WEIGHTS" in msg and "IMAGENET1K_V1" in msg
    assert "resnet18@/path/to/state_dict.pth" in msg and "pretrained = false" in msg


def test_torchvision_model_without_linear_head_names_checkpoint():
    # SqueezeNet classifies with a conv; the adapter cannot strip it and must say which model.
    with pytest.raises(BackboneError, match=r"classifier head of torchvision:squeezenet1_0 "):
        load_vision_backbone("torchvision", "squeezenet1_0", pretrained=False)


def test_torchvision_offline_download_error(monkeypatch, tmp_path):
    import torchvision.models._api as tv_api

    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", no_network)

    with pytest.raises(BackboneError) as info:
        load_vision_backbone("torchvision", "resnet18/IMAGENET1K_V1", pretrained=True)
    assert calls and calls[0].endswith(".pth"), calls  # torchvision really tried to fetch the weights
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    msg = str(info.value)
    assert "torchvision:resnet18/IMAGENET1K_V1" in msg and "no network" in msg
    assert "machine with network access" in msg
    assert "get_model('resnet18', weights='IMAGENET1K_V1')" in msg
    assert "$TORCH_HOME" in msg
    assert "torchvision:resnet18@/path/to/state_dict.pth" in msg


#############
# open_clip #
#############

TINY_CLIP = "biobench-test-tiny-vit"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """Register a tiny open_clip architecture (32 px, 2x2 patches of 16 px) and return its name."""
    import open_clip

    path = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(path)
    assert TINY_CLIP in open_clip.list_models()
    return TINY_CLIP


def reference_clip(arch: str, state: dict[str, torch.Tensor]):
    """open_clip's own model for `arch`, holding `state`."""
    import open_clip

    model = open_clip.create_model(arch).eval()
    model.load_state_dict(state)
    return model


def test_open_clip_random_init_image_and_text(tiny_clip, images):
    import open_clip

    backbone = load_vision_backbone("open-clip", tiny_clip, pretrained=False)
    _, _, own_preprocess = open_clip.create_model_and_transforms(tiny_clip)
    assert repr(backbone.make_img_transform()) == repr(own_preprocess)

    x = make_batch(backbone, images)
    assert x.shape == (2, 3, 32, 32)
    out = backbone.img_encode(x)
    ref = reference_clip(tiny_clip, backbone.model.state_dict())
    with torch.no_grad():
        expected = ref.encode_image(x)  # unnormalised
        ref.visual.output_tokens = True
        _, expected_tokens = ref.visual(x)
    assert out.img_features.shape == (2, 32)
    torch.testing.assert_close(out.img_features, expected)
    assert out.patch_features is not None and out.patch_features.shape == (2, 4, 64)
    torch.testing.assert_close(out.patch_features, expected_tokens)

    texts = ["a bird", "a plant"]
    txt = backbone.txt_encode(texts)
    assert txt.shape == (2, 32)
    with torch.no_grad():
        expected_txt = ref.encode_text(open_clip.get_tokenizer(tiny_clip)(texts))
    torch.testing.assert_close(txt, expected_txt)
    assert not torch.equal(txt[0], txt[1])
    assert torch.equal(backbone.logit_scale, ref.logit_scale)

    again = load_vision_backbone("open-clip", tiny_clip, pretrained=False)
    assert fingerprint(again) == fingerprint(backbone)


@pytest.mark.parametrize("pretrained", [True, False])
@pytest.mark.parametrize("form", ["@", "/"])
def test_open_clip_local_weights(tiny_clip, tmp_path, images, form, pretrained):
    import open_clip

    torch.manual_seed(4321)
    source = open_clip.create_model(tiny_clip).eval()
    state = source.state_dict()
    path = tmp_path / "file.pt"
    torch.save(state, path)

    ckpt = f"{tiny_clip}{form}{path}"  # ARCH@/abs/file.pt or ARCH//abs/file.pt
    assert ckpt.count("//") == (form == "/")
    backbone = load_vision_backbone("open-clip", ckpt, pretrained=pretrained)
    assert_same_weights(backbone.model, state)
    assert fingerprint(backbone) != fingerprint(load_vision_backbone("open-clip", tiny_clip, pretrained=False))

    x = make_batch(backbone, images)
    with torch.no_grad():
        expected = source.encode_image(x)
    torch.testing.assert_close(backbone.img_encode(x).img_features, expected)


def test_open_clip_missing_local_file(tiny_clip, tmp_path):
    for pretrained in (True, False):
        with pytest.raises(BackboneError, match="is not a file"):
            load_vision_backbone("open-clip", f"{tiny_clip}@{tmp_path / 'missing.pt'}", pretrained=pretrained)


def test_open_clip_unknown_arch_suggests_close_names():
    with pytest.raises(BackboneError, match="open-clip has no architecture 'ViT-B-61'") as info:
        load_vision_backbone("open-clip", "ViT-B-61/openai", pretrained=False)
    assert "ViT-B-16" in str(info.value)


def test_open_clip_pretrained_without_tag_lists_tags():
    import open_clip

    with pytest.raises(BackboneError, match="names no weights") as info:
        load_vision_backbone("open-clip", "ViT-B-16", pretrained=True)
    msg = str(info.value)
    for tag in open_clip.list_pretrained_tags_by_model("ViT-B-16"):
        assert tag in msg
    assert "ARCH@/path/to/weights" in msg and "pretrained = false" in msg


def test_open_clip_unknown_tag():
    with pytest.raises(BackboneError, match="no pretrained tag 'not-a-tag' for ViT-B-16") as info:
        load_vision_backbone("open-clip", "ViT-B-16/not-a-tag", pretrained=True)
    assert "laion2b_s34b_b88k" in str(info.value)


####################################
# Offline pretrained-weight errors #
####################################

OFFLINE_CKPTS = [
    ("timm", "vit_tiny_patch16_224", "timm:vit_tiny_patch16_224@/path/to/model.safetensors"),
    ("open-clip", "ViT-B-32/openai", "open-clip:ARCH@/path/to/open_clip_pytorch_model.bin"),
    ("open-clip", "hf-hub:imageomics/bioclip", "open-clip:ARCH@/path/to/open_clip_pytorch_model.bin"),
]

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from biobench.backbones import load_vision_backbone
    results = []
    for org, ckpt in json.loads(sys.argv[1]):
        try:
            load_vision_backbone(org, ckpt, pretrained=True)
            results.append({"type": None, "message": "loaded without error"})
        except Exception as err:
            results.append({"type": f"{type(err).__module__}.{type(err).__qualname__}", "message": str(err)})
    print("RESULTS=" + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def offline_results(tmp_path_factory) -> list[dict]:
    """Ask for pretrained weights in a fresh process with the hub switched off and an empty cache.

    A subprocess, because huggingface_hub reads HF_HUB_OFFLINE at import time; without it,
    an unreachable hub is retried for most of a minute.
    """
    home = tmp_path_factory.mktemp("offline")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "TORCH_HOME": str(home / "torch"),
        "XDG_CACHE_HOME": str(home / "xdg"),
    }
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    cases = json.dumps([[org, ckpt] for org, ckpt, _ in OFFLINE_CKPTS])
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT, cases], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS=")][-1]
    return json.loads(line.removeprefix("RESULTS="))


@pytest.mark.parametrize("index", range(len(OFFLINE_CKPTS)), ids=[f"{o}:{c}" for o, c, _ in OFFLINE_CKPTS])
def test_offline_pretrained_error_tells_how_to_predownload(offline_results, index):
    org, ckpt, local_form = OFFLINE_CKPTS[index]
    result = offline_results[index]
    assert result["type"] == "biobench.errors.BackboneError", result
    msg = result["message"]
    assert f"Could not fetch the weights of {org}:{ckpt}" in msg
    assert "download them once on a machine with network access" in msg
    assert f"import {'timm' if org == 'timm' else 'open_clip'}" in msg  # the pre-download command
    assert "$HF_HOME" in msg and "HF_HUB_OFFLINE=1" in msg
    assert local_form in msg


##########################
# User-defined backbones #
##########################


class _TinyCustom(biobench.VisionBackbone):
    def __init__(self, ckpt: str, *, pretrained: bool = True):
        super().__init__()
        self.built_with = (ckpt, pretrained)
        self.proj = torch.nn.Linear(3, 5)

    def img_encode(self, batch):
        return biobench.EncodedImgBatch(self.proj(batch.mean(dim=(2, 3))), None)

    def make_img_transform(self):
        from torchvision.transforms import v2

        return v2.Compose([v2.Resize((8, 8)), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


class _WrongShape(_TinyCustom):
    def img_encode(self, batch):
        return biobench.EncodedImgBatch(torch.zeros(batch.shape[0], 3, 4), None)


class _WrongPatches(_TinyCustom):
    def img_encode(self, batch):
        return biobench.EncodedImgBatch(torch.zeros(batch.shape[0], 4), torch.zeros(batch.shape[0], 4))


@pytest.fixture
def register(monkeypatch):
    """Register orgs for one test only."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    return biobench.register_vision_backbone


def test_custom_backbone_registers_and_loads(register, images):
    register("test-custom", _TinyCustom)
    assert "test-custom" in list_vision_backbones()
    backbone = load_vision_backbone("test-custom", "anything", pretrained=False)
    assert isinstance(backbone, _TinyCustom)
    assert backbone.built_with == ("anything", False)
    assert (backbone.org, backbone.ckpt, backbone.name) == ("test-custom", "anything", "test-custom:anything#random-init")
    assert not backbone.training and not backbone.proj.weight.requires_grad

    x = make_batch(backbone, images)
    out = backbone.img_encode(x)
    assert out.img_features.shape == (2, 5) and out.patch_features is None
    torch.testing.assert_close(out.img_features, backbone.proj(x.mean(dim=(2, 3))))
    assert len(fingerprint(backbone)) == 64


def test_custom_backbone_wrong_shapes_raise(register, images):
    register("test-custom", _WrongShape)
    backbone = load_vision_backbone("test-custom", "anything")
    x = make_batch(backbone, images)
    with pytest.raises(BackboneError, match=r"img_features of shape \(batch, dim\); got torch.Size\(\[2, 3, 4\]\)"):
        backbone.img_encode(x)

    register("test-custom", _WrongPatches)
    with pytest.raises(BackboneError, match="patch_features of shape"):
        load_vision_backbone("test-custom", "anything").img_encode(x)


def test_register_rejects_non_backbones(register):
    with pytest.raises(TypeError):
        register("test-custom", torch.nn.Linear)
    with pytest.raises(ValueError):
        register("bad:org", _TinyCustom)
