"""The transformers backend on the embedded policy: groups in prompt order after its length sort, completions cut
after the first end-of-sequence token, and log-probs of the sampling distribution (after temperature, top-p)."""

import pytest
import torch

from selfplay.policy import Sampling, TransformersBackend, load_policy, render_chat
from tests.conftest import trainer_logprobs

pytestmark = pytest.mark.slow  # loads the embedded policy


@pytest.fixture(scope="module")
def policy():
    return load_policy("embedded", dtype="float32")  # exact comparisons: bfloat16 differs by ~1e-2


def chat(tokenizer, text):
    return render_chat(tokenizer, [{"role": "user", "content": text}])


def test_groups_follow_prompt_order_and_completions_stop_at_eos(policy):
    model, tokenizer = policy
    # Lengths out of order, so the backend's length sort must be undone when regrouping.
    prompts = [chat(tokenizer, "Say yes." * 12), chat(tokenizer, "Hi"), chat(tokenizer, "What is 2+2?" * 4)]
    groups = TransformersBackend(model, tokenizer, 1.0, 1.0, 4).generate(prompts, 2, 24)
    assert [[s.prompt_ids for s in g] for g in groups] == [[p, p] for p in prompts]
    eos = tokenizer.eos_token_id
    for sample in (s for g in groups for s in g):
        assert eos not in sample.completion_ids[:-1]  # nothing after the first end-of-sequence token
        assert sample.finished == (sample.completion_ids[-1] == eos)
        assert sample.finished or len(sample.completion_ids) == 24
        assert len(sample.logprobs) == len(sample.completion_ids)


def test_left_padding_does_not_change_greedy_output(policy):
    model, tokenizer = policy
    short, long = chat(tokenizer, "What is 3+4?"), chat(tokenizer, "Write one sentence about circles. " * 6)
    greedy = TransformersBackend(model, tokenizer, 0.0, 1.0, 8)
    alone = greedy.generate([short], 1, 16)[0][0].completion_ids
    padded = greedy.generate([short, long], 1, 16)[0][0].completion_ids  # batched with a longer prompt
    assert padded == alone


def test_a_call_may_sample_with_other_settings_than_the_backend(policy):
    model, tokenizer = policy
    prompts = [chat(tokenizer, "What is 3+4?"), chat(tokenizer, "Name a prime number.")]
    greedy = [g[0].completion_ids for g in TransformersBackend(model, tokenizer, 0.0, 1.0, 8).generate(prompts, 1, 16)]
    hot = TransformersBackend(model, tokenizer, 1.5, 1.0, 8)  # the training backend's own settings
    assert [g[0].completion_ids for g in hot.generate(prompts, 1, 16, Sampling(0.0, 1.0))] == greedy
    assert hot.sampling == Sampling(1.5, 1.0)  # the override is for that call only


@pytest.mark.parametrize("temperature", [0.7, 1.5])
def test_recorded_logprobs_are_those_of_the_sampling_distribution(policy, temperature):
    model, tokenizer = policy
    torch.manual_seed(0)
    sample = TransformersBackend(model, tokenizer, temperature, 1.0, 4).generate([chat(tokenizer, "Count to five.")], 1, 16)[0][0]
    assert torch.allclose(torch.tensor(sample.logprobs), trainer_logprobs(model, sample, temperature), atol=1e-4)


def test_top_p_logprobs_are_renormalised_over_the_nucleus(policy):
    model, tokenizer = policy
    torch.manual_seed(0)
    sample = TransformersBackend(model, tokenizer, 1.0, 0.5, 4).generate([chat(tokenizer, "Name a prime.")], 1, 16)[0][0]
    full = trainer_logprobs(model, sample, 1.0)
    # within the nucleus the sampled token is at least as likely as under the full distribution
    assert all(r >= f - 1e-5 for r, f in zip(sample.logprobs, full.tolist()))
    assert any(r > f + 1e-3 for r, f in zip(sample.logprobs, full.tolist()))


def test_a_template_that_rejects_system_turns_gets_the_system_text_in_the_first_user_turn():
    import copy

    from selfplay.policy import EMBEDDED, load_tokenizer

    tokenizer = copy.deepcopy(load_tokenizer(EMBEDDED))
    tokenizer.chat_template = (  # Gemma's way: a system turn raises
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    assert tokenizer.decode(render_chat(tokenizer, messages)) == (
        "<user>Be brief.\n\nHi</user><assistant>Hello</assistant><user>Bye</user><assistant>")
    tokenizer.chat_template = "{{ raise_exception('broken template') }}"
    with pytest.raises(Exception, match="broken template"):  # other template errors are not swallowed
        render_chat(tokenizer, messages[1:])
