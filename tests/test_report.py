"""``bdrun-report`` on a fixture of finished runs: exact mean ± std tables (markdown, LaTeX, CSV) and a plot, with
each cell's seed count and the marks for single-seed cells and collapsed models."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from bdrun.errors import BdrunError
from bdrun.report import build_report, main, to_markdown
from bdrun.results import find_jobs

# (attack, defense, seed): (clean cacc, clean asr, final cacc, final asr); None: the job failed.
RUNS: dict[tuple[str, str, int], tuple[float, float, float, float] | None] = {
    ("badnets", "none", 1): (0.92, 0.10, 0.90, 1.00),
    ("badnets", "none", 2): (0.93, 0.12, 0.91, 1.00),
    ("badnets", "none", 3): (0.94, 0.14, 0.92, 1.00),
    ("badnets", "fine_tuning", 1): (0.92, 0.10, 0.88, 0.10),
    ("badnets", "fine_tuning", 2): (0.93, 0.12, 0.86, 0.20),
    ("badnets", "fine_tuning", 3): (0.94, 0.14, 0.87, 0.30),
    ("addsent", "none", 1): (0.92, 0.10, 0.80, 0.95),
    ("addsent", "none", 2): (0.93, 0.12, 0.82, 0.97),
    ("addsent", "fine_tuning", 1): (0.92, 0.10, 0.85, 0.50),
    ("addsent", "fine_tuning", 2): None,
}


def fake_run(
    folder: Path,
    num: int,
    attack: str,
    defense: str,
    seed: int,
    values,
    extra: dict | None = None,
    collapsed: tuple[str, ...] = (),
) -> None:
    """A run folder as bdrun leaves it: .hydra/{overrides,hydra,config}.yaml, status.json, metrics.json.
    ``collapsed``: the roles whose model bdrun flagged as collapsed (bdrun.trust)."""
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True)
    overrides = [
        f"attack={attack}",
        f"defense={defense}",
        f"seed={seed}",
        *(f"{k}={v}" for k, v in (extra or {}).items()),
    ]
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    choices = {"attack": attack, "defense": defense, "model": "minilm", "hydra/launcher": "basic"}
    (hydra_dir / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}, "job": {"num": num}}})
    )
    config = {"seed": seed, "attack": {"name": attack}, "defense": {"name": defense}, "optimizer": {"lr": 1e-4}}
    for key, value in (extra or {}).items():
        group, name = key.split(".")
        config[group][name] = value
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if values is None:
        (folder / "status.json").write_text(json.dumps({"status": "failed", "error": "CUDA out of memory"}))
        return
    clean_cacc, clean_asr, cacc, asr = values
    metrics = {"clean": {"cacc": clean_cacc, "asr": clean_asr}, "backdoored": {"cacc": cacc, "asr": asr}}
    if defense != "none":
        metrics["backdoored"] = {"cacc": 0.9, "asr": 1.0}
        metrics["purified"] = {"cacc": cacc, "asr": asr, "side_effect": 0.05}
    for role in metrics:
        metrics[role]["collapsed"] = role in collapsed
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "status.json").write_text(json.dumps({"status": "completed"}))


@pytest.fixture
def sweeps(tmp_path: Path) -> list[Path]:
    """Two sweep folders (as from two `bdrun -m` commands), one per attack."""
    folders = []
    for attack in ("badnets", "addsent"):
        sweep = tmp_path / "multirun" / attack
        jobs = [(k, v) for k, v in RUNS.items() if k[0] == attack]
        for num, ((_, defense, seed), values) in enumerate(jobs):
            fake_run(sweep / f"{num}_defense={defense},seed={seed}", num, attack, defense, seed, values)
        folders.append(sweep)
    return folders


def test_report_writes_the_exact_mean_std_table(sweeps: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    args = [*map(str, sweeps), "--rows", "defense", "--cols", "attack", "--metric", "final.cacc,final.asr"]
    main([*args, "--clean-row", "*clean model*", "--label", "none=none (backdoored)", "--out", str(out)])

    markdown = (out / "report.md").read_text()
    assert markdown.endswith(
        "| defense | badnets | addsent |\n"
        "|---|---|---|\n"
        "| *clean model* | 93.0 ± 1.0 / 12.0 ± 2.0 (n=3) | 92.5 ± 0.7 / 11.0 ± 1.4 (n=2) |\n"
        "| none (backdoored) | 91.0 ± 1.0 / 100.0 ± 0.0 (n=3) | 81.0 ± 1.4 / 96.0 ± 1.4 (n=2) |\n"
        "| fine_tuning | 87.0 ± 1.0 / 20.0 ± 10.0 (n=3) | 85.0 / 50.0 (n=1)‡ |\n"
        "\n"
        "‡ one seed: no spread measured (seed-to-seed spread in bdrun's tables is 2-40 points)\n"
    )
    assert "n = 1/2/3" in markdown
    assert markdown.split("\n\n", 1)[1] in capsys.readouterr().out

    latex = (out / "report.tex").read_text()
    assert r"defense & badnets & addsent \\" in latex
    assert r"clean model & 93.0 $\pm$ 1.0 / 12.0 $\pm$ 2.0 (n=3) & 92.5 $\pm$ 0.7 / 11.0 $\pm$ 1.4 (n=2) \\" in latex
    assert r"fine\_tuning & 87.0 $\pm$ 1.0 / 20.0 $\pm$ 10.0 (n=3) & 85.0 / 50.0 (n=1)$^\ddagger$ \\" in latex
    assert latex.count(r"\toprule") == 1 and latex.rstrip().endswith(r"\end{tabular}")

    with (out / "report.csv").open() as f:
        rows = {(r["defense"], r["attack"], r["metric"]): r for r in csv.DictReader(f)}
    cell = rows[("fine_tuning", "badnets", "final.asr")]
    assert float(cell["mean"]) == pytest.approx(0.2) and float(cell["std"]) == pytest.approx(0.1) and cell["n"] == "3"
    single = rows[("fine_tuning", "addsent", "final.cacc")]  # the failed seed is left out, not counted
    assert float(single["mean"]) == pytest.approx(0.85) and single["std"] == "" and single["n"] == "1"

    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_a_cell_mixing_a_non_seed_key_is_rejected(tmp_path: Path) -> None:
    for num, lr in enumerate((1e-4, 3e-4)):
        values = (0.9, 0.1, 0.9, 1.0)
        fake_run(tmp_path / f"{num}", num, "badnets", "none", 1, values, extra={"optimizer.lr": lr})
    jobs = find_jobs([tmp_path])
    with pytest.raises(BdrunError, match=r"different optimizer\.lr"):
        build_report(jobs, ["defense"], ["attack"], ["final.asr"])
    report = build_report(jobs, ["defense"], ["attack", "optimizer.lr"], ["final.asr"])
    assert report.cols == [("badnets", "0.0001"), ("badnets", "0.0003")]


def test_order_puts_the_named_values_first(sweeps: list[Path]) -> None:
    jobs = find_jobs(sweeps)
    report = build_report(jobs, ["defense"], ["attack"], ["final.asr"], order=["fine_tuning", "addsent"])
    assert report.rows == [("fine_tuning",), ("none",)] and report.cols == [("addsent",), ("badnets",)]


def test_a_cell_whose_jobs_all_failed_reads_n_a(sweeps: list[Path]) -> None:
    report = build_report(find_jobs(sweeps), ["defense", "seed"], ["attack"], ["final.asr"])
    assert ("fine_tuning", "2") in report.rows  # only addsent ran it, and failed
    markdown = to_markdown(report, digits=1)
    assert "| fine_tuning, 2 | 20.0 (n=1)‡ | n/a |" in markdown


def test_report_logs_the_same_table_to_wandb(sweeps: list[Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "report"
    main([str(sweeps[0]), "--rows", "defense", "--metric", "final.asr", "--out", str(out), "--wandb", "bdrun-test"])
    tables = list(out.glob("wandb/offline-run-*/files/media/table/report/table_*.table.json"))
    assert len(tables) == 1
    logged = json.loads(tables[0].read_text())
    assert logged["columns"] == ["defense", "final.asr"]
    assert logged["data"] == [["none", "100.0 ± 0.0 (n=3)"], ["fine_tuning", "20.0 ± 10.0 (n=3)"]]
    assert list(out.glob("wandb/offline-run-*/files/media/images/report/scatter_*.png"))


def test_cells_of_a_collapsed_model_are_marked_in_markdown_latex_and_csv(tmp_path: Path) -> None:
    """Two seeds of BadNets: a healthy model, and one that collapsed in seed 2 only (as Child-Tuning-F's and
    SAM's BadNets models did); the clean models are healthy. One seed of AddSent, healthy."""
    runs = [
        ("badnets", 1, (0.9, 0.1, 0.88, 1.0), ()),
        ("badnets", 2, (0.9, 0.1, 0.50, 1.0), ("backdoored",)),
        ("addsent", 1, (0.9, 0.1, 0.87, 0.97), ()),
    ]
    for num, (attack, seed, values, collapsed) in enumerate(runs):
        fake_run(tmp_path / "sweep" / str(num), num, attack, "none", seed, values, collapsed=collapsed)
    out = tmp_path / "out"
    main([str(tmp_path / "sweep"), "--rows", "defense", "--cols", "attack", "--clean-row", "clean", "--out", str(out)])

    markdown = (out / "report.md").read_text()
    assert "| clean | 90.0 ± 0.0 / 10.0 ± 0.0 (n=2) | 90.0 / 10.0 (n=1)‡ |" in markdown  # healthy: no †
    assert "| none | 69.0 ± 26.9 / 100.0 ± 0.0 (n=2)† | 87.0 / 97.0 (n=1)‡ |" in markdown
    assert markdown.count("†") == 2 and "\n† a model of this cell collapsed" in markdown  # the cell and its legend
    assert "\n‡ one seed" in markdown

    latex = (out / "report.tex").read_text()
    assert r"none & 69.0 $\pm$ 26.9 / 100.0 $\pm$ 0.0 (n=2)$^\dagger$ & 87.0 / 97.0 (n=1)$^\ddagger$ \\" in latex
    assert r"\multicolumn{3}{l}{\footnotesize $^\dagger$ a model of this cell collapsed" in latex
    assert r"trust.collapse\_share" in latex and latex.rstrip().endswith(r"\end{tabular}")

    with (out / "report.csv").open() as f:
        rows = {(r["defense"], r["attack"], r["metric"]): r for r in csv.DictReader(f)}
    assert rows[("none", "badnets", "final.asr")]["collapsed"] == "1"  # one of its two seeds
    assert rows[("none", "addsent", "final.asr")]["collapsed"] == "0"
    assert rows[("clean", "badnets", "final.cacc")]["collapsed"] == "0"


def test_a_delta_is_marked_when_either_model_it_compares_collapsed(tmp_path: Path) -> None:
    fake_run(tmp_path / "0", 0, "badnets", "fine_tuning", 1, (0.9, 0.1, 0.85, 0.2), collapsed=("backdoored",))
    report = build_report(find_jobs([tmp_path]), ["defense"], ["attack"], ["purified.asr", "delta.asr"])
    assert report.collapsed[(("fine_tuning",), ("badnets",))] == {
        "purified.asr": 0,
        "delta.asr": 1,
        "purified.cacc": 0,  # the scatter plot's metrics are counted too
    }
    assert to_markdown(report, digits=1).splitlines()[2].endswith("(n=1)†‡ |")


def test_versus_gives_each_cell_its_paired_difference_to_the_reference_row(sweeps: list[Path], tmp_path: Path) -> None:
    """fine_tuning − none of final.asr, paired by seed: badnets' three seeds differ by −0.9, −0.8, −0.7 (mean −0.8,
    sd 0.1, t(0.975, 2) = 4.3027 → half-width 0.2484); addsent has one shared seed (its seed 2 failed)."""
    out = tmp_path / "report"
    args = [*map(str, sweeps), "--rows", "defense", "--cols", "attack", "--metric", "final.cacc,final.asr"]
    main([*args, "--versus", "defense=none", "--out", str(out)])

    markdown = (out / "report.md").read_text()
    assert "final.asr minus the row none of the same column, paired by seed" in markdown
    assert markdown.endswith(
        "| defense | badnets | addsent |\n"
        "|---|---|---|\n"
        "| fine_tuning | -80.0 [-104.8, -55.2] lower (n=3) | -45.0 (one pair) not distinguishable (n=1) |\n"
    )
    latex = (out / "report.tex").read_text()
    assert latex.count(r"\begin{tabular}") == 2
    assert r"fine\_tuning & -80.0 [-104.8, -55.2] lower (n=3) & -45.0 (one pair) not distinguishable (n=1) \\" in latex

    report = build_report(find_jobs(sweeps), ["defense"], ["attack"], ["final.asr"], versus={"defense": "fine_tuning"})
    difference = report.versus[(("none",), ("badnets",))]  # the other way round: + 0.8, same interval
    assert difference.mean == pytest.approx(0.8) and difference.high == pytest.approx(0.8 + 0.24841, abs=1e-4)


def test_versus_must_name_one_row_by_its_row_keys(sweeps: list[Path]) -> None:
    jobs = find_jobs(sweeps)
    with pytest.raises(BdrunError, match="matches 0 rows"):
        build_report(jobs, ["defense"], ["attack"], ["final.asr"], versus={"defense": "dan"})
    with pytest.raises(BdrunError, match="matches 3 rows"):
        build_report(jobs, ["defense", "seed"], ["attack"], ["final.asr"], versus={"defense": "none"})
    with pytest.raises(BdrunError, match="attack, not a row key"):
        build_report(jobs, ["defense"], ["attack"], ["final.asr"], versus={"attack": "badnets"})


def test_rows_of_attacks_with_different_knobs_share_a_table(tmp_path: Path) -> None:
    """A row key only some runs have (gradient control's attack.clnorm, a boolean) reads — for the others, and
    booleans read as typed on the command line, so --where and --versus match them."""
    for num, (attack, extra) in enumerate((("gradient_control", {"attack.clnorm": False}), ("ripple", {}))):
        fake_run(tmp_path / str(num), num, attack, "none", 1, (0.9, 0.1, 0.9, 1.0), extra=extra)
    jobs = find_jobs([tmp_path])
    report = build_report(jobs, ["attack", "attack.clnorm"], [], ["final.asr"], versus={"attack.clnorm": "false"})
    assert report.rows == [("gradient_control", "false"), ("ripple", "—")]
    assert report.reference == ("gradient_control", "false")
    assert build_report(jobs, ["attack"], [], ["final.asr"], where={"attack.clnorm": "false"}).rows == [
        ("gradient_control",)
    ]
