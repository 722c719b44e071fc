"""Under DDP every rank draws from the same global (index, seed) order: samples and their
augmentation seeds do not depend on the number of processes."""
import subprocess
import sys

from occon_plugin import host
from occon_plugin.augment.dataset import SeededRandomSampler

N, SEED = 23, 7


def test_explicit_ranks_split_the_single_process_order():
    single = list(SeededRandomSampler(N, SEED))
    shards = [list(SeededRandomSampler(N, SEED, rank=r, num_replicas=3)) for r in range(3)]
    assert all(len(s) == N // 3 for s in shards)
    together = sorted(pair for s in shards for pair in s)
    assert together == sorted(single[: (N // 3) * 3])  # same pairs (index AND seed), none twice


WORKER = """
import sys, torch.distributed as dist
from occon_plugin.augment.dataset import SeededRandomSampler
rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method="file://" + init, rank=rank, world_size=world)
sampler = SeededRandomSampler(%d, %d)  # rank and world read from the process group
open(out, "w").write(repr((len(sampler), list(sampler))))
dist.barrier()  # no rank tears the group down while the other is still connecting (flaky under load)
dist.destroy_process_group()
""" % (N, SEED)


def test_real_gloo_process_group_is_detected(tmp_path):
    init = tmp_path / "init"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), "2", str(init), str(tmp_path / f"rank{r}.txt")])
             for r in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    results = [eval((tmp_path / f"rank{r}.txt").read_text()) for r in range(2)]
    single = list(SeededRandomSampler(N, SEED))
    assert [length for length, _ in results] == [N // 2, N // 2]
    assert sorted(results[0][1] + results[1][1]) == sorted(single[: (N // 2) * 2])


def test_pretraining_keeps_its_own_sampler():
    trainer = host.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                           **host.KEEP_SAMPLER)
    connector = trainer._accelerator_connector
    flag = getattr(connector, "use_distributed_sampler", getattr(connector, "replace_sampler_ddp", None))
    assert flag is False
