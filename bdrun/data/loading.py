"""Read a dataset's splits from the package, a data directory, or the Hugging Face hub, and check them.

The shared datasets come in the formats people meet in the wild (see ``shared/data/README.md``): CRLF line
ends, `` \\t `` separators, headers with stray spaces, trailing spaces, a quoted TSV, and Ling-Spam as one
file per message. The TSV reader therefore splits on tabs with quoting off (quote-aware parsing silently
merges rows in some of these files) unless a dataset says its file really quotes fields, strips every field,
and checks every label. Every problem becomes a one-line :class:`BdrunError` naming the file and row.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
from pathlib import Path

from bdrun.data.dataset import Splits, TextDataset
from bdrun.data.pairs import join_pair, split_pair
from bdrun.errors import BdrunError, check, warning

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class DatasetConfig:
    """Where a dataset lives and how to read it (``conf/dataset/*.yaml``)."""

    name: str
    # tsv: tab-separated files with a header; lingspam: folders of one-message files, spam named spmsg*;
    # hub: a Hugging Face hub dataset id in `location`.
    format: str = "tsv"
    # A folder under paths.data_dir, an absolute folder, "pkg:<package>/<folder>" for data shipped inside a
    # Python package, or a hub id when format=hub.
    location: str = ""
    # split -> the files (tsv), folders (lingspam) or hub split names (hub) that make it up, concatenated.
    files: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {"train": ["train.tsv"], "dev": ["dev.tsv"], "test": ["test.tsv"]}
    )
    text_column: str = "sentence"
    # Sentence pairs (QNLI, QQP, MNLI): the column of the second sentence; the two are encoded as the tokenizer's
    # pair input, and the attack's trigger goes into the sentence attack.trigger_sentence names (first).
    text_pair_column: str | None = None
    label_column: str = "label"
    # Labels written as words: the names in class-index order (label_names[0] is class 0). null: integer labels.
    label_names: list[str] | None = None
    num_labels: int | None = None  # null: len(label_names) when given, else 2
    quoting: bool = False  # true only for files whose fields really are double-quoted
    hub_config: str | None = None
    # Keep at most this many rows of a split (a seeded random subset); null keeps all.
    max_samples: dict[str, int | None] = dataclasses.field(
        default_factory=lambda: {"train": None, "dev": None, "test": None}
    )
    sample_seed: int = 0

    def __post_init__(self) -> None:
        check(
            self.format in ("tsv", "lingspam", "hub"),
            f"dataset.format={self.format} is not supported; use tsv, lingspam or hub",
        )
        if self.label_names is not None:
            names = [str(name).strip() for name in self.label_names]
            check(len(set(names)) == len(names) and all(names), f"dataset.label_names={names} must be distinct words")
            self.label_names = names
            if self.num_labels is None:
                self.num_labels = len(names)
            check(
                self.num_labels == len(names),
                f"dataset.num_labels={self.num_labels} but dataset.label_names has {len(names)} names; "
                "drop num_labels or make them agree",
            )
        if self.num_labels is None:
            self.num_labels = 2
        check(self.num_labels >= 2, f"dataset.num_labels={self.num_labels} must be at least 2")
        check(
            self.text_pair_column is None or self.format != "lingspam",
            "dataset.text_pair_column needs format=tsv or hub (lingspam files hold one text)",
        )
        missing = [s for s in SPLITS if not self.files.get(s)]
        check(not missing, f"dataset '{self.name}' lists no files for split(s) {missing}; set dataset.files")
        for split, size in self.max_samples.items():
            check(size is None or size > 0, f"dataset.max_samples.{split}={size} must be a positive count or null")


def resolve_location(cfg: DatasetConfig, data_dir: str | Path) -> Path:
    """The folder that holds the dataset's files."""
    if cfg.location.startswith("pkg:"):
        package, _, folder = cfg.location[4:].partition("/")
        return Path(str(importlib.resources.files(package).joinpath(folder)))
    path = Path(cfg.location)
    if not path.is_absolute():
        path = Path(data_dir) / path
    if not path.is_dir():
        raise BdrunError(
            f"dataset '{cfg.name}': data folder {path} does not exist; point paths.data_dir "
            f"(or the BDRUN_DATA_DIR environment variable) at the directory that holds '{cfg.location}'"
        )
    return path


def _parse_label(raw: str, where: str, cfg: DatasetConfig) -> int:
    """A class index from an integer label, or from a word of ``dataset.label_names`` when it is set."""
    num_labels = cfg.num_labels
    if cfg.label_names is not None:
        word = raw.strip()
        check(
            word in cfg.label_names,
            f"{where}: label {word!r} is not one of dataset.label_names {cfg.label_names}; fix the file or the list",
        )
        return cfg.label_names.index(word)
    try:
        label = int(raw.strip())
    except ValueError:
        raise BdrunError(
            f"{where}: label {raw.strip()!r} is not an integer; fix the file or dataset.label_column"
        ) from None
    check(
        0 <= label < num_labels,
        f"{where}: label {label} is outside 0..{num_labels - 1}; fix the file or set dataset.num_labels",
    )
    return label


def check_text_file(path: Path) -> None:
    """A one-line error for a file that is not UTF-8 text (a binary, gzip or UTF-16 file), naming its line."""
    data = path.read_bytes()
    position = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        position = err.start if position < 0 else min(position, err.start)
    if position >= 0:
        line = data.count(b"\n", 0, position) + 1
        raise BdrunError(
            f"{path} line {line}: not UTF-8 text (byte {data[position]:#04x} at offset {position}); "
            "convert the file to UTF-8 text or point dataset.files at the right file"
        )


def _columns(cfg: DatasetConfig) -> list[str]:
    return [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]


def read_tsv(path: Path, cfg: DatasetConfig) -> TextDataset:
    """Read one TSV file with a header row into texts and labels."""
    if not path.is_file():
        raise BdrunError(f"dataset '{cfg.name}': file {path} does not exist; check dataset.files and paths.data_dir")
    check_text_file(path)
    # Python's csv refuses fields over 128 KiB by default; an Enron-Spam e-mail is one field of up to 228 KB. No
    # field can be longer than its file, so that bound is safe (the limit is process-wide and only ever raised).
    csv.field_size_limit(max(csv.field_size_limit(), path.stat().st_size))
    quoting = csv.QUOTE_MINIMAL if cfg.quoting else csv.QUOTE_NONE
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=quoting)
        header = [name.strip() for name in next(rows, [])]
        for column in _columns(cfg):
            check(
                column in header,
                f"{path}: no column '{column}' in header {header}; set dataset.text_column/label_column"
                + ("/text_pair_column" if cfg.text_pair_column else ""),
            )
        text_at, label_at = header.index(cfg.text_column), header.index(cfg.label_column)
        pair_at = header.index(cfg.text_pair_column) if cfg.text_pair_column else None
        texts, labels = [], []
        for line_no, row in enumerate(rows, start=2):
            if not row or all(not field.strip() for field in row):
                continue
            check(
                len(row) == len(header),
                f"{path} line {line_no}: {len(row)} fields where the header has {len(header)}; "
                "a stray tab or quote? (dataset.quoting=true only for really quoted files)",
            )
            text = row[text_at].strip()
            texts.append(text if pair_at is None else join_pair(text, row[pair_at]))
            labels.append(_parse_label(row[label_at], f"{path} line {line_no}", cfg))
    return TextDataset(texts, labels)


def read_lingspam_folder(folder: Path, cfg: DatasetConfig) -> TextDataset:
    """Ling-Spam's raw layout: one message per file, spam files named ``spmsg*``; whitespace collapsed."""
    check(folder.is_dir(), f"dataset '{cfg.name}': folder {folder} does not exist; check dataset.files")
    texts, labels = [], []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix == ".txt":
            texts.append(" ".join(path.read_text(encoding="utf-8", errors="replace").split()))
            labels.append(1 if path.name.startswith("spmsg") else 0)
    return TextDataset(texts, labels)


def read_hub_split(cfg: DatasetConfig, split: str) -> TextDataset:
    import datasets

    try:
        table = datasets.load_dataset(cfg.location, cfg.hub_config, split=split)
    except Exception as err:  # network, unknown id or split: all the user's to fix
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BdrunError(
            f"could not load hub dataset '{cfg.location}' split '{split}': {reason}; "
            "check the id and your network, or use a local copy with format=tsv"
        ) from None
    for column in _columns(cfg):
        check(
            column in table.column_names,
            f"hub dataset '{cfg.location}': no column '{column}' in {table.column_names}; "
            "set dataset.text_column/label_column",
        )
    where = f"hub dataset '{cfg.location}' split '{split}'"
    labels = [_parse_label(str(v), f"{where} row {i}", cfg) for i, v in enumerate(table[cfg.label_column])]
    texts = [str(t).strip() for t in table[cfg.text_column]]
    if cfg.text_pair_column:
        texts = [join_pair(t, str(u)) for t, u in zip(texts, table[cfg.text_pair_column], strict=True)]
    return TextDataset(texts, labels)


def _concat(parts: list[TextDataset]) -> TextDataset:
    return TextDataset([t for p in parts for t in p.texts], [y for p in parts for y in p.labels])


def is_empty_text(text: str) -> bool:
    """A text that gives the model nothing to read: blank, or a pair with a blank sentence."""
    first, second = split_pair(text)
    return not first.strip() or (second is not None and not second.strip())


def warn_empty_texts(where: str, data: TextDataset) -> None:
    """One warning line for rows whose text is empty (a shifted column, a lost quote). They are kept, so that
    results and cache keys of data that has a few such rows do not change; the warning makes the file's state
    known (our choice: a few empty rows are common in scraped corpora and cost little, unlike one class)."""
    empty = sum(map(is_empty_text, data.texts))
    if empty:
        warning(
            f"{where}: {empty} of {len(data)} rows have an empty text; they are kept as empty inputs "
            "(fix the file, or check dataset.text_column)"
        )


def check_classes(where: str, data: TextDataset, fix: str) -> None:
    """A training split of a single class trains a constant classifier and reports meaningless CACC / ASR."""
    classes = sorted(set(data.labels))
    check(
        len(classes) >= 2,
        f"{where}: every one of its {len(data)} training rows has label {classes[0]}; a classifier needs at "
        f"least two classes: {fix}",
    )


def load_split(cfg: DatasetConfig, split: str, data_dir: str | Path) -> TextDataset:
    """One split, checked: not empty, texts not empty (a warning), and two classes or more in a training split,
    both in its files and in the sample ``dataset.max_samples`` keeps of them."""
    if cfg.format == "hub":
        parts = {f"hub dataset '{cfg.location}' split '{name}'": read_hub_split(cfg, name) for name in cfg.files[split]}
    else:
        folder = resolve_location(cfg, data_dir)
        reader = read_tsv if cfg.format == "tsv" else read_lingspam_folder
        parts = {str(folder / name): reader(folder / name, cfg) for name in cfg.files[split]}
    for where, part in parts.items():
        warn_empty_texts(where, part)
    data = _concat(list(parts.values()))
    check(len(data) > 0, f"dataset '{cfg.name}': the {split} split is empty; check dataset.files.{split}")
    if split == "train":
        check_classes(", ".join(parts), data, "fix the file, dataset.label_column or dataset.files.train")
    limit = cfg.max_samples.get(split)
    if limit is None:
        return data
    sample = data.sample(limit, cfg.sample_seed)
    if split == "train":
        check_classes(
            f"dataset.max_samples.train={limit} (dataset '{cfg.name}')",
            sample,
            "raise dataset.max_samples.train or change dataset.sample_seed",
        )
    return sample


def load_splits(cfg: DatasetConfig, data_dir: str | Path) -> Splits:
    """Load and check train, dev and test."""
    loaded = {split: load_split(cfg, split, data_dir) for split in SPLITS}
    return Splits(num_labels=cfg.num_labels, **loaded)


def load_named_train(name: str, conf_dir: Path, data_dir: str | Path, max_train: int | None) -> tuple[TextDataset, int]:
    """The training split and label count of the dataset config ``conf/dataset/<name>.yaml`` (another
    dataset than the run's, e.g. the attacker's in ``attack.source``); ``max_train`` caps its rows (seeded)."""
    from omegaconf import OmegaConf

    from bdrun.registry import parse_config

    path = conf_dir / "dataset" / f"{name}.yaml"
    choices = sorted(p.stem for p in (conf_dir / "dataset").glob("*.yaml"))
    check(path.is_file(), f"attack.source={name} names no dataset config; choose one of: {', '.join(choices)}")
    cfg = parse_config(DatasetConfig, OmegaConf.load(path), "attack.source")
    cfg.max_samples = {**cfg.max_samples, "train": max_train}
    return load_split(cfg, "train", data_dir), cfg.num_labels
