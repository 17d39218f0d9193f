"""Paired intervals, equivalence and bootstrap: against SciPy, and by coverage simulation."""

import os

import numpy as np
import pytest
from scipy import stats as st

from passk_jax import stats as S


def test_paired_difference_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.05, 8)
    b = a - rng.normal(0.02, 0.03, 8)
    r = S.paired_difference(a, b)
    ref = st.ttest_rel(a, b)
    np.testing.assert_allclose(r.t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(r.p_value, ref.pvalue, rtol=1e-10)
    ci = ref.confidence_interval(0.95)
    np.testing.assert_allclose([r.lo, r.hi], [ci.low, ci.high], rtol=1e-10)
    assert r.n == 8 and r.level == 0.95


def test_pairing_matters():
    # A shared per-seed effect (same warm start / data order) cancels in the paired difference.
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.1, 8)
    a = 0.5 + seed_effect + 0.03 + rng.normal(0, 0.005, 8)
    b = 0.5 + seed_effect + rng.normal(0, 0.005, 8)
    assert S.superiority(a, b).verdict == "holds"
    unpaired = st.ttest_ind(a, b)
    assert unpaired.pvalue > 0.05  # an unpaired test would not see it


def test_coverage_of_the_interval():
    rng = np.random.default_rng(2)
    hits = 0
    trials = 2000
    for _ in range(trials):
        d = rng.normal(0.3, 1.0, 5)
        r = S.paired_difference(d, np.zeros(5))
        hits += r.lo <= 0.3 <= r.hi
    assert abs(hits / trials - 0.95) < 0.015, hits / trials


def test_superiority_verdicts():
    base = np.array([0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47])
    noise = np.array([0.004, -0.003, 0.002, -0.001, 0.003, -0.004, 0.001, -0.002])
    assert S.superiority(base + 0.05 + noise, base).verdict == "holds"
    assert S.superiority(base - 0.05 + noise, base).verdict == "does not hold"
    assert S.superiority(base + noise, base).verdict == "inconclusive"
    assert S.superiority(base - 0.05 + noise, base, higher_is_better=False).verdict == "holds"


def test_equivalence_verdicts():
    base = np.linspace(0.4, 0.6, 10)
    small = np.array([0.002, -0.001, 0.001, -0.002, 0.0, 0.001, -0.001, 0.002, -0.002, 0.0])
    assert S.equivalence(base + small, base, margin=0.02).verdict == "holds"
    assert S.equivalence(base + 0.1 + small, base, margin=0.02).verdict == "does not hold"
    wide = np.array([0.05, -0.04, 0.03, -0.05, 0.04, -0.03, 0.05, -0.04, 0.02, -0.03])
    assert S.equivalence(base + wide, base, margin=0.02).verdict == "inconclusive"
    # A 5.8-point-wide test that "found no difference" is not equivalence within 2 points.
    assert S.equivalence(base + wide, base, margin=0.02).verdict != "holds"


def test_bootstrap_paired():
    rng = np.random.default_rng(3)
    a = rng.random(400)
    b = a - 0.05 + rng.normal(0, 0.02, 400)
    r = S.bootstrap_paired(a, b, num_resamples=4000)
    assert r.lo < 0.05 < r.hi and r.lo > 0.04 and r.hi < 0.06
    t = S.paired_difference(a, b)
    np.testing.assert_allclose([r.lo, r.hi], [t.lo, t.hi], atol=0.001)  # large m: bootstrap ~ t


def test_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        S.paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        S.paired_difference([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        S.paired_difference([1], [2])
    with pytest.raises(ValueError, match="margin"):
        S.equivalence([1, 2], [1, 2], margin=0)


def test_degenerate_and_formatting():
    r = S.paired_difference([0.5, 0.6], [0.4, 0.5])  # identical differences
    assert r.lo == r.hi == pytest.approx(0.1) and r.p_value == 0.0
    assert S.paired_difference([0.5, 0.6], [0.4, 0.5]).interval(1, 100) == "+10.0 [+10.0, +10.0]"


def test_align_pairs_keeps_only_ids_both_have():
    a = {0: 0.5, 1: 0.6, 2: None, 3: 0.7}
    b = {1: 0.4, 2: 0.3, 3: 0.5, 4: 0.9}
    xa, xb, ids = S.align_pairs(a, b)
    assert ids == [1, 3] and xa == [0.6, 0.7] and xb == [0.4, 0.5]
    xa, xb, ids = S.align_pairs({(1, 0): 1.0, (0, 1): 2.0}, {(0, 1): 3.0, (1, 0): 4.0})
    assert ids == [(0, 1), (1, 0)] and xa == [2.0, 1.0] and xb == [3.0, 4.0]


def test_maze_study_claims_are_paired_verdicts():
    """The study's verdicts pair runs by seed: a small consistent gain under a large shared seed
    effect holds when paired (it would not with two independent standard errors), and a claim
    with one finished seed pair reports that instead of a verdict."""
    from experiments import maze_study as MS

    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 0.1, 8)  # shared by every method of a seed

    def finals(name):
        gain = 0.02 if name == "pkpo k_opt=4" else 0.0
        return [
            {"_seed": s, **{f"eval/pass@{k}": 0.5 + seed_effect[s] + gain for k in MS.KS}}
            for s in range(8)
        ]

    main = {n: (finals(n), []) for n in MS.MAIN}
    hard = {"hard k_opt=1": ([{"_seed": 0, "train/cum_solve_rate": 0.1}], [])}
    lines = MS._claims(main, hard)
    line = next(x for x in lines if x.startswith("- k_opt=4 beats k_opt=1 at pass@4"))
    assert "**holds**" in line and "8 paired seeds" in line and "+2.0 [+2.0, +2.0]" in line
    xa = [f["eval/pass@4"] for f in main["pkpo k_opt=4"][0]]
    xb = [f["eval/pass@4"] for f in main["pkpo k_opt=1"][0]]
    unpaired_se = np.hypot(np.std(xa, ddof=1), np.std(xb, ddof=1)) / np.sqrt(8)
    assert 0.02 < 2 * unpaired_se  # the unpaired 2-s.e. rule could not have called it
    anneal = next(x for x in lines if "keeps pass@1" in x)
    assert "**holds**" in anneal  # identical per-seed pass@1: equivalent within 3 points
    assert any("hard split, k_opt=4" in x and "fewer than 2 paired seeds" in x for x in lines)


def _write_fake_claim_runs(C, args, gains: dict[str, float], seed: int) -> None:
    """Finished run directories for experiments/claims.py: every method of ``gains`` at 2 warm
    starts x 4 seeds, each metric = 0.4 + a (warm, seed) effect shared by every method + its gain."""
    import json

    pair_effect = np.random.default_rng(seed).normal(0, 0.1, (2, 4))
    for name, gain in gains.items():
        for w in range(2):
            for s in range(4):
                d = C.run_dir(args, name, w, s)
                os.makedirs(d)
                base = 0.4 + pair_effect[w, s] + gain
                fin = {f"eval/pass@{k}": base for k in (1, 2, 4, 8, 16)}
                fin["train/cum_solve_rate"] = base
                with open(os.path.join(d, "final_metrics.json"), "w") as f:
                    json.dump(fin, f)
                with open(os.path.join(d, "run_config.json"), "w") as f:
                    f.write("{}")
                with open(os.path.join(d, "metrics.jsonl"), "w") as f:
                    for t in range(5):
                        rec = {"step": t + 1, "train/reward_mean": base, "train/entropy": 1.0}
                        f.write(json.dumps({**rec, "train/neg_distinct": 3.0 + gain}) + "\n")


def test_claims_study_verdicts_come_from_the_runs_it_finds(tmp_path):
    """experiments/claims.py reads finished run directories, pairs them by (warm start, seed) and
    writes each claim's verdict from the paired differences; a claim without two finished pairs
    is left out rather than called."""
    import json
    import types

    from experiments import claims as C

    args = types.SimpleNamespace(
        warm=2,
        seeds=4,
        out=str(tmp_path / "runs"),
        quick=False,
        margin=3.0,
        steps=5,
        sft_steps=1,
        part=1,
    )
    gains = {"pkpo k4": 0.05, "pkpo k1": 0.0, "pkpo anneal 8->1": 0.001}
    _write_fake_claim_runs(C, args, gains, seed=0)
    md = str(tmp_path / "claims.md")
    text = C.write_results(args, md)
    rows = {v["claim"]: v for v in json.load(open(md[:-3] + ".json"))["verdicts"]}
    r = rows["k_opt = 4 raises pass@4 over k_opt = 1"]
    assert r["verdict"] == "holds" and r["pairs"] == 8 and abs(r["mean"] - 0.05) < 1e-9
    assert rows["k_opt = k_eval is best: k_opt 1 beats 4 on pass@1"]["verdict"] == "does not hold"
    assert rows["annealing 8 -> 1 keeps pass@1 (vs k_opt = 1)"]["verdict"] == "holds"  # 0.1 < 3
    assert not any("Pass@k training" in c for c in rows)  # those methods have no runs here
    assert "**holds**" in text and "Tally: " in text
    assert os.path.exists(tmp_path / "claims" / "verdicts.png")


def test_readme_study_block_is_generated_from_the_committed_results():
    """README's verdict tables are exactly what experiments/readme_results.py writes from the
    committed results JSON (a hand edit, or a results file updated without regenerating, fails)."""
    from experiments import readme_results as RR

    assert RR.main(["--check"]) == 0
    block = RR.render(RR._load("claims.json"), RR._load("unblocking.json"))
    for v in (RR._load("unblocking.json") or {}).get("verdicts", []):
        assert f"**{v['verdict']}**" in block
    with pytest.raises(ValueError):
        RR.splice("no markers here", block)
    fake = {"verdicts": [{"source": "PKPO", "claim": "c", "metric": "entropy", "pairs": 8,
                          "mean": 0.5, "lo": 0.25, "hi": 0.75, "verdict": "holds"}]}  # fmt: skip
    text = RR.render(fake, None)
    assert "| PKPO | c | entropy | 8 | +0.50 [+0.25, +0.75] | **holds** |" in text
    assert "1 hold, 0 do not hold, 0 inconclusive" in text


def test_claims_part2_writes_its_own_results(tmp_path):
    """--part 2: only part-2 methods are read, its claims (including repeated part-1 claims
    whose methods it re-runs) get verdicts, and its figures go next to its own results file."""
    import json
    import types

    from experiments import claims as C

    args = types.SimpleNamespace(
        warm=2, seeds=4, out=str(tmp_path / "runs"), quick=False, margin=3.0, steps=5,
        sft_steps=1, part=2,
    )  # fmt: skip
    gains = {"pkpo k4": 0.0, "chen k4 without 1/sigma": 0.001, "pkpo k1": 0.2}
    _write_fake_claim_runs(C, args, gains, seed=1)
    md = str(tmp_path / "claims_part2.md")
    text = C.write_results(args, md)
    rows = {v["claim"]: v for v in json.load(open(md[:-3] + ".json"))["verdicts"]}
    assert rows["without 1/sigma, Chen k4 matches PKPO k4 (pass@4)"]["verdict"] == "holds"
    assert "k_opt = 4 raises pass@4 over k_opt = 1" not in rows  # pkpo k1 is not in part 2
    assert "part 2" in text.splitlines()[0]
    assert os.path.exists(tmp_path / "claims_part2" / "verdicts.png")
