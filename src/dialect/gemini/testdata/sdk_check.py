"""Checks translated outputs with the official SDKs' types.

Arguments come in pairs: a Gemini input (a `.sse` stream or a `.json`
answer) and its translation (`.out` chunks or `.out.json` answer). The input
must parse as google-genai's `GenerateContentResponse` (an error chunk aside),
the output as the OpenAI SDK's types. A `request` argument and a translated
request (`.out`, JSON then a `//` line) check the request's fields with
google-genai's types, which refuse any field they do not know.
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


REQUEST_FIELDS = {
    "contents": lambda v: [types.Content.model_validate(c) for c in v],
    "systemInstruction": types.Content.model_validate,
    "tools": lambda v: [types.Tool.model_validate(t) for t in v],
    "toolConfig": types.ToolConfig.model_validate,
    "generationConfig": types.GenerationConfig.model_validate,
}


def check_request(translated):
    with open(translated, encoding="utf-8") as f:
        text = f.read()
    body = json.loads(text[: text.rindex("\n//")])
    for field, value in body.items():
        assert field in REQUEST_FIELDS, f"{translated}: unknown field {field}"
        REQUEST_FIELDS[field](value)


args = sys.argv[1:]
for source, translated in zip(args[::2], args[1::2]):
    if source == "request":
        check_request(translated)
    elif source.endswith(".sse"):
        check_stream(source, translated)
    else:
        check_answer(source, translated)
    print("ok", translated)
