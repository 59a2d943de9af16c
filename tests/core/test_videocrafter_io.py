"""VideoCrafter at its edges: the I2V image preprocessing against the reference's own call
(kornia's antialiased bicubic resize, as ``FrozenOpenCLIPImageEmbedderV2.preprocess``), the
checkpoint converter, and the refusal of other models' weights."""

import pytest
import torch

from tools import convert_videocrafter
from tools.make_videocrafter_fixtures import randomize, tiny_unet_config
from videocrafter.configs import detect_variant
from videocrafter.image import CLIP_MEAN, CLIP_STD, clip_image_input, unconditional_image
from videocrafter.unet import VideoCrafterUNet

kornia = pytest.importorskip("kornia")


def _reference_preprocess(x: torch.Tensor) -> torch.Tensor:
    """The reference's preprocess, line for line with kornia (x in -1..1, [B, 3, H, W])."""
    x = kornia.geometry.resize(x, (224, 224), interpolation="bicubic", align_corners=True, antialias=True)
    x = (x + 1.0) / 2.0
    return kornia.enhance.normalize(x, torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD))


@pytest.mark.parametrize("size", [(320, 512), (576, 1024), (224, 224), (150, 500), (100, 90)])
def test_clip_input_matches_reference_preprocess(size):
    image = torch.rand(2, *size, 3, generator=torch.Generator().manual_seed(0))  # ComfyUI IMAGE, 0..1
    ours = clip_image_input(image)
    theirs = _reference_preprocess(image.movedim(-1, 1) * 2 - 1)
    assert ours.shape == (2, 3, 224, 224)
    assert (ours - theirs).abs().max().item() < 1e-5
    if max(size) > 224:  # without the antialiasing blur the downscale differs visibly
        plain = torch.nn.functional.interpolate(image.movedim(-1, 1), (224, 224), mode="bicubic", align_corners=True)
        plain = (plain - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        assert (plain - theirs).abs().max().item() > 1e-2


def test_unconditional_image_is_the_reference_zero_image():
    ours = clip_image_input(unconditional_image(1))
    theirs = _reference_preprocess(torch.zeros(1, 3, 224, 224))
    assert (ours - theirs).abs().max().item() < 1e-6


def _tiny_checkpoint(name: str) -> dict:
    unet = randomize(VideoCrafterUNet(tiny_unet_config(name)), 3)
    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    state["betas"] = torch.linspace(0, 1, 10)  # schedule buffers are dropped
    state["model_ema.decay"] = torch.tensor(0.999)
    state["first_stage_model.decoder.conv_out.weight"] = torch.randn(3, 4, 3, 3)
    return state


def test_convert_keeps_the_model_weights_under_upstream_names(tmp_path):
    from safetensors.torch import load_file

    state = _tiny_checkpoint("t2v-512-v2.0")
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, ckpt)
    out = tmp_path / "vc2.safetensors"
    convert_videocrafter.main([str(ckpt), str(out), "--dtype", "fp16"])
    written = load_file(str(out))
    assert "betas" not in written and "model_ema.decay" not in written
    assert written["first_stage_model.decoder.conv_out.weight"].dtype == torch.float16
    unet = {k: v for k, v in written.items() if k.startswith("model.diffusion_model.")}
    assert len(unet) == sum(k.startswith("model.diffusion_model.") for k in state)
    assert detect_variant(k[len("model.diffusion_model.") :] for k in unet).name == "t2v-512-v2.0"
    key = "model.diffusion_model.time_embed.0.weight"
    assert torch.equal(written[key], state[key].half())


def test_convert_refuses_a_stable_diffusion_checkpoint():
    sd15 = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "model.diffusion_model.time_embed.0.weight": torch.zeros(1280, 320),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": torch.zeros(320, 320),
    }
    with pytest.raises(ValueError, match="init_attn"):
        convert_videocrafter.convert(sd15)


def test_convert_never_unpickles_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Payload()}}, ckpt)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        convert_videocrafter.main([str(ckpt), str(tmp_path / "out.safetensors")])
