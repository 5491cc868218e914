# test_task.py
import json
from pathlib import Path

from task_framework.models.artifact import Artifact
from task_framework.testing import run_task

from task import count_words

SCHEMAS = json.loads((Path(__file__).parent / "task_metadata.json").read_text())["output_schemas"]


def test_counts_words_and_lists_them():
    result = run_task(
        count_words,
        inputs=[Artifact(kind="text", text="to be or not", media_type="text/plain")],
        config={"MIN_LENGTH": "2"},
        output_schemas=SCHEMAS,
    )
    assert result.succeeded, result.error
    count, listing = result.outputs
    assert count.value == {"words": 4}
    assert result.files[listing.file_ref] == b"to\nbe\nor\nnot"
    assert any(r.message == "counted 4 words" for r in result.logs)


def test_empty_input_is_a_problem_not_a_failure():
    result = run_task(count_words, inputs=[Artifact(kind="text", text="")])
    assert result.succeeded
    assert result.problems[0]["message"] == "no words found"
