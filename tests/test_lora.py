"""LoRA adapters as MAML's fast weights on a real pretrained encoder (all-MiniLM-L6-v2, offline)."""
import pytest
import torch
from torch.func import functional_call

from course_lib.data.batches import Episode
from course_lib.meta.maml import MAML
from course_lib.text.encoder import SentenceEncoder
from course_lib.text.lora import UtteranceClassifier, is_fast_weight, with_lora

TEXTS = ["transfer $20 to my mom", "send money to alex", "what's my checking balance", "how much is in savings",
         "freeze my debit card", "lock my card now", "when is the water bill due", "due date of my phone bill"]


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    encoder = SentenceEncoder(cache=False, device="cpu")
    return UtteranceClassifier(with_lora(encoder.model, rank=4), encoder.tokenizer, TEXTS, n_way=4)


def episode():
    """4-way 1-shot: the first utterance of each intent as support, the second as query (a batch of 1)."""
    return Episode(torch.tensor([[0, 2, 4, 6]]), torch.tensor([[0, 1, 2, 3]]), torch.tensor([[1, 3, 5, 7]]),
                   torch.tensor([[0, 1, 2, 3]]), torch.zeros(1, 4))


def test_only_lora_and_head_train(classifier):
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert trainable and all(is_fast_weight(n) for n in trainable)
    assert sum(p.numel() for n, p in classifier.named_parameters() if n in trainable) < 0.01 * sum(
        p.numel() for p in classifier.parameters())


def test_assigning_fast_weights_changes_nothing_and_functional_call_adapts(classifier):
    ids = torch.tensor([1, 3])
    with torch.no_grad():
        before = classifier(ids)
        fast = {n: p + 0.5 for n, p in classifier.named_parameters() if is_fast_weight(n)}
        classifier.parameters = fast            # the mistake: an attribute, not the module's weights
        assert torch.equal(classifier(ids), before)
        del classifier.parameters               # restore the method
        assert not torch.allclose(functional_call(classifier, fast, (ids,)), before)


def test_first_order_maml_over_lora_adapts_and_meta_learns_only_the_fast_weights(classifier):
    maml = MAML(classifier, inner_lr=0.5, inner_steps=3, first_order=True, adapted_if=is_fast_weight)
    task = episode()[0]
    params = dict(classifier.named_parameters())
    support_loss_before = maml.support_loss(params, task.support_x, task.support_y).item()
    adapted = maml.adapt(task.support_x, task.support_y)
    changed = {n for n in params if not torch.equal(adapted[n], params[n])}
    assert changed and all(is_fast_weight(n) for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert maml.support_loss(adapted, task.support_x, task.support_y).item() < support_loss_before

    classifier.zero_grad()
    maml.meta_loss(episode())[0].backward()
    with_grad = {n for n, p in classifier.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_A" in n for n in with_grad) and "head.weight" in with_grad
    assert all(p.grad is None for n, p in classifier.named_parameters() if not is_fast_weight(n))
