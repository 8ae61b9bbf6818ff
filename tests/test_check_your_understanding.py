"""Every lecture's "Check your understanding" questions have model answers in the instructors' copy.

The answers file has one section per notebook, ``## NN · title (`notebooks/NN_name.ipynb`)``, and in it one
``### k. question`` heading per answer. A question added to a lecture without an answer, or an answer left
after its question was removed, fails here.
"""
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.course.exercises import generate_exercises

REPO = Path(__file__).resolve().parents[1]
ANSWERS = REPO / "solutions" / "check_your_understanding.md"
# Lectures whose questions are not answered yet, with the reason; nothing else may be missing.
NOT_YET_ANSWERED: dict[str, str] = {}

SECTION_HEADING = "## Check your understanding"
QUESTION = re.compile(r"^(\d+)\.\s", re.MULTILINE)
NOTEBOOK_SECTION = re.compile(r"^## .*\(`notebooks/(?P<stem>\w+)\.ipynb`\)\s*$", re.MULTILINE)
ANSWER = re.compile(r"^### (\d+)\.\s+\S", re.MULTILINE)


def lecture_questions(notebook: nbformat.NotebookNode) -> list[int]:
    """The numbers of the questions in a notebook's "Check your understanding" section ([] if it has none).

    The section runs from its heading to the next ``## `` heading or a ``<details>`` block of short answers.
    """
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and SECTION_HEADING in cell.source:
            section = cell.source.split(SECTION_HEADING, 1)[1]
            section = re.split(r"^## |<details>", section, maxsplit=1, flags=re.MULTILINE)[0]
            return [int(number) for number in QUESTION.findall(section)]
    return []


def answered(answers_text: str) -> dict[str, list[tuple[int, str]]]:
    """Notebook stem -> (number, text) of each answer in its section of the answers file."""
    sections = list(NOTEBOOK_SECTION.finditer(answers_text))
    result = {}
    for section, following in zip(sections, [*sections[1:], None]):
        body = answers_text[section.end():following.start() if following else len(answers_text)]
        headings = list(ANSWER.finditer(body))
        result[section["stem"]] = [
            (int(heading[1]), body[heading.end():after.start() if after else len(body)])
            for heading, after in zip(headings, [*headings[1:], None])]
    return result


def unanswered(notebooks: dict[str, nbformat.NotebookNode], answers_text: str,
               not_yet: dict[str, str]) -> list[str]:
    """One message per lecture whose questions and answers do not match one to one (empty: all match)."""
    answers = answered(answers_text)
    messages = []
    for stem, notebook in sorted(notebooks.items()):
        questions = lecture_questions(notebook)
        if not questions or stem in not_yet:
            continue
        if questions != list(range(1, len(questions) + 1)):
            messages.append(f"notebooks/{stem}.ipynb: questions are numbered {questions}, not 1..{len(questions)}")
        numbers = [number for number, _ in answers.get(stem, [])]
        if numbers != list(range(1, len(questions) + 1)):
            messages.append(f"notebooks/{stem}.ipynb asks {len(questions)} questions; {ANSWERS.name} answers "
                            f"{numbers or 'none'} (one '### k.' heading per question, k = 1..{len(questions)})")
        empty = [number for number, text in answers.get(stem, []) if len(text.split()) < 10]
        if empty:
            messages.append(f"{ANSWERS.name}, notebook {stem}: answers {empty} have almost no text")
    for stem in sorted(answers.keys() - notebooks.keys()):
        messages.append(f"{ANSWERS.name} has a section for notebooks/{stem}.ipynb, which does not exist")
    return messages


def lectures() -> dict[str, nbformat.NotebookNode]:
    return {path.stem: nbformat.read(path, as_version=4) for path in sorted((REPO / "notebooks").glob("*.ipynb"))}


def test_every_lecture_question_has_one_answer():
    assert unanswered(lectures(), ANSWERS.read_text(encoding="utf-8"), NOT_YET_ANSWERED) == []


def test_the_lectures_do_ask_questions():
    """Guards the parser: if it stopped finding questions, the test above would pass on nothing."""
    asked = {stem: lecture_questions(nb) for stem, nb in lectures().items() if stem not in NOT_YET_ANSWERED}
    assert sum(len(numbers) for numbers in asked.values()) >= 40
    assert [stem for stem, numbers in asked.items() if stem[:2] <= "09" and not numbers] == []


def lecture(questions: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(f"## Summary\n\nText.\n\n{SECTION_HEADING}\n\n{questions}\n## References\n\n1. A paper.")
    return nbformat.v4.new_notebook(cells=[cell])


ANSWER_TEXT = "A model answer long enough to be marked against, with the number a grader looks for."


@pytest.mark.parametrize("answers, problem", [
    (f"## 01 · x (`notebooks/01_x.ipynb`)\n\n### 1. Q?\n\n{ANSWER_TEXT}\n", "asks 2 questions"),
    ("", "answers none"),
    (f"## 01 · x (`notebooks/01_x.ipynb`)\n\n### 1. Q?\n\n{ANSWER_TEXT}\n\n### 2. Q?\n\nYes.\n", "almost no text"),
    (f"## 01 · x (`notebooks/01_x.ipynb`)\n\n### 1. Q?\n\n{ANSWER_TEXT}\n\n### 2. Q?\n\n{ANSWER_TEXT}\n\n"
     f"## 02 · y (`notebooks/02_y.ipynb`)\n\n### 1. Q?\n\n{ANSWER_TEXT}\n", "02_y.ipynb, which does not exist"),
])
def test_a_missing_short_or_stale_answer_is_reported(answers, problem):
    notebooks = {"01_x": lecture("1. Why?\n2. How many?\n")}
    messages = unanswered(notebooks, answers, {})
    assert len(messages) == 1 and problem in messages[0]


def test_matching_answers_and_questions_pass_and_the_section_ends_at_the_next_heading():
    notebooks = {"01_x": lecture("1. Why?\n2. How many?\n"), "02_y": lecture("1. What?\n")}
    answers = (f"## 01 · x (`notebooks/01_x.ipynb`)\n\n### 1. Why?\n\n{ANSWER_TEXT}\n\n### 2. How many?\n\n"
               f"{ANSWER_TEXT}\n\n## 02 · y (`notebooks/02_y.ipynb`)\n\n### 1. What?\n\n{ANSWER_TEXT}\n")
    assert lecture_questions(notebooks["01_x"]) == [1, 2]   # the numbered reference after "## References" is not a question
    assert unanswered(notebooks, answers, {}) == []


def test_the_answers_never_reach_the_exercises(tmp_path):
    written = generate_exercises(REPO / "solutions", tmp_path)
    assert written and all(path.suffix == ".ipynb" for path in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert not (REPO / "exercises" / ANSWERS.name).exists()
