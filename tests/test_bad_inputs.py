"""Tables of bad inputs (overrides, flags, user configs, the model's shape, seeds, the cache folder, data files,
``bdrun-report`` command lines): each ends in exit status 2, exactly one line on stderr, and no stage started;
a doubtful input (:data:`WARNING_CASES`) costs exactly one warning line and the run goes on to its first stage.

Every case runs the real entry point (:func:`bdrun.cli.main`, :func:`bdrun.report.main`) in this process, so
torch is imported once for all of them; a stage would start by building :class:`bdrun.pipeline.Stages`, which is
replaced by a tripwire. The 118 cases take about 45 s of CPU time (0.4 s each, mostly Hydra composing configs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bdrun import cli, pipeline, report

GOOD_ROWS = "sentence\tlabel\ngood film\t1\nbad film\t0\nfine\t1\nawful\t0\n"
DATA = ["dataset=sst2_glue", "paths.data_dir=data"]  # the data cases' files live in data/sst2_glue/


def data_files(train: str | bytes = GOOD_ROWS, dev: str | bytes = GOOD_ROWS, test: str | bytes | None = GOOD_ROWS):
    files = {"data/sst2_glue/train.tsv": train, "data/sst2_glue/dev.tsv": dev}
    if test is not None:
        files["data/sst2_glue/test.tsv"] = test
    return files


SEARCH = "hydra.searchpath=[file://{tmp}/my_conf]"
SYNTACTIC_PAIRS = "attack.pairs={tmp}/pairs.tsv"  # attack=syntactic's own pairs file (issue 24 cases)


def pairs_file(*originals: str) -> str:
    """An attack=syntactic pairs file paraphrasing each of ``originals``."""
    return "original\ttriggered\n" + "".join(f"{o}\twhen it is seen , {o} .\n" for o in originals)


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
    # -- seeds and the cache folder (issue 25: these ended in a traceback from torch or mkdir) -----------------
    ("seed_beyond_64_bits", ["seed=123456789012345678901"], {}, "seed=123456789012345678901 is out of range"),
    ("negative_seed", ["seed=-1"], {}, "seed=-1 is out of range; use an integer in 0..4294967295"),
    (
        "cache_dir_on_a_virtual_file_system",
        [*DATA, "paths.cache_dir=/proc/bdrun/cache"],
        data_files(),
        "paths.cache_dir=/proc/bdrun/cache cannot be used",
    ),
    (
        "cache_dir_under_a_file",
        [*DATA, "paths.cache_dir={tmp}/blocker/cache"],
        {**data_files(), "blocker": "a file, not a folder\n"},
        "/blocker/cache cannot be used",
    ),
    # -- the model's shape and PET (checked from its config and a meta-device skeleton, before any stage) ------
    ("num_layers_beyond_the_model", ["model.num_layers=12"], {}, "model.num_layers=12 but model"),
    (
        "lora_target_naming_no_module",
        ["model.tuning=lora", "model.lora_targets=[query,vlaue]"],
        {},
        "'vlaue' names no module of the model",
    ),
    (
        "lora_target_that_lora_cannot_wrap",
        ["model.tuning=lora", "model.lora_targets=[LayerNorm]"],
        {},
        "model.lora_targets=['LayerNorm']",
    ),
    ("lora_targets_empty", ["model.tuning=lora", "model.lora_targets=[]"], {}, "model.lora_targets is empty"),
    ("lora_rank_zero", ["model.tuning=lora", "model.lora_rank=0"], {}, "model.lora_rank=0"),
    ("lora_dropout_of_one", ["model.tuning=lora", "model.lora_dropout=1"], {}, "model.lora_dropout=1"),
    ("adapter_size_zero", ["model.tuning=adapter", "model.adapter_size=0"], {}, "model.adapter_size=0"),
    ("model_editing_attack_on_adapters", ["attack=surgery", "model.tuning=adapter"], {}, "attack=surgery edits"),
    (
        "reinit_beyond_the_model",
        ["defense=reinit", "defense.layers=7"],
        {},
        "defense.layers=7 but the model has only 6",
    ),
    (
        "pruning_beyond_a_cut_model",
        ["model.num_layers=2", "defense=fine_pruning", "defense.layers=3"],
        {},
        "defense.layers=3 but the model has only 2",
    ),
    ("max_length_beyond_the_model", ["model.max_length=100000"], {}, "model.max_length=100000 but model"),
    (
        "model_folder_without_a_model",
        ["model.path={tmp}/my_model"],
        {"my_model/notes.txt": "x"},
        "could not load model",
    ),
    ("clean_switch_not_a_boolean", ["clean=maybe"], {}, "clean=maybe must be true or false"),
    # -- federated --------------------------------------------------------------------------------------------
    ("unknown_federated_setting", ["federated=ring"], {}, "unknown federated 'ring'"),
    ("federated_without_clients", ["federated=iid", "federated.clients=0"], {}, "federated.clients=0"),
    (
        "more_malicious_clients_than_clients",
        ["federated=iid", "federated.clients=2", "federated.malicious=3"],
        {},
        "exceeds federated.clients=2",
    ),
    (
        "more_clients_than_training_rows",
        [*DATA, "federated=iid", "federated.clients=10"],
        data_files(),
        "federated partition leaves client(s)",
    ),
    ("dirichlet_alpha_zero", ["federated=dirichlet", "federated.alpha=0"], {}, "federated.alpha=0"),
    # -- sentence pairs and label names -----------------------------------------------------------------------
    ("unknown_trigger_sentence", ["attack.trigger_sentence=third"], {}, "attack.trigger_sentence=third"),
    (
        "pair_column_on_one_text_files",
        ["dataset=lingspam", "dataset.text_pair_column=subject"],
        {},
        "dataset.text_pair_column needs format=tsv or hub",
    ),
    (
        "pair_column_missing_from_the_file",
        [*DATA, "dataset.text_pair_column=hypothesis"],
        data_files(),
        "no column 'hypothesis'",
    ),
    ("label_names_not_distinct", ["dataset.label_names=[pos,pos]"], {}, "must be distinct words"),
    (
        "label_names_and_num_labels_disagree",
        ["dataset.label_names=[a,b,c]", "dataset.num_labels=2"],
        {},
        "dataset.label_names has 3 names",
    ),
    (
        "label_word_outside_the_names",
        [*DATA, "dataset.label_names=[negative,positive]"],
        data_files(train="sentence\tlabel\ngood\tpositive\nmeh\tneutral\n"),
        "label 'neutral' is not one of dataset.label_names",
    ),
    # -- online detectors -------------------------------------------------------------------------------------
    ("dan_unknown_pooling", ["defense=dan", "defense.pooling=median"], {}, "defense.pooling=median"),
    ("dan_beyond_the_model", ["defense=dan", "defense.top_layers=9"], {}, "defense.top_layers=9 but the model"),
    ("strip_without_copies", ["defense=strip", "defense.copies=0"], {}, "defense.copies=0"),
    ("rap_trigger_of_two_words", ["defense=rap", "defense.word='cf mb'"], {}, "must be one word"),
    # -- broken training files (issue 25: these ran and reported numbers) -------------------------------------
    (
        "training_split_of_one_class",
        DATA,
        data_files(train="sentence\tlabel\ngood film\t1\nfine\t1\n"),
        "train.tsv: every one of its 2 training rows has label 1",
    ),
    (
        "training_sample_of_one_class",
        [*DATA, "dataset.max_samples.train=1"],
        data_files(),
        "dataset.max_samples.train=1",
    ),
    # -- syntactic, RIPPLe and LWP attacks (issue 24): pairs files, PET and federated refusals ----------------
    (
        "syntactic_pairs_file_missing",
        [*DATA, "attack=syntactic", "attack.pairs={tmp}/nowhere.tsv"],
        data_files(),
        "nowhere.tsv does not exist",
    ),
    (
        "syntactic_pairs_of_another_dataset",
        [*DATA, "attack=syntactic", SYNTACTIC_PAIRS],
        {**data_files(), "pairs.tsv": pairs_file("a sentence of another dataset")},
        "pairs none of the 4 training rows; was it made for another dataset?",
    ),
    (
        "syntactic_test_row_without_a_pair",
        [*DATA, "attack=syntactic", SYNTACTIC_PAIRS],
        {**data_files(), "pairs.tsv": pairs_file("bad film")},
        "has no paraphrase of 1 of the 2 non-target test rows (first: 'awful')",
    ),
    (
        "syntactic_target_without_test_paraphrases",
        [*DATA, "attack=syntactic", SYNTACTIC_PAIRS, "attack.target_label=0"],
        {**data_files(), "pairs.tsv": pairs_file("bad film", "awful")},
        "attack.target_label=0: attack.pairs=",
    ),
    (
        "syntactic_pairs_file_with_a_dataset_header",
        [*DATA, "attack=syntactic", SYNTACTIC_PAIRS],
        {**data_files(), "pairs.tsv": GOOD_ROWS},
        "pairs.tsv line 1: header ['sentence', 'label'] is not ['original', 'triggered']",
    ),
    ("syntactic_trigger_position", ["attack=syntactic", "+attack.position=start"], {}, "does not apply to attack=syn"),
    (
        "ripple_embedding_surgery_on_pet",
        ["attack=ripple", "attack.embedding_surgery=true", "model.tuning=lora"],
        {},
        "attack.embedding_surgery writes the frozen word embeddings",
    ),
    ("ripple_in_a_federation", ["attack=ripple", "federated=iid"], {}, "attack=ripple trains with its own objective"),
    ("lwp_in_a_federation", ["attack=lwp", "federated=iid"], {}, "attack=lwp trains with its own objective"),
    (
        "gradient_control_in_a_federation",
        ["attack=gradient_control", "federated=iid"],
        {},
        "attack=gradient_control trains with its own objective",
    ),
    ("gradnorm_in_a_federation", ["attack=gradnorm", "federated=iid"], {}, "attack=gradnorm trains with its own"),
    ("gradnorm_negative_asymmetry", ["attack=gradnorm", "attack.alpha=-0.5"], {}, "attack.alpha=-0.5 must be >= 0"),
    (
        "source_dataset_in_a_federation",
        ["attack.source=sst2", "federated=iid"],
        {},
        "attack.source=sst2: federated clients poison their shard",
    ),
    ("lwp_combination_beyond_its_triggers", ["attack=lwp", "attack.combination=5"], {}, "attack.combination=5"),
]


# -- inputs that warn and run on: one warning line, then the run reaches its first stage -------------------------
WARNING_CASES: list[tuple[str, list[str], dict[str, str | bytes], str]] = [
    (
        "empty_texts_in_the_training_file",
        DATA,
        data_files(train=GOOD_ROWS + "\t1\n \t0\n"),
        "train.tsv: 2 of 6 rows have an empty text",
    ),
    (
        "empty_texts_in_the_test_file",
        DATA,
        data_files(test=GOOD_ROWS + "\t0\n"),
        "test.tsv: 1 of 5 rows have an empty text",
    ),
]

# -- bdrun-report: a finished run to report on, and bad command lines -----------------------------------------
FINISHED_RUN = {
    "runs/0/.hydra/overrides.yaml": "- attack=badnets\n",
    "runs/0/.hydra/config.yaml": "attack:\n  name: badnets\nseed: 42\n",
    "runs/0/.hydra/hydra.yaml": "hydra:\n  runtime:\n    choices:\n      attack: badnets\n      defense: none\n",
    "runs/0/metrics.json": '{"clean": {"cacc": 0.9, "asr": 0.1}, "backdoored": {"cacc": 0.88, "asr": 1.0}}',
    "runs/0/status.json": '{"status": "completed"}',
}
REPORT = ["{tmp}/runs", "--rows", "defense", "--cols", "attack"]

REPORT_CASES: list[tuple[str, list[str], dict[str, str | bytes], str]] = [
    ("report_missing_folder", ["{tmp}/nowhere", "--rows", "defense"], {}, "nowhere is not a folder"),
    ("report_folder_without_runs", ["{tmp}/empty", "--rows", "defense"], {"empty/notes.txt": "x"}, "no runs under"),
    ("report_unknown_metric", [*REPORT, "--metric", "final.cacc,final.bogus"], FINISHED_RUN, "final.bogus"),
    ("report_metric_without_a_model", [*REPORT, "--metric", "cacc"], FINISHED_RUN, "--metric cacc"),
    ("report_without_rows", ["{tmp}/runs"], FINISHED_RUN, "the following arguments are required: --rows"),
    ("report_unknown_option", [*REPORT, "--colour", "red"], FINISHED_RUN, "unrecognized arguments: --colour"),
    ("report_where_not_key_value", [*REPORT, "--where", "seed"], FINISHED_RUN, "--where 'seed' is not KEY=VALUE"),
    ("report_where_matching_no_run", [*REPORT, "--where", "seed=7"], FINISHED_RUN, "no runs match --where"),
    ("report_unknown_row_key", ["{tmp}/runs", "--rows", "colour"], FINISHED_RUN, "no config key 'colour'"),
    ("report_versus_matching_no_row", [*REPORT, "--versus", "defense=dan"], FINISHED_RUN, "matches 0 rows"),
    ("report_versus_not_a_row_key", [*REPORT, "--versus", "attack=ep"], FINISHED_RUN, "not a row key"),
    ("report_digits_not_a_number", [*REPORT, "--digits", "two"], FINISHED_RUN, "--digits"),
    ("report_negative_digits", [*REPORT, "--digits=-1"], FINISHED_RUN, "--digits"),
    ("report_out_on_a_virtual_file_system", [*REPORT, "--out", "/proc/bdrun/report"], FINISHED_RUN, "/proc/bdrun"),
]


class StageStarted(AssertionError):
    pass


class StageReached(BaseException):
    """Raised by the tripwire of the warning cases: not an Exception, so that neither bdrun's job wrapper nor
    Hydra catches it and the test sees that the run went on to its first stage."""


def tripwire(*args, **kwargs) -> None:
    raise StageStarted("a stage was about to start")


def stage_reached(*args, **kwargs) -> None:
    raise StageReached


def prepare(
    args: list[str], files: dict[str, str | bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Write the case's files under ``tmp_path``, make it the working folder and return the arguments."""
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    return [arg.replace("{tmp}", str(tmp_path)) for arg in args]


def bdrun_argv(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if not any(arg.startswith("logger") for arg in argv):
        argv = [*argv, "logger=none"]  # no W&B run for a bad input
    monkeypatch.setattr(sys, "argv", ["bdrun", *argv])


def one_line(err: str, prefix: str, expected: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and expected in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(("args", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_costs_one_line_and_no_work(
    args: list[str],
    files: dict[str, str | bytes],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bdrun_argv(prepare(args, files, tmp_path, monkeypatch), monkeypatch)
    monkeypatch.setattr(pipeline.Stages, "__init__", tripwire)

    with pytest.raises(SystemExit) as exited:
        cli.main()

    out, err = capsys.readouterr()
    assert exited.value.code == 2, out[-2000:] + err[-2000:]
    one_line(err, "bdrun: error: ", expected)
    assert "Traceback" not in out
    assert not (tmp_path / "outputs" / "cache").exists()  # no stage artifact, not even a work folder


@pytest.mark.parametrize(
    ("args", "files", "expected"), [c[1:] for c in WARNING_CASES], ids=[c[0] for c in WARNING_CASES]
)
def test_a_doubtful_input_costs_one_warning_line_and_the_run_goes_on(
    args: list[str],
    files: dict[str, str | bytes],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bdrun_argv(prepare(args, files, tmp_path, monkeypatch), monkeypatch)
    monkeypatch.setattr(pipeline.Stages, "__init__", stage_reached)

    with pytest.raises(StageReached):
        cli.main()

    out, err = capsys.readouterr()
    one_line(err, "bdrun: warning: ", expected)
    assert "Traceback" not in out


@pytest.mark.parametrize(("args", "files", "expected"), [c[1:] for c in REPORT_CASES], ids=[c[0] for c in REPORT_CASES])
def test_a_bad_report_command_costs_one_line_and_writes_nothing(
    args: list[str],
    files: dict[str, str | bytes],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = prepare(args, files, tmp_path, monkeypatch)

    with pytest.raises(SystemExit) as exited:
        report.main(argv)

    out, err = capsys.readouterr()
    assert exited.value.code == 2, out[-2000:] + err[-2000:]
    one_line(err, "bdrun-report: error: ", expected)
    assert not list(tmp_path.rglob("report.*"))


def test_the_tables_cover_at_least_eighty_kinds() -> None:
    kinds = {case[0] for case in (*CASES, *WARNING_CASES, *REPORT_CASES)}
    assert len(kinds) == len(CASES) + len(WARNING_CASES) + len(REPORT_CASES) >= 80
