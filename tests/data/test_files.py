"""File inputs: sorted recursive listing, chunking, globs, lists, laziness, errors; rank batches."""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from prs_nb.data import FILES, RANK, plan_input, read_mini_batch
from prs_nb.errors import ConfigError, InputDataError
from prs_nb.spec import Input, JobSpec, RunFunction


def touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def rel_batches(plan, root: Path) -> list[list[str]]:
    return [[os.path.relpath(p, root).replace(os.sep, "/") for p in mb.source] for mb in plan]


def test_recursive_listing_sorted_by_path_components(tmp_path, plan_of):
    # "a-b" < "a/..." as strings ('-' < '/'), but the folder "a" sorts before the file "a-b" by component
    touch(tmp_path / "d", "a-b", "a/z.txt", "a/b/c.txt", "b.txt", "A.txt", "a.txt")
    plan = plan_of("d", size="100")
    assert rel_batches(plan, tmp_path / "d") == [["A.txt", "a/b/c.txt", "a/z.txt", "a-b", "a.txt", "b.txt"]]


def test_chunks_are_contiguous_with_the_requested_size(tmp_path, plan_of):
    names = [f"f{i:02d}.bin" for i in range(25)]
    touch(tmp_path / "d", *names)
    mbs = list(plan_of("d", size="10"))
    assert [mb.items for mb in mbs] == [10, 10, 5]
    assert [mb.index for mb in mbs] == [0, 1, 2]
    assert [os.path.basename(p) for mb in mbs for p in mb.source] == names
    assert all(mb.kind == FILES and mb.input_name == "data" and mb.partition_key_value == {} for mb in mbs)
    assert all(os.path.isabs(p) for mb in mbs for p in mb.source)


def test_default_is_ten_files_per_mini_batch(tmp_path, plan_of):
    touch(tmp_path / "d", *[f"{i:02d}" for i in range(21)])
    assert [mb.items for mb in plan_of("d")] == [10, 10, 1]


def test_hidden_files_are_kept(tmp_path, plan_of):
    touch(tmp_path / "d", ".hidden", "_underscore", ".git/config", "x")
    assert rel_batches(plan_of("d"), tmp_path / "d") == [[".git/config", ".hidden", "_underscore", "x"]]


def test_single_file_and_uri_file(tmp_path, plan_of):
    touch(tmp_path, "one.jpg")
    mbs = list(plan_of("one.jpg", type="uri_file"))
    assert len(mbs) == 1 and mbs[0].source == [str(tmp_path / "one.jpg")] and mbs[0].items == 1


def test_empty_folder_gives_no_mini_batch(tmp_path, plan_of):
    (tmp_path / "empty").mkdir()
    assert list(plan_of("empty")) == []


def test_globs(tmp_path, plan_of):
    touch(tmp_path / "d", "a.txt", "b.txt", "c.csv", ".h.txt", "s/a.txt", "s/t/b.txt", "x1.txt", "x2.txt", "y1.txt")
    root = tmp_path / "d"
    assert rel_batches(plan_of("d/*.txt", size="50"), root) == [[".h.txt", "a.txt", "b.txt", "x1.txt", "x2.txt", "y1.txt"]]
    assert rel_batches(plan_of("d/**/*.txt", size="50"), root) == [
        [".h.txt", "a.txt", "b.txt", "s/a.txt", "s/t/b.txt", "x1.txt", "x2.txt", "y1.txt"]
    ]
    assert rel_batches(plan_of("d/[xy]?.txt", size="50"), root) == [["x1.txt", "x2.txt", "y1.txt"]]
    assert rel_batches(plan_of("d/[!x]1.txt", size="50"), root) == [["y1.txt"]]
    assert rel_batches(plan_of("d/*/*.txt", size="50"), root) == [["s/a.txt"]]
    assert rel_batches(plan_of("d/s/**", size="50"), root) == [["s/a.txt", "s/t/b.txt"]]


def test_glob_prunes_folders_it_cannot_match(tmp_path, plan_of, monkeypatch):
    touch(tmp_path / "d", "keep/a.txt", "skip/deep/er/b.txt")
    listed: list[str] = []
    real = os.scandir

    def spy(path):
        listed.append(os.path.basename(os.fspath(path)))
        return real(path)

    monkeypatch.setattr(os, "scandir", spy)
    assert rel_batches(plan_of("d/k*/*.txt"), tmp_path / "d") == [["keep/a.txt"]]
    assert "deep" not in listed and "skip" not in listed


def test_glob_matching_nothing_is_an_error(tmp_path, plan_of):
    touch(tmp_path / "d", "a.txt")
    with pytest.raises(InputDataError, match=r"glob pattern .*\*\.png' matched no files.*\*\*"):
        list(plan_of("d/*.png"))
    with pytest.raises(InputDataError, match="nowhere does not exist"):
        list(plan_of("nowhere/*.png"))


def test_list_of_paths_keeps_the_given_order(tmp_path, plan_of):
    touch(tmp_path, "z.txt", "d/b.txt", "d/a.txt", "g/1.log", "g/2.log")
    plan = plan_of(["z.txt", Input(path="d"), tmp_path / "g" / "*.log"], size="10")
    assert rel_batches(plan, tmp_path) == [["z.txt", "d/a.txt", "d/b.txt", "g/1.log", "g/2.log"]]
    assert plan.describe() == "3 paths (z.txt, d, +1 more): files, 10 per mini-batch"


def test_bound_input_pathlib_and_base_dir(tmp_path, plan_of):
    touch(tmp_path / "sub" / "d", "a")
    assert list(plan_of(Input(type="uri_folder", path="d"), base_dir=tmp_path / "sub"))[0].source == [
        str(tmp_path / "sub" / "d" / "a")
    ]
    assert list(plan_of(tmp_path / "sub" / "d"))[0].items == 1


def test_relative_paths_default_to_the_working_directory(workdir, spec_of):
    touch(workdir / "d", "a")
    spec = spec_of("d")
    assert next(iter(plan_input(spec, spec.effective()))).source == [str(workdir / "d" / "a")]


def test_declared_path_and_default_are_fallbacks(tmp_path):
    touch(tmp_path / "d", "a")
    for decl in (Input(type="uri_folder", path=str(tmp_path / "d")), Input(type="uri_folder", default=str(tmp_path / "d"))):
        spec = JobSpec(name="t", inputs={"data": decl}, input_data="${{inputs.data}}")
        assert [mb.items for mb in plan_input(spec, spec.effective())] == [1]


def test_undeclared_input_takes_the_bound_input_type(tmp_path, plan_of):
    (tmp_path / "t.csv").write_text("a\n1\n")
    plan = plan_of(Input(type="mltable", path="t.csv"), declare=False)
    assert plan.kind == "tabular"
    assert plan_of("t.csv", declare=False).kind == FILES  # a plain path defaults to uri_folder


def test_describe(tmp_path, plan_of):
    touch(tmp_path / "data" / "images", "a.png")
    assert plan_of("data/images").describe() == "folder data/images: files, 10 per mini-batch"
    assert plan_of("data/images/*.png", size="3").describe() == "glob data/images/*.png: files, 3 per mini-batch"


def test_missing_path_is_an_error_naming_the_input(tmp_path, plan_of):
    with pytest.raises(InputDataError, match=r"input 'data': path 'nope/x' \(resolved to .*nope/x\) does not exist"):
        plan_of("nope/x")


def test_remote_uri_is_an_error(plan_of):
    with pytest.raises(InputDataError, match=r"remote URI.*Download or mount"):
        plan_of("azureml://datastores/workspaceblobstore/paths/images/")


def test_binding_errors(tmp_path, plan_of):
    with pytest.raises(ConfigError, match=r"input 'data' is bound to a int; expected a path"):
        plan_of(42)
    with pytest.raises(ConfigError, match="empty list"):
        plan_of([])
    with pytest.raises(ConfigError, match=r"entry 1 of the bound list is NoneType None"):
        plan_of([str(tmp_path), None])
    spec = JobSpec(name="t", inputs={"data": Input(type="uri_folder")}, input_data="${{inputs.data}}")
    with pytest.raises(ConfigError, match=r"input 'data' \(the input_data\) has no data bound.*Input\(type="):
        plan_input(spec, spec.effective())
    spec = JobSpec(name="t", inputs={"n": Input(type="integer", default=3)}, input_data="${{inputs.n}}")
    with pytest.raises(ConfigError, match="is a integer input; input_data must name a data input"):
        plan_input(spec, spec.effective())


def test_input_data_is_required_without_rank_count():
    spec = JobSpec(name="t")
    with pytest.raises(ConfigError, match=r"input_data is required.*rank_mini_batch_count"):
        plan_input(spec, spec.effective())


def test_rank_mini_batches():
    spec = JobSpec(name="t", task=RunFunction(program_arguments="--rank_mini_batch_count 3"))
    plan = plan_input(spec, spec.effective())
    mbs = list(plan)
    assert plan.kind == RANK and plan.describe().startswith("rank: 3 mini-batches")
    assert [(mb.index, mb.kind, mb.items, mb.source) for mb in mbs] == [(i, RANK, 0, None) for i in range(3)]
    assert read_mini_batch(mbs[0]) == []


def test_rank_count_wins_over_input_data(tmp_path, spec_of):
    touch(tmp_path / "d", "a")
    spec = spec_of(str(tmp_path / "d"), args="--rank_mini_batch_count 2")
    plan = plan_input(spec, spec.effective())
    assert plan.kind == RANK and plan.input_name == "data" and len(list(plan)) == 2


def test_negative_rank_count_means_none(tmp_path, spec_of):
    touch(tmp_path / "d", "a")
    spec = spec_of(str(tmp_path / "d"), args="--rank_mini_batch_count -4")
    assert plan_input(spec, spec.effective()).kind == FILES


def test_read_mini_batch_returns_a_new_list_and_descriptors_pickle(tmp_path, plan_of):
    touch(tmp_path / "d", "a", "b")
    mb = next(iter(plan_of("d")))
    got = read_mini_batch(mb)
    assert got == mb.source and got is not mb.source
    assert pickle.loads(pickle.dumps(mb)) == mb


def test_each_iteration_lists_again(tmp_path, plan_of):
    touch(tmp_path / "d", "a")
    plan = plan_of("d")
    assert len(list(plan)) == 1
    touch(tmp_path / "d", "b")
    assert [mb.items for mb in plan] == [2]


def test_listing_is_lazy_on_20k_files(tmp_path, plan_of, monkeypatch):
    root = tmp_path / "big"
    for d in range(200):
        sub = root / f"d{d:03d}"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"f{i:03d}").touch()
    calls = []
    real = os.scandir

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    plan = plan_of("big", size="10")
    it = iter(plan)
    first = list(itertools.islice(it, 1))[0]
    assert first.items == 10 and first.source[0].endswith(os.path.join("d000", "f000"))
    assert len(calls) == 2  # the root and its first sub-folder only: nothing else listed yet
    rest = list(it)
    assert len(rest) == 1999 and len(calls) == 201
    assert rest[-1].index == 1999 and rest[-1].source[-1].endswith(os.path.join("d199", "f099"))


def test_folder_link_loop_is_an_error(tmp_path, plan_of):
    touch(tmp_path / "d", "a/x")
    os.symlink(tmp_path / "d", tmp_path / "d" / "a" / "loop")
    with pytest.raises(InputDataError, match="points back to one of its parent folders"):
        list(plan_of("d"))


def test_followed_folder_links_and_broken_links_are_listed(tmp_path, plan_of):
    touch(tmp_path, "real/x")
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "d" / "linked")
    os.symlink(tmp_path / "missing", tmp_path / "d" / "broken")
    assert rel_batches(plan_of("d"), tmp_path / "d") == [["broken", "linked/x"]]


def test_unreadable_folder_is_an_error(tmp_path, plan_of, monkeypatch):
    touch(tmp_path / "d", "locked/a")
    real = os.scandir

    def refusing(path):  # chmod 000 does not stop root, so refuse the way the OS would
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(InputDataError, match="cannot list folder .*locked: permission denied"):
        list(plan_of("d"))


def test_file_list_workers_do_not_import_pandas(tmp_path):
    touch(tmp_path / "d", "a")
    code = (
        "import sys\n"
        "sys.modules['pandas'] = None; sys.modules['pyarrow'] = None  # any import of them now fails\n"
        "from prs_nb.data import plan_input, read_mini_batch\n"
        "from prs_nb.spec import JobSpec\n"
        f"spec = JobSpec(name='t', input_data='${{{{inputs.d}}}}', bindings={{'d': {str(tmp_path / 'd')!r}}})\n"
        "mb = next(iter(plan_input(spec, spec.effective())))\n"
        "print(read_mini_batch(mb))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert out.returncode == 0, "prs_nb.data imported pandas/pyarrow for a file list:\n" + out.stderr
    assert str(tmp_path / "d" / "a") in out.stdout
