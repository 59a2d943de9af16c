"""A user's first run: a fresh base directory, the pack in custom_nodes/, nothing else.

One extra server (``--disable-metadata``) on an empty base directory: every shipped workflow
validates and runs through ``POST /prompt`` with nothing in ``input/`` (their inputs are built
in the graph; the samplers take 2 steps here to keep the suite lean, the end-to-end tests run
the twins unchanged on the session's host), the saved videos carry no prompt or workflow
(core's SaveImage/SaveVideo honour the flag; so must the pack's Save Video), comfy-lint finds
no error in the API twins against this install's ``/object_info``, and the templates,
thumbnails and help pages are served where the 0.3.75 frontend asks for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness.host import PACK_DIR_NAME, output_files
from harness.plugin import REPO_ROOT, api_twin, started_host, ui_workflow_paths

from cogvideox.video_io import read_video

pytestmark = pytest.mark.host

WORKFLOWS = ui_workflow_paths()
STEMS = [p.stem for p in WORKFLOWS]
RELEASED_I2V = REPO_ROOT / "tests" / "fixtures" / "workflows_v0_1" / "api" / "image_to_video.json"


@pytest.fixture(scope="module")
def fresh_host(tmp_path_factory):
    base = tmp_path_factory.mktemp("fresh-install")
    with started_host(base, extra_args=("--disable-metadata",)) as host:
        yield host


def _user_files(host, folder: str) -> list[str]:
    return sorted(str(p.relative_to(host.base_dir)) for p in (host.base_dir / folder).rglob("*") if p.is_file())


@pytest.mark.parametrize("ui_path", WORKFLOWS, ids=STEMS)
def test_a_shipped_workflow_runs_on_a_fresh_install_without_embedding_metadata(fresh_host, ui_path: Path):
    client = fresh_host.client()
    assert _user_files(fresh_host, "input") == [], "the base directory is not fresh"
    api = json.loads(api_twin(ui_path).read_text())
    for node in api.values():
        if node["class_type"] in ("CogVideoXSampler", "KSampler"):
            node["inputs"]["steps"] = 2
    # the video's length: the frames of the first node that sets them (the drawn clips have 9)
    expected = next((n["inputs"]["frames"] for n in api.values() if isinstance(n["inputs"].get("frames"), int)), 9)
    workflow = json.loads(ui_path.read_text())
    # as the frontend's Run button sends it: the UI workflow rides along for embedding
    entry = client.wait(client.queue(api, extra_data={"extra_pnginfo": {"workflow": workflow}}), timeout=600)
    assert entry["status"]["status_str"] == "success"
    videos = [r for r in output_files(entry) if r["filename"].endswith(".mp4")]
    assert len(videos) == 1, output_files(entry)
    tmp = Path(tempfile.mkdtemp()) / videos[0]["filename"]
    tmp.write_bytes(client.view(videos[0]["filename"], videos[0]["subfolder"], videos[0]["type"]))
    frames, info = read_video(str(tmp))
    assert frames.shape[0] == expected and frames.std() > 0.01
    assert not {"prompt", "workflow"} & set(info.metadata), f"--disable-metadata, yet embedded: {info.metadata}"
    assert _user_files(fresh_host, "input") == [], "running the workflow wrote into input/"


def _lint(server: str, paths: list[Path]) -> dict:
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [str(Path(sys.executable).parent / "comfy-lint"), "--json", "--server", server, *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return json.loads(proc.stdout)


def test_comfy_lint_finds_no_error_in_the_api_twins(fresh_host):
    pytest.importorskip("comfy_lint", reason="comfy-lint (tools/requirements-test.txt) is not installed")
    report = _lint(fresh_host.url, [api_twin(p) for p in WORKFLOWS])
    assert report["summary"]["files"] == len(WORKFLOWS) and report["summary"]["unreadable"] == 0
    diagnostics = [d for f in report["files"] for d in f["diagnostics"]]
    assert diagnostics == []  # no error, and no warning either (e.g. an input the node does not declare)
    # the same linter on the 0.1 image-to-video twin, which names a file only the tests put in input/
    old = _lint(fresh_host.url, [RELEASED_I2V])
    assert any(d["rule"] == "invalid-enum" for f in old["files"] for d in f["diagnostics"]), old


def test_the_template_browser_finds_every_workflow_and_its_thumbnail(fresh_host):
    client = fresh_host.client()
    templates = client.get_json("/workflow_templates")
    assert sorted(templates.get(PACK_DIR_NAME, [])) == sorted(STEMS)
    for stem in STEMS:  # where the frontend's template card looks for the picture
        resp = client.session.get(f"{fresh_host.url}/api/workflow_templates/{PACK_DIR_NAME}/{stem}.jpg", timeout=30)
        assert resp.status_code == 200 and resp.content[:3] == b"\xff\xd8\xff", stem


def test_every_node_has_a_help_page_where_the_frontend_looks(fresh_host):
    client = fresh_host.client()
    ours = sorted(k for k, v in client.object_info().items() if v["python_module"].endswith(PACK_DIR_NAME))
    assert ours
    for node_id in ours:  # fetchCustomNodeHelp's fallback URL (no per-locale folder)
        resp = client.session.get(f"{fresh_host.url}/extensions/{PACK_DIR_NAME}/docs/{node_id}.md", timeout=30)
        assert resp.status_code == 200, node_id
        assert resp.text.startswith("# ") and client.object_info(node_id)[node_id]["display_name"] in resp.text
