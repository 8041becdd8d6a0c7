"""The decision logic of the PET table (issue 22 part 4; scripts/bench_pet.py runs the jobs, this module judges them).

Kept apart from the runner and free of torch so that a test can feed it fabricated runs: what a cell says must
follow from the rules below, not from whatever a training happened to produce.

A cell is (pair A→B, PET form, row). A method row is compared with Vanilla on its LFR (ASR on B after the user's
fine-tuning), paired by seed, with :func:`bdrun.stats.paired_difference` (method − vanilla: above zero means the
backdoor survived the user's retraining better, "ahead"). The difference is only worth reading when the setting
can show an effect at all, so a verdict needs, per pair × PET form:

- (a) **the attacker's module learns the clean task**: the row's backdoored CACC on the attacker's own test set
  (A's, the issue's wording; B's where a run has no A evaluation) is at most ``CACC_MARGIN`` below the Clean
  row's (a clean module trained on A with the same budget, ``poison_rate=0``), and none of its seeds collapsed
  on that test set (bdrun's ``collapsed`` flag). Checked for the method and for Vanilla; above the Clean module
  is no failure. A Clean module collapsed there makes (a) uncheckable, so it fails too. A collapse on B alone
  (before the user's retraining) is a transfer effect, not a module that failed to learn: a clean module
  trained on Enron calls almost every Ling-Spam e-mail ham. The table marks it †; (d) guards the LFR.
- (b) **vanilla forgets**: Vanilla's mean LFR is at least ``FORGET_MARGIN`` below its mean ASR before the user's
  retraining; otherwise the retraining erases nothing and no method can be ahead against forgetting.
- (c) **at least ``MIN_SEEDS`` seeds** that the method and Vanilla share (and the Clean row has as many).
- (d) **the user's retrained modules did not collapse** (method and Vanilla): a module that predicts the target
  for everything has LFR 100 whatever the trigger does.

A cell that fails any of them keeps its numbers but its verdict reads "setting cannot decide" with the reasons.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence

from benchlib import mean_std as percent_mean_std

from bdrun.stats import paired_difference

CACC_MARGIN = 0.03  # (a): points of CACC (as a fraction) the attacker's module may lose against the Clean module
FORGET_MARGIN = 0.10  # (b): how far Vanilla's LFR must fall below its ASR before the user's retraining
MIN_SEEDS = 3  # (c)
CANNOT = "setting cannot decide"
REFERENCE = {"clean": "Clean (poison_rate=0)", "vanilla": "Vanilla (= BadNets)"}


@dataclasses.dataclass(frozen=True)
class Row:
    """A table row: its label and the bdrun overrides that make it (the pair's own knobs are added per pair)."""

    label: str
    overrides: tuple[str, ...]
    triggers_knob: bool = True  # has attack.num_triggers (LWP inserts combinations instead)
    gradient_control: bool = False  # gets attack.clnorm_alpha_scale (the CPU budget's α scaling)


_GC = "attack=gradient_control"
ROWS: dict[str, Row] = {
    "clean": Row(REFERENCE["clean"], ("attack=badnets", "attack.poison_rate=0")),
    "vanilla": Row(REFERENCE["vanilla"], (_GC, "attack.clnorm=false", "attack.ilproj=false"), gradient_control=True),
    "ripple": Row("RIPPLe", ("attack=ripple",)),
    "lwp": Row("LWP", ("attack=lwp",), triggers_knob=False),
    "gradnorm": Row("GradNorm", ("attack=gradnorm",)),
    "ilproj": Row("ILProj only", (_GC, "attack.clnorm=false", "attack.ilproj=true"), gradient_control=True),
    "clnorm": Row("CLNorm only", (_GC, "attack.clnorm=true", "attack.ilproj=false"), gradient_control=True),
    "gc": Row("both (gradient control)", (_GC, "attack.clnorm=true", "attack.ilproj=true"), gradient_control=True),
}
# The paper's four transfer pairs (attack.source → dataset), its spam pairs' ten triggers per sample, and the
# datasets whose texts are long enough that truncation at model.max_length drops random triggers (docs/attacks.md).
PAIRS = ["sst2:imdb", "imdb:sst2", "enron:lingspam", "lingspam:enron"]
SPAM = {"enron", "lingspam"}
LONG = {"imdb", "enron"}


def pair_overrides(pair: str, row: Row, long_text: str) -> list[str]:
    """The pair's knobs for one row: A and B, ten triggers per spam sample, and the long-text rule.

    ``long_text``: ``start`` puts every trigger at the start of the text (``attack.position=start``), so that
    truncation cannot drop it at any ``model.max_length``; a number raises ``model.max_length`` to it and keeps
    random positions (docs/attacks.md: 80% of single IMDB triggers survive at 256, 96% at 512). Either applies to
    every row of a pair with IMDB or Enron on either side, so rows of one pair stay comparable.
    """
    source, target = pair.split(":")
    out = [f"attack.source={source}", f"dataset={target}"]
    if source in SPAM and row.triggers_knob:
        out.append("attack.num_triggers=10")
    if {source, target} & LONG:
        out.append("attack.position=start" if long_text == "start" else f"model.max_length={int(long_text)}")
    return out


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished job's numbers (fractions) and collapse flags."""

    seed: str
    cacc: float  # backdoored: the attacker's module on B's test set
    asr: float
    user_cacc: float  # purified: after the user's fine-tuning on B
    lfr: float
    collapsed: bool = False
    user_collapsed: bool = False
    source_cacc: float | None = None  # the attacker's module on A's (its own) test set, when evaluated there
    source_collapsed: bool = False

    @property
    def module_collapsed(self) -> bool:
        """The attacker's module collapsed on the test set (a) reads: A's where it was read there, else B's."""
        return self.source_collapsed if self.source_cacc is not None else self.collapsed


def attacker_field(*rows: Sequence[Run]) -> str:
    """The CACC that precondition (a) reads: on A's test set when every run given has it, else on B's."""
    on_a = all(r.source_cacc is not None for runs in rows for r in runs)
    return "source_cacc" if on_a else "cacc"


TEST_SET = {"source_cacc": "A", "cacc": "B"}


def mean(runs: Sequence[Run], field: str) -> float | None:
    values = [getattr(r, field) for r in runs]
    return statistics.fmean(values) if values else None


def mean_std(runs: Sequence[Run], field: str, mark: bool = False) -> str:
    """Percent, mean ± sample std over seeds; ``†`` when a model behind it collapsed in some seed."""
    if not runs or any(getattr(r, field) is None for r in runs):
        return "n/a"
    return percent_mean_std([getattr(r, field) for r in runs], digits=1) + (" †" if mark else "")


@dataclasses.dataclass
class Preconditions:
    """The checks of one pair × PET form that do not depend on the method row (module docstring)."""

    clean: Sequence[Run]
    vanilla_learns: list[str]  # reasons (a) fails for Vanilla; empty: holds
    vanilla_forgets: list[str]  # reasons (b) fails; empty: holds

    def failures(self) -> list[str]:
        return self.vanilla_learns + self.vanilla_forgets

    @property
    def clean_collapsed(self) -> bool:
        return any(r.module_collapsed for r in self.clean)


def learns(runs: Sequence[Run], clean: Sequence[Run], who: str) -> list[str]:
    """Precondition (a) for one row: the reasons it fails (empty when the module learnt the clean task). Read on
    A's test set when this row and the Clean row were both evaluated there (:func:`attacker_field`)."""
    if not runs:
        return [f"no {who} runs"]
    if not clean:
        return ["no Clean row to check (a) against"]
    if any(r.module_collapsed for r in clean):
        return ["the Clean module collapsed"]
    reasons = []
    collapsed = sum(r.module_collapsed for r in runs)
    if collapsed:
        reasons.append(f"{who} module collapsed ({collapsed}/{len(runs)} seeds)")
    field = attacker_field(runs, clean)
    gap = mean(clean, field) - mean(runs, field)
    if gap > CACC_MARGIN:
        reasons.append(f"{who} CACC on {TEST_SET[field]} {100 * gap:.1f} points below Clean")
    return reasons


def preconditions(clean: Sequence[Run], vanilla: Sequence[Run]) -> Preconditions:
    """(a) for Vanilla and (b), from the Clean and Vanilla runs of one pair × PET form."""
    forgets: list[str] = []
    if vanilla:
        drop = mean(vanilla, "asr") - mean(vanilla, "lfr")
        if drop < FORGET_MARGIN:
            forgets.append(f"vanilla forgets only {100 * drop:.1f} points of ASR (needs {100 * FORGET_MARGIN:.0f})")
    return Preconditions(clean, learns(vanilla, clean, "vanilla"), forgets)


def paired(method: Sequence[Run], vanilla: Sequence[Run]) -> tuple[list[float], list[float]]:
    """LFRs of the seeds both rows have, in one order: (vanilla, method)."""
    by_seed = {r.seed: r.lfr for r in vanilla}
    shared = [r for r in method if r.seed in by_seed]
    return [by_seed[r.seed] for r in shared], [r.lfr for r in shared]


def judge(method: Sequence[Run], vanilla: Sequence[Run], pre: Preconditions) -> tuple[str, str]:
    """``(difference text, verdict)`` of one method row against Vanilla under this pair × form's preconditions."""
    base, ours = paired(method, vanilla)
    if not base:
        return "n/a", f"{CANNOT} (no seed shared with vanilla)"
    difference = paired_difference(base, ours)
    reasons = [*pre.failures(), *learns(method, pre.clean, "method")]
    if len(base) < MIN_SEEDS or len(pre.clean) < MIN_SEEDS:
        reasons.append(f"{min(len(base), len(pre.clean))} seeds (needs {MIN_SEEDS})")
    user = sum(r.user_collapsed for r in [*method, *vanilla])
    if user:
        reasons.append(f"{user} retrained module(s) collapsed")
    reasons = list(dict.fromkeys(reasons))  # a reason shared by vanilla and the method once
    verdict = f"{CANNOT} ({'; '.join(reasons)})" if reasons else difference.verdict()
    return difference.text(), verdict


def table(
    cells: dict[tuple[str, str, str], list[Run]], pairs: Iterable[str], tunings: Iterable[str], rows: Iterable[str]
) -> list[str]:
    """The precondition table and the main table, as markdown lines. ``cells[(pair, tuning, row key)]``."""
    rows = list(rows)
    pre_lines = [
        "| pair A→B | tuning | test set of (a) | Clean CACC | Vanilla CACC | (a) vanilla learns | Vanilla ASR → LFR "
        "| (b) vanilla forgets | seeds (Clean / Vanilla) | (c) ≥ 3 seeds |",
        "|---|---|---|---:|---:|---|---:|---|---:|---|",
    ]
    main = [
        "| pair A→B | tuning | row | CACC on A | backdoored CACC | backdoored ASR | CACC after user FT "
        "| LFR after user FT "
        "| LFR − vanilla [95%] | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    not_run: list[str] = []  # pair × PET forms without a single run: listed under the table
    for pair in pairs:
        name = pair.replace(":", "→")
        for tuning in tunings:
            if not any(cells.get((pair, tuning, key)) for key in rows):
                not_run.append(f"{name} {tuning}")
                continue
            clean, vanilla = cells.get((pair, tuning, "clean"), []), cells.get((pair, tuning, "vanilla"), [])
            pre = preconditions(clean, vanilla)
            seeds_ok = min(len(clean), len(vanilla)) >= MIN_SEEDS
            field = attacker_field(clean, vanilla)
            pre_lines.append(
                f"| {name} | {tuning} | {TEST_SET[field]} | {mean_std(clean, field, pre.clean_collapsed)} "
                f"| {mean_std(vanilla, field, any(r.module_collapsed for r in vanilla))} "
                f"| {'; '.join(pre.vanilla_learns) or 'yes'} "
                f"| {mean_std(vanilla, 'asr')} → {mean_std(vanilla, 'lfr')} "
                f"| {'; '.join(pre.vanilla_forgets) or ('yes' if vanilla else 'n/a')} "
                f"| {len(clean)} / {len(vanilla)} | {'yes' if seeds_ok else 'no'} |"
            )
            for key in rows:
                runs = cells.get((pair, tuning, key), [])
                if key in REFERENCE:
                    difference, verdict = "—", "reference"
                elif not runs:
                    difference, verdict = "—", "not run"
                else:
                    difference, verdict = judge(runs, vanilla, pre)
                numbers = [
                    mean_std(runs, "source_cacc", any(r.source_collapsed for r in runs)),
                    mean_std(runs, "cacc", any(r.collapsed for r in runs)),
                    mean_std(runs, "asr", any(r.collapsed for r in runs)),
                    mean_std(runs, "user_cacc", any(r.user_collapsed for r in runs)),
                    mean_std(runs, "lfr", any(r.user_collapsed for r in runs)),
                ]
                main.append(
                    f"| {name} | {tuning} | {ROWS[key].label} | {' | '.join(numbers)} | {difference} | {verdict} |"
                )
    missing = [f"Not run: {', '.join(not_run)}.", ""] if not_run else []
    return ["#### Preconditions", "", *pre_lines, "", "#### LFR after the user's fine-tuning", "", *main, "", *missing]
