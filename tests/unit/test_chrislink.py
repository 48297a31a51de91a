"""ChRIS link expansion in a job's input tree (docs/wire-contract.md §10.3; link rules §10.1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pfcon.adapters.storage.chrislink import check_link_target, expand_links
from pfcon.domain.errors import InvalidInputData


def tree(root: Path) -> list[str]:
    """Every path under root (files and dirs), relative, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def files(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names
    )


def put(root: Path, rel: str, content: str | bytes = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    d = tmp_path / "storeBase" / "key-jid" / "incoming"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A directory outside incoming (and outside storeBase) full of private data."""
    d = tmp_path / "outside"
    put(d, "SENTINEL-secret.txt", "private data")
    put(d, "nested/SENTINEL-deep.txt", "more private data")
    return d


def assert_nothing_from(sentinel: Path, root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root.parent.parent.parent):
        if Path(dirpath) == sentinel or sentinel in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            assert "SENTINEL" not in name, os.path.join(dirpath, name)
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert b"private data" not in f.read_bytes(), f


# -- pfcon's worked example and semantics ------------------------------------------


def test_worked_example(incoming: Path) -> None:
    put(incoming, "test.txt", "test file")
    put(incoming, "home_bob.chrislink", "home/bob")
    put(incoming, "home/bob/PIPELINES_bob.chrislink", "PIPELINES/bob")
    put(incoming, "PIPELINES/bob/pipeline.yml", "name: pipeline\n")
    assert expand_links(str(incoming)) == 2
    assert files(incoming) == ["home_bob/PIPELINES_bob/pipeline.yml", "test.txt"]
    assert tree(incoming) == [
        "home_bob",
        "home_bob/PIPELINES_bob",
        "home_bob/PIPELINES_bob/pipeline.yml",
        "test.txt",
    ]
    assert (incoming / "home_bob/PIPELINES_bob/pipeline.yml").read_text() == "name: pipeline\n"
    assert (incoming / "test.txt").read_text() == "test file"


def test_no_links_changes_nothing(incoming: Path) -> None:
    put(incoming, "a.txt", "a")
    put(incoming, "home/bob/b.txt", "b")
    assert expand_links(str(incoming)) == 0
    assert files(incoming) == ["a.txt", "home/bob/b.txt"]


def test_link_content_is_stripped(incoming: Path) -> None:
    put(incoming, "l.chrislink", "  home/bob/\n")
    put(incoming, "home/bob/x.txt", "x")
    assert expand_links(str(incoming)) == 1
    assert files(incoming) == ["home_bob/x.txt"]


def test_link_to_a_file_expands_its_parent_dir(incoming: Path) -> None:
    put(incoming, "file.chrislink", "home/b/data/file.dcm")
    put(incoming, "home/b/data/file.dcm", b"DICM")
    put(incoming, "home/b/data/other.dcm", b"OTHER")
    assert expand_links(str(incoming)) == 1
    assert files(incoming) == ["home_b_data/file.dcm", "home_b_data/other.dcm"]
    assert (incoming / "home_b_data/file.dcm").read_bytes() == b"DICM"


def test_link_in_a_subdirectory_expands_next_to_itself(incoming: Path) -> None:
    put(incoming, "sub/dir/x.chrislink", "home/alice/feed")
    put(incoming, "home/alice/feed/out.txt", "o")
    assert expand_links(str(incoming)) == 1
    assert files(incoming) == ["sub/dir/home_alice_feed/out.txt"]


def test_missing_target_is_ignored_but_counted_and_removed(incoming: Path) -> None:
    put(incoming, "keep.txt", "k")
    put(incoming, "gone.chrislink", "home/nobody/nothing")
    assert expand_links(str(incoming)) == 1
    assert tree(incoming) == ["keep.txt"]


def test_two_links_to_the_same_target(incoming: Path) -> None:
    put(incoming, "a/l1.chrislink", "home/bob")
    put(incoming, "b/l2.chrislink", "home/bob")
    put(incoming, "home/bob/f.txt", "f")
    assert expand_links(str(incoming)) == 2
    assert files(incoming) == ["a/home_bob/f.txt", "b/home_bob/f.txt"]


def test_expanded_files_are_independent_of_fetched_copies(incoming: Path) -> None:
    put(incoming, "l.chrislink", "home/bob")
    put(incoming, "home/bob/deep/f.txt", "content")
    expand_links(str(incoming))
    assert (incoming / "home_bob/deep/f.txt").read_text() == "content"
    assert not (incoming / "home").exists()


# -- hardening (docs/wire-contract.md §10.1, §13.1) ------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "../outside",
        "../../outside",
        "home/../../outside",
        "home/../../../outside",
        "/etc",
        "/",
        "",
        "   \n",
        ".",
        "./home",
        "..",
        "home//bob",
        "home/./bob",
        "home/\x00bob",
    ],
)
def test_unsafe_link_contents_are_refused(incoming: Path, sentinel: Path, content: str) -> None:
    put(incoming, "evil.chrislink", content)
    put(incoming, "home/bob/x.txt", "x")
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))
    assert_nothing_from(sentinel, incoming)
    # pfcon's traversal wrote a stray copy next to incoming; never here
    assert sorted(os.listdir(incoming.parent)) == ["incoming"]


@pytest.mark.parametrize(
    "content", ["../outside", "home/../../x", "/etc", "", "a/../b", "home/bob/.."]
)
def test_check_link_target_refuses(content: str) -> None:
    with pytest.raises(InvalidInputData):
        check_link_target(content)


def test_check_link_target_normalises_a_trailing_slash() -> None:
    assert check_link_target("home/bob/") == "home/bob"
    assert check_link_target("home/bob") == "home/bob"


def test_link_through_a_symlink_pointing_outside_is_refused(incoming: Path, sentinel: Path) -> None:
    os.symlink(sentinel, incoming / "evil")
    put(incoming, "evil.chrislink", "evil")
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))
    assert_nothing_from(sentinel, incoming)


def test_link_below_a_symlinked_dir_pointing_outside_is_refused(incoming: Path, sentinel: Path) -> None:
    (incoming / "home").mkdir()
    os.symlink(sentinel, incoming / "home" / "bob")
    put(incoming, "l.chrislink", "home/bob/nested")
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))
    assert_nothing_from(sentinel, incoming)


def test_link_to_a_symlinked_file_outside_is_refused(incoming: Path, sentinel: Path) -> None:
    (incoming / "home").mkdir()
    os.symlink(sentinel / "SENTINEL-secret.txt", incoming / "home" / "f.txt")
    put(incoming, "l.chrislink", "home/f.txt")
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))
    assert_nothing_from(sentinel, incoming)


def test_symlinks_inside_a_linked_dir_are_not_copied(incoming: Path, sentinel: Path) -> None:
    put(incoming, "l.chrislink", "home/bob")
    put(incoming, "home/bob/real.txt", "real")
    os.symlink(sentinel, incoming / "home" / "bob" / "escape-dir")
    os.symlink(sentinel / "SENTINEL-secret.txt", incoming / "home" / "bob" / "escape-file")
    assert expand_links(str(incoming)) == 1
    assert tree(incoming) == ["home_bob", "home_bob/real.txt"]
    assert_nothing_from(sentinel, incoming)


def test_symlinked_link_file_is_not_followed(incoming: Path, sentinel: Path) -> None:
    put(sentinel, "trap.chrislink", "home/bob")
    os.symlink(sentinel / "trap.chrislink", incoming / "trap.chrislink")
    put(incoming, "home/bob/x.txt", "x")
    assert expand_links(str(incoming)) == 0
    assert not (incoming / "home_bob").exists()


def test_oversized_link_file_is_refused(incoming: Path) -> None:
    put(incoming, "big.chrislink", "a/" * 5000 + "b")
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))


def test_non_utf8_link_file_is_refused(incoming: Path) -> None:
    put(incoming, "bad.chrislink", b"home/\xff\xfe")
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))


@pytest.mark.parametrize("back", ["home/bob", "home"])
def test_cyclic_links_are_refused(incoming: Path, back: str) -> None:
    put(incoming, "home_bob.chrislink", "home/bob")
    put(incoming, "home/bob/f.txt", "f")
    put(incoming, "home/bob/loop.chrislink", back)
    with pytest.raises(InvalidInputData):
        expand_links(str(incoming))
