"""Agent credentials on disk: round trip, private modes, damage reported clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import PermanentError
from agent.identity import Credentials
from agent.identity import files as credentials


def test_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state"
    creds = Credentials(cluster="edge-1", credential="tac.edge-1.secret", server="nats://a:4222,nats://b:4222")
    path = credentials.save(state, creds)
    assert path == state / "credentials.json"
    assert credentials.load(state) == creds


def test_file_is_0600_and_dir_0700(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    path = credentials.save(state, Credentials(cluster="edge-1", credential="tac.edge-1.s"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    credentials.save(tmp_path, Credentials(cluster="edge-1", credential="tac.edge-1.old"))
    credentials.save(tmp_path, Credentials(cluster="edge-2", credential="tac.edge-2.new"))
    assert [p.name for p in tmp_path.iterdir()] == ["credentials.json"]
    loaded = credentials.load(tmp_path)
    assert loaded is not None
    assert loaded.cluster == "edge-2"
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_missing_is_none(tmp_path: Path) -> None:
    assert credentials.load(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"cluster": "edge-1"}', "damaged"),
        ('{"cluster": "Not_A_Name", "credential": "x"}', "damaged"),
    ],
)
def test_damaged_file_is_a_permanent_error(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "credentials.json").write_text(content)
    with pytest.raises(PermanentError, match=problem):
        credentials.load(tmp_path)


def test_repr_hides_the_secret() -> None:
    text = repr(Credentials(cluster="edge-1", credential="tac.edge-1.topsecret"))
    assert "topsecret" not in text
    assert "edge-1" in text
