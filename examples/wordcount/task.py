# task.py
from task_framework.models.artifact import Artifact


async def count_words(context):
    min_length = int(context.get("MIN_LENGTH", "1"))
    inputs = await context.get_input_artifacts()
    words = []
    for artifact in inputs:
        if context.is_cancelled():
            return
        text = artifact.text
        if text is None and artifact.file_ref:
            text = (await context.download_file(artifact.file_ref)).decode()
        words += [w for w in (text or "").split() if len(w) >= min_length]
    context.logger.info("counted %d words", len(words))
    if not words:
        await context.signal_problem("no words found", details={"inputs": len(inputs)})
    listing = await context.upload_file(
        "\n".join(words).encode(), filename="words.txt", media_type="text/plain"
    )
    await context.publish_output_artifacts(
        [
            Artifact(
                kind="json", ref="count", value={"words": len(words)}, media_type="application/json"
            ),
            Artifact(
                kind="file", ref="words", file_ref=listing["file_ref"], media_type="text/plain"
            ),
        ]
    )
