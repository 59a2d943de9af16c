"""Judge synthetic-caption clips without any model: what a person would check by eye.

The tiny model (``tiny/``) is trained on ``synthetic`` clips, one coloured shape moving one way
over a flat background. ``judge_clip`` segments every frame of a generated clip and measures:

- **segmentation**: object pixels are those whose RGB distance to the background exceeds
  ``synthetic.object_mask``'s threshold; the *object* of a frame is its largest 8-connected blob.
- **colour per frame**: the palette colour most object pixels are nearest to.
- **track and direction**: the object's centroid per frame; the direction is the dominant axis of
  the first-to-last displacement (at least ``MIN_SHIFT`` px).
- **shape**: the ideal mask of each shape (drawn as ``synthetic`` draws it, with the area and
  centroid of the measured object, best of a few sizes) is compared with the object's mask; the
  shape with the highest IoU averaged over the frames is the one seen.
- **mask IoU**: IoU of the object mask with the ideal mask of the *captioned* shape, frame mean.
- **speckle**: share of the pixels away from the object (outside its ideal mask grown by
  ``SPECKLE_MARGIN`` px) whose colour is more than ``SPECKLE_TOLERANCE`` off the background.
- **blobs**: 8-connected blobs of at least ``MIN_BLOB`` pixels per frame (one object: exactly 1).
- **size stability**: object area per frame over the first frame's (``size_range``).
- **smoothness**: the share of the whole path covered by each frame step; ``jerk`` is the largest
  share over the mean share (1.0 = constant speed; a clip moving in one jump of 8 steps: 8.0).

Videos are ``[3, F, H, W]`` in ``[-1, 1]``. The thresholds of a passing clip (``Thresholds``) are
calibrated so every ground-truth clip passes (tests/core/test_evaluation.py) and broken clips fail.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from . import synthetic

THRESHOLD = 0.35  # RGB distance (0..1 units) to the background above which a pixel is object
MIN_SHIFT = 4.0  # px of first-to-last centroid displacement below which the object is "static"
MIN_BLOB = 4  # px: smaller specks count as speckle, not as objects
SPECKLE_TOLERANCE = 0.1  # RGB distance to the background above which a background pixel is speckle
SPECKLE_MARGIN = 2  # px around the object's ideal mask left out of the speckle count (its soft edge)
SIZE_FACTORS = (0.85, 0.92, 1.0, 1.08, 1.16)  # sizes tried around the area-equivalent size of each shape
# area of the shape over size**2 and the centroid's offset below the drawn centre over size
_AREA = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
_CENTROID_DY = {"square": 0.0, "circle": 0.0, "triangle": 1 / 6}


@dataclass(frozen=True)
class Thresholds:
    """What a clip must reach to count as right on each measure (the issue's per-clip bars)."""

    min_iou: float = 0.85  # mask IoU with the captioned shape's ideal mask
    max_speckle: float = 0.02  # share of background pixels off the background colour
    max_size_change: float = 0.2  # every frame's object area within +-20% of frame 0's
    max_jerk: float = 2.0  # no frame step with more than 2x its share of the path


DEFAULT = Thresholds()


@dataclass
class ClipJudgement:
    """Everything measured on one clip, and the verdicts against the caption (see the module docstring)."""

    colours: list[str | None]  # per frame
    centroids: list[tuple[float, float] | None]  # per frame, (x, y) px of the largest blob
    areas: list[int]  # per frame, px of the largest blob
    blobs: list[int]  # per frame, blobs of >= MIN_BLOB px
    shape_ious: dict[str, float]  # frame-mean IoU with each shape's fitted ideal mask
    speckle: float  # share of the background off the background colour (all frames)
    direction: str | None
    jerk: float  # max share / mean share of the path per frame step (inf: no motion)
    shape: str | None
    iou: float  # with the captioned shape (0 when there is no object)
    # verdicts
    colour_ok: bool = False  # every frame's object has the captioned colour
    colour_share: float = 0.0  # share of frames whose object has the captioned colour
    direction_ok: bool = False
    shape_ok: bool = False
    iou_ok: bool = False
    speckle_ok: bool = False
    one_object_share: float = 0.0  # share of frames with exactly one blob
    size_ok: bool = False
    smooth_ok: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def size_range(self) -> tuple[float, float]:
        """(min, max) object area over frame 0's; (0, inf) without an object in frame 0."""
        if not self.areas or self.areas[0] == 0:
            return (0.0, math.inf)
        ratios = [a / self.areas[0] for a in self.areas]
        return (min(ratios), max(ratios))

    @property
    def all_ok(self) -> bool:
        return all(
            (self.colour_ok, self.direction_ok, self.shape_ok, self.iou_ok, self.speckle_ok, self.size_ok)
        ) and self.one_object_share == 1.0 and self.smooth_ok

    def summary(self) -> str:
        lo, hi = self.size_range
        return (
            f"colour {self.colour_share:.0%} of frames, moves {self.direction}, looks {self.shape} "
            f"(IoU {self.iou:.2f}), speckle {self.speckle:.1%}, one blob {self.one_object_share:.0%} of frames, "
            f"size x{lo:.2f}-{hi:.2f}, jerk {self.jerk:.1f}"
        )


# ------------------------------------------------------------------------------ pixels
def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords_y = torch.arange(h, dtype=torch.float32) + 0.5
    coords_x = torch.arange(w, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(coords_y, coords_x, indexing="ij")  # [H, W] each
    return xs, ys


def background_distance(video: torch.Tensor) -> torch.Tensor:
    """RGB distance (0..1 units) of every pixel of ``video [3, F, H, W]`` to the background: ``[F, H, W]``."""
    rgb = (video.float().clamp(-1, 1) + 1) / 2
    bg = torch.tensor(synthetic.BACKGROUND).view(3, 1, 1, 1)
    return (rgb - bg).norm(dim=0)


def label_blobs(mask: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of ``mask [F, H, W]`` (bool): ``[F, H, W]`` int, 0 = background.

    Labels are propagated by max-pooling until they stop changing (pure torch).
    """
    frames, h, w = mask.shape
    index = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w).expand(frames, h, w)
    labels = torch.where(mask, index, torch.zeros(()))[:, None]  # [F, 1, H, W]
    keep = mask[:, None].float()
    for _ in range(h * w):
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * keep
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels[:, 0].long()


def blob_sizes(labels: torch.Tensor) -> list[torch.Tensor]:
    """Per frame, the pixel counts of its blobs (largest first): a list of 1-D tensors."""
    out = []
    for frame in labels:
        values = frame[frame > 0]
        sizes = torch.unique(values, return_counts=True)[1] if values.numel() else torch.zeros(0, dtype=torch.long)
        out.append(sizes.sort(descending=True).values)
    return out


def largest_blob(labels: torch.Tensor) -> torch.Tensor:
    """The largest blob of every frame of ``labels [F, H, W]``: bool ``[F, H, W]`` (empty where none)."""
    out = torch.zeros(labels.shape, dtype=torch.bool)
    for f, frame in enumerate(labels):
        values = frame[frame > 0]
        if values.numel():
            ids, counts = torch.unique(values, return_counts=True)
            out[f] = frame == ids[counts.argmax()]
    return out


def nearest_colour(frame: torch.Tensor, mask: torch.Tensor) -> str | None:
    """The palette colour most pixels of ``frame [3, H, W]`` under ``mask [H, W]`` are nearest to."""
    if not mask.any():
        return None
    rgb = ((frame.float().clamp(-1, 1) + 1) / 2)[:, mask].T  # [N, 3]
    names = list(synthetic.PALETTE)
    palette = torch.tensor([synthetic.PALETTE[n] for n in names])  # [K, 3]
    counts = torch.bincount(torch.cdist(rgb, palette).argmin(dim=1), minlength=len(names))
    return names[int(counts.argmax())]


def ideal_mask(shape: str, colour: str, centre, size, h: int, w: int) -> torch.Tensor:
    """What ``object_mask`` sees of ``shape`` drawn as ``synthetic`` draws it: bool ``[H, W]``.

    ``centre = (x, y)`` and ``size`` may be tensors of a common shape ``S`` (then ``[*S, H, W]``).
    """
    xs, ys = _grid(h, w)
    cx, cy, size = (torch.as_tensor(v, dtype=torch.float32)[..., None, None] for v in (*centre, size))
    cov = synthetic._coverage(shape, xs, ys, cx, cy, size)  # [*S, H, W] in [0, 1]
    fg = torch.tensor(synthetic.PALETTE[colour])
    contrast = float((fg - torch.tensor(synthetic.BACKGROUND)).norm())  # distance at full coverage
    return cov * contrast > THRESHOLD


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union > 0 else 0.0


def _ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU over the last two dims (0 where both are empty)."""
    inter = (a & b).sum(dim=(-2, -1)).float()
    union = (a | b).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros(()))


def fit_shape(masks: torch.Tensor, shape: str, colour: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``shape`` to each frame's mask of ``masks [F, H, W]``: the ideal mask with the frame's
    centroid and (best of ``SIZE_FACTORS``) its area. Returns (IoU ``[F]``, ideal masks ``[F, H, W]``);
    an empty frame gets IoU 0 and an empty ideal."""
    frames, h, w = masks.shape
    xs, ys = _grid(h, w)
    m = masks.float()
    area = m.sum(dim=(1, 2))  # [F]
    safe = area.clamp_min(1)
    cx, cy = (xs * m).sum(dim=(1, 2)) / safe, (ys * m).sum(dim=(1, 2)) / safe  # [F]
    sizes = (area / _AREA[shape]).sqrt()[:, None] * torch.tensor(SIZE_FACTORS)  # [F, K]
    centre = (cx[:, None].expand_as(sizes), cy[:, None] - _CENTROID_DY[shape] * sizes)
    ideal = ideal_mask(shape, colour, centre, sizes, h, w)  # [F, K, H, W]
    scores = _ious(masks[:, None], ideal)  # [F, K]
    best, k = scores.max(dim=1)  # [F]
    chosen = ideal[torch.arange(frames), k] & (area > 0)[:, None, None]  # [F, H, W]
    return torch.where(area > 0, best, torch.zeros(())), chosen


# ------------------------------------------------------------------------------ clips
def _direction(track: Sequence[tuple[float, float] | None]) -> str | None:
    if not track or track[0] is None or track[-1] is None:
        return None
    dx, dy = track[-1][0] - track[0][0], track[-1][1] - track[0][1]
    if max(abs(dx), abs(dy)) < MIN_SHIFT:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def jerk(track: Sequence[tuple[float, float] | None]) -> float:
    """Largest share of the path in one frame step over the mean share (inf: missing frames or no motion)."""
    if len(track) < 2 or any(c is None for c in track):
        return math.inf
    pts = torch.tensor(track)  # [F, 2]
    steps = (pts[1:] - pts[:-1]).norm(dim=1)  # [F-1]
    total = float(steps.sum())
    if total < MIN_SHIFT:
        return math.inf
    return float(steps.max()) / total * len(steps)


def judge_clip(
    video: torch.Tensor,
    colour: str,
    shape: str,
    direction: str | None,
    thresholds: Thresholds = DEFAULT,
) -> ClipJudgement:
    """Measure ``video [3, F, H, W]`` (in [-1, 1]) against the caption "a {colour} {shape} moving {direction}".

    ``direction=None`` skips the motion verdicts (e.g. a still image judged as a clip).
    """
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video [3, F, H, W], got shape {tuple(video.shape)}")
    _, frames, h, w = video.shape
    dist = background_distance(video)  # [F, H, W]
    labels = label_blobs(dist > THRESHOLD)
    sizes = blob_sizes(labels)
    main = largest_blob(labels)  # [F, H, W]
    xs, ys = _grid(h, w)

    colours, track, areas = [], [], []
    for f in range(frames):
        area = int(main[f].sum())
        areas.append(area)
        if area == 0:
            colours.append(None)
            track.append(None)
            continue
        obj = main[f].float()
        track.append((float((xs * obj).sum()) / area, float((ys * obj).sum()) / area))
        colours.append(nearest_colour(video[:, f], main[f]))
    blobs = [int((s >= MIN_BLOB).sum()) for s in sizes]

    shape_ious, captioned = {}, main
    for s in synthetic.SHAPES:
        scores, ideal = fit_shape(main, s, colour)  # [F], [F, H, W]
        shape_ious[s] = float(scores.mean())
        if s == shape:
            captioned = ideal
    seen = max(shape_ious, key=shape_ious.get) if any(areas) else None

    # speckle: pixels away from the (ideal) object that are not the background colour
    away = ~_grow(main | captioned, SPECKLE_MARGIN)  # [F, H, W]
    speckle = float((dist[away] > SPECKLE_TOLERANCE).float().mean()) if away.any() else 1.0

    j = ClipJudgement(
        colours=colours,
        centroids=track,
        areas=areas,
        blobs=blobs,
        shape_ious=shape_ious,
        speckle=speckle,
        direction=_direction(track),
        jerk=jerk(track),
        shape=seen,
        iou=shape_ious[shape],
    )
    j.colour_share = sum(c == colour for c in colours) / frames
    j.colour_ok = j.colour_share == 1.0
    j.direction_ok = direction is None or j.direction == direction
    j.shape_ok = seen == shape
    j.iou_ok = j.iou >= thresholds.min_iou
    j.speckle_ok = speckle <= thresholds.max_speckle
    j.one_object_share = sum(b == 1 for b in blobs) / frames
    lo, hi = j.size_range
    j.size_ok = 1 - thresholds.max_size_change <= lo and hi <= 1 + thresholds.max_size_change
    j.smooth_ok = direction is None or j.jerk <= thresholds.max_jerk
    return j


def _grow(mask: torch.Tensor, px: int) -> torch.Tensor:
    """``mask [F, H, W]`` dilated by ``px`` pixels (square neighbourhood)."""
    if px <= 0:
        return mask
    return F.max_pool2d(mask[:, None].float(), 2 * px + 1, stride=1, padding=px)[:, 0] > 0


def object_masks(video: torch.Tensor) -> torch.Tensor:
    """The object (largest blob) of every frame of ``video [3, F, H, W]``: bool ``[F, H, W]``."""
    return largest_blob(label_blobs(background_distance(video) > THRESHOLD))


def first_frame_iou(frame: torch.Tensor, image: torch.Tensor) -> float:
    """IoU of the objects of ``frame`` and ``image`` (both ``[3, H, W]``): is frame 0 the given image?"""
    masks = object_masks(torch.stack([frame, image], dim=1))
    return iou(masks[0], masks[1])


# ------------------------------------------------------------------------------ tables
RATES = ("colour", "direction", "shape", "iou_ok", "speckle_ok", "one_object", "smooth")


@dataclass
class Summary:
    """Rates over many clips (shares of clips unless said otherwise) and means of the measures."""

    clips: int
    colour: float  # every frame the captioned colour
    colour_frames: float  # share of all frames with the captioned colour
    direction: float
    shape: float
    iou: float  # mean mask IoU
    iou_ok: float  # share of clips with IoU >= the threshold
    speckle: float  # mean speckle
    speckle_ok: float
    one_object: float  # share of all frames with exactly one blob
    one_object_clips: float  # share of clips with one blob in every frame
    size_ok: float
    jerk: float  # median max-share / mean-share ratio
    smooth: float  # share of clips with jerk <= the threshold
    all_ok: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarise(judgements: Iterable[ClipJudgement]) -> Summary:
    js = list(judgements)
    if not js:
        raise ValueError("no clips to summarise")
    n = len(js)

    def share(values) -> float:
        return sum(bool(v) for v in values) / n

    jerks = sorted(j.jerk for j in js)
    return Summary(
        clips=n,
        colour=share(j.colour_ok for j in js),
        colour_frames=sum(j.colour_share for j in js) / n,
        direction=share(j.direction_ok for j in js),
        shape=share(j.shape_ok for j in js),
        iou=sum(j.iou for j in js) / n,
        iou_ok=share(j.iou_ok for j in js),
        speckle=sum(j.speckle for j in js) / n,
        speckle_ok=share(j.speckle_ok for j in js),
        one_object=sum(j.one_object_share for j in js) / n,
        one_object_clips=share(j.one_object_share == 1.0 for j in js),
        size_ok=share(j.size_ok for j in js),
        jerk=jerks[n // 2],
        smooth=share(j.smooth_ok for j in js),
        all_ok=share(j.all_ok for j in js),
    )
