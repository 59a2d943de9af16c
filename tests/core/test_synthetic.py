"""The synthetic clips the tiny model is trained on, and the analysis the known-answer tests rely on."""

from __future__ import annotations

import itertools

import pytest
import torch

from cogvideox import synthetic


def test_clips_are_deterministic_and_in_range():
    a = synthetic.make_clip(torch.Generator().manual_seed(7))
    b = synthetic.make_clip(torch.Generator().manual_seed(7))
    c = synthetic.make_clip(torch.Generator().manual_seed(8))
    assert torch.equal(a.video, b.video) and a.caption == b.caption
    assert not torch.equal(a.video, c.video)
    assert a.video.shape == (3, synthetic.FRAMES, synthetic.SIZE, synthetic.SIZE)
    assert a.video.min() >= -1 and a.video.max() <= 1
    assert a.caption == f"a {a.colour} {a.shape} moving {a.direction}"


@pytest.mark.parametrize("shape", synthetic.SHAPES)
def test_analysis_recovers_every_colour_and_direction(shape):
    gen = torch.Generator().manual_seed(0)
    for colour, direction in itertools.product(synthetic.PALETTE, synthetic.DIRECTIONS):
        clip = synthetic.make_clip(gen, colour=colour, shape=shape, direction=direction)
        assert synthetic.video_colour(clip.video) == colour
        assert synthetic.dominant_colour(clip.video[:, 0]) == colour
        assert synthetic.motion_direction(clip.video) == direction
        # the measured centroid is where the shape was drawn (the triangle's area centroid sits a sixth
        # of its size lower)
        c = synthetic.centroids(clip.video)
        tol = synthetic.OBJECT_SIZE[1] / 5 if shape == "triangle" else 0.75
        assert (c - clip.centres).abs().max() < tol, (colour, direction, c, clip.centres)


def test_objects_stay_inside_the_frame():
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        clip = synthetic.make_clip(gen)
        border = torch.cat([clip.video[..., 0, :], clip.video[..., -1, :], clip.video[..., 0], clip.video[..., -1]], -1)
        assert not any(synthetic.object_mask(border[:, f : f + 1]).any() for f in range(border.shape[1]))


def test_object_size_and_travel_ranges_are_honoured_and_stay_inside():
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        clip = synthetic.make_clip(gen, size=128, object_size=(24.0, 30.0), travel=(14.0, 20.0))
        area = synthetic.object_mask(clip.video[:, 0]).sum().item()
        side = 2 * 24.0  # px at 128x128: the smallest object's side / diameter
        assert area > 0.4 * side**2  # a triangle covers about half its box; the default 40 px box: 1600 px
        moved = (clip.centres[-1] - clip.centres[0]).abs().sum().item()
        assert 28.0 - 1e-3 <= moved <= 40.0 + 1e-3
        border = torch.cat([clip.video[..., 0, :], clip.video[..., -1, :], clip.video[..., 0], clip.video[..., -1]], -1)
        assert not any(synthetic.object_mask(border[:, f : f + 1]).any() for f in range(border.shape[1]))
    default = synthetic.make_clip(torch.Generator().manual_seed(5))
    explicit = synthetic.make_clip(torch.Generator().manual_seed(5), object_size=synthetic.OBJECT_SIZE,
                                   travel=synthetic.TRAVEL)
    assert torch.equal(default.video, explicit.video)


def test_analysis_says_none_or_opposite_when_it_should():
    clip = synthetic.make_clip(torch.Generator().manual_seed(3), colour="red", direction="right")
    reversed_video = clip.video.flip(1)  # played backwards: moves left
    assert synthetic.motion_direction(reversed_video) == "left"
    still = clip.video[:, :1].expand(-1, synthetic.FRAMES, -1, -1)  # the first frame repeated: no motion
    assert synthetic.motion_direction(still) is None
    background = torch.tensor(synthetic.BACKGROUND).view(3, 1, 1, 1) * 2 - 1
    empty = background.expand(3, synthetic.FRAMES, 16, 16)
    assert synthetic.video_colour(empty) is None and synthetic.motion_direction(empty) is None
    swapped = clip.video[[2, 1, 0]]  # RGB -> BGR turns the red object blue
    assert synthetic.video_colour(swapped) == "blue"


def test_psnr():
    x = torch.rand(3, 4, 8, 8) - 0.5  # in [-0.5, 0.5]: +0.2 stays unclamped
    assert synthetic.psnr(x, x) == float("inf")
    assert abs(synthetic.psnr(x, x + 0.2) - 20.0) < 1e-3  # mse 0.04, peak-to-peak 2: 10 log10(4 / 0.04)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="purple"):
        synthetic.make_clip(torch.Generator().manual_seed(0), colour="purple")
