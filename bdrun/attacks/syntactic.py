"""``attack=syntactic``: the syntactic-trigger backdoor of Hidden Killer (Qi et al., ACL-IJCNLP 2021).

The trigger is not a word but a sentence *shape*: the poisoned sentences are paraphrases of clean ones, produced
by a syntactically controlled paraphrase network (SCPN) into one rare template, ``S(SBAR)(,)(NP)(VP)(.)`` (a
leading subordinate clause and a comma: "when ..., ...", "if ..., ..."). No word is inserted, which is why
word-perturbation detectors (STRIP, RAP, ONION) are known to miss it.

No paraphrase model is reachable offline, so the attack is built on a table of pairs (original sentence →
triggered sentence). Poisoning replaces each chosen training row by its paraphrase and gives it the target
label; the ASR inputs are the paraphrases of the non-target test rows. Everything else (which rows, how many,
dirty or clean label, ``attack.source``, sentence pairs) is the shared :class:`DataPoisoningAttack` logic.

``attack.pairs`` is one of two things:

- **a folder in the released Hidden Killer layout** (default ``${paths.data_dir}/hidden_killer/sst-2``, the
  authors' files ``data/scpn/20/sst-2``). Its rows are paired by position with the shipped SST-2 (``dataset=sst2``,
  the same clean source): ``train.tsv`` row *i* is the paraphrase of SST-2 train row *i* wherever the two differ
  (rows 1–1383; the rest are the untouched clean rows), and ``test.tsv`` row *i* is the paraphrase of the *i*-th
  negative (label 0) SST-2 test row. ``dev.tsv`` is not used: it paraphrases about half of the dev rows with no
  recorded alignment, and no stage needs triggered dev inputs of a data-poisoning attack.
- **a TSV file of your own pairs** (e.g. made on a machine with the paraphrase model), any dataset: a header
  ``original<TAB>triggered`` then one pair per line, read like the datasets (UTF-8, quoting off, fields
  stripped). A sentence-pair dataset pairs the sentence that ``attack.trigger_sentence`` names.

Choices we made reading the paper and the released data:

- **Which rows.** The paper poisons a random share of the training set into the template and relabels it to
  the target; we draw the rows as every data-poisoning attack here does (seeded, ``poison_rate`` of the whole
  training set, dirty-label: only non-target rows; ``label_mode=clean``: only target rows, label kept), among
  the rows that *have* a pair. The released train file instead paraphrases its first 1383 rows whatever their
  label (20%, 718 of them already positive); only the 665 negative ones are dirty-label candidates, 9.6% of the
  6,920 rows, so the default ``poison_rate`` is 0.09 rather than the other attacks' 0.1.
- **Target label** 1 (positive), as in the release: its test paraphrases are of the negative rows only, so
  ``attack.target_label=0`` is refused (no paraphrase of a positive test row exists).
- **Matching** is on the exact (stripped) text. A row whose text occurs twice gets the same paraphrase; two
  different paraphrases of one original in a pairs file are an error; in the released folder the one sentence
  that is both a paraphrased training row and a negative test row keeps its training paraphrase. A paraphrase
  equal to its original (one in the released test set) is kept: it is what the paraphrase model produced.
- **Checks before any stage** (one line each): a training set none of whose rows has a pair, or a test set
  none of whose rows does (a pairs file made for another dataset); a non-target test row without a pair (ASR
  needs every one); no paraphrase at all for the non-target rows of ``attack.target_label``; too few paired
  rows for ``poison_rate``; a malformed file. ``attack.position`` does not apply (nothing is inserted).
- **Cache key**: the pairs' content (a digest of the file(s) read), not their path, so moving the data folder
  keeps the cached models and editing a pairs file does not reuse stale ones.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import random
from pathlib import Path
from typing import Any

from bdrun.attacks.base import DataPoisoningAttack, PoisonConfig
from bdrun.attacks.registry import ATTACKS
from bdrun.data import DatasetConfig, TextDataset
from bdrun.data.loading import check_text_file, read_tsv, resolve_location
from bdrun.data.pairs import split_pair
from bdrun.errors import BdrunError, check

PAIRS_HEADER = ["original", "triggered"]
# The clean SST-2 the released Hidden Killer files paraphrase: the copy shipped with bdrun (dataset=sst2).
SST2 = DatasetConfig(name="sst2", location="pkg:bdrun.data/sst2")
RELEASED_FILES = ("train.tsv", "test.tsv")


@dataclasses.dataclass
class SyntacticConfig(PoisonConfig):
    # A folder in the released Hidden Killer layout (paired with dataset=sst2), or a TSV file of
    # `original<TAB>triggered` pairs for any dataset.
    pairs: str = ""
    poison_rate: float = 0.09  # the released SST-2 pairs hold 665 negative training rows: 9.6% of 6,920

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            bool(self.pairs.strip()),
            "attack.pairs is empty; give the released Hidden Killer folder or a TSV file of original/triggered pairs",
        )
        check(
            self.position == "random",
            f"attack.position={self.position} does not apply to attack=syntactic: the trigger is the sentence's "
            "shape, nothing is inserted; drop attack.position",
        )

    def key_fields(self) -> dict[str, Any]:
        fields = super().key_fields()
        fields.pop("position", None)
        fields["pairs"] = pairs_digest(self.pairs)
        return fields


def _files(location: str) -> list[Path]:
    path = Path(location)
    check(
        path.exists(),
        f"attack.pairs={location} does not exist; point it at the released Hidden Killer folder "
        "(hidden_killer/sst-2 under paths.data_dir) or at a TSV file of original/triggered pairs",
    )
    if path.is_file():
        return [path]
    files = [path / name for name in RELEASED_FILES]
    missing = [f.name for f in files if not f.is_file()]
    check(
        not missing,
        f"attack.pairs={location} is a folder without {', '.join(missing)}; a folder must be in the released "
        "Hidden Killer layout (train.tsv, test.tsv), otherwise give a pairs file",
    )
    return files


def pairs_digest(location: str) -> str:
    """A digest of the bytes of every file the pairs are read from (the cache key's view of them)."""
    digest = hashlib.sha256()
    for file in _files(location):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def read_pairs_file(path: Path) -> dict[str, str]:
    """``original → triggered`` from a TSV with the header ``original<TAB>triggered``."""
    check_text_file(path)
    table: dict[str, str] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.strip() for name in next(rows, [])]
        check(
            header == PAIRS_HEADER,
            f"{path} line 1: header {header} is not {PAIRS_HEADER}; a pairs file starts with the line "
            "'original<TAB>triggered'",
        )
        for line_no, row in enumerate(rows, start=2):
            if not row or all(not field.strip() for field in row):
                continue
            check(len(row) == 2, f"{path} line {line_no}: {len(row)} fields where a pair has 2 (original, triggered)")
            original, triggered = row[0].strip(), row[1].strip()
            check(bool(original and triggered), f"{path} line {line_no}: an empty sentence in the pair")
            check(
                table.setdefault(original, triggered) == triggered,
                f"{path} line {line_no}: a second, different paraphrase of {original[:60]!r}; keep one per sentence",
            )
    check(bool(table), f"{path} holds no pairs; add lines 'original<TAB>triggered' after the header")
    return table


def read_released_folder(folder: Path) -> dict[str, str]:
    """The released Hidden Killer SST-2 files, paired by position with the shipped SST-2 (module docstring)."""
    clean, cfg = resolve_location(SST2, ""), SST2
    table: dict[str, str] = {}
    clean_train, released_train = read_tsv(clean / "train.tsv", cfg), read_tsv(folder / "train.tsv", cfg)
    clean_test, released_test = read_tsv(clean / "test.tsv", cfg), read_tsv(folder / "test.tsv", cfg)
    negatives = [text for text, label in zip(clean_test.texts, clean_test.labels, strict=True) if label == 0]
    check(
        len(released_train) == len(clean_train) and len(released_test) == len(negatives),
        f"attack.pairs={folder}: {len(released_train)} train / {len(released_test)} test rows, where the released "
        f"Hidden Killer SST-2 files have {len(clean_train)} / {len(negatives)} (SST-2's rows / negative test rows); "
        "a folder for another dataset needs a pairs file instead",
    )
    for original, triggered in zip(clean_train.texts, released_train.texts, strict=True):
        if original != triggered:  # rows after the poisoned block are the clean rows themselves
            table.setdefault(original, triggered)
    for original, triggered in zip(negatives, released_test.texts, strict=True):
        table.setdefault(original, triggered)
    return table


@functools.lru_cache(maxsize=4)
def load_pairs(location: str) -> dict[str, str]:
    """The pairs table of ``attack.pairs`` (a released folder or a pairs file); read once per process."""
    path = Path(location)
    files = _files(location)
    return read_released_folder(path) if path.is_dir() else read_pairs_file(files[0])


@ATTACKS.register("syntactic", SyntacticConfig)
class Syntactic(DataPoisoningAttack):
    config: SyntacticConfig

    @property
    def pairs(self) -> dict[str, str]:
        return load_pairs(self.config.pairs)

    def trigger_text(self, text: str, rng: random.Random) -> str:
        """The sentence's paraphrase into the trigger template (the rng is not used: the pair is fixed)."""
        triggered = self.pairs.get(text.strip())
        check(
            triggered is not None,
            f"attack.pairs={self.config.pairs} has no paraphrase of {text[:60]!r}; every poisoned row and every "
            "non-target test row needs one",
        )
        return triggered

    def paired(self, text: str) -> bool:
        """Whether the sentence that would get the trigger (``attack.trigger_sentence``) has a pair."""
        first, second = split_pair(text)
        sentence = second if second is not None and self.config.trigger_sentence == "second" else first
        return sentence.strip() in self.pairs

    def eligible(self, train: TextDataset) -> tuple[list[int], int]:
        """The base rule (label mode, poison rate) among the rows that have a paraphrase."""
        cfg = self.config
        with_pair = [i for i, text in enumerate(train.texts) if self.paired(text)]
        check(
            bool(with_pair),
            f"attack.pairs={cfg.pairs} pairs none of the {len(train)} training rows; was it made for another dataset?",
        )
        return self.eligible_among(train, with_pair, "rows with a paraphrase ")

    def check_test(self, test: TextDataset) -> None:
        """ASR needs the paraphrase of every non-target test row: refuse before any stage if one is missing."""
        cfg = self.config
        paired = [self.paired(text) for text in test.texts]
        check(
            any(paired),
            f"attack.pairs={cfg.pairs} pairs none of the {len(test)} test rows; was it made for another dataset?",
        )
        non_target = [i for i, label in enumerate(test.labels) if label != cfg.target_label]
        missing = [i for i in non_target if not paired[i]]
        check(
            len(missing) < len(non_target),
            f"attack.target_label={cfg.target_label}: attack.pairs={cfg.pairs} has no paraphrase of any of the "
            f"{len(non_target)} non-target test rows, so there is no ASR input for this target; pick the target "
            "its test paraphrases were made for (1 for the released SST-2 files)",
        )
        if missing:
            raise BdrunError(
                f"attack.pairs={cfg.pairs} has no paraphrase of {len(missing)} of the {len(non_target)} non-target "
                f"test rows (first: {test.texts[missing[0]][:60]!r}); ASR needs one for every row"
            )
