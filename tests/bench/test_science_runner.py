"""bench/science.py's runner: which (set, method, arm) cells a size trains, and the step scheduler that runs
independent steps ``--jobs`` at a time after the steps they read (issue: does it work? -- the standard size
must fit 90 min on 2 cores)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from scenebias import protocol  # noqa: E402


def test_the_standard_size_trains_byol_on_the_background_set_and_narrowing_keeps_the_table(science):
    cells = science.size_cells("standard")
    assert cells[("bg", "mocov2")] == ("baseline", "contracam", "oracle", "onestage")
    assert cells[("bg", "byol")] == ("baseline", "contracam")
    assert ("ctx", "byol") not in cells and cells[("ctx", "mocov2")] == ("baseline", "contracam")
    assert set(science.size_cells("standard", sets=["ctx"])) == {("ctx", "mocov2")}
    # a method and set named together run even where the table has no such cell (the set's arms of MoCo v2)
    assert science.size_cells("standard", sets=["ctx"], methods=["byol"]) == {
        ("ctx", "byol"): ("baseline", "contracam")}
    assert set(science.size_cells("quick", methods=["byol"])) == {("bg", "byol"), ("ctx", "byol")}
    assert all(a == ("baseline", "oracle") for a in science.size_cells("standard", arms=["baseline", "oracle"]).values())
    assert science.size_cells("full", sets=["ctx"], arms=["hardmix"]) == {}  # BG-HardMix: background set only


def test_the_plan_names_what_each_step_reads_and_the_standard_plan_holds_24_pretrainings(tmp_path, science):
    lay = protocol.Layout(tmp_path)
    steps = protocol.plan(lay, protocol.Recipe(), (0, 1, 2), science.size_cells("standard"), lambda seed: None)
    by = {s.label: s for s in steps}
    assert sum(s.stage == "pretrain" for s in steps) == 24
    assert by["pretrain bg byol contracam seed1"].after == ("localize bg byol seed1",)
    assert by["localize bg byol seed1"].after == ("pretrain bg byol baseline seed1",)
    assert by["pretrain bg mocov2 oracle seed2"].after == ("oracle store bg seed2",)
    assert by["pretrain bg mocov2 onestage seed0"].after == ("data seed0",)
    assert by["eval linear ctx mocov2 contracam seed0"].after == ("pretrain ctx mocov2 contracam seed0",)
    assert "pretrain ctx mocov2 random seed0" not in by and "pretrain bg mocov2 random seed0" not in by and "pretrain bg byol oracle seed0" not in by
    seen = set()
    for s in steps:  # plan order is a valid order
        assert set(s.after) <= seen, s.label
        seen.add(s.label)


def test_the_equal_epochs_one_stage_arm_trains_twice_the_epochs_and_refreshes_at_its_thirds(tmp_path):
    """``onestage2x`` (issue 21's "equal total epochs"): the two-stage total (2 x 15), plain epochs 0-9, refreshes
    after epochs 9 and 19; it reads only the data; its localization row is its own last refresh; the compute
    ratio is its own row, next to the one-stage arm's."""
    from scenebias import report

    lay, recipe = protocol.Layout(tmp_path), protocol.Recipe()
    steps = protocol.plan(lay, recipe, (0,), {("bg", "mocov2"): ("baseline", "contracam", "onestage", "onestage2x")},
                          lambda seed: None)
    by = {s.label: s for s in steps}
    long, short = by["pretrain bg mocov2 onestage2x seed0"], by["pretrain bg mocov2 onestage seed0"]
    assert long.after == ("data seed0",)
    assert "++max_epochs=30" in long.argv and "++occon.refresh.every_epochs=10" in long.argv
    assert "++occon.refresh.warmup_epochs=10" in long.argv and "++name=onestage2x" in long.argv
    assert "++max_epochs=15" in short.argv and "++occon.refresh.every_epochs=5" in short.argv
    assert recipe.refresh_epochs("onestage2x") == [9, 19] and recipe.refresh_epochs() == [4, 9]
    loc = by["eval localization bg onestage2x-mocov2 seed0"]
    assert any(a.endswith("/onestage2x/refresh/store-e19") for a in loc.argv) and loc.after == (long.label,)
    timings = {label: {"seconds": sec} for label, sec in (
        ("pretrain bg mocov2 baseline seed0", 100.0), ("localize bg mocov2 seed0", 50.0),
        ("pretrain bg mocov2 contracam seed0", 100.0), ("pretrain bg mocov2 onestage seed0", 125.0),
        ("pretrain bg mocov2 onestage2x seed0", 250.0))}
    ratios = report.onestage_compute(timings, (0,), {("bg", "mocov2"): ("baseline", "contracam", "onestage",
                                                                       "onestage2x")})
    assert ratios["bg/mocov2"]["mean"] == 0.5 and ratios["bg/mocov2/onestage2x"]["mean"] == 1.0


def test_the_onestage_size_adds_one_stage_cells_and_localizes_the_final_models_it_names(tmp_path, science):
    """``--onestage`` (issue 21): one-stage on both sets and both methods, 2x epochs on the background set's
    MoCo v2, and ContraCAM of the final two-stage / one-stage MoCo v2 models with the stage-1 settings (same
    command as stage 1's localization but the arm's checkpoint, its own store folder, its own row); a narrowed
    run keeps only the final localizations of cells it still trains; ``--localize-final`` names every arm."""
    from scenebias import report

    cells = science.size_cells("onestage")
    assert cells == {("bg", "mocov2"): ("baseline", "contracam", "onestage", "onestage2x", "onestage3x"),
                     ("bg", "byol"): ("baseline", "contracam", "onestage"),
                     ("ctx", "mocov2"): ("baseline", "contracam", "onestage")}
    final = science.final_cells(science.SIZES["onestage"], cells)
    assert final == (("bg", "mocov2", "contracam"), ("bg", "mocov2", "onestage"), ("bg", "mocov2", "onestage2x"))
    assert science.final_cells(science.SIZES["onestage"], science.size_cells("onestage", sets=["ctx"])) == ()
    assert science.final_cells(science.SIZES["standard"], science.size_cells("standard")) == ()
    every = science.final_cells(science.SIZES["standard"], science.size_cells("standard"), every=True)
    assert ("ctx", "mocov2", "contracam") in every and not any(a == "baseline" for _, _, a in every)

    lay, recipe = protocol.Layout(tmp_path), protocol.Recipe()
    steps = protocol.plan(lay, recipe, (0,), cells, lambda seed: None, final=final)
    by = {s.label: s for s in steps}
    stage1, fin = by["localize bg mocov2 seed0"], by["localize final bg mocov2 onestage seed0"]
    assert fin.after == ("pretrain bg mocov2 onestage seed0",)
    assert f"model={lay.checkpoint(0, 'bg', 'mocov2', 'onestage')}" in fin.argv
    assert f"output_dir={lay.final_store(0, 'bg', 'mocov2', 'onestage')}" in fin.argv
    same = [a for a in stage1.argv if not a.startswith(("model=", "output_dir="))]
    assert [a for a in fin.argv if not a.startswith(("model=", "output_dir="))] == same
    row = by["eval localization bg final-onestage-mocov2 seed0"]
    assert row.after == (fin.label,) and f"predictions={lay.final_store(0, 'bg', 'mocov2', 'onestage')}" in row.argv
    assert "localize final bg byol onestage seed0" not in by and "localize final bg mocov2 baseline seed0" not in by
    assert sum(s.stage == "pretrain" for s in steps) == 11 and sum(s.stage == "localize" for s in steps) == 6
    # the equal-compute arm: 3 x 15 epochs, refreshes after epochs 14 and 29, not localized at the end
    eq = by["pretrain bg mocov2 onestage3x seed0"]
    assert "++max_epochs=45" in eq.argv and "++occon.refresh.every_epochs=15" in eq.argv
    assert recipe.refresh_epochs("onestage3x") == [14, 29] and "localize final bg mocov2 onestage3x seed0" not in by
    # the report reads the rows: a result written where the row's step writes it comes back under its name
    res = tmp_path / "localization" / "seed0" / "bg" / "final-onestage-mocov2" / "eval_localization.json"
    res.parent.mkdir(parents=True)
    res.write_text('{"summary": {"mask_miou@0.5": 0.4, "max_box_acc_v2": 0.5}}')
    got = report.collect(lay, (0,), cells, final)["localization"]["bg/final-onestage-mocov2"]
    assert got["miou"]["mean"] == 0.4 and got["maxboxacc"]["mean"] == 0.5
    # a plan without that final localization (the standard run in the same folder) does not report the row
    assert "bg/final-onestage-mocov2" not in report.collect(lay, (0,), cells)["localization"]
    # the findings compare each final model with stage 1; only a one-stage arm's line names its last refresh
    row = {"per_seed": [], "miou": {"mean": 0.3, "se": 0.01, "n": 3, "values": []},
           "maxboxacc": {"mean": 0.3, "se": 0.01, "n": 3, "values": []}}
    results = {"train": {}, "localization": {k: row for k in ("bg/contracam-mocov2", "bg/final-contracam-mocov2",
                                                               "bg/final-onestage-mocov2", "bg/onestage-mocov2")}}
    text = report.findings(results, ["mocov2"], ["bg"], ["baseline", "contracam", "onestage"], 6).splitlines()
    at = {arm: next(i for i, line in enumerate(text) if f"final `{arm}` model" in line) for arm in ("contracam", "onestage")}
    assert "last refresh" not in text[at["contracam"] + 1] and "last refresh" in text[at["onestage"] + 1]


def _steps(tmp_path, log, fail=None, sleep=0.05):
    """Five in-process steps: a -> (b, c) -> d, and e (independent); each records start/end."""
    lock = threading.Lock()

    def make(name):
        def run():
            with lock:
                log.append(("start", name))
            time.sleep(sleep)
            if name == fail:
                raise RuntimeError(f"{name} broke")
            (tmp_path / name).write_text("ok")
            with lock:
                log.append(("end", name))
        return run

    spec = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ()}
    return [protocol.Step("eval", name, tmp_path / name, func=make(name), after=after) for name, after in spec.items()]


def test_run_steps_waits_for_the_steps_a_step_reads_and_skips_finished_ones(tmp_path):
    log, done = [], []
    protocol.run_steps(protocol.Layout(tmp_path), _steps(tmp_path, log), jobs=2,
                       on_done=lambda step, seconds: done.append(step.label))
    order = [name for kind, name in log if kind == "end"]
    assert set(order) == set("abcde") and sorted(done) == list("abcde")
    for before, after in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert order.index(before) < [n for k, n in log if k == "start"].index(after)
    # finished steps (their result file exists) are not run again
    log.clear()
    (tmp_path / "d").unlink()
    protocol.run_steps(protocol.Layout(tmp_path), _steps(tmp_path, log), jobs=2)
    assert [name for kind, name in log if kind == "start"] == ["d"]


def test_run_steps_runs_commands_side_by_side_and_in_process_steps_one_at_a_time(tmp_path):
    """Two commands that each sleep 1 s finish in about 1 s with jobs=2 (side by side), 2 s with jobs=1."""
    def cmd(name):
        return protocol.Step("eval", name, tmp_path / name, argv=[
            sys.executable, "-c", f"import time, pathlib; time.sleep(1); pathlib.Path({str(tmp_path / name)!r}).write_text('ok')"])

    lay = protocol.Layout(tmp_path)
    start = time.time()
    protocol.run_steps(lay, [cmd("x"), cmd("y")], jobs=2)
    together = time.time() - start
    start = time.time()
    protocol.run_steps(lay, [cmd("u"), cmd("v")], jobs=1)
    alone = time.time() - start
    assert together < alone - 0.5, (together, alone)
    assert (tmp_path / "logs" / "x.log").read_text().startswith("$ ")
    # in-process steps never overlap (they may not be thread-safe), even when both are ready
    log = []
    both = [s for s in _steps(tmp_path / "f", log) if s.label in ("a", "e")]
    (tmp_path / "f").mkdir()
    protocol.run_steps(lay, both, jobs=2)
    assert [k for k, _ in log] == ["start", "end", "start", "end"]


def test_a_failed_step_skips_the_steps_that_need_it_and_the_others_still_run(tmp_path):
    """A long benchmark does not die on one broken step: what does not need it runs, then the error names it."""
    log = []
    with pytest.raises(protocol.StepsFailed, match="a broke") as info:
        protocol.run_steps(protocol.Layout(tmp_path), _steps(tmp_path, log, fail="a"), jobs=2)
    assert {name for kind, name in log if kind == "end"} == {"e"}
    assert not {"b", "c", "d"} & {name for _, name in log}
    assert list(info.value.failures) == ["a"] and sorted(info.value.skipped) == ["b", "c", "d"]
    assert "3 step(s) that need them did not run" in str(info.value)
    with pytest.raises(ValueError, match="unknown steps"):
        protocol.run_steps(protocol.Layout(tmp_path), [protocol.Step("eval", "z", tmp_path / "z", after=("nope",))])


def test_a_failed_command_names_its_log_and_jobs_below_one_is_a_usage_error(tmp_path, capsys, science):
    step = protocol.Step("eval", "bad step", tmp_path / "never", argv=[sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(protocol.StepsFailed, match=r"bad step failed \(exit 3\); log .*bad_step.log"):
        protocol.run_steps(protocol.Layout(tmp_path), [step])
    assert science.main(["--plan", "--jobs", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    # more steps at once than cores: allowed, with a note that the steps share cores
    assert science.main(["--plan", "--jobs", "99", "--out", str(tmp_path / "o")]) == 0
    assert "--jobs 99 on" in capsys.readouterr().err
    # an in-process step that calls sys.exit fails like any step; the independent one still runs
    quits = protocol.Step("generate", "quits", tmp_path / "q", func=lambda: sys.exit("no backgrounds"))
    other = protocol.Step("generate", "other", tmp_path / "other", func=lambda: (tmp_path / "other").write_text("ok"))
    with pytest.raises(protocol.StepsFailed, match="quits failed: it exited with 'no backgrounds'"):
        protocol.run_steps(protocol.Layout(tmp_path), [quits, other], jobs=2)
    assert (tmp_path / "other").exists()


def test_an_interrupted_run_stops_the_running_commands_and_what_they_started(tmp_path):
    """Ctrl-C (or SIGTERM, which science.py turns into it) while a command runs: the command and a process it
    started are both gone (the step runs in its own process group), and rerunning continues where it stopped."""
    import _thread
    import os

    pids = tmp_path / "pids"
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
              "time.sleep(60)\n")
    step = protocol.Step("pretrain", "long step", tmp_path / "never", argv=[sys.executable, "-c", script])

    def interrupt():
        deadline = time.time() + 20
        while not pids.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        _thread.interrupt_main()

    import signal

    # Ctrl-C as Python's default handler takes it (an earlier test of the session may have left another SIGINT
    # handler, and interrupt_main only calls whatever is installed)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            protocol.run_steps(protocol.Layout(tmp_path), [step])
    finally:
        signal.signal(signal.SIGINT, before)
    started = [int(p) for p in pids.read_text().split()]
    deadline = time.time() + 10
    alive = started
    while alive and time.time() < deadline:
        alive = []
        for pid in started:
            try:
                os.kill(pid, 0)
                with open(f"/proc/{pid}/stat") as fh:  # a zombie (exited, not reaped by its parent) is gone too
                    if fh.read().split()[2] != "Z":
                        alive.append(pid)
            except (ProcessLookupError, FileNotFoundError):
                pass
        time.sleep(0.1)
    assert not alive, f"still running: {alive}"


def test_a_result_file_cut_short_or_garbage_is_not_a_finished_step(tmp_path):
    """A step is skipped when its result file exists: a truncated or garbage eval JSON was reused, and the
    report then stopped with a JSON traceback; now the step counts as not done (and is redone)."""
    done = tmp_path / "eval_linear.json"
    step = protocol.Step("eval", "eval x", done, func=lambda: done.write_text('{"summary": {"test_acc": 0.5}}'))
    for text in ('{"summary": {"test_a', "garbage", "[1, 2]", "{}"):
        done.write_text(text)
        assert not protocol.step_done(step) and protocol.read_json(done) in (None, {})
    protocol.run_steps(protocol.Layout(tmp_path), [step])
    assert protocol.step_done(step) and protocol.read_json(done)["summary"]["test_acc"] == 0.5
    assert protocol.step_done(protocol.Step("pretrain", "p", done))  # other files: existing is enough


def test_usage_errors_found_before_the_run_folder_is_made(tmp_path, capsys, science):
    """A batch larger than the training set, too few background photos, and --report-only of an empty folder
    are one line and exit 2 before anything is written (they used to fail in the data or pretraining step)."""
    out = tmp_path / "o"
    assert science.main(["--quick", "--out", str(out), "--data", "train_per_class=12"]) == 2
    assert "--data train_per_class=12: 72 images for a training batch of 128" in capsys.readouterr().err
    assert science.main(["--quick", "--sets", "ctx", "--out", str(out), "--data", "ctx_scenes=40"]) == 2
    assert "--data ctx_scenes=40" in capsys.readouterr().err
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "notes.txt").write_text("not a photo")
    assert science.main(["--quick", "--out", str(out), "--backgrounds", str(photos)]) == 2
    assert "--backgrounds: 0 photos" in capsys.readouterr().err
    from PIL import Image

    for i in range(12):  # enough photos: the check comes to the folder
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(photos / f"p{i}.png")
    assert science.main(["--quick", "--report-only", "--out", str(out), "--backgrounds", str(photos)]) == 2
    assert "holds no finished step" in capsys.readouterr().err
    assert not out.exists()


def test_a_report_of_a_run_without_a_finished_training_has_no_figure(tmp_path, science):
    """--report-only --docs of a run stopped before any training was evaluated stopped in matplotlib
    (a figure of 0 panels)."""
    meta = {"methods": ["mocov2"], "sets": ["bg"], "arms": ["baseline"]}
    assert science.report.figure({"train": {}}, meta, tmp_path / "img" / "x.png") is None


def test_a_second_run_in_the_folder_of_a_running_one_is_refused(tmp_path, capsys, science):
    """Two processes with one --out ran the same steps at once (same checkpoints, logs and stores)."""
    import fcntl

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(photos / f"p{i}.png")
    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # what the running one holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert science.main(["--quick", "--out", str(out), "--backgrounds", str(photos)]) == 2
    assert "another bench/science.py runs in" in capsys.readouterr().err


def test_a_failed_step_is_reported_once_and_the_run_exits_1(tmp_path, capsys, science):
    """The data step fails (12 files named like photos that are not images): its error is printed once (it
    used to be printed a second time in the closing line), the closing line counts the failed and the skipped
    steps, no page is written, exit 1."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        (photos / f"p{i}.jpg").write_bytes(b"not a jpeg")
    docs = tmp_path / "page.md"
    assert science.main(["--quick", "--sets", "bg", "--arms", "baseline", "--jobs", "1", "--out",
                         str(tmp_path / "out"), "--backgrounds", str(photos), "--docs", str(docs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    failed = [line for line in err if line.startswith("[science] failed: ")]
    assert len(failed) == 1 and "data seed0" in failed[0]
    cause = failed[0].split("[science] failed: ", 1)[1]
    assert sum(cause in line for line in err) == 1, err
    assert "[science] error: 1 step(s) failed (above);" in err[-1] and "step(s) that need them did not run" in err[-1]
    assert f"{docs} not written" in err[-1] and not docs.exists()


def test_the_page_names_the_refresh_preset_the_one_stage_arms_used():
    """``--occon refresh.preset=auto`` changes the one-stage arms' refresh: the page says so instead of the default."""
    assert protocol.refresh_preset(()) == "bg_mixup"
    assert protocol.refresh_preset(("bg_mixup.views=[0]", "refresh.preset=lite", "refresh.preset=auto")) == "auto"
    assert protocol.preset_text("bg_mixup") == "`bg_mixup`: T=1, no refinement" and protocol.preset_text("auto") == "`auto`"
