"""Offline lm-eval tasks in local YAML files (a `json` dataset each), as a user defines them
with --include_path, and a tiny character GPT to evaluate."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lmjax.data.tokenizers import CharTokenizer
from lmjax.models.gpt import GPT

MC = [{"question": "Who loves Juliet?", "choices": ["Romeo", "Hamlet", "Lear"], "answer": 0},
      {"question": "Who is the Prince of Denmark?", "choices": ["Romeo", "Hamlet", "Lear"],
       "answer": 1},
      {"question": "Who has three daughters?", "choices": ["Lear", "Romeo", "Oberon"],
       "answer": 0},
      {"question": "Who rules the fairies?", "choices": ["Hamlet", "Oberon", "Lear"],
       "answer": 1},
      {"question": "Who kills Duncan?", "choices": ["Macbeth", "Puck"], "answer": 0}]
GEN = [{"question": "Who loves Juliet?", "answer": "Romeo"},
       {"question": "Who speaks to the ghost?", "answer": "Hamlet"},
       {"question": "Who is the Moor of Venice?", "answer": "Othello"},
       {"question": "Who rules the fairies?", "answer": "Oberon"}]
TASKS = {
    "lmjax_mc": ("mc.jsonl", MC, """output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""),
    "lmjax_gen": ("gen.jsonl", GEN, """output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: " {{answer}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""),
}


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> str:
    """A folder with the tasks lmjax_mc (multiple choice) and lmjax_gen (generate_until)."""
    d = tmp_path_factory.mktemp("harness_tasks")
    for name, (data, records, rest) in TASKS.items():
        (d / data).write_text("".join(json.dumps(r) + "\n" for r in records))
        (d / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {d / data}\ntest_split: test\n{rest}")
    return str(d)


@pytest.fixture(scope="session")
def tiny_lm(gpt_config):
    """(model, params, tokenizer): a one-layer character GPT with 64 tokens of context, its
    random weights scaled up so that predictions are peaked and differ between texts."""
    tokenizer = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.:?\n"])
    model = GPT(gpt_config(vocab_size=tokenizer.vocab_size, block_size=64, num_layers=1,
                           d_model=16, mlp_ratio=2))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(3), jnp.zeros((1, 4), jnp.int32)))
    return model, jax.tree.map(lambda x: x * 6, params["params"]), tokenizer
