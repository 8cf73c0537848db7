"""`--download` on the CLIs that open WILDS reaches `wilds.get_dataset(download=True)`; the error names it."""

from __future__ import annotations

import pytest

from data_generation import make_table, mine_hard


@pytest.fixture
def recorded_get_dataset(monkeypatch):
    import wilds

    calls = []

    def fake(name, root_dir, download=False, **kw):
        calls.append({"name": name, "root_dir": root_dir, "download": download})
        raise FileNotFoundError(f"{root_dir}/iwildcam_v2.0 not found")

    monkeypatch.setattr(wilds, "get_dataset", fake)
    return calls


def test_make_table_download_flag_reaches_wilds(tmp_path, recorded_get_dataset, capsys):
    argv = ["--dataset", "iwildcam", "--data", str(tmp_path), "--out", str(tmp_path / "t.parquet")]
    assert make_table.main(argv) == 2
    err = capsys.readouterr().err
    assert "--download" in err and "cannot open WILDS iWildCam" in err and len(err.strip().splitlines()) == 1
    assert make_table.main(argv + ["--download"]) == 2
    assert [c["download"] for c in recorded_get_dataset] == [False, True]
    assert not (tmp_path / "t.parquet").exists()


def test_mine_hard_download_flag_reaches_wilds(tmp_path, recorded_get_dataset, capsys):
    argv = ["--dataset", "iwildcam", "--data", str(tmp_path), "--scorers", "random"]
    argv += ["--output_csv", str(tmp_path / "h.csv"), "--scores_parquet", str(tmp_path / "s.parquet"), "--download"]
    assert mine_hard.main(argv) == 2
    assert recorded_get_dataset[-1] == {"name": "iwildcam", "root_dir": str(tmp_path), "download": True}
    assert "--download" in capsys.readouterr().err
