"""What every study does with its results: check the output folder before any work,
record its configuration in the dataset's attributes, and write its files so that a
failed run leaves none half-written."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable


def check_output_dir(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out = {str(out)!r} is not allowed: it exists and is not a folder")
    return out


def config_attrs(config) -> dict:
    """A study configuration (a dataclass) as flat netCDF attributes ``study_<field>``:
    tuples, lists and None as JSON, booleans as 0 or 1 (netCDF has no boolean)."""
    def attr(val):
        if isinstance(val, (tuple, list)) or val is None:
            return json.dumps(val)
        return int(val) if isinstance(val, bool) else val

    return {f"study_{k}": attr(val) for k, val in asdict(config).items()}


def write_files(out: Path, writers: dict[str, Callable[[Path], object]]) -> list[Path]:
    """``writers[name](path)`` writes the file ``name`` of ``out``.  Each is written to a
    temporary name first; all are renamed once every one is written, and on a failure the
    temporary files are removed, so that no half-written result is ever left."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = [out / name for name in writers]
    tmp = [p.with_name("tmp-" + p.name) for p in final]
    try:
        for write, path in zip(writers.values(), tmp):
            write(path)
    except BaseException:
        for path in tmp:
            path.unlink(missing_ok=True)
        raise
    for a, b in zip(tmp, final):
        a.replace(b)
    return final
