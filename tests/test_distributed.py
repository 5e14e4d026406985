"""DistributedDataParallel under torchrun: the same run as one process, checkpoints either way, failures that end.

The multi-process tests start real torchrun jobs (2 processes, gloo, CPU) on the synthetic data set.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import as_flags, assert_runs_close, assert_runs_identical, metric_rows, small_config, weights
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from typer.testing import CliRunner

from mlp_cli import launch
from mlp_cli.augment import augment_batch
from mlp_cli.checkpoint import RankSums, SavedProgress
from mlp_cli.cli import app
from mlp_cli.data import load_data
from mlp_cli.devices import configure_threads, resolve_rank_device
from mlp_cli.distributed import Ranks, choose_backend
from mlp_cli.errors import MlpError
from mlp_cli.trainer import EpochProgress
from mlp_cli.training import resume_run, train

HELPERS = Path(__file__).parent / "helpers"
JOB_SECONDS = 180  # a stuck job fails the test instead of hanging the suite
# DDP sums each rank's half-batch gradients, one process the whole batch: the float additions happen in another
# order (PITFALLS D4, M3), so a DDP run and a one-process run agree to within this, not to the bit
DDP_TOLERANCE = 1e-5


def torchrun(*arguments: str | Path, script: Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m mlp_cli ARGUMENTS` (or SCRIPT ARGUMENTS), waited for."""
    target = [str(script)] if script else ["-m", "mlp_cli"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target,
               *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=JOB_SECONDS,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def mlp(*arguments: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlp_cli", *map(str, arguments)], capture_output=True, text=True,
                          timeout=JOB_SECONDS)


def test_the_ranks_parts_of_a_batch_are_disjoint_and_cover_it() -> None:
    for world_size in range(1, 5):
        for count in range(0, 30):
            parts = [Ranks(rank, world_size).share(count) for rank in range(world_size)]
            assert [index for part in parts for index in range(count)[part]] == list(range(count))
            sizes = [part.stop - part.start for part in parts]
            assert max(sizes) - min(sizes) <= 1


def test_the_ranks_batches_put_together_are_the_single_process_batches(data_dir: Path) -> None:
    data = load_data("fashion-mnist", data_dir)
    for skip in (0, 2):
        single = list(data.batches("train", 25, torch.Generator().manual_seed(1), skip=skip))
        parts = [list(data.batches("train", 25, torch.Generator().manual_seed(1), skip=skip,
                                   share=Ranks(rank, 3).share)) for rank in range(3)]
        assert [len(rank_batches) for rank_batches in parts] == [len(single)] * 3  # no rank waits for another
        for index, (images, labels) in enumerate(single):
            assert torch.equal(torch.cat([rank_batches[index][1] for rank_batches in parts]), labels)
            assert torch.equal(torch.cat([rank_batches[index][0] for rank_batches in parts]), images)


def saved_progress_of_two_ranks() -> SavedProgress:
    """A mid-epoch checkpoint's progress written by 2 ranks: the totals and each rank's own sums."""
    own = (RankSums(10, torch.tensor(3.0), torch.tensor(4)), RankSums(9, torch.tensor(2.0), torch.tensor(5)))
    return SavedProgress(torch.Generator().get_state(), 5, RankSums(19, torch.tensor(5.0), torch.tensor(9)), 1.5, own)


def test_resumed_on_as_many_ranks_each_rank_continues_its_own_running_sums() -> None:
    saved = saved_progress_of_two_ranks()
    assert saved.by_rank is not None
    for rank, own in enumerate(saved.by_rank):
        progress = EpochProgress.from_saved(saved, torch.device("cpu"), Ranks(rank, 2))
        assert (progress.samples_done, progress.loss_sum.item(), progress.correct.item()) == (
            own.samples_done, own.loss_sum.item(), own.correct.item())
        assert progress.batches_done == 5


def test_resumed_on_another_number_of_ranks_rank_0_takes_the_totals() -> None:
    saved = saved_progress_of_two_ranks()
    alone = EpochProgress.from_saved(saved, torch.device("cpu"), Ranks(0, 1))
    assert (alone.samples_done, alone.loss_sum.item(), alone.correct.item()) == (19, 5.0, 9)
    first, third = (EpochProgress.from_saved(saved, torch.device("cpu"), Ranks(rank, 3)) for rank in (0, 2))
    assert (first.samples_done, first.loss_sum.item()) == (19, 5.0)
    assert (third.samples_done, third.loss_sum.item(), third.correct.item()) == (0, 0.0, 0)


def test_augmenting_a_part_of_a_batch_gives_that_part_of_the_augmented_batch() -> None:
    images = torch.rand(10, 1, 28, 28)
    whole = augment_batch(images, ("shift", "flip"), torch.Generator().manual_seed(3))
    for rank in range(3):
        rows = Ranks(rank, 3).share(10)
        part = augment_batch(images[rows], ("shift", "flip"), torch.Generator().manual_seed(3), rows, 10)
        assert torch.equal(part, whole[rows])


def test_a_process_of_a_job_takes_the_gpu_of_its_local_rank_or_the_cpu() -> None:
    assert resolve_rank_device("cpu", Ranks(1, 2, 1, 2)).type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_rank_device("auto", Ranks(1, 2, 1, 2)).type == "cpu"
    for name in ("cuda:1", "mps"):
        with pytest.raises(MlpError, match="LOCAL_RANK"):
            resolve_rank_device(name, Ranks(0, 2, 0, 2))


def test_gloo_runs_on_the_cpu_and_nccl_needs_cuda() -> None:
    assert choose_backend("auto", torch.device("cpu")) == "gloo"
    assert choose_backend("gloo", torch.device("cpu")) == "gloo"
    with pytest.raises(MlpError, match="nccl needs CUDA"):
        choose_backend("nccl", torch.device("cpu"))


def test_the_processes_on_one_machine_share_its_cores_unless_told() -> None:
    cores = len(os.sched_getaffinity(0))
    assert configure_threads(0, processes_here=2) == max(1, cores // 2)
    assert configure_threads(cores, processes_here=2) == cores
    torch.set_num_threads(1)


def test_two_processes_train_the_same_model_as_one_process_with_the_same_global_batch(data_dir: Path) -> None:
    # batch 25 of 96 images: parts of 13 and 12, and a last batch of 21 split 11 and 10
    changes = {"batch_size": 25, "epochs": 2, "seed": 7}
    train(small_config(data_dir, **changes), Path("one"))
    job = torchrun("train", *as_flags(data_dir, **changes), "--out", "two")
    assert job.returncode == 0, job.stderr
    assert_runs_close(Path("one"), Path("two"), DDP_TOLERANCE)
    assert "2 processes" in job.stderr and "about 12 per process" in job.stderr
    assert job.stdout.count("best test accuracy") == 1  # rank 0 alone reports
    assert job.stderr.count("training scratch MLP") == 1


def test_every_rank_gets_the_same_metrics_and_only_rank_0_writes_files(data_dir: Path) -> None:
    job = torchrun(data_dir, "run", "report", script=HELPERS / "each_rank_history.py")
    assert job.returncode == 0, job.stderr
    main, other = (json.loads(Path(f"report.{rank}.json").read_text()) for rank in (0, 1))
    # exact: an all-reduce hands every rank the one reduced result, so the ranks' numbers are equal by construction
    assert main["history"] == other["history"] and len(main["history"]) == 2
    assert main["run_dir"] == other["run_dir"] == "run"
    assert set(main["written"]) == {"create_run_dir", "write_metrics", "save_checkpoint"}
    assert other["written"] == []


def test_the_mlp_shortcut_launches_the_same_job_with_augmentation_and_a_validation_split(data_dir: Path) -> None:
    changes = {"impl": "concise", "hidden": (32, 16), "optimizer": "momentum", "lr": 0.05, "augment": ("shift", "flip"),
               "schedule": "cosine", "label_smoothing": 0.1, "val_size": 20, "batch_size": 16, "epochs": 2, "seed": 7}
    train(small_config(data_dir, **changes), Path("one"))
    job = mlp("train", "--nproc-per-node", "2", *as_flags(data_dir, **changes), "--out", "two")
    assert job.returncode == 0, job.stderr
    assert_runs_close(Path("one"), Path("two"), DDP_TOLERANCE)
    assert "on 2 processes (DDP" in job.stderr


def test_a_ddp_checkpoint_loads_in_one_process_without_module_prefixes(data_dir: Path) -> None:
    job = torchrun("train", *as_flags(data_dir, impl="concise", batch_size=16, epochs=1, seed=7), "--out", "two")
    assert job.returncode == 0, job.stderr
    assert list(weights(Path("two/last.pt"))) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    evaluated = CliRunner().invoke(app, ["eval", "two/best.pt", "--data-dir", str(data_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    # to one image: the ranks evaluated half-batches, whose logits may round differently from whole batches
    recorded = metric_rows(Path("two"))[-1]["test_accuracy"]
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(recorded, abs=1 / 40 + 1e-9)


def test_a_single_process_run_resumes_under_torchrun_as_if_never_stopped(data_dir: Path) -> None:
    train(small_config(data_dir, batch_size=16, epochs=1, seed=7), Path("resumed"))
    job = torchrun("train", "--resume", "resumed/last.pt", "--epochs", "3")
    assert job.returncode == 0, job.stderr
    train(small_config(data_dir, batch_size=16, epochs=3, seed=7), Path("straight"))
    assert_runs_close(Path("straight"), Path("resumed"), DDP_TOLERANCE)


def test_sigterm_to_one_rank_stops_every_rank_and_the_run_resumes_in_one_process(data_dir: Path) -> None:
    # batch 4: 24 batches an epoch; rank 1 gets SIGTERM in epoch 2, the ranks agree to stop after batch 16
    flags = as_flags(data_dir, batch_size=4, epochs=3, seed=7)
    job = torchrun("1", "30", "sigterm", "train", *flags, "--out", "stopped", script=HELPERS / "faulty_rank.py")
    assert job.returncode != 0
    assert "stopped in epoch 2 after batch 16; saved stopped/last.pt" in job.stderr, job.stderr
    assert "error: stopped" not in job.stderr  # a stop on request is no failure
    assert "rank 1:" not in job.stderr  # rank 0 speaks for all
    assert len(metric_rows(Path("stopped"))) == 1
    resume_run(Path("stopped/last.pt"), {})
    train(small_config(data_dir, batch_size=4, epochs=3, seed=7), Path("straight"))
    assert_runs_close(Path("straight"), Path("stopped"), DDP_TOLERANCE)


# Two seeds, so that a resume that adds the epoch's running sums in another order than an unbroken run shows up
# on any machine: with rank 0 taking the ranks' total, the resumed epoch's train loss differed in its last bits
# for seeds 1 and 3 (and 2 more of 6) on the machine where this was written, while seed 7 happened to agree.
@pytest.mark.parametrize("seed", [1, 3])
def test_a_ddp_run_with_dropout_stopped_and_resumed_on_as_many_processes_is_the_same_to_the_bit(
        data_dir: Path, seed: int) -> None:
    flags = as_flags(data_dir, batch_size=4, epochs=2, dropout=0.5, seed=seed)
    assert torchrun("train", *flags, "--out", "straight").returncode == 0
    stopped = torchrun("0", "30", "sigterm", "train", *flags, "--out", "stopped", script=HELPERS / "faulty_rank.py")
    assert "stopped in epoch 2 after batch 16" in stopped.stderr, stopped.stderr
    resumed = torchrun("train", "--resume", "stopped/last.pt")
    assert resumed.returncode == 0, resumed.stderr
    assert_runs_identical(Path("straight"), Path("stopped"))


def test_an_exception_in_one_rank_ends_the_job_at_once_with_a_clear_message(data_dir: Path) -> None:
    started = time.monotonic()
    flags = as_flags(data_dir, batch_size=8, epochs=50, dist_timeout=600, seed=7)
    job = torchrun("1", "20", "raise", "train", *flags, "--out", "failed", script=HELPERS / "faulty_rank.py")
    assert job.returncode != 0
    assert time.monotonic() - started < 120  # long before --dist-timeout
    assert "RuntimeError: injected fault" in job.stderr
    assert "error: lost contact with another process of the job" in job.stderr


def test_a_stuck_rank_fails_the_job_after_the_dist_timeout(data_dir: Path) -> None:
    flags = as_flags(data_dir, batch_size=8, epochs=50, dist_timeout=10, seed=7)  # above any start-up skew
    job = torchrun("1", "20", "hang", "train", *flags, "--out", "stuck", script=HELPERS / "faulty_rank.py")
    assert job.returncode != 0
    assert "error: no answer from the other processes within --dist-timeout 10 s" in job.stderr, job.stderr


def test_the_shortcut_passes_a_stop_on_to_every_process_and_exits_like_them(data_dir: Path) -> None:
    command = [sys.executable, "-m", "mlp_cli", "train", "--nproc-per-node", "2",
               *as_flags(data_dir, batch_size=8, epochs=1000, seed=7), "--out", "long", "--quiet"]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + JOB_SECONDS
    while not Path("long/last.pt").exists() and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.2)
    launcher.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = launcher.communicate(timeout=JOB_SECONDS)
    took = f"(stopped {time.monotonic() - signalled:.1f} s after SIGTERM) {stderr}"
    assert launcher.returncode == 143, took
    assert stderr.count("stopped in epoch") == 1 and "error" not in stderr, took
    assert "resume with: mlp train --resume long/last.pt" in stderr


def test_of_torchruns_log_lines_only_a_killed_process_is_shown(caplog: pytest.LogCaptureFixture) -> None:
    launch.quiet_torchrun_logs()
    processes = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
    with caplog.at_level(logging.WARNING, logger=processes.name):
        processes.warning("Sending process %s closing signal %s", 123, "SIGTERM")  # torchrun's own wording
        processes.warning("Unable to shutdown process %s via %s, forcefully exiting via %s", 123, 15, "SIGKILL")
        logging.getLogger("torch.distributed.elastic.agent.server.api").warning("Received 15 death signal")
    assert caplog.messages == ["warning: process 123 did not stop within 30 s of SIGTERM; torchrun killed it"]


def test_the_shortcut_reports_a_failed_rank_in_one_line(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def rank_1_killed(arguments: object) -> None:
        failure = ProcessFailure(local_rank=1, pid=123, exitcode=-signal.SIGKILL, error_file="<N/A>")
        raise ChildFailedError("mlp_cli", {1: failure})

    monkeypatch.setattr(launch, "run", rank_1_killed)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = CliRunner().invoke(app, ["train", "--nproc-per-node", "2", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: rank 1 of 2 was killed by SIGKILL (its message, if any, is above); "
                                     "torchrun stopped the other processes")


def test_the_shortcut_exits_with_rank_0s_code_when_rank_0_reported(data_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def rank_0_stopped(arguments: object) -> None:
        raise ChildFailedError("mlp_cli", {0: ProcessFailure(0, 123, 130, "<N/A>"), 1: ProcessFailure(1, 124, -15,
                                                                                                         "<N/A>")})

    monkeypatch.setattr(launch, "run", rank_0_stopped)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = CliRunner().invoke(app, ["train", "--nproc-per-node", "2", "--data-dir", str(data_dir)])
    assert result.exit_code == 130
    assert result.stderr == ""


def test_the_shortcut_is_refused_inside_torchrun_and_for_no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["train", "--nproc-per-node", "0"])
    assert result.exit_code == 1 and "expected 1 or more processes" in result.stderr
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    result = CliRunner().invoke(app, ["train", "--nproc-per-node", "2"])
    assert result.exit_code == 1 and "already started by torchrun" in result.stderr


def test_the_shortcut_reports_missing_data_once_before_starting_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "run", lambda arguments: pytest.fail("no process should start"))
    result = CliRunner().invoke(app, ["train", "--nproc-per-node", "2", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "nowhere: no Fashion-MNIST files there" in result.stderr


def test_the_other_ranks_prefix_their_errors_and_leave_shared_ones_to_rank_0(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {"TORCHELASTIC_RUN_ID": "test", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                        "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    bad_flag = CliRunner().invoke(app, ["train", "--epochs", "0"])  # every rank reads the same flags
    assert bad_flag.exit_code == 1 and bad_flag.stderr == ""
    missing = CliRunner().invoke(app, ["train", "--data-dir", str(tmp_path / "nowhere"), "--device", "cpu"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: rank 1: ")


def test_more_processes_than_cores_are_refused_in_one_line_before_starting_any(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "run", lambda arguments: pytest.fail("no process should start"))
    monkeypatch.setattr(launch, "available_cores", lambda: 4)
    result = CliRunner().invoke(app, ["train", "--nproc-per-node", "64", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --nproc-per-node 64: this machine lets mlp run on 4 cores;")
    assert "use 1 to 4" in result.stderr


def child_pids(pid: int) -> list[int]:
    """The processes that pid started (Linux)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def is_running(pid: int) -> bool:
    """Whether pid is a live process (a zombie left for a parent that never reaps it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_stop_when_their_launcher_is_killed(data_dir: Path) -> None:
    command = [sys.executable, "-m", "mlp_cli", "train", "--nproc-per-node", "2",
               *as_flags(data_dir, batch_size=8, epochs=1000, seed=7), "--out", "orphans", "--quiet"]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + JOB_SECONDS
    while not Path("orphans/last.pt").exists() and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.2)
    workers = child_pids(launcher.pid)
    assert len(workers) == 2
    launcher.kill()  # as the OOM killer would: no chance to pass anything on
    launcher.wait()
    deadline = time.monotonic() + 30  # "does not hang": they stop at their next batch
    while any(is_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if is_running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []
