"""Small input trees shared by the engine, fault, resume and Ray tests (tests/ is on sys.path: conftest)."""

from __future__ import annotations


def make_files(root, n, name="in"):
    """``root/name`` holding ``000.txt`` ... with their own index as content; returns the folder's path."""
    d = root / name
    d.mkdir()
    for i in range(n):
        (d / f"{i:03d}.txt").write_text(str(i))
    return str(d)
