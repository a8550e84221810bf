"""The public API: every name the README, docs and examples import comes from ``hf_dpo`` or a documented
subpackage (``hf_dpo.data``, ``hf_dpo.eval``, ``hf_dpo.on_policy``, ``hf_dpo.train``) and is listed in its
``__all__``."""

import importlib
import re
from pathlib import Path

import hf_dpo

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ("hf_dpo", "hf_dpo.data", "hf_dpo.eval", "hf_dpo.on_policy", "hf_dpo.train")
IMPORT = re.compile(r"^\s*from (hf_dpo[\w.]*) import \(?([\w, \n]+?)\)?\s*$", re.M)


def _user_facing_imports() -> list[tuple[str, str, str]]:
    found = []
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py")]:
        for module, names in IMPORT.findall(path.read_text()):
            found += [
                (path.name, module, n.strip()) for n in names.replace("\n", " ").split(",") if n.strip()
            ]
    return found


def test_docs_and_examples_import_only_public_names():
    imports = _user_facing_imports()
    assert len(imports) > 20  # the scan finds the imports (a broken pattern would pass vacuously)
    bad = [f"{file}: from {module} import {name}" for file, module, name in imports if module not in PUBLIC]
    assert not bad, "import from hf_dpo or a documented subpackage instead:\n" + "\n".join(bad)
    for file, module, name in imports:
        mod = importlib.import_module(module)
        assert name in mod.__all__, f"{file}: {name} is not in {module}.__all__"
        assert hasattr(mod, name), f"{file}: {module}.{name} does not exist"


def test_every_exported_name_exists():
    for module in PUBLIC:
        mod = importlib.import_module(module)
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, f"{module}.__all__ lists missing names {missing}"
    assert {"DPOTrainer", "DPOConfig", "DataCollatorForPreference", "score_batch", "LOSSES"} <= set(
        hf_dpo.__all__
    )
