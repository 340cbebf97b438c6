"""The offline classification task: which kind of work does a Shakespeare passage come from?

Labels follow the First Folio's own catalogue (1623: Comedies, Histories, Tragedies) for the
plays it contains, so no label is our opinion: Cymbeline and Troilus and Cressida are filed
with the tragedies there. Pericles, left out of the Folio, goes with its fellow late romances
The Tempest and The Winter's Tale among the comedies. The non-dramatic works are 'poem'.

Works are never split: a passage's work is wholly on the training or the validation side. The
default split holds out exactly the works the language models hold out
(`shakespeare.VAL_WORKS`: a comedy, a history, a tragedy and two poems), so an encoder
pretrained on the training split has never read a validation passage. k-fold splits deal the
works of each genre round-robin over the folds, so every class is on both sides of every fold.
"""

from __future__ import annotations

from lmjax.data import shakespeare

GENRES = ("comedy", "history", "tragedy", "poem")

_BY_GENRE = {
    "comedy": ("alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors",
               "loves_labours_lost", "measure_for_measure", "merchant_of_venice",
               "merry_wives_of_windsor", "midsummer_nights_dream", "much_ado_about_nothing",
               "pericles", "taming_of_the_shrew", "tempest", "twelfth_night",
               "two_gentlemen_of_verona", "winters_tale"),
    "history": ("henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
                "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john", "richard_ii",
                "richard_iii"),
    "tragedy": ("antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar",
                "lear", "macbeth", "othello", "romeo_and_juliet", "timon_of_athens",
                "tragedy_of_titus_andronicus", "troilus_and_cressida"),
    "poem": ("lovers_complaint", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"),
}

# Work name (as in shakespeare.works()) -> genre.
GENRE_OF = {work: genre for genre, works in _BY_GENRE.items() for work in works}
MAX_FOLDS = min(len(w) for w in _BY_GENRE.values())  # every class in every fold's val side


def split_works(fold: int = -1, num_folds: int = 0) -> tuple[list[str], list[str]]:
    """(training works, validation works). fold -1 (or num_folds < 2): the fixed default split;
    otherwise validation is fold `fold` of `num_folds`, dealt by genre."""
    if num_folds < 2 or fold < 0:
        val = sorted(shakespeare.VAL_WORKS)
    else:
        if not 2 <= num_folds <= MAX_FOLDS:
            raise ValueError(f"the genre task supports 2 to {MAX_FOLDS} folds (it has only "
                             f"{MAX_FOLDS} poems); got {num_folds}.")
        if fold >= num_folds:
            raise ValueError(f"data.fold={fold} must be below the number of folds {num_folds}.")
        # Genre by genre, works in name order, dealt round-robin with one running counter:
        # the folds differ in size by at most one work per genre.
        order = [w for g in GENRES for w in _BY_GENRE[g]]
        val = sorted(w for i, w in enumerate(order) if i % num_folds == fold)
    train = sorted(w for w in GENRE_OF if w not in val)
    return train, val


def check_corpus(names) -> None:
    """The corpus and the label table must name the same works (a new corpus edition would
    otherwise silently drop or mislabel works)."""
    names = set(names)
    missing, unknown = set(GENRE_OF) - names, names - set(GENRE_OF)
    if missing or unknown:
        raise ValueError(f"genre labels and corpus disagree: unlabelled {sorted(unknown)}, "
                         f"absent {sorted(missing)}; update lmjax/data/genres.py.")
