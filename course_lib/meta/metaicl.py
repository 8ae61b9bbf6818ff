"""MetaICL: meta-train a causal language model to learn from the demonstrations in its prompt.

Derived in 09_metaicl. Min, Lewis, Zettlemoyer and Hajishirzi, "MetaICL: Learning to Learn In
Context", NAACL 2022, arXiv:2110.15943.

A task's episode becomes prompts (:func:`course_lib.text.prompting.build_prompt`): ``k`` labelled
demonstrations ``(x_1, y_1) .. (x_k, y_k)`` and one query ``x``, its label ``y`` a verbalised intent
name (``"pin change"``). MetaICL trains on such prompts from meta-training tasks with the negative
log-likelihood of the query's label tokens only, conditioned on the demonstrations:

    L(theta) = - E_task E_{(x_i, y_i), (x, y)} [ sum_t log p_theta(y_t | x_1, y_1, .., x_k, y_k, x, y_<t) ],

divided here by the number of label tokens in the batch (the demonstrations and the query's own
words are context, never targets). Testing is plain in-context learning on new tasks: no gradient
step, the label with the highest (length-normalised) log-likelihood wins
(:func:`course_lib.text.prompting.label_scores`).

Example (``dataset`` an :class:`~course_lib.data.clinc.IntentDataset`)::

    sampler = PromptBatchSampler(train, tokenizer, n_way=3, k_shot=1)
    history = train(model, loss, partial(sampler.sample_batch, 16), TrainConfig(steps=500, lr=3e-4))
    evaluate_episodes(partial(predict, model, tokenizer, test), test_episodes)

With a pretrained LM, train LoRA adapters on the attention instead of all weights
(``with_lora(model, target_modules=LLAMA_ATTENTION)`` for SmolLM2, ``GPT2_ATTENTION`` for GPT-2).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batches import Episode, PromptBatch
from ..data.clinc import IntentDataset
from ..data.episodes import EpisodeSampler
from ..data.samplers import TaskSampler, check_batch_size
from ..evaluate import eval_mode
from ..text.prompting import build_prompt, label_log_likelihood, label_scores, pack_pairs

GPT2_ATTENTION = ("c_attn",)  # GPT-2's fused query-key-value projection: where LoRA goes
LLAMA_ATTENTION = ("q_proj", "v_proj")  # Llama's (and SmolLM2's) query and value projections, as in the LoRA paper


def episode_prompts(dataset: IntentDataset, episode: Episode, names: list[str] | None = None,
                    demonstrations: bool = True) -> tuple[list[str], list[str]]:
    """The prompts of one episode (one per query, every one with the whole support set as its
    demonstrations, in support order) and the ``N`` label names, in label order: the intents'
    own names unless ``names`` are given. ``demonstrations=False`` leaves the support set out
    (zero-shot prompts: the query alone), to measure what the demonstrations add."""
    names = names or [dataset.label_names[c] for c in episode.task.tolist()]
    shown = [(text, names[y]) for text, y in zip(dataset.texts_of(episode.support_x), episode.support_y.tolist())]
    return [build_prompt(shown if demonstrations else [], query) for query in dataset.texts_of(episode.query_x)], names


@torch.no_grad()
def predict(model: nn.Module, tokenizer, dataset: IntentDataset, episode: Episode,
            length_normalise: bool = True, demonstrations: bool = True) -> Tensor:
    """Query "logits" ``[N*Q, N]`` of one episode: the log-likelihood of each label name after each
    query's prompt. For ``evaluate_episodes(partial(predict, model, tokenizer, dataset), episodes)``."""
    with eval_mode(model):
        prompts, names = episode_prompts(dataset, episode, demonstrations=demonstrations)
        return label_scores(model, tokenizer, prompts, names, length_normalise)


class PromptBatchSampler(TaskSampler[PromptBatch]):
    """MetaICL training prompts: one item is one N-way k-shot episode of ``dataset`` with one query
    (drawn at random), as a prompt with its label name, tokenised by ``tokenizer``.

    ``sample(g) -> PromptBatch`` of one pair (``[T]``, no padding); ``sample_batch(n, g)`` packs ``n``
    pairs, drawn one after the other exactly as ``n`` calls of ``sample`` would draw them, into one
    right-padded ``[n, T]`` batch (:func:`~course_lib.text.prompting.pack_pairs`): the training loop's
    ``partial(sampler.sample_batch, 16)``.

    ``shuffle_names``: give each episode's classes its names in a random order (the names of the
    episode's intents, permuted), so that a label can only be read off the demonstrations, never
    recalled from the utterance: the label-permutation trick of 08, with words.
    """

    def __init__(self, dataset: IntentDataset, tokenizer, n_way: int, k_shot: int, shuffle_names: bool = False):
        self.dataset, self.tokenizer = dataset, tokenizer
        self.episodes = EpisodeSampler(dataset, n_way, k_shot, n_query=1)
        self.shuffle_names = shuffle_names

    def _pair(self, generator: torch.Generator) -> tuple[list[int], list[int]]:
        """The token ids of one training prompt and of its label name."""
        episode = self.episodes.sample(generator)
        names = [self.dataset.label_names[c] for c in episode.task.tolist()]
        if self.shuffle_names:
            names = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
        prompts, names = episode_prompts(self.dataset, episode, names)
        q = int(torch.randint(len(prompts), (1,), generator=generator))
        label = names[int(episode.query_y[q])]
        return (self.tokenizer(prompts[q], add_special_tokens=False)["input_ids"],
                self.tokenizer(" " + label, add_special_tokens=False)["input_ids"])

    def sample(self, generator: torch.Generator) -> PromptBatch:
        return self.sample_batch(1, generator)[0]

    def sample_batch(self, n: int, generator: torch.Generator) -> PromptBatch:
        check_batch_size(n)
        return PromptBatch(*pack_pairs([self._pair(generator) for _ in range(n)]))


def loss(model: nn.Module, batch: PromptBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """MetaICL's loss: minus the log-likelihood of the query's label tokens, per label token.

    Only ``batch.label_mask``'s tokens are targets; the demonstrations and the query are context.
    The output layer runs only on the window of positions that predict a label token
    (``logits_to_keep``, which every ``transformers`` causal LM takes): a 6,000-word output layer at
    every position would cost as much as the transformer blocks. Use it as
    ``train(model, loss, partial(sampler.sample_batch, batch_size), config)``.
    """
    positions = batch.label_mask.any(dim=0).nonzero().flatten()
    window = torch.arange(int(positions[0]) - 1, int(positions[-1]) + 1, device=batch.input_ids.device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=window).logits
    log_likelihood, n_tokens = label_log_likelihood(logits, batch.input_ids[:, window], batch.label_mask[:, window])
    return -log_likelihood.sum() / n_tokens.sum(), {}
