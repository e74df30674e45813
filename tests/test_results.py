"""Writing a study's files: all or nothing."""

import pytest

from studies.results import check_output_dir, write_files


def test_all_files_are_written_and_no_temporary_is_left(tmp_path):
    paths = write_files(tmp_path / "out", {"a.txt": lambda p: p.write_text("a"),
                                           "b.txt": lambda p: p.write_text("b")})
    assert [p.read_text() for p in paths] == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]


def test_a_failed_writer_leaves_no_file_and_keeps_the_old_results(tmp_path):
    out = tmp_path / "out"
    write_files(out, {"a.txt": lambda p: p.write_text("old a"), "b.txt": lambda p: p.write_text("old b")})

    def broken(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_files(out, {"a.txt": lambda p: p.write_text("new a"), "b.txt": broken})
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    assert (out / "a.txt").read_text() == "old a" and (out / "b.txt").read_text() == "old b"


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="out = .* is not a folder"):
        check_output_dir(tmp_path / "f")
