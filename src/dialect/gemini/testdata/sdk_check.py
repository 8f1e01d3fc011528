"""Checks translated outputs with the official SDKs' types.

Arguments come in pairs: a Gemini input (a `.sse` stream or a `.json`
answer) and its translation (`.out` chunks or `.out.json` answer). The input
must parse as google-genai's `GenerateContentResponse` (an error chunk aside),
the output as the OpenAI SDK's types.
"""

import json
import sys

from google.genai import types
from openai.types.chat import ChatCompletion, ChatCompletionChunk


def data_lines(path):
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read().replace("\r\n", "\n")
    for line in text.split("\n"):
        if line.startswith("data: "):
            yield line[len("data: "):]


def check_stream(source, translated):
    for data in data_lines(source):
        chunk = json.loads(data)
        if "error" in chunk:
            continue
        types.GenerateContentResponse.model_validate(chunk)
    chunks = list(data_lines(translated))
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


def check_answer(source, translated):
    with open(source, encoding="utf-8") as f:
        types.GenerateContentResponse.model_validate(json.load(f))
    with open(translated, encoding="utf-8") as f:
        answer = ChatCompletion.model_validate(json.load(f))
    assert answer.choices[0].message.role == "assistant"


args = sys.argv[1:]
for source, translated in zip(args[::2], args[1::2]):
    if source.endswith(".sse"):
        check_stream(source, translated)
    else:
        check_answer(source, translated)
    print("ok", translated)
