"""scripts/first-admin-key.sh (run by scripts/start.sh before serving): the real script, the real
``ecgfm-ked`` command and a real SQLite database in a temporary data directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "first-admin-key.sh"
CLI = Path(sys.executable).with_name("ecgfm-ked")


def run(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ECGFM_")}
    environment.update({"ECGFM_CLI": str(CLI), "ECGFM_DATA_DIR": str(data_dir), **env})
    return subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


def keys(data_dir: Path) -> list[str]:
    out = subprocess.run([str(CLI), "keys", "list", "--database-url", f"sqlite:///{data_dir}/ecgfm-ked.sqlite3"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_the_first_start_makes_one_admin_key_readable_only_by_its_owner(tmp_path: Path) -> None:
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "admin.key"
    secret = key_file.read_text().strip()
    assert secret.startswith("ekd_") and secret not in first.stderr  # said where it is, not what it is
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file) in first.stderr
    listed = keys(tmp_path)
    assert len(listed) == 1 and "admin" in listed[0], listed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("admin.key.")] == []  # no temporary left

    again = run(tmp_path)  # a later start: an active key exists, nothing is made or overwritten
    assert again.returncode == 0, again.stderr
    assert key_file.read_text().strip() == secret and len(keys(tmp_path)) == 1 and again.stderr == ""


def test_nothing_is_made_when_keys_are_not_required(tmp_path: Path) -> None:
    done = run(tmp_path, ECGFM_AUTH="disabled")
    assert done.returncode == 0 and not (tmp_path / "admin.key").exists()
