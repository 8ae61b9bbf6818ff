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
from ..text.prompting import build_prompt, channel_scores, label_log_likelihood, label_scores, pack_pairs

GPT2_ATTENTION = ("c_attn",)  # GPT-2's fused query-key-value projection: where LoRA goes
LLAMA_ATTENTION = ("q_proj", "v_proj")  # Llama's (and SmolLM2's) query and value projections, as in the LoRA paper


SYMBOLS = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")   # one token each in SmolLM2's and GPT-2's vocabularies


def symbol_names(n_way: int) -> list[str]:
    """Label names that say nothing about the classes: ``"A"``, ``"B"``, ... for labels ``0 .. n_way - 1``.

    An :class:`~course_lib.data.episodes.EpisodeSampler` gives its classes the labels ``0 .. N-1`` in a random
    order per episode, so with these names a class's symbol is drawn anew in every episode: without the
    demonstrations, any prediction is a guess (accuracy ``1/N`` in expectation), and only the demonstrations say
    which symbol goes with which kind of utterance.
    """
    if not 1 <= n_way <= len(SYMBOLS):
        raise ValueError(f"symbol labels exist for 1 to {len(SYMBOLS)} ways, not {n_way}")
    return list(SYMBOLS[:n_way])


def episode_demonstrations(dataset: IntentDataset, episode: Episode, names: list[str] | None = None,
                           ) -> tuple[list[tuple[str, str]], list[str]]:
    """The support set as ``(utterance, label name)`` demonstrations, in support order, and the ``N`` label
    names in label order: the intents' own names unless ``names`` are given."""
    names = names or [dataset.label_names[c] for c in episode.task.tolist()]
    return [(text, names[y]) for text, y in zip(dataset.texts_of(episode.support_x), episode.support_y.tolist())], names


def episode_prompts(dataset: IntentDataset, episode: Episode, names: list[str] | None = None,
                    demonstrations: bool = True) -> tuple[list[str], list[str]]:
    """The prompts of one episode (one per query, every one with the whole support set as its
    demonstrations, in support order) and the ``N`` label names, in label order: the intents'
    own names unless ``names`` are given. ``demonstrations=False`` leaves the support set out
    (zero-shot prompts: the query alone), to measure what the demonstrations add."""
    shown, names = episode_demonstrations(dataset, episode, names)
    return [build_prompt(shown if demonstrations else [], query) for query in dataset.texts_of(episode.query_x)], names


@torch.no_grad()
def predict(model: nn.Module, tokenizer, dataset: IntentDataset, episode: Episode,
            length_normalise: bool = True, demonstrations: bool = True, names: list[str] | None = None,
            scoring: str = "direct") -> Tensor:
    """Query "logits" ``[N*Q, N]`` of one episode: each label's score for each query. For
    ``evaluate_episodes(partial(predict, model, tokenizer, dataset), episodes)``.

    ``scoring="direct"``: the log-likelihood of each label name after the query's prompt,
    ``log p(c | demonstrations, x)`` (:func:`~course_lib.text.prompting.label_scores`); ``"channel"``: the
    log-likelihood of the query's text after each label, ``log p(x | demonstrations, c)``
    (:func:`~course_lib.text.prompting.channel_scores`). ``names``: label names for labels ``0 .. N-1``
    instead of the intents' (e.g. :func:`symbol_names`); ``demonstrations=False``: zero-shot prompts.
    """
    if scoring not in ("direct", "channel"):
        raise ValueError(f"scoring is 'direct' (p(label | text)) or 'channel' (p(text | label)), not {scoring!r}")
    with eval_mode(model):
        if scoring == "channel":
            shown, names = episode_demonstrations(dataset, episode, names)
            return channel_scores(model, tokenizer, shown if demonstrations else [],
                                  dataset.texts_of(episode.query_x), names, length_normalise)
        prompts, names = episode_prompts(dataset, episode, names, demonstrations)
        return label_scores(model, tokenizer, prompts, names, length_normalise)


def fewer_shots(episode: Episode, k_shot: int) -> Episode:
    """The same episode with only the first ``k_shot`` support examples of each class (``0``: none).

    Episodes drawn with ``K`` shots and cut down this way are nested (``k = 1``'s demonstrations are among
    ``k = 2``'s), so accuracy against ``k`` compares the same queries with more or fewer demonstrations.
    """
    n_way = episode.n_way
    drawn = len(episode.support_y) // n_way
    if not 0 <= k_shot <= drawn:
        raise ValueError(f"the episode has {drawn} shots per class; cannot keep {k_shot}")
    keep = (torch.arange(len(episode.support_y)) % drawn) < k_shot   # the support set is grouped by class
    return Episode(episode.support_x[keep], episode.support_y[keep], episode.query_x, episode.query_y, episode.task)


def one_query(episodes: list[Episode], seed: int = 0) -> list[Episode]:
    """Each episode with one of its queries, drawn at random (``seed``): the cheapest evaluation per episode.

    Random, not the first: the first query always has label 0, which a model that always answers the first
    label (or ``"A"``) would get right every time.
    """
    generator = torch.Generator().manual_seed(seed)
    picked = [int(torch.randint(len(e.query_y), (1,), generator=generator)) for e in episodes]
    return [Episode(e.support_x, e.support_y, e.query_x[q:q + 1], e.query_y[q:q + 1], e.task)
            for e, q in zip(episodes, picked)]


def random_demonstration_labels(episodes: list[Episode], seed: int = 0) -> list[Episode]:
    """The episodes with each demonstration's label replaced by one drawn uniformly from the ``N`` labels.

    The probe of Min et al. (EMNLP 2022, arXiv:2202.12837, "Rethinking the role of demonstrations"): a model
    that reads the label of the demonstration like the query loses accuracy, one that uses the demonstrations
    only for the format, the label set and the kind of text does not. The queries keep their true labels.
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for e in episodes:
        n_way = e.n_way
        labels = torch.randint(n_way, e.support_y.shape, generator=generator).to(e.support_y)
        out.append(Episode(e.support_x, labels, e.query_x, e.query_y, e.task))
    return out


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
    ``symbols``: name the labels ``"A"``, ``"B"``, ... (:func:`symbol_names`), a class's symbol drawn anew
    in every episode, so the loss can only fall by reading the demonstrations.
    ``demonstrations=False``: the query alone, no support set: MetaICL's "multi-task 0-shot" baseline (the
    same tasks and loss, no learning from a context).
    """

    def __init__(self, dataset: IntentDataset, tokenizer, n_way: int, k_shot: int, shuffle_names: bool = False,
                 symbols: bool = False, demonstrations: bool = True):
        if shuffle_names and symbols:
            raise ValueError("choose shuffled intent names or symbols as the labels, not both")
        self.dataset, self.tokenizer = dataset, tokenizer
        self.episodes = EpisodeSampler(dataset, n_way, k_shot, n_query=1)
        self.shuffle_names, self.demonstrations = shuffle_names, demonstrations
        self.names = symbol_names(n_way) if symbols else None

    def _pair(self, generator: torch.Generator) -> tuple[list[int], list[int]]:
        """The token ids of one training prompt and of its label name."""
        episode = self.episodes.sample(generator)
        names = self.names or [self.dataset.label_names[c] for c in episode.task.tolist()]
        if self.shuffle_names:
            names = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
        prompts, names = episode_prompts(self.dataset, episode, names, self.demonstrations)
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
