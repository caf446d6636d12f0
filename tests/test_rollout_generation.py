"""Rollout generation: our sampling settings only, the chat template's end of turn, and
synced generation across ranks (ZeRO-3), on real tiny GPT-2 models and real gloo ranks."""
from __future__ import annotations

import json

import pytest
import torch

from selfcorrect import config, models, rollout
from selfcorrect.records import Problem

PROMPTS = ["User: What is 2 + 2?\n\nAssistant: ", "User: Name a prime.\n\nAssistant: ",
           "User: hi\n\nAssistant: "]

# SmolLM2-135M-Instruct's chat template, as its tokenizer_config.json has it.
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
          "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
          "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
          "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA = ("{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}"
         "\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
         "<start_of_turn>model\n{% endif %}")
MISTRAL = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
           "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
PLAIN = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
         "{% if add_generation_prompt %}assistant: {% endif %}")
REFUSES = "{{ raise_exception('only a system turn') }}"


def tiny(seed: int = 0):
    cfg = config.load("tiny").model
    cfg.seed = seed
    return models.tiny_model(cfg)


def chat_tokenizer(template: str, special: list[str]):
    tok = models.gpt2_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": special})
    tok.chat_template = template
    return tok


def steered(tok, logits: dict[int, float], floor: float = -30.0, seed: int = 0):
    """A real tiny GPT-2 whose next-token logits are fixed: `logits` for the tokens named,
    `floor` for every other (final layer norm outputs a constant e_0; the tied embedding's
    column 0 is each token's logit)."""
    cfg = config.load("tiny").model
    cfg.seed = seed
    model, _ = models.tiny_model(cfg)
    model.resize_token_embeddings(len(tok))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        column = model.transformer.wte.weight[:, 0]
        column.fill_(floor)
        for token, value in logits.items():
            column[token] = value
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval()


def sample(model, tok, temperature: float, seed: int = 7, **kw) -> list[list[int]]:
    torch.manual_seed(seed)
    kw = {"max_new_tokens": 24, "batch_size": 3, **kw}
    return [t.ids for t in rollout.generate(model, tok, PROMPTS, temperature=temperature, **kw)]


# --- defect 8: the model's own generation_config does not apply --------------------------------


@pytest.fixture(scope="module")
def plain_and_opinionated(tmp_path_factory):
    """The same weights saved twice: once with a plain generation config, once with one that
    sets every sampling knob a published checkpoint may set."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    model, tok = tiny()
    root = tmp_path_factory.mktemp("models")
    model.save_pretrained(root / "plain")
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.3, top_k=3, top_p=0.5, min_p=0.3, typical_p=0.5,
        no_repeat_ngram_size=1, repetition_penalty=1.8, suppress_tokens=[220, 198],
        bad_words_ids=[[11], [13]], min_new_tokens=5, max_new_tokens=3,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    model.save_pretrained(root / "opinionated")
    plain = AutoModelForCausalLM.from_pretrained(root / "plain").eval()
    opinionated = AutoModelForCausalLM.from_pretrained(root / "opinionated").eval()
    assert opinionated.generation_config.min_p == 0.3           # the file was read back
    assert opinionated.generation_config.no_repeat_ngram_size == 1
    return plain, opinionated, tok


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_a_models_own_generation_config_does_not_change_the_samples(plain_and_opinionated, temperature):
    plain, opinionated, tok = plain_and_opinionated
    want = sample(plain, tok, temperature)
    assert sample(opinionated, tok, temperature) == want
    assert all(len(ids) == 24 for ids in want)      # max_new_tokens is ours, not the model's 3
    if temperature == 0:
        assert any(len(set(ids)) < len(ids) for ids in want)   # repeats no_repeat_ngram_size=1 would forbid
    # the model's own settings are back after the call
    assert opinionated.generation_config.min_p == 0.3


def test_sampling_is_plain_tempered_softmax():
    """Token frequencies match softmax(logits / T) over 1600 draws: no top-k, top-p
    or min-p cut-off (a min_p of 0.3 in the model's config would remove the rare tokens)."""
    tok = models.gpt2_tokenizer()
    favoured = {11: 0.0, 13: -1.0, 30: -2.0, 40: -3.0}       # ",", ".", "?", "I"
    model = steered(tok, favoured)
    model.generation_config.min_p = 0.3
    model.generation_config.top_k = 2
    temperature = 1.5
    torch.manual_seed(0)
    turns = rollout.generate(model, tok, ["x"] * 40, temperature=temperature, max_new_tokens=40,
                             batch_size=40)
    drawn = torch.tensor([t for turn in turns for t in turn.ids])
    assert len(drawn) == 1600
    logits = torch.tensor(list(favoured.values()))
    want = torch.softmax(logits / temperature, dim=0)
    got = torch.stack([(drawn == t).float().mean() for t in favoured])
    assert torch.allclose(got, want, atol=0.04), (got, want)


def test_settings_are_complete_and_ours():
    model, tok = tiny()
    model.generation_config.top_k = 5
    cfg = rollout.settings(model, tok, temperature=0.8, max_new_tokens=16)
    assert (cfg.do_sample, cfg.temperature, cfg.top_k, cfg.top_p, cfg.max_new_tokens) == (True, 0.8, 0, 1.0, 16)
    assert (cfg.min_p, cfg.suppress_tokens, cfg.bad_words_ids, cfg.no_repeat_ngram_size) == (None, None, None, 0)
    assert cfg.eos_token_id == [tok.eos_token_id] and cfg.pad_token_id == tok.pad_token_id
    greedy = rollout.settings(model, tok, temperature=0, max_new_tokens=16)
    assert greedy.do_sample is False
    with pytest.raises(ValueError, match="temperature: must be >= 0"):
        rollout.settings(model, tok, temperature=-1, max_new_tokens=16)


# --- defect 8: stop at the chat template's end of turn ----------------------------------------


@pytest.mark.parametrize("template, special, expected", [
    (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    (GEMMA, ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>"),
    (MISTRAL, [], "<|endoftext|>"),            # the turn ends with the eos token itself
    (PLAIN, [], None),                          # plain text ends the turn: nothing to add
    (REFUSES, [], None),
])
def test_end_of_turn_token_is_read_from_the_chat_template(template, special, expected):
    tok = chat_tokenizer(template, special)
    ids = rollout.end_of_turn_ids(tok)
    assert ids == ([] if expected is None else [tok.convert_tokens_to_ids(expected)])


def test_generation_stops_at_the_end_of_turn_token():
    tok = chat_tokenizer(CHATML, ["<|im_start|>", "<|im_end|>"])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    words = [tok.convert_tokens_to_ids(w) for w in ("A", "B", "C")]
    model = steered(tok, {**dict.fromkeys(words, 0.0), im_end: 0.0})
    prompt = tok.apply_chat_template([{"role": "user", "content": "Say A"}], tokenize=False,
                                     add_generation_prompt=True)
    torch.manual_seed(3)
    turns = rollout.generate(model, tok, [prompt] * 16, temperature=1.0, max_new_tokens=48, batch_size=8)
    lengths = {len(t.ids) for t in turns}
    assert len(lengths) > 3                                   # rows stop at different places
    for t in turns:
        assert t.ids[-1] == im_end and im_end not in t.ids[:-1] and not t.truncated
        assert set(t.ids[:-1]) <= set(words)
        assert "<|im_end|>" not in t.text and set(t.text) <= set("ABC")
    assert im_end in rollout.stop_ids(model, tok) and tok.eos_token_id in rollout.stop_ids(model, tok)


# --- defect 6 (part): synced generation under ZeRO-3 -----------------------------------------


def test_generate_kwargs_and_when_to_sync():
    model, tok = tiny()
    cfg = rollout.settings(model, tok, temperature=1.0, max_new_tokens=4)
    assert rollout.generate_kwargs(cfg, True) == {"generation_config": cfg, "synced_gpus": True}
    assert rollout.generate_kwargs(cfg) == {"generation_config": cfg, "synced_gpus": False}
    assert not rollout.needs_synced_gpus(3)                   # no process group: one rank


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        tok = models.gpt2_tokenizer()
        # rank 0's model ends every answer at once; rank 1's never does
        model = steered(tok, {tok.eos_token_id: 0.0} if rank == 0 else {11: 0.0, tok.eos_token_id: -60.0})
        forwards = []
        model.register_forward_hook(lambda *_: forwards.append(1))
        result = {"needs": [rollout.needs_synced_gpus(s) for s in (2, 3)]}
        for synced in (False, True):
            forwards.clear()
            turns = rollout.generate(model, tok, ["x", "y"], temperature=0, max_new_tokens=10,
                                     batch_size=2, synced_gpus=synced)
            result[str(synced)] = {"forwards": len(forwards), "lengths": [len(t.ids) for t in turns]}
        try:       # unequal shards would hang a synced generate; they are refused instead
            rollout.generate(model, tok, ["x"] * (1 if rank == 0 else 5), temperature=0,
                             max_new_tokens=2, batch_size=2, synced_gpus=True)
        except RuntimeError as e:
            result["uneven"] = str(e)
        with open(f"{out}.{rank}", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_synced_generation_keeps_a_finished_rank_stepping(tmp_path):
    """Two gloo ranks: with synced_gpus the rank that finished first keeps running forward
    passes until the other is done (what ZeRO-3's weight gathering needs); without, it stops."""
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "result")), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"result.{r}").read_text()) for r in (0, 1))
    assert r0["needs"] == r1["needs"] == [False, True]
    assert r0["False"] == {"forwards": 1, "lengths": [1, 1]}
    assert r1["False"] == {"forwards": 10, "lengths": [10, 10]}
    assert r0["True"] == {"forwards": 10, "lengths": [1, 1]}    # same answers, in step with rank 1
    assert r1["True"] == r1["False"]
    assert "ranks have between 1 and 3 batches" in r0["uneven"] == r1["uneven"]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_attempt2_from_attempt1s_cache_equals_encoding_its_prompt_afresh(temperature):
    """Attempt 2 continues from attempt 1's KV cache (rows of different attempt-1 lengths, masked
    holes after early stops): the same tokens as generating from the turn-2 prompt's ids; and
    attempt 1 from a prefill shared by the samples of a problem, as from one per row."""
    cfg = config.load("tiny")
    model, tok = models.load(cfg.model)
    problems = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + {i * 7}?", answer="0")
                for i in range(5)]
    torch.manual_seed(3)
    probe = rollout.two_attempts(model, tok, problems, samples=2, temperature=1.0,
                                 max_new_tokens=12, batch_size=4, reuse_cache=False)
    middle = [set(e.first.ids[2:-2]) for e in probe]  # a token some rows reach, not all: a stop
    stop = next(t for t in sorted(set().union(*middle)) if 0 < sum(t in m for m in middle) < 10)
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    runs = []
    for reuse, share in ((True, True), (False, False), (True, False)):
        torch.manual_seed(3)
        runs.append(rollout.two_attempts(model, tok, problems, samples=2, temperature=temperature,
                                         max_new_tokens=12, batch_size=4, reuse_cache=reuse,
                                         share_prefill=share))
    cached, fresh, unshared = runs
    # the samples of a problem prefilled once give what prefilling each row gives
    assert [(e.first.ids, e.second.ids) for e in unshared] == \
        [(e.first.ids, e.second.ids) for e in cached]
    assert rollout.shared_prefill(model, tok, [e.first.prompt_ids for e in cached[::2]]) is None
    prompts = [e.first.prompt_ids for e in cached[:4]]
    assert rollout.shared_prefill(model, tok, prompts).get_seq_length() == max(map(len, prompts)) - 1
    if temperature > 0:
        assert len({len(e.first.ids) for e in cached}) > 1      # ragged attempt-1 ends
    assert [e.second.prompt_ids for e in cached] == [e.second.prompt_ids for e in fresh]
    assert [e.second.ids for e in cached] == [e.second.ids for e in fresh]
    assert [e.first.ids for e in cached] == [e.first.ids for e in fresh]


def test_a_seeded_sampled_rollout_repeats_and_leaves_the_callers_random_state():
    """Sampled evaluation is reproducible run to run (generate.seed), without reseeding the
    caller: the global random stream goes on as if nothing had sampled."""
    cfg = config.load("tiny")
    model, tok = models.load(cfg.model)
    problems = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + 1?", answer="0")
                for i in range(3)]

    def ids(seed):
        eps = rollout.two_attempts(model, tok, problems, samples=2, temperature=1.0,
                                   max_new_tokens=8, batch_size=4, seed=seed)
        return [(e.first.ids, e.second.ids) for e in eps]

    torch.manual_seed(123)
    first = ids(7)
    after = torch.rand(1)
    torch.manual_seed(999)
    assert ids(7) == first != ids(8)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)


def test_swap_control_prompt_holds_another_problems_attempt():
    """The swap control's attempt 2 follows the problem's own prompt, then the attempt 1 of
    the same sample of another problem (a seeded derangement), then the correction glue."""
    cfg = config.load("tiny")
    model, tok = models.load(cfg.model)
    problems = [Problem(id=f"p{i}", task="math", prompt=f"What is {i} + {i * 7}?", answer="0")
                for i in range(4)]
    episodes = rollout.two_attempts(model, tok, problems, samples=2, temperature=1.0,
                                    max_new_tokens=6, batch_size=8, seed=1)
    swapped = rollout.swap_control(model, tok, episodes, seed=0, temperature=0.0,
                                   max_new_tokens=6, batch_size=8)
    perm = rollout.derangement(4, 0)
    assert sorted(perm) == [0, 1, 2, 3] and all(perm[i] != i for i in range(4))
    assert perm == rollout.derangement(4, 0)                       # fixed by its seed
    assert any(rollout.derangement(6, s) != rollout.derangement(6, 0) for s in range(1, 6))
    for e, (donor, turn) in zip(episodes, swapped):
        assert donor.problem.id == f"p{perm[int(e.problem.id[1:])]}" and donor.sample == e.sample
        own = rollout.first_prompt(tok, e.problem)
        expected = rollout.second_prompt(tok, e.problem, rollout.Turn(own, donor.first.ids, "", False))
        assert turn.prompt_ids == expected
        assert expected[:len(own)] == own and expected[len(own):len(own) + len(donor.first.ids)] == \
            donor.first.ids
        assert tok.decode(expected).startswith(tok.decode(own) + donor.first.text)
    # greedy: the swapped attempt 2 is what generating from that prompt gives
    again = rollout.generate(model, tok, [t.prompt_ids for _, t in swapped], temperature=0.0,
                             max_new_tokens=6, batch_size=8)
    assert [t.ids for t in again] == [t.ids for _, t in swapped]
    with pytest.raises(ValueError, match="at least 2 problems"):
        rollout.derangement(1, 0)
