"""A regular (non-editable) install ships exactly the packages setup.cfg lists: every package folder must be there."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_setup_cfg() -> None:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    listed = {line.strip() for line in parser["options"]["packages"].splitlines() if line.strip()}
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "sstkit").rglob("__init__.py")
             if not p.parent.is_symlink() and p.parent.parent.name != "__pycache__"}
    found |= {"sstkit.callbacks", "sstkit.datamodules"}  # installed from the top-level folders (package_dir)
    missing = sorted(found - listed)
    assert not missing, f"setup.cfg [options] packages lacks {missing}: a non-editable install would miss them"
