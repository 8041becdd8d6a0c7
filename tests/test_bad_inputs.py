"""A table of bad inputs (overrides, flags, user configs, data files): each ends in exit status 2, exactly one
line on stderr, and no stage started.

Every case runs the real ``bdrun`` entry point (:func:`bdrun.cli.main`) in this process, so torch is imported
once for the whole table; a stage would start by building :class:`bdrun.pipeline.Stages`, which is replaced by a
tripwire. The table takes about 30 s here (most of it the first torch import).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bdrun import cli, pipeline

GOOD_ROWS = "sentence\tlabel\ngood film\t1\nbad film\t0\nfine\t1\nawful\t0\n"
DATA = ["dataset=sst2_glue", "paths.data_dir=data"]  # the data cases' files live in data/sst2_glue/


def data_files(train: str | bytes = GOOD_ROWS, dev: str | bytes = GOOD_ROWS, test: str | bytes | None = GOOD_ROWS):
    files = {"data/sst2_glue/train.tsv": train, "data/sst2_glue/dev.tsv": dev}
    if test is not None:
        files["data/sst2_glue/test.tsv"] = test
    return files


SEARCH = "hydra.searchpath=[file://{tmp}/my_conf]"

# (case id, command-line arguments ({tmp}: the case's folder), files to write first, expected fragment of the line)
CASES: list[tuple[str, list[str], dict[str, str | bytes], str]] = [
    # -- overrides --------------------------------------------------------------------------------------------
    ("seed_not_an_integer", ["seed=foo"], {}, "seed=foo must be an integer"),
    ("seed_a_float", ["seed=1.5"], {}, "seed=1.5 must be an integer"),
    ("key_no_component_reads", ["+foo=bar"], {}, "unknown config key 'foo'"),
    ("nested_key_no_component_reads", ["+paths.colour=red"], {}, "unknown config key 'paths.colour'"),
    ("override_of_a_missing_key", ["foo=bar"], {}, "Could not override 'foo'"),
    ("required_group_removed", ["~defense"], {}, "config key 'defense' is missing"),
    ("required_key_removed", ["~seed"], {}, "config key 'seed' is missing"),
    ("group_set_to_null", ["attack=null"], {}, "attack=null is not a choice"),
    ("unknown_group_choice", ["attack=nonexistent"], {}, "unknown attack 'nonexistent'"),
    ("unknown_choice_in_a_sweep", ["-m", "defense=none,fine_tunin"], {}, "unknown defense 'fine_tunin'"),
    ("sweep_without_multirun", ["attack=badnets,ep"], {}, "add --multirun"),
    ("override_syntax", ["attack=["], {}, "cannot parse the override 'attack=['"),
    ("unknown_knob", ["+attack.colour=red"], {}, "attack.colour"),
    ("knob_out_of_range", ["attack.poison_rate=1.5"], {}, "attack.poison_rate=1.5"),
    ("knob_of_the_wrong_type", ["attack.poison_rate=lots"], {}, "attack.poison_rate"),
    ("negative_target_label", ["attack.target_label=-1"], {}, "attack.target_label=-1"),
    ("target_label_beyond_the_labels", ["attack.target_label=2"], {}, "attack.target_label=2 but the dataset has 2"),
    ("bad_label_in_a_later_sweep_job", ["-m", "attack.target_label=0,1,7"], {}, "attack.target_label=7"),
    ("protect_label_beyond_the_labels", ["defense=dan", "defense.protect_label=9"], {}, "defense.protect_label=9"),
    ("unknown_device", ["device=tpu"], {}, "device=tpu"),
    ("aggregator_without_a_federation", ["defense=krum"], {}, "defense=krum is a federated aggregator"),
    ("model_editing_attack_on_pet", ["attack=ep", "model.tuning=lora"], {}, "attack=ep edits frozen"),
    ("unknown_tuning", ["model.tuning=prefix"], {}, "model.tuning"),
    ("federated_rounds_not_a_number", ["federated=iid", "federated.rounds=abc"], {}, "federated.rounds"),
    ("max_length_too_short", ["model.max_length=4"], {}, "model.max_length=4"),
    ("zero_epochs", ["trainer.epochs=0"], {}, "trainer.epochs=0"),
    ("negative_lr", ["optimizer.lr=-1"], {}, "optimizer.lr"),
    ("unknown_logger_mode", ["logger=wandb", "logger.mode=sometimes"], {}, "logger.mode=sometimes"),
    ("one_label", ["dataset.num_labels=1"], {}, "dataset.num_labels=1"),
    ("unknown_data_format", ["dataset.format=xml"], {}, "dataset.format=xml"),
    ("zero_max_samples", ["dataset.max_samples.train=0"], {}, "dataset.max_samples.train=0"),
    ("detector_frr_out_of_range", ["defense=dan", "defense.frr=2"], {}, "defense.frr=2"),
    ("defense_zero_epochs", ["defense=fine_tuning", "defense.epochs=0"], {}, "defense.epochs=0"),
    ("unknown_trigger_position", ["attack.position=middle"], {}, "attack.position=middle"),
    ("unknown_label_mode", ["attack.label_mode=grey"], {}, "attack.label_mode=grey"),
    (
        "unknown_defense_optimizer",
        ["defense=fine_tuning", "+optimizer@defense.optimizer=adam"],
        {},
        "unknown optimizer 'adam'",
    ),
    # -- flags ------------------------------------------------------------------------------------------------
    ("unknown_flag", ["--fast"], {}, "unrecognized arguments: --fast"),
    ("flag_after_the_overrides", ["attack=ep", "--cfg", "job", "seed=1"], {}, "unrecognized arguments"),
    ("missing_config_dir", ["--config-dir", "{tmp}/nowhere"], {}, "nowhere"),
    ("two_modes", ["-m", "--cfg", "job"], {}, "cannot be combined"),
    ("bad_cfg_value", ["--cfg", "everything"], {}, "invalid choice"),
    ("unknown_primary_config", ["--config-name", "nope"], {}, "'nope'"),
    # -- user configs on the search path ----------------------------------------------------------------------
    ("config_not_yaml", [SEARCH, "dataset=broken"], {"my_conf/dataset/broken.yaml": "files: [x\n"}, "not valid YAML"),
    (
        "config_with_an_unknown_key",
        [SEARCH, "dataset=colourful"],
        {"my_conf/dataset/colourful.yaml": "name: colourful\nlocation: x\ncolour: red\n"},
        "dataset.colour",
    ),
    ("config_without_a_name", [SEARCH, "attack=anon"], {"my_conf/attack/anon.yaml": "poison_rate: 0.2\n"}, "no 'name'"),
    (
        "config_naming_no_method",
        [SEARCH, "attack=mine"],
        {"my_conf/attack/mine.yaml": "name: sleeper\n"},
        "unknown attack 'sleeper'",
    ),
    (
        "config_value_of_the_wrong_type",
        [SEARCH, "dataset=words"],
        {"my_conf/dataset/words.yaml": "name: words\nlocation: x\nnum_labels: two\n"},
        "dataset.num_labels",
    ),
    (
        "global_config_adds_an_unread_key",
        [SEARCH, "experiment=mine"],
        {"my_conf/experiment/mine.yaml": "# @package _global_\nlearning_rate: 0.1\n"},
        "unknown config key 'learning_rate'",
    ),
    # -- data files -------------------------------------------------------------------------------------------
    ("binary_data_file", DATA, data_files(train=b"sentence\tlabel\n\x89PNG\x00\x01\xff\t1\n"), "not UTF-8 text"),
    ("utf16_data_file", DATA, data_files(test=GOOD_ROWS.encode("utf-16")), "test.tsv line 1: not UTF-8 text"),
    ("label_outside_the_range", DATA, data_files(dev=GOOD_ROWS + "meh\t2\n"), "label 2 is outside 0..1"),
    ("label_not_an_integer", DATA, data_files(train=GOOD_ROWS + "meh\tpositive\n"), "is not an integer"),
    ("missing_text_column", DATA, data_files(train="text\tlabel\nok\t1\n"), "no column 'sentence'"),
    ("stray_tab", DATA, data_files(train=GOOD_ROWS + "a\tb\t1\n"), "3 fields where the header has 2"),
    ("empty_split", DATA, data_files(test="sentence\tlabel\n"), "the test split is empty"),
    ("missing_split_file", DATA, data_files(test=None), "test.tsv does not exist"),
    ("missing_data_folder", ["dataset=sst2_glue", "paths.data_dir=nowhere"], {}, "does not exist"),
    (
        "too_few_samples_to_poison",
        [*DATA, "attack.poison_rate=0.9"],
        data_files(),
        "are eligible for dirty-label poisoning",
    ),
    (
        "clean_set_of_no_samples",
        [*DATA, "defense=fine_tuning", "defense.clean_size=0.01"],
        data_files(),
        "defense.clean_size=0.01 selects no samples",
    ),
    (
        "dev_set_too_small_to_split",
        [*DATA, "defense=dan", "defense.fit_fraction=0.1"],
        data_files(),
        "leaves no fitting or no calibration sample",
    ),
]


class StageStarted(AssertionError):
    pass


def tripwire(*args, **kwargs) -> None:
    raise StageStarted("a stage was about to start")


@pytest.mark.parametrize(("args", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_costs_one_line_and_no_work(
    args: list[str],
    files: dict[str, str | bytes],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    if not any(arg.startswith("logger") for arg in argv):
        argv.append("logger=none")  # no W&B run for a failing input
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["bdrun", *argv])
    monkeypatch.setattr(pipeline.Stages, "__init__", tripwire)

    with pytest.raises(SystemExit) as exited:
        cli.main()

    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert exited.value.code == 2, out[-2000:] + err[-2000:]
    assert len(lines) == 1, err
    assert lines[0].startswith("bdrun: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert not (tmp_path / "outputs" / "cache").exists()  # no stage artifact, not even a work folder


def test_the_table_covers_at_least_thirty_kinds() -> None:
    kinds = {case[0] for case in CASES}
    assert len(kinds) == len(CASES) >= 30
