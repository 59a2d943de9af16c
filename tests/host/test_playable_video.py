"""Files the player can play, through the real host: h264 stays High profile / yuv420p for every
crf (crf 0, lossless, used to give High 4:4:4 Predictive, which browsers refuse), VP9 takes its
own crf range (0-63), and crf outside a codec's range is refused naming the codec's range."""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import pytest
from harness import reliability_models as rm
from harness.host import output_files
from harness.reliability import t2v_graph
from harness.reliability_links import refusal_text, rejected

pytestmark = pytest.mark.host


@pytest.fixture
def client(comfy_host, comfy_client):
    rm.ensure_models(comfy_host.base_dir / "models")
    return comfy_client


def _stream(client, fmt: str, crf: int, prefix: str) -> tuple[str, str, int]:
    api = t2v_graph(prefix=prefix)
    api["10"]["inputs"].update(format=fmt, crf=crf)
    entry = client.run(api, timeout=300)
    (record,) = [r for r in output_files(entry) if r["filename"].endswith((".mp4", ".webm"))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / record["filename"]
        path.write_bytes(client.view(record["filename"], record["subfolder"], record["type"]))
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            return stream.codec_context.profile, stream.codec_context.pix_fmt, frames


@pytest.mark.parametrize("crf", [0, 1, 19, 51])
def test_h264_is_high_profile_yuv420p_for_every_crf(client, crf):
    profile, pix_fmt, frames = _stream(client, "mp4 (h264)", crf, f"rel2/play/h264_crf{crf}")
    assert (profile, pix_fmt, frames) == ("High", "yuv420p", rm.FRAMES)


@pytest.mark.parametrize("crf", [0, 40, 63])
def test_vp9_takes_its_own_crf_range(client, crf):
    _, pix_fmt, frames = _stream(client, "webm (vp9)", crf, f"rel2/play/vp9_crf{crf}")
    assert (pix_fmt, frames) == ("yuv420p", rm.FRAMES)


@pytest.mark.parametrize(
    ("fmt", "crf", "words"),
    [("mp4 (h264)", 52, "crf=52 is out of range for mp4 (h264); use 0 to 51"),
     ("webm (vp9)", 64, "crf=64 is out of range for webm (vp9); use 0 to 63"),
     ("mp4 (h264)", -1, "crf=-1 is out of range for mp4 (h264); use 0 to 51")],
)
def test_crf_outside_the_codec_range_is_refused(client, fmt, crf, words):
    api = t2v_graph(prefix="rel2/play/refused")
    api["10"]["inputs"].update(format=fmt, crf=crf)
    assert refusal_text(rejected(client, api), "10") == f"CogVideoX Save Video: {words} (lower is better quality)"
