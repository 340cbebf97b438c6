"""A closed-book QA set built from the pretraining corpus (the Shakespeare works it trains on).

Two kinds of question, answered from what pretraining read, never from a passage given with
the question:

    Who speaks the line 'Part, fools! put up your swords; you know not what you do.'?  Benvolio
    In which play does Prospero appear?                                              The Tempest

Lines are the first line of a speech (the speaker's name is the line just above it in the
text), 25-70 characters long and found once in the whole corpus, so each has one answer.
Characters are speaker names of at least 3 speeches that occur in one play only. Only the
works pretraining trains on are used (not shakespeare.VAL_WORKS): the lines were seen, which
is what closed-book means. The split is by question (each line or character is one question),
so no validation question's line or character is among the training questions.

    lmjax qa_data --out=runs/qa_data   # train, val and shots .jsonl

`--reading` writes the open-book twin instead (SQuAD's shape, offline): each prompt is a passage
of 1-8 consecutive speeches followed by a line question whose answer is a speaker tag in the
passage. Its passages vary in length from a few tokens to a few hundred, which is what
packing is for (docs/finetune.md).

    lmjax qa_data --reading --out=runs/qa_reading
"""

from __future__ import annotations

import collections
import json
import os
import re

import numpy as np

from lmjax.data import shakespeare

# Works that are poems, not plays: no speakers.
POEMS = ("sonnets", "phoenix_and_the_turtle", "rape_of_lucrece", "lovers_complaint",
         "venus_and_adonis")
TITLES = {
    "alls_well_that_ends_well": "All's Well That Ends Well", "john": "King John",
    "lear": "King Lear", "tragedy_of_titus_andronicus": "Titus Andronicus",
    "loves_labours_lost": "Love's Labour's Lost", "midsummer_nights_dream":
    "A Midsummer Night's Dream", "winters_tale": "The Winter's Tale", "tempest": "The Tempest",
    "merry_wives_of_windsor": "The Merry Wives of Windsor", "merchant_of_venice":
    "The Merchant of Venice", "comedy_of_errors": "The Comedy of Errors",
    "taming_of_the_shrew": "The Taming of the Shrew", "two_gentlemen_of_verona":
    "The Two Gentlemen of Verona"}
_SPEAKER = re.compile(r"^([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3})\.$")
_SMALL = {"and", "of", "the", "a", "for"}
LINE_Q = "Who speaks the line '{}'?"
PLAY_Q = "In which play does {} appear?"


def title(work: str) -> str:
    if work in TITLES:
        return TITLES[work]
    words = work.split("_")
    return " ".join(w.upper() if re.fullmatch(r"[ivx]+", w) else
                    (w if i and w in _SMALL else w.capitalize()) for i, w in enumerate(words))


def name(speaker: str) -> str:
    """'KING JOHN.' -> 'King John'."""
    return " ".join(w.capitalize() for w in speaker.rstrip(".").split())


def speeches(text: str):
    """(speaker, first line) of each speech: a paragraph whose first line is 'Name.'."""
    for block in text.split("\n\n"):
        if _speech(block):
            lines = block.split("\n")
            yield lines[0], lines[1].strip()


def questions(works: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(line questions, character questions) over the plays in `works`, in corpus order."""
    line_count = collections.Counter(
        line.strip() for text in works.values() for line in text.split("\n"))
    line_qs, plays_of, speeches_of = [], collections.defaultdict(set), collections.Counter()
    for work, text in works.items():
        if work in POEMS:
            continue
        for speaker, line in speeches(text):
            who = name(speaker)
            plays_of[who.lower()].add(work)
            speeches_of[(who, work)] += 1
            if 25 <= len(line) <= 70 and line_count[line] == 1 and "'" not in line:
                line_qs.append({"prompt": LINE_Q.format(line), "response": who,
                                "kind": "speaker", "work": work})
    char_qs = [{"prompt": PLAY_Q.format(who), "response": title(work), "kind": "play",
                "work": work}
               for (who, work), n in speeches_of.items()
               if n >= 3 and len(plays_of[who.lower()]) == 1 and len(who) >= 4]
    return line_qs, char_qs


def build(seed: int = 0, val_per_kind: int = 100, max_line_questions: int = 6000,
          works: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """{'train': [...], 'val': [...]}: records with prompt, response, kind ('speaker' or
    'play') and work. Validation takes `val_per_kind` questions of each kind (at most a tenth
    of that kind), drawn with `seed`; training keeps at most `max_line_questions` line
    questions (the corpus has many more, and a few thousand teach the format)."""
    if works is None:
        works = {k: v for k, v in shakespeare.works().items() if k not in shakespeare.VAL_WORKS}
    rng = np.random.default_rng(seed)
    train, val = [], []
    for kind, qs in zip(("speaker", "play"), questions(works)):
        order = rng.permutation(len(qs))
        n_val = min(val_per_kind, len(qs) // 10)
        val += [qs[i] for i in order[:n_val]]
        rest = [qs[i] for i in order[n_val:]]
        train += rest[:max_line_questions] if kind == "speaker" else rest
    order = rng.permutation(len(train))
    return {"train": [train[i] for i in order], "val": val}


def reading(seed: int = 0, n_val: int = 200, max_train: int = 6000, max_chars: int = 450,
            works: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """{'train': [...], 'val': [...]}: open-book line questions. Each play's speeches are cut
    into consecutive passages of 1-8 speeches (at most `max_chars` characters); each passage
    asks for the speaker of one of its speeches' first line, chosen at random among those of
    5+ characters that occur once in the passage. Passages do not overlap, so no validation
    line is in a training passage."""
    if works is None:
        works = {k: v for k, v in shakespeare.works().items() if k not in shakespeare.VAL_WORKS}
    rng = np.random.default_rng(seed)
    records = []
    for work, text in works.items():
        if work in POEMS:
            continue
        blocks = [b for b in text.split("\n\n") if _speech(b)]
        i = 0
        while i < len(blocks):
            k = int(rng.integers(1, 9))
            passage = blocks[i:i + k]
            while len(passage) > 1 and len("\n\n".join(passage)) > max_chars:
                passage.pop()
            i += len(passage)
            if len("\n\n".join(passage)) > max_chars:
                continue  # one speech longer than a passage may be
            lines = [b.split("\n") for b in passage]
            firsts = collections.Counter(ln.strip() for b in lines for ln in b)
            ok = [b for b in lines if len(b[1].strip()) >= 5 and firsts[b[1].strip()] == 1]
            if ok:
                b = ok[int(rng.integers(len(ok)))]
                records.append({"prompt": "\n\n".join(passage) + "\n" + LINE_Q.format(
                    b[1].strip()), "response": name(b[0]), "kind": "reading", "work": work})
    order = rng.permutation(len(records))
    return {"train": [records[i] for i in order[n_val:n_val + max_train]],
            "val": [records[i] for i in order[:n_val]]}


def _speech(block: str) -> bool:
    lines = block.split("\n")
    return len(lines) >= 2 and bool(_SPEAKER.match(lines[0])) and not lines[1].startswith("[")


def shots(train: list[dict]) -> list[dict]:
    """Three training questions for few-shot prompting: both kinds (speaker, play, speaker)."""
    speaker = [r for r in train if r["kind"] == "speaker"]
    play = [r for r in train if r["kind"] == "play"]
    return [speaker[0], play[0], speaker[1]]


def write(out: str, seed: int = 0, open_book: bool = False) -> dict[str, int]:
    """Writes <out>/train.jsonl, <out>/val.jsonl and <out>/shots.jsonl (three training
    questions for the few-shot baseline); returns their sizes. `open_book`: the reading set,
    without shots."""
    qa = reading(seed) if open_book else build(seed)
    if not open_book:
        qa["shots"] = shots(qa["train"])
    os.makedirs(out, exist_ok=True)
    for split, records in qa.items():
        with open(os.path.join(out, f"{split}.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    return {k: len(v) for k, v in qa.items()}
