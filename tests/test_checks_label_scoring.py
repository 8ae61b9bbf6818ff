"""The label-scoring checker (exercise 09) accepts a correct solution and names the typical mistakes."""
import pytest
import torch

from course_lib.checks import check_label_log_likelihood


def scorer(offset=1, prompt_too=False, log_softmax=True, normalise=True):
    """Label scoring with a switch for each typical mistake; the defaults are right."""
    def label_log_likelihood(model, prompt_ids, label_ids, length_normalise):
        ids = torch.tensor([prompt_ids + label_ids])
        logits = model(input_ids=ids).logits[0]
        scores = logits.log_softmax(-1) if log_softmax else logits
        first = 1 if prompt_too else len(prompt_ids)
        positions = torch.arange(first, ids.shape[1])
        total = scores[positions - offset, ids[0, positions]].sum()
        return total / len(label_ids) if length_normalise and normalise else total
    return label_log_likelihood


def test_a_correct_solution_passes(capsys):
    check_label_log_likelihood(scorer())
    assert "all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("solution, message", [
    (scorer(offset=0), "one\\s+position earlier"),
    (scorer(prompt_too=True), "prompt's tokens too"),
    (scorer(log_softmax=False), "take log_softmax"),
    (scorer(normalise=False), "divide the sum by the number of label tokens"),
    (lambda model, p, c, n: torch.zeros(2, len(c)), "should return one number"),
])
def test_mistakes_are_named(solution, message):
    with pytest.raises(AssertionError, match=message):
        check_label_log_likelihood(solution)
