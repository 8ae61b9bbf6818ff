"""The stored outputs of the notebooks never show a path of the machine that ran them."""
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*.ipynb"))
# the top folders of absolute paths on Linux, macOS and the machines that build the course; Windows drives
MACHINE_FOLDERS = ("tmp", "root", "home", "Users", "work", "site-packages")
MACHINE_PATH = re.compile("/(?:" + "|".join(MACHINE_FOLDERS) + ")/|[A-Z]:\\\\")


def output_texts(notebook: Path):
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            yield "".join(text) if isinstance(text, list) else text
            yield "\n".join(output.get("traceback", []))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stored_outputs_show_no_machine_paths(notebook):
    found = [match.group(0) for text in output_texts(notebook) for match in MACHINE_PATH.finditer(text)]
    assert not found, f"{notebook.name} shows machine paths in its outputs: {sorted(set(found))}"
