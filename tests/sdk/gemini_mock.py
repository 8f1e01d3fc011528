"""Google's official google-genai SDK as a client of `llm-proxy mock-upstream`.

Usage: gemini_mock.py BASE_URL API_KEY
Prints `ok: <check>` for each check; exits non-zero on the first failure.
The last request it makes is a streamed generate_content on `gemini-mock-2`,
for the caller to inspect in /mock/last-request.
"""

import sys

from google import genai
from google.genai import errors, types

BASE_URL, API_KEY = sys.argv[1], sys.argv[2]
MODEL = "gemini-mock-1"
WORDS = "The quick brown fox jumps over the lazy dog while a mock model streams its answer".split()
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city",
    parameters=types.Schema(
        type="OBJECT",
        properties={
            "city": types.Schema(type="STRING"),
            "days": types.Schema(type="INTEGER"),
            "unit": types.Schema(type="STRING", enum=["celsius", "fahrenheit"]),
        },
        required=["city"],
    ),
)
TIME = types.FunctionDeclaration(
    name="get_time",
    description="The time in a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
)
TOOLS = [types.Tool(function_declarations=[WEATHER, TIME])]


CLIENTS = {}


def client(key=API_KEY, **headers):
    # Kept: a client closes its connections when it is collected.
    index = (key, tuple(sorted(headers.items())))
    if index not in CLIENTS:
        CLIENTS[index] = genai.Client(
            api_key=key,
            http_options=types.HttpOptions(
                base_url=BASE_URL, api_version="v1beta", headers=headers or None
            ),
        )
    return CLIENTS[index]


def words(n):
    return {"x-mock-stream-chunks": str(n)}


def ok(check):
    print(f"ok: {check}", flush=True)


c = client()

# Text and usage.
r = client(**words(5)).models.generate_content(model=MODEL, contents="Hello there")
assert r.text == " ".join(WORDS[:5]), r.text
assert r.candidates[0].finish_reason == types.FinishReason.STOP, r.candidates
assert r.candidates[0].content.role == "model", r.candidates[0].content
assert r.model_version == MODEL, r.model_version
assert r.response_id, r
u = r.usage_metadata
assert u.prompt_token_count > 0 and u.candidates_token_count == 5, u
assert u.total_token_count == u.prompt_token_count + 5, u
ok("generate_content text and usage_metadata")

# maxOutputTokens cuts the answer: MAX_TOKENS.
r = client(**words(8)).models.generate_content(
    model=MODEL,
    contents="Hello",
    config=types.GenerateContentConfig(max_output_tokens=3, system_instruction="Be brief."),
)
assert r.text == " ".join(WORDS[:3]), r.text
assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS, r.candidates
ok("generate_content max_output_tokens")

# Several candidates.
r = client(**words(2)).models.generate_content(
    model=MODEL, contents="Hi", config=types.GenerateContentConfig(candidate_count=2)
)
assert [cand.index for cand in r.candidates] == [0, 1], r.candidates
assert all(cand.content.parts[0].text == "The quick" for cand in r.candidates), r.candidates
ok("generate_content candidate_count")

# A stream: one chunk a word, usage on every chunk, finish reason on the last.
chunks = list(client(**words(6)).models.generate_content_stream(model=MODEL, contents="Hello"))
assert len(chunks) == 6, chunks
assert "".join(ch.text for ch in chunks) == " ".join(WORDS[:6]), chunks
assert all(ch.usage_metadata.prompt_token_count > 0 for ch in chunks), chunks
assert [ch.usage_metadata.candidates_token_count for ch in chunks] == [1, 2, 3, 4, 5, 6], chunks
assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP, chunks[-1]
assert all(ch.candidates[0].finish_reason is None for ch in chunks[:-1]), chunks
assert len({ch.response_id for ch in chunks}) == 1, chunks
ok("generate_content_stream text, finish_reason and usage_metadata")

# Function calling: the SDK parses the functionCall parts.
config = types.GenerateContentConfig(
    tools=TOOLS, automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
)
r = c.models.generate_content(model=MODEL, contents="Weather in Paris?", config=config)
calls = r.function_calls
assert len(calls) == 1 and calls[0].name == "get_weather", calls
assert calls[0].args == {"city": "mock city", "days": 1, "unit": "celsius"}, calls[0].args
assert r.candidates[0].finish_reason == types.FinishReason.STOP, r.candidates
ok("function calling: functionCall part")

# The answer to the call ends the turn with text.
history = [
    types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]),
    r.candidates[0].content,
    types.Content(
        role="user",
        parts=[types.Part.from_function_response(name="get_weather", response={"temp_c": 18})],
    ),
]
r = client(**words(3)).models.generate_content(model=MODEL, contents=history, config=config)
assert r.function_calls is None and r.text == " ".join(WORDS[:3]), r
ok("function calling: functionResponse round trip ends with text")

# The mode: ANY with an allowed name forces it, NONE forbids calls.
forced = types.GenerateContentConfig(
    tools=TOOLS,
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    tool_config=types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode="ANY", allowed_function_names=["get_time"]
        )
    ),
)
r = c.models.generate_content(model=MODEL, contents="What time?", config=forced)
assert [call.name for call in r.function_calls] == ["get_time"], r.function_calls
none = types.GenerateContentConfig(
    tools=TOOLS,
    tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE")),
)
r = client(**words(2)).models.generate_content(model=MODEL, contents="Hi", config=none)
assert r.function_calls is None and r.text == "The quick", r
ok("function calling: mode ANY and NONE")

# Parallel calls, after some text, streamed whole in one chunk.
parallel = client(**{"x-mock-tool-calls": "2", "x-mock-tool-text": "2"})
chunks = list(
    parallel.models.generate_content_stream(model=MODEL, contents="Weather and time?", config=config)
)
calls = [call for ch in chunks for call in (ch.function_calls or [])]
assert [call.name for call in calls] == ["get_weather", "get_time"], chunks
assert calls[1].args == {"city": "mock city"}, calls[1].args
assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP, chunks[-1]
ok("function calling: parallel calls streamed")

# A blocked prompt: prompt_feedback, no candidates.
r = client(**{"x-mock-blocked": "1"}).models.generate_content(model=MODEL, contents="Bad")
assert not r.candidates, r
assert r.prompt_feedback.block_reason == types.BlockedReason.SAFETY, r.prompt_feedback
assert r.usage_metadata.prompt_token_count > 0, r.usage_metadata
ok("blocked prompt: prompt_feedback.block_reason")

# Errors.
for status, code_name in [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"), (429, "RESOURCE_EXHAUSTED")]:
    try:
        client(**{"x-mock-status": str(status)}).models.generate_content(model=MODEL, contents="Hi")
        raise AssertionError(f"no error for {status}")
    except errors.ClientError as error:
        assert error.code == status and error.status == code_name, (error.code, error.status)
        assert error.message, error
ok("errors: 400, 403 and 429 raise ClientError")

try:
    client(**{"x-mock-status": "503"}).models.generate_content(model=MODEL, contents="Hi")
    raise AssertionError("no error for 503")
except errors.ServerError as error:
    assert error.code == 503 and error.status == "UNAVAILABLE", error
ok("errors: 503 raises ServerError")

try:
    client(key="wrong-key").models.generate_content(model=MODEL, contents="Hi")
    raise AssertionError("no error for a wrong key")
except errors.ClientError as error:
    assert error.code == 400 and "API key not valid" in error.message, error
ok("errors: wrong key raises ClientError")

for contents, wording in [
    ([types.Content(role="user", parts=[])], "parts must not be empty"),
    ([types.Content(role="robot", parts=[types.Part(text="x")])], "valid role"),
]:
    try:
        c.models.generate_content(model=MODEL, contents=contents)
        raise AssertionError(f"no error for {contents}")
    except errors.ClientError as error:
        assert error.code == 400 and error.status == "INVALID_ARGUMENT", error
        assert wording in error.message, error.message
ok("errors: empty parts and a bad role raise ClientError")

try:
    for _ in client(**{"x-mock-stream-error-after": "2"}).models.generate_content_stream(
        model=MODEL, contents="Hello"
    ):
        pass
    raise AssertionError("no error mid-stream")
except errors.ServerError as error:
    assert error.code == 503, error
ok("stream: error chunk raises ServerError")

# Last: a stream on another model, for the caller to inspect.
chunks = list(client(**words(2)).models.generate_content_stream(model="gemini-mock-2", contents="Hi"))
assert chunks[-1].model_version == "gemini-mock-2", chunks[-1]
ok("stream on a second model")
