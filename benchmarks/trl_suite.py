"""Run TRL's own DPO test suite against hf_dpo, the way a TRL user moving over would.

TRL's ``tests/test_dpo_trainer.py`` is run twice from one work directory: once as written (on TRL) and once
with only the import swapped to hf_dpo. Its Hub models (``trl-internal-testing/tiny-*``) and datasets
(``trl-internal-testing/zen``, ``toolcall``, ``harmony``) are replaced by tiny local stand-ins built here
from config (no download): ``from_pretrained`` and ``load_dataset`` resolve a Hub-style id to a local
directory of that name under the working directory. Vision tests are left out (out of scope for hf_dpo).
The count reported is how many of the tests that pass on TRL also pass on hf_dpo, with every remaining
failure. No GPU is assumed: every ``TrainingArguments`` gets ``use_cpu=True`` (a conftest).

TRL's tests are not shipped in its wheel or sdist; take the file from a TRL checkout, e.g.
``git -C trl show <commit>:tests/test_dpo_trainer.py > test_dpo_trainer.py``. Needs ``trl`` installed and the
tokenizer of ``../shared/models/tiny-random-llama-smollm2-tokenizer`` (or ``--tokenizer``).

    python benchmarks/trl_suite.py --tests test_dpo_trainer.py --workdir .cache/trl_suite --json suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = ROOT.parent / "shared" / "models" / "tiny-random-llama-smollm2-tokenizer"

# A ChatML template that also renders tools, tool calls and tool turns (the stand-in tokenizers' template).
CHAT_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\nYou may call these tools:\\n' }}"
    "{%- for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{%- endfor %}{{ '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}{{ '<|im_start|>tool\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content %}{{ message.content }}{%- endif %}"
    "{%- for call in message.tool_calls | default([], true) %}"
    "{{ '<tool_call>' + (call.function if call.function is defined else call) | tojson + '</tool_call>' }}"
    "{%- endfor %}{{ '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

ZEN = [
    ("Beautiful is better than", " ugly.", " the moon."),
    ("Explicit is better than", " implicit.", " a sandwich."),
    ("Simple is better than", " complex.", " a walrus."),
    ("Complex is better than", " complicated.", " chaotic rain."),
    ("Flat is better than", " nested.", " a volcano."),
    ("Sparse is better than", " dense.", " purple."),
    ("Readability", " counts.", " is a dog."),
    ("Special cases aren't special enough to", " break the rules.", " eat soup."),
    ("Although practicality beats", " purity.", " the drums."),
    ("Errors should never", " pass silently.", " learn to fly."),
    ("Unless", " explicitly silenced.", " it rains."),
    ("In the face of ambiguity, refuse the", " temptation to guess.", " last biscuit."),
    ("There should be one", " obvious way to do it.", " banana."),
    ("Although that way may not be obvious at first unless you're", " Dutch.", " a cloud."),
    ("Now is better than", " never.", " yesterday's lunch."),
    ("Although never is often better than", " *right* now.", " a kettle."),
    ("If the implementation is hard to explain, it's a", " bad idea.", " tuba."),
    ("If the implementation is easy to explain, it may be a", " good idea.", " penguin."),
    ("Namespaces are one honking great idea,", " let's do more of those!", " said the fish."),
]
N_TEST = 2


def _zen_rows(kind: str, rows) -> list[dict]:
    out = []
    for i, (p, c, r) in enumerate(rows):
        user = [{"role": "user", "content": p}]
        if kind == "standard_preference":
            out.append({"prompt": p, "chosen": c, "rejected": r})
        elif kind == "conversational_preference":
            out.append(
                {
                    "prompt": user,
                    "chosen": [{"role": "assistant", "content": c.strip()}],
                    "rejected": [{"role": "assistant", "content": r.strip()}],
                }
            )
        elif kind == "standard_implicit_prompt_preference":
            out.append({"chosen": p + c, "rejected": p + r})
        elif kind == "conversational_implicit_prompt_preference":
            out.append(
                {
                    "chosen": user + [{"role": "assistant", "content": c.strip()}],
                    "rejected": user + [{"role": "assistant", "content": r.strip()}],
                }
            )
        elif kind == "standard_unpaired_preference":
            out.append({"prompt": p, "completion": c if i % 2 == 0 else r, "label": i % 2 == 0})
    return out


def _toolcall_rows() -> list[dict]:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "multiply",
                "description": "Multiply two integers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
            },
        }
    ]
    rows = []
    for a in range(2, 8):
        b = a + 3
        call = {"type": "function", "function": {"name": "multiply", "arguments": {"a": a, "b": b}}}
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a} times {b}?"}],
                "chosen": [
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "name": "multiply", "content": str(a * b)},
                    {"role": "assistant", "content": f"{a} times {b} is {a * b}."},
                ],
                "rejected": [{"role": "assistant", "content": f"{a} times {b} is {a * b + 1}."}],
                "tools": json.dumps(tools),
            }
        )
    return rows


def _write_dataset(root: Path, name: str, configs: dict[str, dict[str, list[dict]]]) -> None:
    """A local dataset directory whose README declares one config per entry: ``load_dataset(dir, config)``."""
    d = root / "trl-internal-testing" / name
    d.mkdir(parents=True, exist_ok=True)
    card = ["---", "configs:"]
    for config, splits in configs.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            (d / config).mkdir(exist_ok=True)
            path = d / config / f"{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            card += [f"  - split: {split}", f"    path: {config}/{split}.jsonl"]
    card += ["---", f"Local stand-in for trl-internal-testing/{name}.", ""]
    (d / "README.md").write_text("\n".join(card))


def build_datasets(root: Path) -> None:
    kinds = [
        "standard_preference",
        "conversational_preference",
        "standard_implicit_prompt_preference",
        "conversational_implicit_prompt_preference",
        "standard_unpaired_preference",
    ]
    train, test = ZEN[:-N_TEST], ZEN[-N_TEST:]
    _write_dataset(
        root, "zen", {k: {"train": _zen_rows(k, train), "test": _zen_rows(k, test)} for k in kinds}
    )
    _write_dataset(root, "toolcall", {"preference": {"train": _toolcall_rows()}})
    harmony = _zen_rows("conversational_preference", train)
    for row in harmony:
        for m in row["chosen"] + row["rejected"]:
            m["thinking"] = "Recall the line."
    _write_dataset(root, "harmony", {"preference": {"train": harmony}})


SMALL = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def _configs(vocab: int) -> dict:
    """The text models TRL's DPO tests name, as tiny configs of the same architecture."""
    import transformers as tf

    moe = dict(num_experts_per_tok=2, output_router_logits=True)
    specs = {
        "tiny-Qwen2ForCausalLM-2.5": ("Qwen2Config", {}),
        "tiny-Cohere2ForCausalLM": (
            "Cohere2Config",
            {"layer_types": ["sliding_attention", "full_attention"]},
        ),
        "tiny-GptOssForCausalLM": (
            "GptOssConfig",
            {"num_local_experts": 4, "head_dim": 8, "layer_types": ["full_attention"] * 2, **moe},
        ),
        "tiny-Qwen3MoeForCausalLM": (
            "Qwen3MoeConfig",
            {"num_experts": 4, "moe_intermediate_size": 16, "head_dim": 8, **moe},
        ),
        "tiny-Glm4MoeForCausalLM": (
            "Glm4MoeConfig",
            {
                "n_routed_experts": 4,
                "moe_intermediate_size": 16,
                "first_k_dense_replace": 1,
                "n_group": 1,
                "topk_group": 1,
                "head_dim": 8,
                **moe,
            },
        ),
        "tiny-Olmo3ForCausalLM": ("Olmo3Config", {"layer_types": ["sliding_attention", "full_attention"]}),
        "tiny-Lfm2ForCausalLM": ("Lfm2Config", {"layer_types": ["conv", "full_attention"]}),
        "tiny-Lfm2ForCausalLM-2.5": ("Lfm2Config", {"layer_types": ["conv", "full_attention"]}),
        "tiny-NemotronHForCausalLM-nano": ("NemotronHConfig", {"hybrid_override_pattern": "M*"}),
    }
    out = {}
    for name, (cls, extra) in specs.items():
        if not hasattr(tf, cls):
            continue
        kwargs = {**SMALL, **extra, "vocab_size": vocab}
        try:
            out[name] = getattr(tf, cls)(**kwargs)
        except Exception as err:  # an architecture this transformers cannot build small: leave it out
            print(f"skip {name}: {type(err).__name__}: {err}", file=sys.stderr)
    return out


REMOTE_CONFIG = """from transformers import LlamaConfig


class RemoteConfig(LlamaConfig):
    model_type = "remote"
"""
REMOTE_MODEL = """from transformers import LlamaForCausalLM

from .configuration_remote import RemoteConfig


class RemoteForCausalLM(LlamaForCausalLM):
    config_class = RemoteConfig
"""


def build_models(root: Path, tokenizer_dir: Path) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    built = []
    for name, config in _configs(len(tokenizer)).items():
        out = root / "trl-internal-testing" / name
        torch.manual_seed(0)
        try:
            model = AutoModelForCausalLM.from_config(config)
        except Exception as err:
            print(f"skip {name}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        built.append(name)
    out = root / "trl-internal-testing" / "tiny-RemoteForCausalLM"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMALL, vocab_size=len(tokenizer))).save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(
        model_type="remote",
        architectures=["RemoteForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_remote.RemoteConfig",
            "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
        },
    )
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "configuration_remote.py").write_text(REMOTE_CONFIG)
    (out / "modeling_remote.py").write_text(REMOTE_MODEL)
    tokenizer.save_pretrained(out)
    return built + ["tiny-RemoteForCausalLM"]


TESTING_UTILS = '''"""Stand-in for TRL's tests/testing_utils.py: the names its DPO tests import."""
import importlib.util

import pytest


class TrlTestCase:
    @pytest.fixture(autouse=True)
    def _tmp_dir(self, tmp_path):
        self.tmp_dir = str(tmp_path)


def _needs(module):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module}")


require_bitsandbytes = _needs("bitsandbytes")
require_liger_kernel = _needs("liger_kernel")
require_peft = _needs("peft")
require_kernels = pytest.mark.skip(reason="hub kernels need a GPU and the Hub")
require_vision = pytest.mark.skip(reason="vision-language pairs are out of scope for hf_dpo")


def is_ampere_or_newer():
    return False
'''


CONFTEST = '''"""No GPU: every TrainingArguments gets ``use_cpu=True`` (TRL's bf16 default: CPU autocast)."""
import transformers

_post_init = transformers.TrainingArguments.__post_init__


def _on_cpu(self, *args, **kwargs):
    self.use_cpu = True
    _post_init(self, *args, **kwargs)


transformers.TrainingArguments.__post_init__ = _on_cpu
'''


def swap_imports(source: str) -> str:
    """TRL's test file with only its imports of the trainer, config and collator pointed at hf_dpo."""
    trl_import, hf_dpo_import = (
        "from trl import DPOConfig, DPOTrainer",
        "from hf_dpo import DPOConfig, DPOTrainer",
    )
    swapped, n = re.subn(f"^{re.escape(trl_import)}$", hf_dpo_import, source, flags=re.M)
    collator = (
        "from trl.trainer.dpo_trainer import DataCollatorForPreference, DataCollatorForVisionPreference"
    )
    if n != 1 or collator not in swapped:
        raise SystemExit("the test file's imports are not the ones this harness swaps; update swap_imports")
    return swapped.replace(
        collator,
        "from hf_dpo import DataCollatorForPreference\n"
        "from trl.trainer.dpo_trainer import DataCollatorForVisionPreference  # vision tests are skipped",
    )


def prepare(workdir: Path, tests: Path, tokenizer_dir: Path) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / "tests").mkdir(parents=True)
    source = tests.read_text()
    (workdir / "tests" / "__init__.py").write_text("")
    (workdir / "tests" / "testing_utils.py").write_text(TESTING_UTILS)
    (workdir / "tests" / "conftest.py").write_text(CONFTEST)
    (workdir / "tests" / "test_on_trl.py").write_text(source)
    (workdir / "tests" / "test_on_hf_dpo.py").write_text(swap_imports(source))
    build_datasets(workdir)
    print("stand-in models:", ", ".join(build_models(workdir, tokenizer_dir)))


def run_pytest(workdir: Path, module: str, extra: list[str]) -> dict[str, tuple[str, str]]:
    """``{test id: (outcome, message)}`` for one module, from pytest's junit report."""
    report = workdir / f"{module}.xml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"tests/{module}.py",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report.name}",
        "-k",
        "not VLM and not vlm and not Vision",
        *extra,
    ]
    subprocess.run(cmd, cwd=workdir, env=env, check=False)
    return parse_report(report)


def parse_report(report: Path) -> dict[str, tuple[str, str]]:
    """``{Class::test[param]: (passed | failed | skipped, first line of the message)}`` of a junit report."""
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                message = (child.get("message") or "").splitlines()[0][:300] if child.get("message") else ""
        results[test_id] = (outcome, message)
    return results


def compare(on_trl: dict, on_hf: dict, tests_file: str) -> dict:
    """The count: of the tests that pass on TRL, those that pass on hf_dpo; and every one that does not."""
    baseline = sorted(t for t, (o, _) in on_trl.items() if o == "passed")
    failures = {t: on_hf.get(t, ("missing", ""))[1] for t in baseline if on_hf.get(t, ("",))[0] != "passed"}
    summary = {
        "tests_file": str(tests_file),
        "run": len(on_trl),  # text-only tests collected (vision ones deselected)
        "pass_on_trl": len(baseline),
        "pass_on_hf_dpo_of_run": sum(o == "passed" for o, _ in on_hf.values()),
        "pass_on_hf_dpo": len(baseline) - len(failures),
        "fail_on_trl": sorted(t for t, (o, _) in on_trl.items() if o == "failed"),
        "hf_dpo_failures": failures,
        "hf_dpo_passes_not_on_trl": sorted(
            t for t, (o, _) in on_hf.items() if o == "passed" and t not in baseline
        ),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=Path, required=True, help="TRL's tests/test_dpo_trainer.py")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "trl_suite")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--json", type=Path, help="write the per-test outcomes here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if not args.tokenizer.is_dir():
        raise SystemExit(f"no tokenizer at {args.tokenizer}; pass --tokenizer DIR")
    prepare(args.workdir.resolve(), args.tests, args.tokenizer)
    on_trl = run_pytest(args.workdir, "test_on_trl", args.pytest_args)
    on_hf = run_pytest(args.workdir, "test_on_hf_dpo", args.pytest_args)
    summary = compare(on_trl, on_hf, str(args.tests))
    passed, total = summary["pass_on_hf_dpo"], summary["pass_on_trl"]
    print(f"\n{passed} of the {total} tests that pass on TRL pass on hf_dpo")
    run, passing = summary["run"], summary["pass_on_hf_dpo_of_run"]
    print(f"{passing} of the {run} tests run pass on hf_dpo ({total} on TRL; skips count as run)")
    for test_id, message in summary["hf_dpo_failures"].items():
        print(f"  FAIL {test_id}: {message}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
