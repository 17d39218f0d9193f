"""Tests of the maze task: generator determinism, held-out splits, Chen et al.'s verifier, fuzzing."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passk_jax.tasks import TASKS, make_task
from passk_jax.tasks.base import Prompt, Task, extract_answer, fuzz_completions
from passk_jax.tasks.maze import (
    MazeTask,
    generate_maze,
    maze_stats,
    score_maze,
    score_maze_graded,
    shortest_path,
)

GRID = "S.*\n..*\n*.E"  # S(0,0); E(2,2); walls at (0,2), (1,2), (2,0)


def small_task(seed=0, **kw):
    kw = {"num_train": 200, "num_eval": 50, "num_hard": 20, **kw}
    return MazeTask(seed=seed, **kw)


def test_registry_and_protocol():
    task = make_task("maze", num_train=5, num_eval=2, num_hard=1)
    assert "maze" in TASKS
    assert isinstance(task, Task)
    assert task.binary and task.name == "maze"
    with pytest.raises(ValueError):
        make_task("no_such_task")
    with pytest.raises(ValueError):
        task.prompts("test")


def test_deterministic_and_seed_dependent():
    a, b, c = small_task(0), small_task(0), small_task(1)
    for split in ("train", "eval", "hard"):
        assert a.prompts(split) == b.prompts(split)
        assert [p.text for p in a.prompts(split)] != [p.text for p in c.prompts(split)]
    assert a.prompts("train", 7) == a.prompts("train")[:7]
    assert len(a.prompts("train")) == 200 and len(a.prompts("hard")) == 20


def test_held_out_never_in_train_and_no_duplicates():
    task = small_task(0, num_train=1000, num_eval=200)
    grids = {s: [p.meta["grid"] for p in task.prompts(s)] for s in ("train", "eval", "hard")}
    for s, g in grids.items():
        assert len(set(g)) == len(g), s
    assert not set(grids["train"]) & set(grids["eval"])
    assert not set(grids["train"]) & set(grids["hard"])
    uids = [p.uid for s in grids for p in task.prompts(s)]
    assert len(set(uids)) == len(uids)
    assert task.prompts("train")[3].uid == "maze/train/5x5/000003"


def test_generated_mazes_are_well_formed_and_have_loops():
    task = small_task(0, sizes=(5, (5, 7)), hard_sizes=(9,), loop_fraction=0.5)
    alphabet = set(task.alphabet)
    cycles = []
    for p in task.prompts("train") + task.prompts("hard"):
        grid = p.meta["grid"]
        rows = grid.split("\n")
        assert len(rows) == p.meta["rows"] and {len(r) for r in rows} == {p.meta["cols"]}
        assert grid.count("S") == 1 and grid.count("E") == 1
        assert set(p.text + p.target) <= alphabet
        assert task.score(p, p.target) == 1.0
        stats = maze_stats(p)
        assert (
            stats["shortest_path_length"] == len(p.target) >= (stats["rows"] + stats["cols"]) // 2
        )
        cycles.append(stats["num_cycles"])
    assert np.mean(cycles) >= 1.5  # loops knocked out: many valid paths
    perfect = small_task(0, loop_fraction=0.0).prompts("train", 50)
    assert all(maze_stats(p)["num_cycles"] == 0 for p in perfect)


def test_compact_prompt_format():
    p = small_task(0).prompts("train", 1)[0]
    assert p.text == p.meta["grid"] + "\n>"
    assert set(p.target) <= set("LRUD")
    inst = small_task(0, prompt_style="instruct").prompts("train", 1)[0]
    assert inst.target.startswith("<answer>") and "<answer>" in inst.text
    assert set(inst.text + inst.target) <= set(small_task(prompt_style="instruct").alphabet)


def test_verifier_known_good_and_bad():
    assert len(shortest_path(GRID)) == 4 and score_maze(GRID, shortest_path(GRID)) == 1.0
    good = ["RDDR", "DRDR", "rddr", "RD DR", "xRyDzDwR", "RLRDDR", "RDDRLR"]
    for g in good:
        assert score_maze(GRID, g) == 1.0, g
    bad = [
        "",
        "RD",  # stops short
        "RR",  # wall
        "L",  # leaves grid
        "U",
        "DD",  # wall at (2,0)
        "RDDRR",  # off the right edge after E
        "RDDRU",  # walks past E into a wall
    ]
    for b in bad:
        assert score_maze(GRID, b) == 0.0, b
    # Walking through E and back still ends on E: only the final cell counts.
    assert score_maze(GRID, "RDDRUDUD") == 0.0  # (1,2) is a wall
    assert score_maze(GRID, "RDDRLR") == 1.0


def test_graded_reward_is_a_solve_only_at_one_and_never_pays_for_breaking_rules():
    # d_start = 4; partial credit 0.5 * (1 - d_end / d_start).
    for g in ["RDDR", "DRDR", "RDDRLR", "<answer>RDDR</answer>"]:
        assert score_maze_graded(GRID, g) == 1.0 == score_maze(GRID, g), g
    assert score_maze_graded(GRID, "R") == pytest.approx(0.125)  # (0,1): d = 3
    assert score_maze_graded(GRID, "RD") == pytest.approx(0.25)  # (1,1): d = 2
    assert score_maze_graded(GRID, "RDD") == pytest.approx(0.375)  # (2,1): d = 1
    # Nothing solved, no progress, or a rule broken anywhere on the walk: 0.
    for b in ["", "ready no moves", "RL", "RR", "L", "DD", "RDDRR", "RDDRU", "RDRR"]:
        want = 0.25 if b == "ready no moves" else 0.0  # raw text: r, d -> (1,1)
        assert score_maze_graded(GRID, b) == want, b
    assert score_maze_graded("no start", "R") == 0.0 and score_maze_graded(GRID, None) == 0.0
    # Any non-solve stays strictly below the pass threshold, on fuzzed completions too.
    task = small_task(graded=True)
    assert not task.binary and small_task().binary
    p = task.prompts("eval", 1)[0]
    for c in fuzz_completions(0, 200) + [p.target, p.target[:-1], ""]:
        r = task.score(p, c)
        assert 0.0 <= r <= 1.0 and (r >= 1.0) == (score_maze(p.meta["grid"], c) == 1.0), c


def test_verifier_extraction_rules():
    # Last <answer> pair wins over everything else; raw L/R/U/D outside it is ignored.
    assert score_maze(GRID, "LLLL <answer>UU</answer> <answer>RDDR</answer> LLL") == 1.0
    assert score_maze(GRID, "<answer>RDDR</answer> then <answer>R</answer>") == 0.0
    # Box when no complete answer pair; brace-balanced content of the last box.
    assert score_maze(GRID, "Let me think... \\boxed{X} \\boxed{R{D}DR}") == 1.0
    assert score_maze(GRID, "<answer> only open \\boxed{RDDR}") == 1.0
    # Raw text otherwise: every l/r/u/d letter counts, so prose usually fails.
    assert score_maze(GRID, "ready") == 0.0  # r, d, then y/e/a skipped: (0,1)->(1,1) no E
    assert score_maze(GRID, "r,d,d,r") == 1.0
    assert extract_answer("a<answer>x</answer>b<answer>y</answer>c") == "y"
    assert extract_answer("\\boxed{a{b}c}") == "a{b}c"
    assert extract_answer("\\boxed{unbalanced") == "\\boxed{unbalanced"


def test_verifier_degenerate_inputs():
    assert score_maze("...\n...", "R") == 0.0  # no S
    assert score_maze(GRID, None) == 0.0
    assert score_maze(None, "R") == 0.0
    ragged = "S.\n.\n.E"
    assert score_maze(ragged, "RD") == 0.0  # (1,1) beyond the ragged row
    assert score_maze(ragged, "DDR") == 1.0
    p = Prompt(text="", target=None, meta={}, uid="x")
    assert small_task().score(p, "R") == 0.0


def test_generate_maze_rejects_bad_sizes():
    rng = np.random.default_rng(0)
    for bad in (4, 1, 2):
        with pytest.raises(ValueError):
            generate_maze(rng, bad, 5)
    with pytest.raises(ValueError):
        MazeTask(sizes=(6,))
    with pytest.raises(ValueError):
        generate_maze(rng, 5, 5, loop_fraction=1.5)
    with pytest.raises(ValueError):  # 3x3 has too few distinct mazes for 500 prompts
        MazeTask(sizes=(3,), num_train=500, num_eval=0, num_hard=0).prompts("train")


def test_fuzz_10000_strings_never_raise():
    task = small_task(0)
    prompts = task.prompts("eval", 10)
    strings = fuzz_completions(0, 10_000)
    start = time.perf_counter()
    rewards = task.score_batch([prompts[i % 10] for i in range(10_000)], strings)
    elapsed = time.perf_counter() - start
    assert rewards.shape == (10_000,) and set(np.unique(rewards)) <= {0.0, 1.0}
    assert elapsed < 10.0
    # Very long inputs are linear time.
    long = "\\boxed{" * 20_000 + "<answer>" * 20_000 + "R" * 100_000
    assert task.score(prompts[0], long) in (0.0, 1.0)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from(list("LRUDlrud{}\\boxed<answer>/ *.SE\n")), max_size=60))
def test_hypothesis_scores_are_binary(text):
    assert score_maze(GRID, text) in (0.0, 1.0)
    assert score_maze(GRID, f"<answer>{text}</answer>") in (0.0, 1.0)
