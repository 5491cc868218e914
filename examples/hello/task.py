"""A tiny task: greets the name found in its JSON input."""

from task_framework.models.artifact import Artifact


async def greet(context):
    inputs = await context.get_input_artifacts()
    name = "world"
    for artifact in inputs:
        if artifact.kind == "json" and isinstance(artifact.value, dict):
            name = artifact.value.get("name", name)
    greeting = f"{context.get('GREETING', 'Hello')}, {name}!"
    context.logger.info("greeting %s", name)
    await context.publish_output_artifacts(
        [
            Artifact(
                kind="json",
                ref="greeting",
                value={"greeting": greeting},
                media_type="application/json",
            ),
            Artifact(kind="text", ref="greeting.txt", text=greeting, media_type="text/plain"),
        ]
    )
