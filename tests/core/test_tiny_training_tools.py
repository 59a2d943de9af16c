"""The tiny-model trainer's building blocks for the larger-canvas retrain (``tools/tiny/train.py``):
learned positions started from 3D sin-cos, the pre-encoded clip cache, first frames encoded alone,
the VAE's ghost weighting and decoder-only fine-tuning. Small and fast: the shipped 64x64 tiny VAE,
a handful of clips, one optimiser step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tiny"

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def train(monkeypatch_module):
    monkeypatch_module.syspath_prepend(str(ROOT / "tools" / "tiny"))
    import train as module  # tools/tiny/train.py (it imports train_common beside it)

    return module


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def vae():
    from cogvideox.loading import load_vae

    return load_vae(TINY / "vae" / "cogvideox_tiny_vae.safetensors").float().eval()


def test_sincos_positions_start_the_learned_table_and_are_what_the_model_reads(train):
    import train_common

    from cogvideox.embeddings import sincos_positions_3d
    from cogvideox.transformer import CogVideoXTransformer

    config = train_common.T2V_CONFIG.replace(sample_width=16, sample_height=16, num_attention_heads=8)
    model = train_common.trainable_positions(CogVideoXTransformer(config), sincos=True)
    table = model.patch_embed.pos_embedding
    assert isinstance(table, torch.nn.Parameter) and table.requires_grad
    text = config.max_text_seq_length
    assert table[0, :text].abs().max() == 0  # text positions start at zero, as diffusers' joint table
    grid = (3, 8, 8)  # 9 frames -> 3 latent frames; 16x16 latent, patch 2
    expected = sincos_positions_3d(config.inner_dim, *grid)
    torch.testing.assert_close(table[0, text:].detach(), expected)
    torch.testing.assert_close(model.positions(grid, torch.device("cpu")), expected)
    zero = train_common.trainable_positions(CogVideoXTransformer(config))  # the default: zero, as before
    assert zero.patch_embed.pos_embedding.abs().max() == 0


def test_latent_cache_round_trips_and_first_frames_are_encoded_alone(train, vae, tmp_path):
    import train_common

    data = train_common.LatentSet(vae, 4, torch.Generator().manual_seed(0), batch=4, i2v=True)
    first = data.first_moments  # [4, 32, 1, 8, 8]
    alone = torch.cat(vae.encode_moments(data.first[:1]), dim=1)
    torch.testing.assert_close(first[:1], alone)
    # CogVideoX's GroupNorm spans the frames: latent frame 0 of the clip is not the image's own latent
    assert (data.moments[:, :16, :1] - first[:, :16]).abs().max() > 1e-3
    data.augment_image = False
    torch.testing.assert_close(data.image_condition(torch.tensor([2, 0]), torch.Generator()), first[[2, 0]])
    data.save(tmp_path / "latents.pt")
    back = train_common.LatentSet.load(tmp_path / "latents.pt", vae)
    for name in ("moments", "first", "caption_index"):
        torch.testing.assert_close(getattr(back, name), getattr(data, name))
    torch.testing.assert_close(back.first_moments, first)
    assert back.prompts == data.prompts and back.augment_image  # augmentation is the per-run default


def test_ghost_weighting_charges_trails_the_clip_does_not_have(train, vae):
    from cogvideox import synthetic

    x, _ = synthetic.make_batch(torch.Generator().manual_seed(1), 2)
    x = x[:, :, :, :32, :32]
    untrained = type(vae)(vae.config)  # random weights: its reconstruction is anything but background
    plain = train.vae_loss(untrained, x, torch.Generator().manual_seed(0), 1e-3)[1]
    ghosts = train.vae_loss(untrained, x, torch.Generator().manual_seed(0), 1e-3, ghosts=True)[1]
    assert ghosts > plain * 1.05


def test_decoder_only_fine_tuning_leaves_the_encoder_and_the_latent_space(train, tmp_path):
    out = tmp_path / "tiny"
    shutil.copytree(TINY / "vae", out / "vae")
    before = train.load_vae(out / "vae" / "cogvideox_tiny_vae.safetensors").state_dict()
    threads = torch.get_num_threads()
    try:
        train.main(["--stage", "vae", "--resume", "--vae-decoder-only", "--out", str(out), "--vae-steps", "1",
                    "--vae-batch", "1", "--threads", "1", "--lr-vae", "1e-2"])
    finally:
        train.PATHS.set_out(TINY)  # main() pointed the module's paths at the temporary folder
        torch.set_num_threads(threads)
    after = train.load_vae(out / "vae" / "cogvideox_tiny_vae.safetensors").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), sorted(changed)[:5]
