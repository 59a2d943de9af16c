"""Library side of the second reliability pass (the host tests drive the same code through
ComfyUI): config types, JSON files, safetensors extensions, integer weights, video batches and
codec ranges."""

from __future__ import annotations

import json
import shutil

import av
import pytest
import torch

from cogvideox import frames as fr
from cogvideox.configs import VARIANTS, TransformerConfig, VAEConfig
from cogvideox.loading import CogVideoXLoadError, load_transformer, save_safetensors
from cogvideox.transformer import CogVideoXTransformer
from cogvideox.video_io import crf_problems, write_video

TINY = TransformerConfig(num_attention_heads=2, attention_head_dim=8, time_embed_dim=16, text_embed_dim=8,
                         num_layers=1, sample_height=4, sample_width=4, sample_frames=5)


def test_released_configs_round_trip_through_json():
    for variant in VARIANTS.values():
        data = json.loads(json.dumps(variant.transformer.to_dict()))
        assert TransformerConfig.from_dict(data) == variant.transformer
    assert VAEConfig.from_dict(json.loads(json.dumps(VAEConfig().to_dict()))) == VAEConfig()


@pytest.mark.parametrize(
    ("data", "words"),
    [({"num_layers": "two"}, "num_layers='two' (expected int)"),
     ({"sample_width": 1.5}, "sample_width=1.5"),
     ({"use_rotary_positional_embeddings": "yes"}, "use_rotary_positional_embeddings='yes' (expected bool)"),
     ({"num_attention_heads": True}, "num_attention_heads=True")],
)
def test_config_values_of_the_wrong_type_are_named(data, words):
    with pytest.raises(TypeError, match="wrong type") as err:
        TransformerConfig.from_dict(data)
    assert words in str(err.value)


def _folder(tmp_path, config_text: str | None):
    torch.manual_seed(0)
    folder = tmp_path / "transformer"
    folder.mkdir()
    save_safetensors(CogVideoXTransformer(TINY), folder / "diffusion_pytorch_model.safetensors", TINY)
    if config_text is not None:
        (folder / "config.json").write_text(config_text)
    return folder


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "is empty"), ('{"num_layers": 1,', "is not valid JSON"), ("[1, 2]", "expected a JSON object"),
     ('{"num_layers": "one"}', "num_layers='one'")],
    ids=["empty", "cut-short", "not-an-object", "wrong-type"],
)
def test_broken_config_json_is_a_load_error_naming_the_file(tmp_path, text, words):
    folder = _folder(tmp_path, text)
    with pytest.raises(CogVideoXLoadError) as err:
        load_transformer(folder)
    assert words in str(err.value) and "config.json" in str(err.value)


def test_sft_file_loads_like_safetensors(tmp_path):
    folder = _folder(tmp_path, None)
    sft = tmp_path / "model.sft"
    shutil.copyfile(folder / "diffusion_pytorch_model.safetensors", sft)
    model, _ = load_transformer(sft)
    assert model.config == TINY


def test_integer_weights_are_refused_as_quantized(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in CogVideoXTransformer(TINY).state_dict().items()}
    state["proj_out.weight"] = (state["proj_out.weight"] * 100).to(torch.int8)
    save_file(state, str(tmp_path / "int8.safetensors"), metadata={"config": json.dumps(TINY.to_dict())})
    with pytest.raises(CogVideoXLoadError, match=r"proj_out.weight \(int8\).*int8/GGUF"):
        load_transformer(tmp_path / "int8.safetensors")


def test_decode_layout_splits_back_into_videos():
    video = torch.rand(2, 3, 5, 4, 6) * 2 - 1  # [B, 3, F, H, W]
    images = fr.video_to_images(video)
    assert images.shape == (10, 4, 6, 3) and fr.videos_in(images) == 2
    parts = fr.split_videos(images)
    assert [p.shape[0] for p in parts] == [5, 5]
    torch.testing.assert_close(parts[1], (video[1].permute(1, 2, 3, 0) + 1) / 2)
    torch.testing.assert_close(fr.images_to_video(images), video, atol=1e-6, rtol=0)
    plain = images.clone()  # a core node's new tensor: one video
    assert fr.videos_in(plain) == 1 and fr.videos_in(plain, frames_per_video=5) == 2


def test_h264_crf_zero_stays_browser_playable_and_ranges_differ(tmp_path):
    path = write_video(str(tmp_path / "a.mp4"), torch.rand(5, 16, 16, 3), 8.0, crf=0)
    with av.open(path) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.profile, ctx.pix_fmt) == ("High", "yuv420p")
    assert crf_problems("mp4 (h264)", 52) and not crf_problems("webm (vp9)", 63)
    with pytest.raises(ValueError, match="use 0 to 63"):
        write_video(str(tmp_path / "b.webm"), torch.rand(5, 16, 16, 3), 8.0, format="webm (vp9)", crf=64)
