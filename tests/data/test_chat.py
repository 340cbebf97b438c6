"""Chat rendering (lmjax/data/chat.py): a Hugging Face template rendered as transformers
renders it, the assistant's text told apart exactly as transformers' own assistant mask
does, and lmjax's default format being SFT's QA rendering."""

import types

import pytest

from lmjax.data import sft
from lmjax.data.chat import ChatError, ChatFormat, HFChat, hf_chat

# ChatML with transformers' {% generation %} tags, which make it compute the assistant mask.
CHATML = ("{{ bos_token }}{% for message in messages %}"
          "{{'<|im_start|>' + message['role'] + '\n'}}"
          "{% if message['role'] == 'assistant' %}{% generation %}"
          "{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}"
          "{% else %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"},
        {"role": "assistant", "content": "Romeo"}, {"role": "user", "content": "Where?"},
        {"role": "assistant", "content": "Verona {x}"}]


def _hf_tokenizer(template):
    """A transformers tokenizer with one token per character, and the template."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template,
                                                bos_token="^")


def test_a_hugging_face_template_renders_as_transformers_renders_it():
    hf = _hf_tokenizer(CHATML)
    fmt = ChatFormat(hf=HFChat(CHATML, bos_token="^"))
    for messages in (CHAT[:2], CHAT[:4], CHAT):
        for cue in (True, False):
            assert fmt.render(messages, cue) == hf.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=cue)
    assert fmt.turn_end == "<|im_end|>"


def test_the_assistant_pieces_are_transformers_assistant_mask():
    hf = _hf_tokenizer(CHATML)
    out = hf.apply_chat_template(CHAT, tokenize=True, return_dict=True,
                                 return_assistant_tokens_mask=True)
    chars = hf.convert_ids_to_tokens(out["input_ids"])
    masked = "".join(c for c, m in zip(chars, out["assistant_masks"]) if m)
    pieces = ChatFormat(hf=HFChat(CHATML, bos_token="^")).pieces(CHAT)
    assert "".join(t for t, _ in pieces) == "".join(chars)
    assert "".join(t for t, r in pieces if r) == masked == "Romeo<|im_end|>\nVerona {x}<|im_end|>\n"
    # The generation prompt is the prompt's: "<|im_start|>assistant\n" is not learned.
    assert ("<|im_start|>assistant\n", False) in pieces
    # SFT's chat records through the same rendering.
    assert sft.pieces({"messages": CHAT}, sft.DEFAULT_TEMPLATE, "\n\n",
                      hf=HFChat(CHATML, bos_token="^")) == pieces


def test_a_template_that_rewrites_earlier_turns_is_refused():
    # Only the last assistant message keeps its content: earlier ones are rewritten.
    template = ("{% for m in messages %}{{ m.role }}: {% if m.role == 'assistant' and not "
                "loop.last %}(said){% else %}{{ m.content }}{% endif %}\n{% endfor %}")
    with pytest.raises(ChatError, match="rewrites"):
        ChatFormat(hf=HFChat(template)).pieces(CHAT)
    with pytest.raises(sft.SFTDataError, match="record 2: .*rewrites"):
        sft.pieces({"messages": CHAT}, sft.DEFAULT_TEMPLATE, "\n\n", "record 2",
                   hf=HFChat(template))
    with pytest.raises(ChatError, match="failed on these messages.*no user"):
        ChatFormat(hf=HFChat("{{ raise_exception('no user') }}")).render(CHAT)


def test_the_default_format_is_sfts_qa_rendering():
    fmt = ChatFormat(template="Q: {prompt} A: {response}", end="\n")
    assert fmt.render(CHAT[:2]) == "Be brief.\nQ: Who? A: "
    assert fmt.pieces(CHAT) == sft.pieces({"messages": CHAT}, "Q: {prompt} A: {response}", "\n")
    assert [r for _, r in fmt.pieces(CHAT)] == [False, False, True, False, True]
    # A prompt/response record renders as the chat [user, assistant].
    record = sft.pieces({"prompt": "Who?", "response": "Romeo"}, sft.DEFAULT_TEMPLATE, "\n\n")
    assert record == ChatFormat().pieces(CHAT[1:3])
    assert ChatFormat().turn_end == "\n\n" and fmt.turn_end == "\n"


def test_the_one_accessor_reads_the_tokenizers_template():
    plain = types.SimpleNamespace()
    assert hf_chat(plain) is None and ChatFormat.for_run(plain).hf is None
    tok = types.SimpleNamespace(chat_template=CHATML, eos_token="</s>", bos_token=None)
    assert hf_chat(tok) == HFChat(CHATML, eos_token="</s>")
    named = types.SimpleNamespace(chat_template=[{"name": "tool_use", "template": "x"},
                                                 {"name": "default", "template": CHATML}])
    assert hf_chat(named).template == CHATML
    assert ChatFormat.for_run(named, "Q: {prompt} A: {response}").hf.template == CHATML
