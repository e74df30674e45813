"""The README's library examples run as they are, and print what they say they print."""

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> dict[str, str]:
    """The python block of each library section of the README."""
    text = README.read_text()
    out = {}
    for section in ("snntorch", "SpikingJelly", "norse", "NIR"):
        body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
        blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        assert len(blocks) == 1, section
        out[section] = blocks[0]
    return out


@pytest.mark.parametrize("section", ["snntorch", "SpikingJelly", "norse", "NIR"])
def test_readme_example_runs(section, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the NIR example writes snn.nir
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an example must not trip a warning (DAC range, ...)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        exec(compile(_examples()[section], f"README:{section}", "exec"), namespace)
    trace = namespace["trace"]
    printed = capsys.readouterr().out
    assert printed.strip()
    assert set(trace.dims) >= {"trial", "timestep", "layer"}
    acc = trace.accuracy.values
    assert ((acc >= 0) & (acc <= 1)).all()
    assert (trace.neuron.values != "").any()  # neurons found and metered
