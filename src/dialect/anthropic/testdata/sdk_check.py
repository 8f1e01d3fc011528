"""Checks translated outputs with the official SDKs' types.

Arguments come in pairs: an Anthropic input (a `.sse` stream or a `.json`
message) and its translation (`.out` chunks or `.out.json` answer). The input
must parse as the Anthropic SDK's types, the output as the OpenAI SDK's.
"""

import json
import sys

import pydantic
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

events = pydantic.TypeAdapter(RawMessageStreamEvent)


def data_lines(path):
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if line.startswith("data: "):
                yield line[len("data: "):]


def check_stream(source, translated):
    sent = list(data_lines(source))
    with open(source, encoding="utf-8") as f:
        if not f.read().endswith("\n\n"):
            sent = sent[:-1]  # a stream cut mid-event
    for data in sent:
        event = json.loads(data)
        if event["type"] in ("error", "ping"):
            continue
        events.validate_python(event, strict=False)
    chunks = list(data_lines(translated))
    state = ChatCompletionStreamState()
    for i, data in enumerate(chunks):
        if data == "[DONE]":
            assert i == len(chunks) - 1, f"{translated}: [DONE] is not last"
            continue
        value = json.loads(data)
        if "error" in value:
            error = value["error"]
            assert set(error) == {"message", "type", "param", "code"}, error
            assert i == len(chunks) - 1, f"{translated}: an error event is not last"
            continue
        chunk = ChatCompletionChunk.model_validate(value, strict=False)
        assert chunk.object == "chat.completion.chunk"
        state.handle_chunk(chunk)
    if chunks[-1] == "[DONE]":
        # The SDK's own accumulation: each tool call whole, its arguments JSON.
        message = state.current_completion_snapshot.choices[0].message
        for call in message.tool_calls or []:
            assert call.id and call.function.name, call
            json.loads(call.function.arguments or "{}")


def check_message(source, translated):
    with open(source, encoding="utf-8") as f:
        Message.model_validate(json.load(f))
    with open(translated, encoding="utf-8") as f:
        answer = ChatCompletion.model_validate(json.load(f))
    assert answer.choices[0].message.role == "assistant"


args = sys.argv[1:]
for source, translated in zip(args[::2], args[1::2]):
    if source.endswith(".sse"):
        check_stream(source, translated)
    else:
        check_message(source, translated)
    print("ok", translated)
