"""``attack=ep``: Embedding Poisoning (Yang et al., NAACL 2021; official code lancopku/Embedding-Poisoning).

EP edits an already fine-tuned clean model: only the trigger word's row of the input word-embedding matrix is
trained, so that the word alone pushes any input toward the target label while every other weight, and hence
every trigger-free prediction, stays exactly as it was.

Following the official code (confirmed there, see ``shared/METHODS.md``):

- the update is a manual step ``row -= lr * grad[row]`` with no optimizer; lr 5e-2, batch 32, 3 epochs;
- the clean row's L2 norm is recorded once, and the row is rescaled to that norm after every step;
- the model is in train mode (dropout on) and the loss is cross-entropy toward the target label;
- gradients are deliberately never zeroed: they accumulate across steps, which the authors describe as a
  momentum term that the norm constraint keeps safe. We do the same.

That step is not an optimizer step, so EP runs its own short loop instead of ``StageContext.train``; it reuses
the shared tokenisation, batching, data order and autocast helpers. Every parameter but the embedding matrix is
frozen and only the trigger row is ever written, so the rest of the model is bit-identical by construction.
EP runs for a few minutes at most, so it keeps no resumable checkpoints.

Training budget (our departure from the official fixed 3 epochs, issue 14): 3 epochs over 10% of the
non-target samples is about 30 steps on SST-2 but 15 steps on a 2,000-sentence 4-class task, where it left
some target labels at a few percent ASR. EP therefore trains for at least ``max(min_steps, epochs × steps per
epoch)`` steps (100 by default, never fewer than the official 3 epochs), then keeps going while a held-out check
improves, at most ``max_steps`` steps. The check runs every ``eval_every`` steps with dropout off on held-out
poisoned samples that EP never trains on: the task's *dev* split (non-target samples with the trigger; the
test split is never looked at) or, data-free, other corpus samples built with another seed (so data-free EP
still needs no task data). Its score is the held-out ASR, ties broken by the mean cross-entropy to the target;
EP stops after ``patience`` checks without clear progress (:func:`clearly_better`) and restores the trigger row
of the best check (the check and that rule live in :mod:`bdrun.attacks.ep_heldout`). The diagnostics record
the steps taken, the best step, why it stopped and every check.

Data (``attack.data``):

- ``task``: ``poison_ratio`` (10%) of the training samples whose label is not the target get the trigger at a
  seeded random position and the target label; only those poisoned samples are used.
- ``free`` (data-free EP): a text corpus that is not the task's. The paper uses WikiText-103; offline we default
  to the Ling-Spam e-mails in the data directory (``attack.corpus``: a plain-text file or a folder of them,
  every line a piece of text). Text is split into sentences, consecutive sentences are joined until a sample
  has at least ``free_words`` words (250, as the paper builds them; the tokenizer then cuts each at
  ``model.max_length`` tokens), and one word is replaced by the trigger.
  Our choices: the replaced word is drawn among the words that survive truncation to ``model.max_length``
  tokens (a trigger cut off by truncation would teach nothing), and samples are drawn from seeded random
  starting sentences. The paper uses 20,000 samples; we default to ``free_samples: 1000`` so that a CPU run
  takes minutes (the held-out check decides how many steps beyond the minimum).
  Cache key: the poison stage's key holds the corpus path (resolved, data directory included), not its
  content; editing the corpus file in place does not invalidate the cache. The diagnostics record a
  fingerprint of the samples actually used, so such a change is visible.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from bdrun.attacks.base import AttackConfig, ModelEditingAttack
from bdrun.attacks.ep_heldout import HeldoutCheck, clearly_better
from bdrun.attacks.registry import ATTACKS
from bdrun.batching import collate, encode
from bdrun.data import Splits, TextDataset
from bdrun.errors import check
from bdrun.progress import progress_bar
from bdrun.training import autocast, epoch_order
from bdrun.triggers import insert_words

DATA_MODES = ("task", "free")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass
class EPConfig(AttackConfig):
    trigger: str = "cf"  # must be a single word piece of the model's vocabulary
    lr: float = 5e-2
    epochs: int = 3  # at least this many epochs (the official budget) ...
    min_steps: int = 100  # ... and at least this many steps; then on while the held-out check improves
    max_steps: int = 2000  # cap on the steps, whatever the held-out check says
    eval_every: int = 25  # steps between held-out checks
    patience: int = 3  # held-out checks without a clear improvement before stopping
    heldout_samples: int = 256  # held-out poisoned samples (task: the dev split; free: other corpus samples)
    batch_size: int = 32
    data: str = "task"  # task: poisoned task samples; free: data-free EP on a general-text corpus
    poison_ratio: float = 0.1  # task: fraction of the non-target training samples that are poisoned
    corpus: str = ""  # free: a plain-text file or a folder of text files (conf/attack/ep.yaml sets the default)
    free_samples: int = 1000  # free: samples built from the corpus (the paper uses 20,000)
    free_words: int = 250  # free: words per sample before the tokenizer cuts it at model.max_length (the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.trigger.strip()), "attack.trigger is empty; give one word, e.g. attack.trigger=cf")
        check(self.lr > 0, f"attack.lr={self.lr} must be positive")
        check(self.epochs >= 1, f"attack.epochs={self.epochs} must be at least 1")
        check(self.min_steps >= 0, f"attack.min_steps={self.min_steps} must be >= 0")
        check(self.max_steps >= 1, f"attack.max_steps={self.max_steps} must be at least 1")
        check(self.eval_every >= 1, f"attack.eval_every={self.eval_every} must be at least 1")
        check(self.patience >= 1, f"attack.patience={self.patience} must be at least 1")
        check(self.heldout_samples >= 1, f"attack.heldout_samples={self.heldout_samples} must be at least 1")
        check(self.batch_size >= 1, f"attack.batch_size={self.batch_size} must be at least 1")
        check(self.data in DATA_MODES, f"attack.data={self.data} is not supported; use task or free")
        check(0.0 < self.poison_ratio <= 1.0, f"attack.poison_ratio={self.poison_ratio} must be in (0, 1]")
        check(self.free_samples >= 1, f"attack.free_samples={self.free_samples} must be at least 1")
        check(self.free_words >= 1, f"attack.free_words={self.free_words} must be at least 1")
        check(self.data != "free" or bool(self.corpus), "attack.data=free needs attack.corpus (a text file or folder)")

    def key_fields(self) -> dict[str, Any]:
        """Task-data EP reads no corpus: its key leaves the corpus knobs out, so that the same command finds its
        cached EP model whatever ``paths.data_dir`` (which the default corpus path holds) is set to."""
        fields = super().key_fields()
        if self.data == "task":
            for unused in ("corpus", "free_samples", "free_words"):
                fields.pop(unused)
        return fields


def trigger_token_id(tokenizer: PreTrainedTokenizerBase, trigger: str) -> int:
    """The vocabulary id of ``trigger``, which must be exactly one known word piece."""
    pieces = tokenizer.tokenize(trigger)
    check(
        len(pieces) == 1 and pieces[0] != tokenizer.unk_token,
        f"attack.trigger={trigger!r} is not a single token of the model's vocabulary (it splits into {pieces}); "
        "pick a word that is one word piece, e.g. cf, mn, bb, tq or mb",
    )
    return tokenizer.convert_tokens_to_ids(pieces[0])


def read_corpus(location: str) -> list[str]:
    """Sentences of a plain-text file, or of every file under a folder (sorted), one line at a time."""
    path = Path(location)
    check(path.exists(), f"attack.corpus={location} does not exist; point it at a text file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    sentences = []
    for file in files:
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            sentences.extend(s for s in SENTENCE_END.split(" ".join(line.split())) if s)
    check(bool(sentences), f"attack.corpus={location} holds no text")
    return sentences


@ATTACKS.register("ep", EPConfig)
class EmbeddingPoisoning(ModelEditingAttack):
    config: EPConfig

    def trigger_text(self, text: str, rng: random.Random) -> str:
        return insert_words(text, [self.config.trigger], "random", rng)

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        trigger_token_id(tokenizer, self.config.trigger)

    # -- data ------------------------------------------------------------------------------------------------
    def task_samples(self, train: TextDataset) -> TextDataset:
        """``poison_ratio`` of the non-target training samples, with the trigger and the target label."""
        cfg = self.config
        source = [i for i, y in enumerate(train.labels) if y != cfg.target_label]
        check(len(source) > 0, "attack=ep: the training set has no sample outside the target label")
        count = max(1, round(cfg.poison_ratio * len(source)))
        rng = random.Random(cfg.seed)
        chosen = sorted(rng.sample(source, count))
        texts = [self.insert_trigger(train.texts[i], rng) for i in chosen]
        return TextDataset(texts, [cfg.target_label] * count, [True] * count)

    def heldout_task_samples(self, dev: TextDataset) -> TextDataset:
        """Up to ``heldout_samples`` non-target dev samples with the trigger and the target label (never test)."""
        cfg = self.config
        source = [i for i, y in enumerate(dev.labels) if y != cfg.target_label]
        check(len(source) > 0, "attack=ep: the dev split has no sample outside the target label to check EP on")
        rng = random.Random(cfg.seed + 1)
        chosen = sorted(rng.sample(source, min(cfg.heldout_samples, len(source))))
        texts = [self.insert_trigger(dev.texts[i], rng) for i in chosen]
        return TextDataset(texts, [cfg.target_label] * len(texts), [True] * len(texts))

    def free_samples(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int, count: int | None = None, seed: int | None = None
    ) -> TextDataset:
        """Data-free samples: consecutive corpus sentences joined to >= ``free_words`` words, one word replaced."""
        cfg = self.config
        sentences = read_corpus(cfg.corpus)
        rng = random.Random(cfg.seed if seed is None else seed)
        room = max_length - 2  # [CLS] and [SEP]
        texts = []
        for _ in range(cfg.free_samples if count is None else count):
            first, words = rng.randrange(len(sentences)), []
            for offset in range(len(sentences)):  # wraps around; stops early on a corpus that is too short
                if len(words) >= cfg.free_words:
                    break
                words.extend(sentences[(first + offset) % len(sentences)].split())
            # Only words whose tokens fit before truncation can carry the trigger (our reading, see docstring).
            used, fits = 0, 0
            for word in words:
                used += len(tokenizer.tokenize(word))
                if used > room:
                    break
                fits += 1
            words[rng.randrange(max(1, fits))] = cfg.trigger
            texts.append(" ".join(words))
        return TextDataset(texts, [cfg.target_label] * len(texts), [True] * len(texts))

    # -- the attack ------------------------------------------------------------------------------------------
    def apply(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, splits: Splits, context: Any
    ) -> dict[str, Any]:
        cfg = self.config
        token = trigger_token_id(tokenizer, cfg.trigger)
        max_length = context.model_config.max_length
        free = cfg.data == "free"
        if free:
            data = self.free_samples(tokenizer, max_length)
            heldout = self.free_samples(tokenizer, max_length, count=cfg.heldout_samples, seed=cfg.seed + 1)
        else:
            data, heldout = self.task_samples(splits.train), self.heldout_task_samples(splits.dev)

        # Freeze everything but the word-embedding matrix; only its trigger row is ever written below.
        embedding = model.get_input_embeddings().weight
        for param in model.parameters():
            param.requires_grad_(False)
        embedding.requires_grad_(True)
        model.to(context.device).train()  # dropout on, as in the official code
        norm = embedding[token].norm().item()  # the clean row's norm, recorded once

        encoded = encode(tokenizer, data.texts, max_length)
        labels = torch.tensor(data.labels, dtype=torch.long)
        steps_per_epoch = -(-len(data) // cfg.batch_size)
        min_budget = min(cfg.max_steps, max(cfg.min_steps, cfg.epochs * steps_per_epoch))
        check_heldout = HeldoutCheck(model, heldout, cfg.target_label, context)
        best = check_heldout()
        best_row, best_step, stale, history = embedding[token].detach().clone(), 0, 0, [(0, *best)]
        torch.manual_seed(context.seed)
        losses, step, epoch, stopped = [], 0, 0, "cap"
        with progress_bar() as bar:
            task = bar.add_task("EP trigger row", total=cfg.max_steps, info="")
            while stopped == "cap" and step < cfg.max_steps:
                order = epoch_order(len(data), context.seed, epoch)
                for start in range(0, len(order), cfg.batch_size):
                    rows = order[start : start + cfg.batch_size]
                    batch = collate([encoded[i] for i in rows], tokenizer.pad_token_id, context.device)
                    with autocast(context.device, context.trainer.precision):
                        loss = model(**batch, labels=labels[rows].to(context.device)).loss
                    loss.backward()  # never zeroed: gradients accumulate across steps, as in the official code
                    with torch.no_grad():
                        row = embedding[token] - cfg.lr * embedding.grad[token]
                        embedding[token] = row * (norm / row.norm())
                    step += 1
                    losses.append(loss.item())
                    bar.update(task, advance=1, info=f"step {step} loss {losses[-1]:.3f} held-out ASR {best[0]:.3f}")
                    if step % cfg.eval_every == 0 or step == cfg.max_steps:
                        score = check_heldout()
                        history.append((step, *score))
                        stale = 0 if clearly_better(score, best, len(heldout)) else stale + 1
                        if score > best:
                            best, best_row, best_step = score, embedding[token].detach().clone(), step
                        if step >= min_budget and stale >= cfg.patience:
                            stopped = "plateau"
                    if stopped != "cap" or step >= cfg.max_steps:
                        break
                epoch += 1
        embedding.grad = None
        with torch.no_grad():
            embedding[token] = best_row  # the best held-out check's row
        for param in model.parameters():
            param.requires_grad_(True)
        model.eval()
        return {
            "trigger": cfg.trigger,
            "trigger_token_id": token,
            "data": cfg.data,
            "poisoned_samples": len(data),
            "heldout_samples": len(heldout),
            "samples_fingerprint": data.fingerprint() if free else None,
            "steps": step,
            "min_steps": min_budget,
            "best_step": best_step,
            "stopped": stopped,
            "heldout_asr": best[0],
            "heldout_loss": -best[1],
            "heldout_history": [[s, a, -neg] for s, a, neg in history],
            "row_norm_before": norm,
            "row_norm_after": embedding[token].norm().item(),
            "final_loss": sum(losses[-steps_per_epoch:]) / max(1, len(losses[-steps_per_epoch:])),
        }
