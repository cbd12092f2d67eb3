"""Prompt encoding through compel: weights, long prompts, the cache."""

import torch

from core.pipelines import prompts


def pipe_parts(models):
    pipe = models.get("inpaint").pipe
    return pipe.tokenizer, pipe.text_encoder


def test_plain_prompt_matches_diffusers_own_encoding(models):
    tok, te = pipe_parts(models)
    emb = prompts.encode(tok, te, "a red (scarf)", "", weighted=False, guidance=True)
    ids = tok("a red (scarf)", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = te(ids)[0]
    assert emb.positive.shape == ref.shape
    torch.testing.assert_close(emb.positive.float(), ref.float(), atol=2e-2, rtol=2e-2)
    assert emb.negative.shape == emb.positive.shape


def test_weights_change_the_embedding_only_when_enabled(models):
    tok, te = pipe_parts(models)
    plain = prompts.encode(tok, te, "a (red)1.5 scarf", "", weighted=False, guidance=False)
    weighted = prompts.encode(tok, te, "a (red)1.5 scarf", "", weighted=True, guidance=False)
    base = prompts.encode(tok, te, "a red scarf", "", weighted=True, guidance=False)
    assert plain.negative is None
    assert not torch.equal(weighted.positive, base.positive)
    assert not torch.equal(plain.positive, weighted.positive)


def test_long_prompts_are_chunked_not_cut(models):
    tok, te = pipe_parts(models)
    text = "word " * 200
    emb = prompts.encode(tok, te, text, "short", weighted=False, guidance=True)
    assert emb.positive.shape[1] > 77 and emb.positive.shape[1] % 77 == 0
    assert emb.negative.shape == emb.positive.shape
    assert emb.warnings and "not cut" in emb.warnings[0]


def test_cache_hit_and_miss(models):
    tok, te = pipe_parts(models)
    a = prompts.encode(tok, te, "cache me", "neg", weighted=False, guidance=True)
    b = prompts.encode(tok, te, "cache me", "neg", weighted=False, guidance=True)
    c = prompts.encode(tok, te, "cache me", "other", weighted=False, guidance=True)
    assert a is b
    assert c is not a
