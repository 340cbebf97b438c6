"""Throughput, memory and dedup quality of the preparation pipeline (data.name='stream') on
synthetic corpora from benchmarks/make_corpus.py.

    python benchmarks/data_pipeline.py --sizes=250,500,1000 --vocab=32768
    python benchmarks/data_pipeline.py --sizes=50,100,200 --rounds=2    # a busy 2-core machine
    python benchmarks/data_pipeline.py --loader     # training batches: one array vs shards

One byte-level BPE (vocab --vocab) is trained once on --sample_mb of the first corpus and used
by all three, so that they tokenize the same way:
  raw       the `tokenizers` encode_batch loop over texts already in memory (1,000 per batch)
  datasets  Hugging Face datasets' map(batched=True, num_proc=--workers) (its Arrow cache is
            built from the JSON lines before the clock starts)
  pipeline  `lmjax prepare_data` end to end in a fresh process: reading, cleaning,
            exact + MinHash dedup, tokenizing in --workers processes, writing shards
On the throughput corpus (the first size) the three alternate for --rounds rounds, so that a
machine shared with other work slows them alike. The pipeline also runs once at every size,
with the peak memory of its whole process tree (main + workers: the sum of their
proportional set sizes, so shared pages count once; sampled every 0.25 s) and of the main
process alone (which holds the shard buffers), at lmjax's default shard size unless
--shard_tokens is given, and the dedup figures measured against the planted duplicates'
ground truth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import make_corpus  # noqa: E402


def texts_of(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def train_tokenizer(path: str, vocab: int, sample_mb: float, out: str) -> float:
    from tokenizers import ByteLevelBPETokenizer

    def sample():
        seen = 0
        with open(path) as f:
            for line in f:
                text = json.loads(line)["text"]
                yield text
                seen += len(text)
                if seen > sample_mb * 1e6:
                    return

    start = time.perf_counter()
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(sample(), vocab_size=vocab, min_frequency=2, show_progress=False,
                            special_tokens=["<|endoftext|>"])
    tok._tokenizer.save(out)
    return time.perf_counter() - start


def raw(texts: list[str], tok_file: str) -> float:
    from tokenizers import Tokenizer

    # datasets' map(num_proc=...) sets TOKENIZERS_PARALLELISM=false in this process for good
    # (its restore does not reach the C environment the tokenizer reads): without this, every
    # round after the first timed encode_batch on one thread
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    tok = Tokenizer.from_file(tok_file)
    start = time.perf_counter()
    for i in range(0, len(texts), 1000):
        tok.encode_batch(texts[i:i + 1000], add_special_tokens=False)
    return time.perf_counter() - start


def hf_datasets(path: str, tok_file: str, workers: int, cache: str) -> float:
    import datasets
    from tokenizers import Tokenizer

    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache)
    tok = Tokenizer.from_file(tok_file)

    def encode(batch):
        encoded = tok.encode_batch(batch["text"], add_special_tokens=False)
        return {"ids": [e.ids for e in encoded]}

    start = time.perf_counter()
    ds.map(encode, batched=True, num_proc=workers, remove_columns=ds.column_names,
           load_from_cache_file=False)
    return time.perf_counter() - start


def pipeline(path: str, tok_file: str, workers: int, cache: str, shard_tokens: int,
             every: float = 0.25) -> tuple[float, float, float, str]:
    """(seconds, peak MB of the process tree and of the main process alone, sampled every
    `every` s, prepared folder). `shard_tokens` 0: lmjax's default (data.shard_tokens)."""
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-m", "lmjax", "prepare_data", "--config=configs/gpt.py",
           "--config.data.name=stream", f"--config.data.files={path}",
           f"--config.data.tokenizer_file={tok_file}", f"--config.data.cache_dir={cache}",
           f"--config.data.num_workers={workers}", "--config.data.val_fraction=0.01"]
    cmd += [f"--config.data.shard_tokens={shard_tokens}"] if shard_tokens else []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    peak, main_peak, root = 0, 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            # PSS: pages shared between the processes counted once, not once per process
            pss = [p.memory_full_info().pss for p in procs]
            peak, main_peak = max(peak, sum(pss)), max(main_peak, pss[0])
        except psutil.Error:
            pass
        try:  # (reading smaps costs CPU: the throughput rounds sample rarely)
            proc.wait(timeout=every)  # returns as soon as the command ends
        except subprocess.TimeoutExpired:
            pass
    seconds = time.perf_counter() - start
    out = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(out)
    folder = next(line.split(": ", 1)[1] for line in out.splitlines()
                  if line.startswith("shards: "))
    return seconds, peak / 1e6, main_peak / 1e6, folder


def dedup_quality(corpus: str, folder: str, val_fraction: float = 0.01) -> dict:
    from lmjax.data import corpora

    removed = {}
    with open(os.path.join(folder, "removed.tsv")) as f:
        for line in f:
            doc_id, why = line.rstrip("\n").rsplit("\t", 1)
            removed[doc_id.rsplit(":", 1)[1]] = why
    kinds = {"unique": [0, 0, 0], "exact": [0, 0, 0], "near": [0, 0, 0]}  # n, deduped, ruled
    side = {}  # document id -> split (only ids that planted copies refer to are needed later)
    straddling, leaked = 0, 0  # planted pairs with one document on each side; both kept
    with open(corpus) as f:
        for line in f:
            r = json.loads(line)
            why = removed.get(r["id"], "")
            row = kinds[r["kind"]]
            row[0] += 1
            row[1] += why.endswith("duplicate")
            row[2] += bool(why) and not why.endswith("duplicate")
            side[r["id"]] = corpora.split_of(f"{corpus}:{r['id']}", val_fraction)
            if r["of"] and side[r["of"]] != side[r["id"]]:
                straddling += 1
                leaked += not why and not removed.get(r["of"], "")
    return {"exact_recall": kinds["exact"][1] / max(1, kinds["exact"][0]),
            "near_recall": kinds["near"][1] / max(1, kinds["near"][0]),
            "unique_removed_as_duplicate": kinds["unique"][1] / max(1, kinds["unique"][0]),
            "unique_removed_by_quality_rules": kinds["unique"][2] / max(1, kinds["unique"][0]),
            "planted": {k: v[0] for k, v in kinds.items()},
            "pairs_across_split": straddling, "pairs_across_split_both_kept": leaked}


def loader(directory: str, n_tokens: int = 200_000_000, shard: int = 10_000_000,
           rounds: int = 5) -> None:
    """Batch building: one memory-mapped array (today's prepared data) vs the same tokens in
    llm.c shards, interleaved; the batches are checked to be identical."""
    import numpy as np

    from lmjax.data import batches, shards

    os.makedirs(directory, exist_ok=True)
    tokens = np.random.default_rng(0).integers(0, 50257, n_tokens).astype(np.uint16)
    np.save(os.path.join(directory, "train.npy"), tokens)
    paths = []
    for i in range(0, n_tokens, shard):
        paths.append(os.path.join(directory, f"x_train_{i // shard:06d}.bin"))
        shards.write_shard(paths[-1], tokens[i:i + shard])
    del tokens
    array = np.load(os.path.join(directory, "train.npy"), mmap_mode="r")
    sharded = shards.open_tokens(paths)
    for batch, seq in ((16, 1024), (64, 128)):
        times = {"array": [], "shards": []}
        for r in range(rounds):
            for name, src in (("array", array), ("shards", sharded)):
                start = time.perf_counter()
                for step in range(r * 50, r * 50 + 50):
                    out = batches.train_batch(src, 0, step, batch, seq)
                times[name].append((time.perf_counter() - start) / 50)
            ref = batches.train_batch(array, 0, 7, batch, seq)["inputs"]
            assert (batches.train_batch(sharded, 0, 7, batch, seq)["inputs"] == ref).all()
        med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
        print(f"batch {batch} x {seq} from {n_tokens / 1e6:.0f}M tokens: one array "
              f"{med['array']:.2f} ms, {len(paths)} shards {med['shards']:.2f} ms per batch "
              f"(median of {rounds} rounds of 50)", flush=True)
    del out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="250,500,1000", help="corpus sizes in MB; the first one "
                   "also measures throughput")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--sample_mb", type=float, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--shard_tokens", type=int, default=0, help="tokens per shard (0: lmjax's "
                   "default, data.shard_tokens): the shard buffers, not the corpus, bound the "
                   "memory")
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "lmjax-data-bench"))
    p.add_argument("--loader", action="store_true", help="only compare building training "
                   "batches from one array and from shards")
    p.add_argument("--loader_tokens", type=int, default=200_000_000)
    a = p.parse_args()
    if a.loader:
        return loader(os.path.join(a.dir, "loader"), a.loader_tokens)
    sizes = [float(s) for s in a.sizes.split(",")]
    os.makedirs(a.dir, exist_ok=True)
    corpora = {}
    for mb in sizes:
        path = os.path.join(a.dir, f"corpus-{mb:g}mb.jsonl")
        if not os.path.exists(path):
            start = time.perf_counter()
            counts = make_corpus.make(path, mb)
            print(f"corpus {mb:g} MB: {counts} ({time.perf_counter() - start:.0f} s)", flush=True)
        corpora[mb] = path
    tok_file = os.path.join(a.dir, f"bpe-{a.vocab}.json")
    if not os.path.exists(tok_file):
        secs = train_tokenizer(corpora[sizes[0]], a.vocab, a.sample_mb, tok_file)
        print(f"BPE {a.vocab} trained on {a.sample_mb:g} MB in {secs:.0f} s", flush=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "(shared with other work)", flush=True)

    first = corpora[sizes[0]]
    if a.rounds:
        throughput(first, tok_file, a)
    print("\nsize MB | pipeline MB/s | peak memory MB (tree PSS) | main process | exact recall "
          "| near recall | unique removed as dup | unique removed by rules")
    for size in sizes:
        secs, peak, main_peak, folder = pipeline(corpora[size], tok_file, a.workers,
                                                 os.path.join(a.dir, "out"), a.shard_tokens)
        q = dedup_quality(corpora[size], folder)
        print(f"{size:7g} | {size / secs:13.2f} | {peak:25.0f} | {main_peak:12.0f} | "
              f"{q['exact_recall']:12.3f} | "
              f"{q['near_recall']:11.3f} | {q['unique_removed_as_duplicate']:21.4f} | "
              f"{q['unique_removed_by_quality_rules']:.4f}   planted {q['planted']}; copies "
              f"across the split {q['pairs_across_split']}, both kept "
              f"{q['pairs_across_split_both_kept']}", flush=True)


def throughput(first: str, tok_file: str, a) -> None:
    """raw, pipeline and datasets in turn, --rounds times, on the same corpus."""
    texts = texts_of(first)
    mb = sum(map(len, texts)) / 1e6
    rates = {"raw": [], "datasets": [], "pipeline": []}
    for r in range(a.rounds):
        rates["raw"].append(mb / raw(texts, tok_file))
        rates["pipeline"].append(
            mb / pipeline(first, tok_file, a.workers, os.path.join(a.dir, "out"),
                          a.shard_tokens, every=5)[0])
        rates["datasets"].append(
            mb / hf_datasets(first, tok_file, a.workers, os.path.join(a.dir, "hf")))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} MB/s" for k, v in rates.items()),
              flush=True)
    del texts
    best = {k: max(v) for k, v in rates.items()}
    print(f"\nthroughput on {mb:.0f} MB (best of {a.rounds}): raw encode_batch "
          f"{best['raw']:.2f} MB/s, datasets map {best['datasets']:.2f} MB/s, pipeline "
          f"{best['pipeline']:.2f} MB/s = {best['pipeline'] / best['raw']:.0%} of raw, "
          f"{best['pipeline'] / best['datasets']:.0%} of datasets", flush=True)


if __name__ == "__main__":
    main()
