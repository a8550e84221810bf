"""The console callback prints one table per step, merging an evaluation into its step's training log."""

from types import SimpleNamespace

from hf_dpo.run.console import MetricsTableCallback


def test_train_log_waits_for_the_evaluation_of_the_same_step(capsys):
    callback = MetricsTableCallback(show_progress=False)
    state = SimpleNamespace(is_world_process_zero=True, global_step=10)
    train = {"loss": 0.6, "dpo_loss": 0.6, "accuracy": 0.7}
    callback.on_log(None, state, SimpleNamespace(should_evaluate=True), logs=train)
    assert capsys.readouterr().out == ""  # held back: an evaluation follows at this step
    callback.on_log(
        None,
        state,
        SimpleNamespace(should_evaluate=False),
        logs={"eval_loss": 0.5, "eval_accuracy": 0.8, "eval_runtime": 1.2, "test/nll": 1.5},
    )
    out = capsys.readouterr().out
    assert out.count("Step 10") == 1
    for name in ("dpo_loss", "accuracy", "eval_accuracy", "test/nll"):
        assert name in out
    assert "eval_runtime" not in out

    state.global_step = 15
    callback.on_log(None, state, SimpleNamespace(should_evaluate=False), logs={"loss": 0.4, "dpo_loss": 0.4})
    out = capsys.readouterr().out
    assert "Step 15" in out and "eval_accuracy" not in out


def test_a_held_back_log_is_printed_at_the_end_of_training(capsys):
    callback = MetricsTableCallback(show_progress=False)
    state = SimpleNamespace(is_world_process_zero=True, global_step=3)
    callback.on_log(None, state, SimpleNamespace(should_evaluate=True), logs={"loss": 0.6, "dpo_loss": 0.6})
    callback.on_train_end(None, state, None)
    assert "dpo_loss" in capsys.readouterr().out
