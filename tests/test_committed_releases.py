"""The releases committed under results/ are whole and agree with their READMEs (issue 21, item 3):
every file matches release.json's sha256, the policy loads with weights_only=True and takes
what the released encoder gives, and the README states each file's sha256 and the figure that
`make evaluate-release` reproduces. The slow test reproduces that figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.study.release import RELEASE, evaluate_release, load_release

RESULTS = Path(__file__).resolve().parents[1] / "results"
RELEASES = sorted(p.parent for p in RESULTS.glob(f"*/{RELEASE}"))


def test_the_headline_releases_are_committed() -> None:
    assert {p.name for p in RELEASES} >= {"door_vae", "door_vae_motion"}


@pytest.mark.parametrize("folder", RELEASES, ids=lambda p: p.name)
def test_a_release_is_whole_and_its_readme_says_what_it_holds(folder: Path) -> None:
    # load_release checks every file's sha256 and that the policy takes what the encoder gives
    release, policy, encoder = load_release(folder, device="cpu")
    run = release["run"]
    assert policy.obs_dim == encoder.feature_dim * len(run["cameras"]) + run["proprio_dim"]

    readme = (folder / "README.md").read_text()
    for role, entry in release["files"].items():
        assert entry["sha256"] in readme, f"{folder.name}/README.md does not state the {role}'s sha256"
    clean = release["evaluation"]["per_level"]["0"]
    assert f"{clean['success_rate']:.0f} %" in readme, "the README's figure is not the release's"


@pytest.mark.slow
@pytest.mark.parametrize("folder", RELEASES, ids=lambda p: p.name)
def test_evaluate_release_reproduces_the_released_figure(folder: Path) -> None:
    """`make evaluate-release N=50`: the same seeds, so the same episodes, as the run's evaluate
    stage (about 90 s per release on 2 cores)."""
    released = json.loads((folder / RELEASE).read_text())["evaluation"]["per_level"]["0"]
    scored = evaluate_release(folder, episodes=released["episodes"], levels=[0], log=lambda _: None)
    assert scored["0"]["success_rate"] == released["success_rate"]
    assert scored["0"]["mean_return"] == pytest.approx(released["mean_return"], rel=1e-3)
