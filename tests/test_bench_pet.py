"""The PET table's preconditions and verdicts (scripts/pet_table.py), on fabricated runs: no training.

Why: the table is meant to say "gradient control is ahead of vanilla" only where the setting could show it. These
tests pin that a collapsed attacker's module, a vanilla backdoor the user's retraining does not erase, and too few
seeds each turn a cell into "setting cannot decide", and that with the preconditions met the paired interval
decides.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from pet_table import CANNOT, ROWS, Run, judge, pair_overrides, preconditions, table

SEEDS = ("1", "2", "3")


def runs(cacc: float, asr: float, lfr: list[float], **flags: bool) -> list[Run]:
    """One run per seed with the given LFRs (CACC after the user's fine-tuning 0.85 throughout)."""
    return [Run(seed, cacc, asr, 0.85, value, **flags) for seed, value in zip(SEEDS, lfr, strict=True)]


CLEAN = runs(0.88, 0.10, [0.10, 0.11, 0.09])
VANILLA = runs(0.87, 1.00, [0.40, 0.50, 0.45])  # forgets: ASR 100 → LFR 45
AHEAD = runs(0.86, 1.00, [0.80, 0.88, 0.86])  # +39.7 (40, 38, 41), tight: the interval is above zero


def test_with_the_preconditions_met_an_interval_above_zero_says_ahead() -> None:
    difference, verdict = judge(AHEAD, VANILLA, preconditions(CLEAN, VANILLA))
    assert verdict == "ahead"
    assert difference.startswith("+39.67 [")


def test_an_interval_holding_zero_or_below_it_says_so() -> None:
    pre = preconditions(CLEAN, VANILLA)
    assert judge(runs(0.86, 1.0, [0.30, 0.60, 0.45]), VANILLA, pre)[1] == "not distinguishable"
    assert judge(runs(0.86, 1.0, [0.10, 0.21, 0.14]), VANILLA, pre)[1] == "behind"


def test_a_collapsed_attacker_module_makes_the_cell_undecidable() -> None:
    collapsed = [*AHEAD[:2], Run("3", 0.86, 1.0, 0.85, 0.86, collapsed=True)]  # one seed predicts one class
    difference, verdict = judge(collapsed, VANILLA, preconditions(CLEAN, VANILLA))
    assert verdict.startswith(CANNOT) and "method module collapsed (1/3 seeds)" in verdict
    assert difference.startswith("+39.67")  # the numbers stay, the verdict does not follow them
    vanilla = runs(0.87, 1.0, [0.40, 0.50, 0.45], collapsed=True)
    assert "vanilla module collapsed" in judge(AHEAD, vanilla, preconditions(CLEAN, vanilla))[1]


def test_a_module_that_did_not_learn_the_clean_task_or_a_collapsed_clean_module_makes_it_undecidable() -> None:
    low = runs(0.80, 1.00, [0.80, 0.88, 0.86])  # 8 points below Clean's 88
    verdict = judge(low, VANILLA, preconditions(CLEAN, VANILLA))[1]
    assert verdict.startswith(CANNOT) and "method CACC on B 8.0 points below Clean" in verdict
    within = runs(0.855, 1.00, [0.80, 0.88, 0.86])  # 2.5 points below: allowed
    assert judge(within, VANILLA, preconditions(CLEAN, VANILLA))[1] == "ahead"
    broken = runs(0.50, 0.10, [0.1, 0.1, 0.1], collapsed=True)
    assert "Clean module collapsed" in judge(AHEAD, VANILLA, preconditions(broken, VANILLA))[1]
    assert "no Clean row" in judge(AHEAD, VANILLA, preconditions([], VANILLA))[1]


def on_a(rows: list[Run], cacc: float, collapsed: bool = False) -> list[Run]:
    return [dataclasses.replace(r, source_cacc=cacc, source_collapsed=collapsed) for r in rows]


def test_a_is_read_on_the_attackers_test_set_when_every_run_was_evaluated_there() -> None:
    """The issue's (a): the module learns the attacker's task. A module 6 points below Clean on A fails (a) even
    if it matches Clean on B; one that matches on A passes even if B differs; a run without its A evaluation
    sends the check back to B for that row, and a collapse counts on the test set (a) reads, not on B alone."""
    clean = on_a(CLEAN, 0.83)
    weak_on_a = on_a(AHEAD, 0.77)  # B: 86 against Clean's 88, within 3 points
    verdict = judge(weak_on_a, on_a(VANILLA, 0.82), preconditions(clean, on_a(VANILLA, 0.82)))[1]
    assert verdict.startswith(CANNOT) and "method CACC on A 6.0 points below Clean" in verdict
    low_on_b = on_a(runs(0.80, 1.00, [0.80, 0.88, 0.86]), 0.82)  # 8 points below on B, 1 on A
    assert judge(low_on_b, on_a(VANILLA, 0.82), preconditions(clean, on_a(VANILLA, 0.82)))[1] == "ahead"
    assert (
        "method CACC on B 8.0" in judge(runs(0.80, 1.0, [0.8, 0.88, 0.86]), VANILLA, preconditions(clean, VANILLA))[1]
    )
    collapsed_on_a = on_a(AHEAD, 0.83, collapsed=True)
    assert "method module collapsed (3/3 seeds)" in judge(collapsed_on_a, VANILLA, preconditions(clean, VANILLA))[1]
    # one label on B before the user's retraining, A learnt: a transfer effect (Enron -> Ling-Spam), not a failure
    transfer = [dataclasses.replace(r, collapsed=True) for r in clean]
    assert judge(on_a(AHEAD, 0.83), on_a(VANILLA, 0.82), preconditions(transfer, on_a(VANILLA, 0.82)))[1] == "ahead"
    text = "\n".join(
        table(
            {("p:q", "adapter", "clean"): clean, ("p:q", "adapter", "vanilla"): on_a(VANILLA, 0.82)},
            ["p:q"],
            ["adapter"],
            ["clean", "vanilla"],
        )
    )
    assert "| p→q | adapter | A | 83.0 ± 0.0 | 82.0 ± 0.0 | yes |" in text
    assert "| p→q | adapter | Vanilla (= BadNets) | 82.0 ± 0.0 | 87.0 ± 0.0 |" in text


def test_the_attacker_test_run_reads_the_module_on_a_without_the_users_retraining() -> None:
    """The A evaluation is the same job with A as the run's dataset, no defense (the preset's defense knobs
    deleted) and no clean model; it must compose and pass bdrun's checks, and keep every attack knob (so the
    attacker's module has the same stage key and is reused)."""
    from bench_pet import on_attacker_test, row_args

    from bdrun.preflight import preflight

    args = row_args("pet_paper_cpu", "sst2:imdb", "gc", ["adapter"], ["1"], "start", ["defense.epochs=5"])
    job = on_attacker_test(args, "sst2:imdb")
    assert "dataset=sst2" in job and "dataset=imdb" not in job and "defense.epochs=5" not in job
    assert [a for a in args if a.startswith("attack")] == [a for a in job if a.startswith("attack")]
    assert len(preflight(job)) == 1


def test_a_vanilla_that_does_not_forget_makes_it_undecidable() -> None:
    stubborn = runs(0.87, 1.00, [0.95, 0.92, 0.96])  # LFR 94 against ASR 100: 6 points forgotten
    pre = preconditions(CLEAN, stubborn)
    assert pre.vanilla_forgets and not pre.vanilla_learns
    verdict = judge(runs(0.86, 1.0, [1.0, 1.0, 1.0]), stubborn, pre)[1]
    assert verdict.startswith(CANNOT) and "vanilla forgets only" in verdict


def test_fewer_than_three_shared_seeds_or_a_collapsed_retrained_module_make_it_undecidable() -> None:
    assert "2 seeds (needs 3)" in judge(AHEAD[:2], VANILLA, preconditions(CLEAN, VANILLA))[1]
    assert "2 seeds (needs 3)" in judge(AHEAD, VANILLA, preconditions(CLEAN[:2], VANILLA))[1]
    user = [*AHEAD[:2], Run("3", 0.86, 1.0, 0.5, 1.0, user_collapsed=True)]
    assert "1 retrained module(s) collapsed" in judge(user, VANILLA, preconditions(CLEAN, VANILLA))[1]


@pytest.mark.parametrize(
    ("pair", "row", "expected"),
    [
        ("sst2:imdb", "gc", ["attack.source=sst2", "dataset=imdb", "attack.position=start"]),
        ("sst2:sst2_glue", "gc", ["attack.source=sst2", "dataset=sst2_glue"]),
        (
            "enron:lingspam",
            "ripple",
            ["attack.source=enron", "dataset=lingspam", "attack.num_triggers=10", "attack.position=start"],
        ),
        ("lingspam:enron", "lwp", ["attack.source=lingspam", "dataset=enron", "attack.position=start"]),
    ],
)
def test_pair_overrides_give_spam_sources_ten_triggers_and_long_texts_the_rule(pair, row, expected) -> None:
    assert pair_overrides(pair, ROWS[row], "start") == expected


def test_the_table_marks_each_cell_and_states_the_preconditions() -> None:
    cells = {("sst2:imdb", "adapter", "clean"): CLEAN, ("sst2:imdb", "adapter", "vanilla"): VANILLA}
    cells[("sst2:imdb", "adapter", "gc")] = AHEAD
    cells[("sst2:imdb", "adapter", "ripple")] = runs(0.86, 1.0, [0.8, 0.9, 0.85], collapsed=True)
    lines = table(cells, ["sst2:imdb"], ["adapter"], ["clean", "vanilla", "ripple", "gc"])
    text = "\n".join(lines)
    assert (
        "| sst2→imdb | adapter | B | 88.0 ± 0.0 | 87.0 ± 0.0 | yes | 100.0 ± 0.0 → 45.0 ± 5.0 | yes | 3 / 3 | yes |"
        in text
    )
    gc = next(line for line in lines if "both (gradient control)" in line)
    assert gc.endswith("| ahead |")
    ripple = next(line for line in lines if "| RIPPLe |" in line)
    assert "86.0 ± 0.0 †" in ripple and CANNOT in ripple
    assert next(line for line in lines if "Vanilla (= BadNets)" in line).endswith("| — | reference |")


def test_rows_and_pet_forms_without_runs_read_not_run() -> None:
    """A partial table (a pair measured with three rows, a PET form not at all) says what was not run instead of
    a verdict or a precondition that no run could check."""
    cells = {("sst2:imdb", "adapter", "clean"): CLEAN, ("sst2:imdb", "adapter", "vanilla"): VANILLA}
    lines = table(cells, ["sst2:imdb"], ["adapter", "parallel_adapter"], ["clean", "vanilla", "gc"])
    assert next(line for line in lines if "both (gradient control)" in line).endswith("| n/a | — | not run |")
    assert not any("| parallel_adapter |" in line for line in lines)
    assert "Not run: sst2→imdb parallel_adapter." in lines


def test_every_row_of_a_spam_long_text_pair_composes_and_passes_bdruns_checks() -> None:
    """Each row's overrides on the shared preset (ten triggers, triggers at the start, α scaling) are a valid job:
    a row whose knobs an attack does not have (LWP has no num_triggers) would fail here, not after hours."""
    from bench_pet import row_args

    from bdrun.preflight import preflight

    for key in ROWS:
        args = row_args("pet_paper_cpu", "enron:lingspam", key, ["parallel_adapter"], ["1"], "start", [])
        assert len(preflight(args)) == 1, key
    assert "attack.clnorm_alpha_scale=paper_steps" in row_args("pet_paper_cpu", "sst2:imdb", "gc", [], [], "start", [])
    assert "attack.clnorm_alpha_scale=none" in row_args("pet_paper", "sst2:imdb", "gc", [], [], "512", [])
    assert "model.max_length=512" in row_args("pet_paper", "sst2:imdb", "gc", [], [], "512", [])


def test_the_clean_rows_rate_of_zero_poisons_no_row() -> None:
    """The Clean row is ``attack=badnets attack.poison_rate=0`` on A: a clean module with the attacker's budget."""
    from bdrun.attacks import ATTACKS
    from bdrun.data import TextDataset

    train = TextDataset([f"sentence number {i} here" for i in range(20)], [0, 1] * 10, [False] * 20)
    poisoned = ATTACKS.build({"name": "badnets", "poison_rate": 0, "label_mode": "any"}).poison(train)
    assert (poisoned.texts, poisoned.labels, any(poisoned.poisoned)) == (train.texts, train.labels, False)


def fake_job(folder: Path, seed: int, metrics: dict, attack: dict | None = None) -> None:
    """A finished Hydra job folder as bdrun leaves it (overrides, composed config, metrics, status)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- model.tuning=adapter\n")
    config = {"seed": seed, "model": {"tuning": "adapter"}, "dataset": {"name": "imdb"}, "attack": attack or {}}
    (folder / ".hydra" / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    if attack:  # the group's choice, as Hydra records it
        (folder / ".hydra" / "hydra.yaml").write_text(
            json.dumps({"hydra": {"runtime": {"choices": {"attack": attack["name"]}}}})
        )
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "status.json").write_text(json.dumps({"status": "completed"}))


def test_collect_joins_each_run_with_its_modules_evaluation_on_a_by_seed(tmp_path: Path) -> None:
    """A wrong join would silently read (a) on B or on another seed's module: the A number of seed 2 must land
    on seed 2's run, and a run whose A evaluation did not finish keeps None (so (a) falls back to B)."""
    from bench_pet import ATTACKER_TEST, collect

    for seed, cacc in ((1, 0.60), (2, 0.62), (3, 0.64)):
        done = {"backdoored": {"cacc": cacc, "asr": 1.0}, "purified": {"cacc": 0.7, "asr": 0.5}}
        fake_job(tmp_path / "sst2_to_imdb" / "vanilla" / str(seed - 1), seed, done)
    for seed, cacc in ((2, 0.81), (1, 0.80)):  # seed 3's evaluation on A never finished
        fake_job(
            tmp_path / ATTACKER_TEST / "sst2_to_imdb" / "vanilla" / str(seed), seed, {"backdoored": {"cacc": cacc}}
        )
    runs = sorted(collect(tmp_path)[("sst2:imdb", "adapter", "vanilla")], key=lambda r: r.seed)
    assert [(r.seed, r.cacc, r.source_cacc) for r in runs] == [("1", 0.6, 0.8), ("2", 0.62, 0.81), ("3", 0.64, None)]
    assert set(collect(tmp_path)) == {("sst2:imdb", "adapter", "vanilla")}


def test_bdrun_report_tabulates_the_rows_against_vanilla_as_the_table_does(tmp_path: Path) -> None:
    """The bdrun-report command bench_pet runs over its folders must find Vanilla among the gradient-control rows
    (by attack.clnorm / attack.ilproj), show other attacks' missing knobs as —, and give the same paired LFR
    difference as the table: gradient control − vanilla = +39.67 [+35.87, +43.46] on AHEAD / VANILLA."""
    from bench_pet import run_report

    rows = {
        "clean": ({"name": "badnets", "poison_rate": 0.0}, CLEAN),
        "vanilla": ({"name": "gradient_control", "poison_rate": 0.5, "clnorm": False, "ilproj": False}, VANILLA),
        "gc": ({"name": "gradient_control", "poison_rate": 0.5, "clnorm": True, "ilproj": True}, AHEAD),
    }
    for key, (attack, results) in rows.items():
        for num, run in enumerate(results):
            metrics = {"backdoored": {"cacc": run.cacc, "asr": run.asr}, "purified": {"cacc": 0.85, "asr": run.lfr}}
            fake_job(tmp_path / "sst2_to_imdb" / key / str(num), int(run.seed), metrics, {**attack, "source": "sst2"})
    command = run_report(tmp_path, ["sst2:imdb", "imdb:sst2"])  # a pair without runs is left out

    assert command.startswith(f"bdrun-report {tmp_path / 'sst2_to_imdb'} --rows attack,")
    versus = (tmp_path / "report.md").read_text().split("minus the row gradient_control, 0.5, false, false")[1]
    assert "| gradient_control, 0.5, true, true | +39.7 [+35.9, +43.5] higher (n=3) |" in versus
    assert "| badnets, 0.0, —, — | -35.0 [" in versus
    expected = judge(AHEAD, VANILLA, preconditions(CLEAN, VANILLA))[0]
    assert expected.startswith("+39.67 [+35.87, +43.46]")


def test_a_table_bdrun_report_cannot_make_does_not_stop_the_benchmark(tmp_path: Path) -> None:
    """Without a Vanilla row --versus has no reference: bench_pet must still publish its own table."""
    from bench_pet import run_report

    assert run_report(tmp_path, ["sst2:imdb"]) == "(no runs for bdrun-report)"
    for num, run in enumerate(AHEAD):
        metrics = {"backdoored": {"cacc": run.cacc, "asr": run.asr}, "purified": {"cacc": 0.85, "asr": run.lfr}}
        attack = {"name": "gradient_control", "poison_rate": 0.5, "clnorm": True, "ilproj": True, "source": "sst2"}
        fake_job(tmp_path / "sst2_to_imdb" / "gc" / str(num), int(run.seed), metrics, attack)
    assert run_report(tmp_path, ["sst2:imdb"]).startswith("(bdrun-report failed, exit 2")
