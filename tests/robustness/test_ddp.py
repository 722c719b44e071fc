"""Issue 18 item 7: both pretraining pipelines under DDP (2 CPU processes, gloo, Lightning's own launcher:
``occon-pretrain ... devices=2 strategy=ddp``) with a dataset that does not split evenly.

Each run goes through a small driver script that records, per process, what reached the method's
training step (dataset indexes, BG-Mixup flags) and then runs the real ``occon-pretrain`` main: Lightning
starts the second process by running the same script again. The contract (``SeededRandomSampler``):
rank ``r`` of ``w`` trains on every ``w``-th sample of the single-process order of each epoch (equal
shares, the remainder of 11 / 2 dropped), so the samples and their seeds do not depend on the number of
processes; both pipelines make the same object-aware decisions for them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robustness_helpers import pretrain_args

pytestmark = pytest.mark.slow

# 11 usable photos (one more listed file is unreadable and dropped by the start-up check): 5 per process
GOOD = ["a_rgb.jpg", "b_rgb.png", "c_rgb.jpg", "d_rgb.webp", "e_rgb.bmp", "f_rgb.tif", "g16_grey.png", "k_la.png",
        "l_rgba.png", "n_cmyk.jpg", "p_exif6.jpg"]
BATCH, STEPS = 2, 3  # 2 steps per epoch and process: epoch 0 and the first step of epoch 1

DRIVER = '''
import json, os
from occon_plugin.methods.base import OcconMethodMixin

_step = OcconMethodMixin.training_step


def training_step(self, batch, batch_idx):  # record what reached the method, then train as usual
    record = {"epoch": int(self.current_epoch), "index": batch[0].tolist(), "mixed": batch[3]["mixed"].tolist()}
    with open(os.path.join(os.environ["OCCON_DDP_RECORD"], "rank%d.jsonl" % self.trainer.global_rank), "a") as fh:
        fh.write(json.dumps(record) + "\\n")
    return _step(self, batch, batch_idx)


OcconMethodMixin.training_step = training_step
from occon_plugin.cli.pretrain import main

main()
'''


@pytest.fixture(scope="module")
def eleven(mixed, mixed_store, tmp_path_factory):
    data = tmp_path_factory.mktemp("ddp") / "data"
    data.mkdir()
    for name in GOOD + ["r_truncated.jpg"]:
        shutil.copy(mixed.root / name, data / name)
    return data, mixed_store


def _ddp_run(fmt: str, data: Path, store: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path, Path]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    record = tmp_path / "record"
    record.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OCCON_DDP_RECORD": str(record), "OMP_NUM_THREADS": "1"}
    args = pretrain_args(data, tmp_path / "t", "++devices=2", "++strategy=ddp", "++auto_resume.enabled=false",
                         store=store, fmt=fmt, steps=STEPS, batch=BATCH)
    proc = subprocess.run([sys.executable, str(driver), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    return proc, record, tmp_path / "t" / "mocov2_occon" / "mocov2_occon-custom"


def _batches(record: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (record / f"rank{rank}.jsonl").read_text().splitlines()]


def _expected(n: int, seed: int, rank: int, world: int, epoch: int) -> list[int]:
    from occon_plugin.augment.dataset import SeededRandomSampler

    sampler = SeededRandomSampler(n, seed, rank=rank, num_replicas=world)
    sampler.set_epoch(epoch)
    return [index for index, _ in sampler]


RESULTS: dict[str, dict] = {}


@pytest.mark.kind("ddp.both-pipelines")
@pytest.mark.parametrize("fmt", ["image_folder", "dali"])
def test_two_process_ddp_trains_each_rank_on_its_share_of_the_single_process_order(fmt, eleven, tmp_path):
    data, store = eleven
    proc, record, folder = _ddp_run(fmt, data, store, tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "changed after the start-up check" not in text and "Traceback" not in text, text[-4000:]
    assert (folder / "final.ckpt").is_file() and (folder / "last.ckpt").is_file()
    assert not (folder.parent / "mocov2_occon-custom-2").exists()  # both processes wrote into one run folder
    from omegaconf import OmegaConf

    seed, n = int(OmegaConf.load(folder / "config.yaml").seed), len(GOOD)
    got = {rank: _batches(record, rank) for rank in (0, 1)}
    single = _expected(n, seed, 0, 1, 0)  # one process's order of epoch 0
    for rank in (0, 1):
        assert [b["epoch"] for b in got[rank]] == [0, 0, 1]
        for epoch in (0, 1):
            trained = [i for b in got[rank] if b["epoch"] == epoch for i in b["index"]]
            share = _expected(n, seed, rank, 2, epoch)
            assert len(share) == n // 2 and trained == share[:len(trained)], (rank, epoch, trained, share)
    epoch0 = [i for rank in (0, 1) for b in got[rank] if b["epoch"] == 0 for i in b["index"]]
    assert sorted(epoch0) == sorted(single[0::2][:4] + single[1::2][:4])  # the single-process order, split
    RESULTS[fmt] = {rank: [(i, m) for b in got[rank] for i, m in zip(b["index"], b["mixed"])] for rank in (0, 1)}
    if len(RESULTS) == 2:  # both pipelines: the same samples with the same BG-Mixup decisions per process
        assert RESULTS["image_folder"] == RESULTS["dali"]


@pytest.mark.kind("ddp.both-pipelines")
def test_a_dali_error_that_is_not_a_changed_file_is_reported_as_what_it_is(eleven, tmp_path):
    from occon_plugin.augment.dali.datamodule import build_dali_loader
    from occon_plugin.errors import DataError
    from test_pipelines import cfg

    data = shutil.copytree(eleven[0], tmp_path / "data")
    loader = build_dali_loader(cfg(data, eleven[1]))
    batch = next(iter(loader))
    assert len(batch[0]) == 4 and loader.source.recent  # files handed to the decoder are remembered
    error = loader._decode_error(RuntimeError('Assert on "sample_dim() > 0" failed: To convert empty batch to a '
                                              'Tensor, valid dimensionality must be set'))
    assert type(error) is RuntimeError and "not a data problem" in str(error) and "sample_dim" in str(error)
    assert "changed after the start-up check" not in str(error)
    victim = sorted(f for f in loader.source.recent if f.startswith(str(data)))[0]
    Path(victim).write_bytes(Path(victim).read_bytes()[:40])  # now it did change
    error = loader._decode_error(RuntimeError("nvjpeg / libjpeg failure: bad data"))
    assert isinstance(error, DataError) and "changed after the start-up check" in str(error)
    assert victim in str(error) and str(error).count(str(data)) == 1  # only the file that changed is named


@pytest.mark.kind("ddp.both-pipelines")
def test_the_other_ranks_take_rank_0s_run_folder_even_when_it_moved_to_name_2(tmp_path, monkeypatch):
    """Lightning starts ranks > 0 after rank 0 wrote its config.yaml: deciding again they would see a run in
    the folder (auto_resume=false) and move on to <name>-3."""
    from omegaconf import OmegaConf

    from occon_plugin.train.runs import lock_and_plan, share_plan, unshare_plan

    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    make = lambda: OmegaConf.create({"method": "mocov2_occon", "name": "run", "seed": 5,  # noqa: E731
                                     "checkpoint": {"dir": str(tmp_path)}, "auto_resume": {"enabled": False}})
    earlier = tmp_path / "mocov2_occon" / "run"
    earlier.mkdir(parents=True)
    OmegaConf.save(make(), earlier / "config.yaml")  # an earlier run of the name
    cfg = make()
    plan, locks = lock_and_plan(cfg)  # rank 0
    try:
        assert plan.out_dir == tmp_path / "mocov2_occon" / "run-2" and cfg.name == "run-2"
        OmegaConf.save(cfg, plan.out_dir / "config.yaml")  # what rank 0 writes before Lightning starts rank 1
        share_plan(cfg, plan)
        monkeypatch.setenv("LOCAL_RANK", "1")  # rank 1, same command line
        child = make()
        child_plan, child_locks = lock_and_plan(child)
        assert child_plan.out_dir == plan.out_dir and child.name == "run-2" and child_locks == []
        other = make()
        other.seed = 6  # another run (another job of a multirun) is not given rank 0's folder
        assert lock_and_plan(other)[0].out_dir == tmp_path / "mocov2_occon" / "run-3"
    finally:
        unshare_plan()
        for lock in locks:
            lock.release()
