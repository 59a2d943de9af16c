"""Known answers of the tiny CogVideoX-Fun models (``tiny/``), through the library.

``tools/tiny/train.py --stage inp,control`` fine-tunes the tiny I2V model into a Fun InP model and
a Fun Control model on the synthetic clips (``tools/tiny/train_fun.py``).

- InP: given a clip's first and last frames (and its caption), the generated video must start and
  end where those frames have the object (centroid within 3 px at both ends) in their colour, for
  16 start/end pairs (every colour x direction), at the ``first_last_frame`` workflow's guidance
  (``INP_CFG``). The same check on a copy whose mask and masked-video channels are swapped must fail.
- Control: given a clip's silhouette video (white on black) and a caption naming the **opposite**
  direction, the object must follow the control video (its direction, every frame's centroid
  within 4 px of the silhouette's) in the caption's colour. With the control video dropped (a
  blank one) the same check must fail.
"""

from __future__ import annotations

import json

import pytest
import torch
from harness.known_answers import MIN_ACCURACY, fun_clips, judge_control, judge_inp, opposite, silhouette_video
from test_tiny_known_answers import CFG, LATENT, STEPS, TINY, make_text_encoder

from cogvideox import conditioning, pipeline, synthetic
from cogvideox.loading import load_transformer, load_vae

INP_FILE = TINY / "diffusion_models" / "cogvideox_tiny_fun_inp.safetensors"
CONTROL_FILE = TINY / "diffusion_models" / "cogvideox_tiny_fun_control.safetensors"
TARGET = MIN_ACCURACY  # the 90%
# the guidance the first_last_frame workflow ships with (with both ends given, CFG 6 pushes the object
# past the end frame: tiny/MODEL_CARD.md)
_FIRST_LAST = json.loads((TINY.parent / "workflows" / "api" / "first_last_frame.json").read_text())
INP_CFG = next(n["inputs"]["cfg"] for n in _FIRST_LAST.values() if n["class_type"] == "CogVideoXSampler")

BROKEN_CASES = 8  # a broken copy runs the first 8 cases (the suite's time); under half right fails the 16-case check

pytestmark = pytest.mark.skipif(not INP_FILE.exists(), reason="the tiny Fun models are not shipped")


@pytest.fixture(scope="module")
def shared():
    return load_vae(TINY / "vae" / "cogvideox_tiny_vae.safetensors").float().eval(), make_text_encoder()


def _decode(vae, out: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [vae.decode(out[k : k + 1])[0].clamp(-1, 1) for k in range(out.shape[0])]


def inp_report(model, variant, vae, encode_text, seed=0, first=None) -> tuple[float, list[str]]:
    """Share of the 16 start/end pairs (or the ``first`` of them) generated right (both ends within
    3 px, colour), a line each."""
    clips = fun_clips()[:first]
    video = torch.stack([c.video for c in clips])  # [N, 3, F, H, W]
    known, mask = conditioning.start_end_video(video[:, :, :1], video[:, :, -1:], video.shape[2])
    masked = conditioning.noise_augment_known(
        conditioning.masked_video(known, mask), 0.0563, torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        latent = torch.cat([vae.encode(masked[k : k + 1]) for k in range(len(clips))])  # raw, the posterior mean
    _, t, h, w = LATENT
    out = pipeline.sample(
        model, variant, torch.zeros(len(clips), *LATENT), encode_text([c.caption for c in clips]), encode_text([""]),
        steps=STEPS, cfg=INP_CFG, seed=seed, concat_latent=latent,
        concat_mask=conditioning.inpaint_mask_latent(mask, t, h, w),
    )  # fmt: skip
    lines, good = [], 0
    for clip, got in zip(clips, _decode(vae, out), strict=True):
        ok, what = judge_inp(got, clip)
        good += ok
        lines.append(f"{'ok ' if ok else 'BAD'} {clip.caption!r}: {what}")
    return good / len(clips), lines


def control_report(
    model, variant, vae, encode_text, seed=0, blank=False, first=None
) -> tuple[float, float, list[str]]:
    """Shares of the 16 control clips (or the ``first`` of them) followed against a caption naming the
    opposite direction: (direction, colour and the track within 4 px; direction and colour alone), a line each."""
    clips = fun_clips()[:first]
    control = torch.stack([silhouette_video(c) for c in clips])  # [N, 3, F, H, W]
    if blank:
        control = torch.full_like(control, -1.0)  # the control dropped: a black video
    with torch.no_grad():
        latent = torch.cat([vae.encode(control[k : k + 1]) for k in range(len(clips))])  # raw, the posterior mean
    captions = [synthetic.caption_for(c.colour, c.shape, opposite(c.direction)) for c in clips]
    out = pipeline.sample(
        model, variant, torch.zeros(len(clips), *LATENT), encode_text(captions), encode_text([""]),
        steps=STEPS, cfg=CFG, seed=seed, concat_latent=latent,
    )  # fmt: skip
    lines, good, follows = [], 0, 0
    for clip, caption, got in zip(clips, captions, _decode(vae, out), strict=True):
        ok, follow, what = judge_control(got, clip, clip.colour)
        good, follows = good + ok, follows + follow
        lines.append(f"{'ok ' if ok else 'BAD'} {caption!r}, control {clip.direction}: {what}")
    return good / len(clips), follows / len(clips), lines


# ------------------------------------------------------------------------------------ InP
@pytest.fixture(scope="module")
def inp(shared):
    model, variant = load_transformer(INP_FILE, dtype=torch.float32)
    return model, variant, *shared


@pytest.fixture(scope="module")
def inp_result(inp):
    return inp_report(*inp)


def test_start_and_end_frames_are_kept(inp, inp_result):
    model, variant, _, _ = inp
    assert variant.fun == "inpaint" and model.config.in_channels == 33
    accuracy, lines = inp_result
    print("\n".join(lines))
    if accuracy < TARGET:
        # Measured on the shipped file (tiny/MODEL_CARD.md) at CFG 1.5: 16/16 at seed 0, ends within 2.8 px
        # (at CFG 6: 12/16, the object carried past the end frame). The 64x64 file: 4/16 (1.3-8.9 px at 64x64).
        pytest.xfail(f"tiny Fun InP: {accuracy:.0%} of 16 start/end pairs right (target {TARGET:.0%})")


def test_the_vae_round_trip_itself_passes_the_inp_check(shared):
    """The check's ceiling: the tiny VAE's own round trip of the 16 clips, judged the same way.
    The 64x64 VAE passed 15/16 (the 90% target sat at its limit); the 128x128 VAE shipped since
    brings the 16 clips' ends back far closer (tiny/MODEL_CARD.md)."""
    vae = shared[0]
    clips = fun_clips()
    with torch.no_grad():
        back = [vae.decode(vae.encode(c.video[None]))[0].clamp(-1, 1) for c in clips]
    judged = [judge_inp(got, clip) for got, clip in zip(back, clips, strict=True)]
    good = sum(ok for ok, _ in judged)
    assert good / len(clips) >= TARGET, [what for _, what in judged]


def test_the_inp_check_fails_when_the_mask_order_is_broken(inp, inp_result, monkeypatch):
    right, _ = inp_result
    if right < TARGET:
        pytest.skip(f"the model already fails the check ({right:.0%}); a broken copy proves nothing")

    def swapped(kind, sf, latent, mask):
        return torch.cat([latent * sf, (1 - mask) * sf], dim=1)  # masked latent first: the wrong order

    monkeypatch.setattr(pipeline, "fun_condition", swapped)
    broken, lines = inp_report(*inp, first=BROKEN_CASES)  # under half of 8 right: the 16-pair check fails whatever
    print("\n".join(lines))  # the other 8 give (at most 11 of 16)
    assert broken < 0.5 <= right, (right, broken)


# -------------------------------------------------------------------------------- Control
@pytest.fixture(scope="module")
def control(shared):
    model, variant = load_transformer(CONTROL_FILE, dtype=torch.float32)
    return model, variant, *shared


@pytest.fixture(scope="module")
def control_result(control):
    return control_report(*control)


def test_the_object_follows_the_control_video_against_the_caption(control, control_result):
    model, variant, _, _ = control
    assert variant.fun == "control" and model.config.in_channels == 32
    accuracy, follows, lines = control_result
    print(f"control followed: {follows:.0%} (direction and colour), {accuracy:.0%} (and the track within 4 px)")
    print("\n".join(lines))
    # Measured on the shipped 128x128 file (tiny/MODEL_CARD.md): 16/16 follow the control against the
    # caption, tracks within 0.3-2.6 px (the 64x64 file: 12/16, tracks 6-21 px off at 64x64).
    assert follows >= 0.5, "\n".join(lines)
    if accuracy < TARGET:
        pytest.xfail(f"tiny Fun Control: {accuracy:.0%} of 16 tracks within 4 px (target {TARGET:.0%})")


def test_the_control_check_fails_without_the_control_video(control, control_result):
    _, right, _ = control_result
    _, blank, lines = control_report(*control, blank=True, first=BROKEN_CASES)  # as the broken InP check
    print("\n".join(lines))
    assert blank < 0.5 <= right, (right, blank)


def _v_error(model, control_latents, latents, context, scale, table, seed=1) -> float:
    """Mean squared v-prediction error at high noise (t in [600, 999]) of ``model`` given ``control_latents``."""
    gen = torch.Generator().manual_seed(seed)
    b = latents.shape[0]
    x0 = latents * scale
    t = torch.randint(600, 1000, (b,), generator=gen)
    a = table[t].float().view(b, 1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=gen)
    xt, target = a.sqrt() * x0 + (1 - a).sqrt() * eps, a.sqrt() * eps - (1 - a).sqrt() * x0
    with torch.no_grad():
        v = model(torch.cat([xt, control_latents * scale], dim=1), t, context)
    return float(((v - target) ** 2).mean())


def test_the_control_model_reads_the_control_video(control):
    """The denoiser's own objective: at high noise (where the layout is decided), each clip's own
    silhouette latent must predict it far better than another clip's. Measured on the 64x64 file:
    0.021 with the right control against 0.235 with the controls rolled by 5 clips (the untrained
    stand-in: 0.280 / 0.292, no use of the control: this check fails on it)."""
    from cogvideox.schedules import alphas_cumprod

    model, variant, vae, encode_text = control
    clips = fun_clips()
    with torch.no_grad():
        latents = torch.cat([vae.encode(c.video[None]) for c in clips])  # [16, 16, T, h, w] raw
        controls = torch.cat([vae.encode(silhouette_video(c)[None]) for c in clips])
    table = alphas_cumprod(variant.scheduler_config())
    context = encode_text([c.caption for c in clips])
    scale = variant.scaling_factor
    right = _v_error(model, controls, latents, context, scale, table)
    wrong = _v_error(model, torch.roll(controls, 5, dims=0), latents, context, scale, table)
    print(f"v-prediction error at t >= 600: right control {right:.4f}, another clip's {wrong:.4f}")
    assert right < 0.5 * wrong, (right, wrong)
