"""The shared training loop: metrics, run folders, checkpoints and repeatable runs."""

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_COUNT, write_dataset
from support import small_config

from mlp_cli.checkpoint import load_checkpoint, restore_model
from mlp_cli.config import load_config
from mlp_cli.devices import PARALLEL_MULTIPLY_ADDS
from mlp_cli.errors import MlpError
from mlp_cli.evaluation import evaluate
from mlp_cli.events import BatchProgress, EpochMetrics, TrainingPlan
from mlp_cli.models import build_model, forward_multiply_adds
from mlp_cli.training import train


@dataclass
class RecordingReporter:
    events: list[tuple[str, object]] = field(default_factory=list)

    def on_start(self, plan: TrainingPlan) -> None:
        self.events.append(("start", plan))

    def on_batch(self, progress: BatchProgress) -> None:
        self.events.append(("batch", progress))

    def on_epoch(self, metrics: EpochMetrics) -> None:
        self.events.append(("epoch", metrics))

    def on_checkpoint(self, path: Path) -> None:
        self.events.append(("checkpoint", path))


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_a_run_folder_holds_config_metrics_and_last_and_best_checkpoints(data_dir: Path, impl: str) -> None:
    result = train(small_config(data_dir, impl=impl), Path("runs/mine"))
    assert sorted(path.name for path in result.run_dir.iterdir()) == [
        "best.pt", "config.toml", "last.pt", "metrics.jsonl"]
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds",
                            "train_eval_loss", "train_eval_accuracy", "val_loss", "val_accuracy", "lr"}
    assert load_checkpoint(result.run_dir / "last.pt").epoch == 3
    best_epoch = max(rows, key=lambda row: row["test_accuracy"])["epoch"]
    assert load_checkpoint(result.run_dir / "best.pt").epoch == best_epoch == result.best_epoch


def test_the_saved_config_reproduces_the_run_settings(data_dir: Path) -> None:
    config = small_config(data_dir, impl="concise", lr=0.3)
    result = train(config, Path("run"))
    assert load_config(result.run_dir / "config.toml") == config


def test_training_learns_the_synthetic_task(data_dir: Path) -> None:
    history = train(small_config(data_dir, epochs=8, lr=0.5), Path("run")).history
    assert history[-1].train_loss < history[0].train_loss * 0.5
    assert history[-1].test_accuracy > 0.5  # ten classes: chance is 0.1


@pytest.mark.parametrize("impl", ["scratch", "concise"])
def test_the_same_seed_gives_identical_weights(data_dir: Path, impl: str) -> None:
    first = train(small_config(data_dir, impl=impl, seed=5), Path("a"))
    second = train(small_config(data_dir, impl=impl, seed=5), Path("b"))
    first_state = load_checkpoint(first.run_dir / "last.pt").model_state
    second_state = load_checkpoint(second.run_dir / "last.pt").model_state
    assert all(torch.equal(first_state[key], second_state[key]) for key in first_state)
    assert first.history[-1].test_loss == second.history[-1].test_loss


def test_another_seed_gives_other_weights(data_dir: Path) -> None:
    first = load_checkpoint(train(small_config(data_dir, seed=1), Path("a")).run_dir / "last.pt")
    second = load_checkpoint(train(small_config(data_dir, seed=2), Path("b")).run_dir / "last.pt")
    assert not torch.equal(first.model_state["W1"], second.model_state["W1"])


def test_runs_without_out_get_new_folders_under_runs(data_dir: Path) -> None:
    first = train(small_config(data_dir, epochs=1))
    second = train(small_config(data_dir, epochs=1))
    assert first.run_dir.parent == second.run_dir.parent == Path("runs")
    assert first.run_dir != second.run_dir
    assert len(list((first.run_dir / "metrics.jsonl").read_text().splitlines())) == 1


def test_an_existing_non_empty_out_folder_is_never_reused(data_dir: Path) -> None:
    run = train(small_config(data_dir, epochs=1), Path("run"))
    before = (run.run_dir / "last.pt").read_bytes()
    with pytest.raises(MlpError, match="already exists and is not empty"):
        train(small_config(data_dir, epochs=1, seed=9), Path("run"))
    assert (run.run_dir / "last.pt").read_bytes() == before


def test_reporter_hears_the_plan_progress_and_each_epoch(data_dir: Path) -> None:
    reporter = RecordingReporter()
    train(small_config(data_dir, epochs=2), Path("run"), reporter)
    kinds = [kind for kind, _ in reporter.events]
    assert kinds[0] == "start" and kinds.count("epoch") == 2
    plan = reporter.events[0][1]
    assert (plan.train_samples, plan.num_epochs, plan.device) == (TRAIN_COUNT, 2, "cpu")
    last_batch_of_epoch_one = [p for kind, p in reporter.events if kind == "batch" and p.epoch == 1][-1]
    assert last_batch_of_epoch_one.samples_done == TRAIN_COUNT


def test_recorded_test_metrics_are_those_of_the_saved_model(data_dir: Path) -> None:
    result = train(small_config(data_dir, impl="concise"), Path("run"))
    checkpoint = load_checkpoint(result.run_dir / "last.pt")
    config, model = restore_model(checkpoint, result.run_dir / "last.pt")
    from mlp_cli.data import load_data

    metrics = evaluate(model, load_data("fashion-mnist", data_dir), "test", config)
    assert (metrics.loss, metrics.accuracy) == (result.history[-1].test_loss, result.history[-1].test_accuracy)


def test_an_unavailable_accelerator_is_a_clear_error(data_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MlpError, match="CUDA is not available"):
        train(small_config(data_dir, device="cuda"))


def test_the_library_does_not_import_the_terminal_side() -> None:
    code = "import sys, mlp_cli.training, mlp_cli.evaluation, mlp_cli.data, mlp_cli.models, mlp_cli.checkpoint; " \
           "print(sorted({'rich', 'typer', 'matplotlib'} & {m.split('.')[0] for m in sys.modules}))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_training_equals_the_tutorial_torchvision_pipeline_given_the_same_order(tmp_path: Path) -> None:
    """Our tensors-in-memory path computes exactly what FashionMNIST + ToTensor + DataLoader computes."""
    from torch.nn import functional
    from torch.utils.data import DataLoader
    from torchvision.datasets import FashionMNIST
    from torchvision.transforms import ToTensor

    from mlp_cli.data import load_data

    root = tmp_path / "root"
    write_dataset(root / "FashionMNIST" / "raw")
    data = load_data("fashion-mnist", root)
    tutorial_set = FashionMNIST(str(root), train=True, transform=ToTensor())
    weights = {}
    for pipeline in ("mlp", "tutorial"):
        torch.manual_seed(0)
        model = build_model("scratch", 784, [32], 10, sigma=0.01)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(0)
        for _ in range(2):
            if pipeline == "mlp":
                batches = data.batches("train", 16, generator)
            else:
                order = torch.randperm(len(tutorial_set), generator=generator).tolist()
                batches = DataLoader(tutorial_set, batch_size=16, sampler=order)
            for images, labels in batches:
                loss = functional.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        weights[pipeline] = model.W1.detach().clone()
    assert torch.equal(weights["mlp"], weights["tutorial"])


def test_the_data_order_does_not_replay_the_random_numbers_of_the_weight_init() -> None:
    from mlp_cli.trainer import derive_seed

    seed, count = 0, 1000
    torch.manual_seed(seed)
    weight_stream_order = torch.randperm(count)
    data_order = torch.randperm(count, generator=torch.Generator().manual_seed(derive_seed(seed, "data-order")))
    assert not torch.equal(weight_stream_order, data_order)
    assert derive_seed(seed, "data-order") == derive_seed(seed, "data-order") != derive_seed(seed + 1, "data-order")


def test_threads_setting_sets_torchs_thread_count(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlp_cli.devices.available_cores", lambda: 2)  # the same on a machine with 1 core
    reporter = RecordingReporter()
    train(small_config(data_dir, epochs=1, threads=2), Path("run"), reporter)
    assert torch.get_num_threads() == 2 and reporter.events[0][1].threads == 2
    torch.set_num_threads(1)


@pytest.mark.parametrize(("hidden", "expected_threads"), [((256,), 1), ((1024, 512), 4)])
def test_threads_0_gives_a_small_model_one_thread_and_a_big_one_every_core(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, hidden: tuple[int, ...], expected_threads: int) -> None:
    # the book's 784-256-10 at batch 256: 51 million multiply-adds per forward pass, below the threshold;
    # 784-1024-512-10: 340 million, above it
    monkeypatch.setattr("mlp_cli.devices.available_cores", lambda: 4)
    monkeypatch.setattr("mlp_cli.devices.torch.set_num_threads", lambda count: None)  # this test's own 1 thread stays
    reporter = RecordingReporter()
    config = small_config(data_dir, epochs=1, threads=0, hidden=hidden, batch_size=256)
    train(config, Path("run"), reporter)
    assert reporter.events[0][1].threads == expected_threads


def test_the_thread_threshold_lies_between_the_books_model_and_a_wide_two_layer_one() -> None:
    book = load_config(None, {})
    wide = load_config(None, {"hidden": (1024, 512)})
    assert forward_multiply_adds(book, 784, 10) == 256 * (784 * 256 + 256 * 10)
    assert forward_multiply_adds(book, 784, 10) < PARALLEL_MULTIPLY_ADDS <= forward_multiply_adds(wide, 784, 10)


def test_bf16_precision_trains_under_autocast_and_is_recorded(data_dir: Path) -> None:
    result = train(small_config(data_dir, precision="bf16", lr=0.5, epochs=6), Path("run"))
    assert load_config(result.run_dir / "config.toml").precision == "bf16"
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_a_trained_identity_network_equals_the_single_affine_map(data_dir: Path) -> None:
    for impl in ("scratch", "concise"):
        result = train(small_config(data_dir, impl=impl, activation="identity", epochs=2), Path(f"run-{impl}"))
        _, model = restore_model(load_checkpoint(result.run_dir / "last.pt"), result.run_dir / "last.pt")
        state = model.state_dict()
        if impl == "scratch":
            W1, b1, W2, b2 = state["W1"], state["b1"], state["W2"], state["b2"]
        else:
            W1, b1, W2, b2 = state["1.weight"].T, state["1.bias"], state["3.weight"].T, state["3.bias"]
        W, b = W1 @ W2, b1 @ W2 + b2  # (784, 10), (10,)
        X = torch.randn(64, 784) * 3
        with torch.no_grad():
            torch.testing.assert_close(model(X), X @ W + b, rtol=1e-4, atol=1e-4)


def test_adam_trains_and_resumes_exactly(data_dir: Path) -> None:
    from mlp_cli.training import resume_run

    train(small_config(data_dir, optimizer="adam", lr=1e-3, epochs=2), Path("a"))
    resume_run(Path("a/last.pt"), {"epochs": 4})
    straight = train(small_config(data_dir, optimizer="adam", lr=1e-3, epochs=4), Path("b"))
    a, b = load_checkpoint(Path("a/last.pt")), load_checkpoint(Path("b/last.pt"))
    assert all(torch.equal(a.model_state[key], b.model_state[key]) for key in a.model_state)
    assert a.optimizer_state is not None and "exp_avg" in a.optimizer_state["state"][0]
    assert straight.history[-1].train_loss < straight.history[0].train_loss


def test_report_every_evaluates_the_test_split_every_nth_epoch_and_after_the_last(data_dir: Path) -> None:
    result = train(small_config(data_dir, epochs=5, report_every=2), Path("run"))
    tested = [row.epoch for row in result.history if row.test_accuracy is not None]
    assert tested == [2, 4, 5]
    assert load_checkpoint(result.run_dir / "best.pt").epoch in tested


def test_train_metrics_evaluate_the_whole_train_split(data_dir: Path) -> None:
    result = train(small_config(data_dir, epochs=2, train_metrics=True), Path("run"))
    config, model = restore_model(load_checkpoint(result.run_dir / "last.pt"), result.run_dir / "last.pt")
    from mlp_cli.data import load_data

    whole = evaluate(model, load_data("fashion-mnist", data_dir), "train", config)
    assert (result.history[-1].train_eval_loss, result.history[-1].train_eval_accuracy) == (whole.loss,
                                                                                              whole.accuracy)


def test_weight_decay_adds_decay_times_weight_to_the_gradient() -> None:
    from mlp_cli.optimization import make_optimizer

    torch.manual_seed(0)
    model = build_model("scratch", 784, [8], 10, 0.1)
    before = model.W1.detach().clone()
    gradient = torch.randn_like(before)
    model.W1.grad = gradient.clone()
    config = load_config(None, {"lr": 0.5, "weight_decay": 0.01})
    make_optimizer(model, config).step()
    torch.testing.assert_close(model.W1.detach(), before - 0.5 * (gradient + 0.01 * before))


@pytest.mark.parametrize("optimizer", ["momentum", "adamw"])
def test_every_optimizer_trains(data_dir: Path, optimizer: str) -> None:
    lr = 0.05 if optimizer == "momentum" else 1e-3
    result = train(small_config(data_dir, optimizer=optimizer, lr=lr, epochs=4, dropout=0.2), Path("run"))
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_a_validation_split_chooses_best_pt_and_the_test_split_is_used_once(data_dir: Path) -> None:
    reporter = RecordingReporter()
    result = train(small_config(data_dir, epochs=4, val_size=32), Path("run"), reporter)
    assert reporter.events[0][1].train_samples == TRAIN_COUNT - 32 and reporter.events[0][1].val_size == 32
    assert all(row.val_accuracy is not None for row in result.history)
    assert [row.epoch for row in result.history if row.test_accuracy is not None] == [4]
    best_by_validation = max(result.history, key=lambda row: row.val_accuracy).epoch
    assert result.selected_by == "val" and result.best_epoch == best_by_validation
    assert load_checkpoint(result.run_dir / "best.pt").epoch == best_by_validation


def test_the_held_out_images_are_seeded_disjoint_and_complete(data_dir: Path) -> None:
    from mlp_cli.data import hold_out, load_data

    data = load_data("fashion-mnist", data_dir)
    first = hold_out(data, 20, torch.Generator().manual_seed(1))
    again = hold_out(data, 20, torch.Generator().manual_seed(1))
    assert torch.equal(first.val_images, again.val_images)
    assert len(first.val_labels) == 20 and len(first.train_labels) == TRAIN_COUNT - 20
    together = torch.cat([first.train_images, first.val_images]).reshape(TRAIN_COUNT, -1)
    matches = (together[:, None, :] == data.train_images.reshape(1, TRAIN_COUNT, -1)).all(dim=2)
    assert torch.equal(matches.sum(dim=0), torch.ones(TRAIN_COUNT, dtype=torch.long))
    with pytest.raises(MlpError, match="--val-size 96"):
        hold_out(data, TRAIN_COUNT, torch.Generator())
