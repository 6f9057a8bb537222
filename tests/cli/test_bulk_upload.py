"""A folder of hundreds of files through `sagemesh upload` with default options, against a mesh
whose gateway limits each user to fewer requests than the upload would make: the CLI waits as
Retry-After says instead of failing files with 429, and every file goes up. (On this machine an
upload with the default limits, 20 a second, stays under them: they are lowered here so that
the test meets them.)"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.mesh_process import mesh_env, running_mesh
from tests.cli.conftest import Cli, sign_up, transport_env

FILES = 500


@pytest.fixture(scope="module")
def limited_mesh(tmp_path_factory):
    with running_mesh(mesh_env(tmp_path_factory.mktemp("limited"), SAGEMESH_LOG_LEVEL="WARNING",
                               SAGEMESH_RATE_LIMIT_PER_USER="8/second;1000/minute")) as running:
        yield running


def rate_limited(metrics_url: str) -> float:
    """Requests the gateway has answered 429, all routes."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "http_server_requests"
               for sample in family.samples if sample.name.endswith("_total") and sample.labels["status"] == "429")


def test_a_folder_of_500_files_goes_up_whole_under_the_rate_limits(limited_mesh, tmp_path):
    rest_cli = Cli(tmp_path / "home", transport_env(limited_mesh, "rest"))
    mesh = limited_mesh
    sign_up(rest_cli, "bulk@example.com")
    assert rest_cli("kb", "create", "bulk").code == 0
    folder = tmp_path / "handbook"
    folder.mkdir()
    for number in range(FILES):
        (folder / f"page-{number:04}.md").write_text(f"# Page {number}\n\nRoom {number} seats {number % 40 + 2}.\n")
    (folder / "empty.md").write_text("")
    refused_before = rate_limited(mesh.metrics["gateway"])

    uploaded = rest_cli("upload", str(folder), "--kb", "bulk", "--json")

    assert uploaded.code == 0, uploaded.stderr[-2000:]
    lines = uploaded.json_lines()
    assert lines[-1]["summary"] == {"uploaded": FILES, "skipped": 1, "failed": 0}
    assert next(line for line in lines if line.get("file", "").endswith("empty.md"))["reason"].startswith("empty")
    # The limits were met, and waited out.
    assert rate_limited(mesh.metrics["gateway"]) > refused_before
    listed = rest_cli("kb", "list", "--json").json()
    assert next(kb for kb in listed if kb["name"] == "bulk")["documentCount"] == FILES
