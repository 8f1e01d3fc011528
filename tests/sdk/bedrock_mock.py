"""boto3's bedrock-runtime client as a client of `llm-proxy mock-upstream`.

Usage: bedrock_mock.py BASE_URL ACCESS_KEY_ID SECRET_ACCESS_KEY
Prints `ok: <check>` for each check; exits non-zero on the first failure.
The mock must check signatures with that key id and secret.
"""

import sys

import boto3
import botocore.config
import botocore.exceptions

BASE_URL, KEY_ID, SECRET = sys.argv[1], sys.argv[2], sys.argv[3]
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
WORDS = "The quick brown fox jumps over the lazy dog while a mock model streams its answer".split()
HELLO = [{"role": "user", "content": [{"text": "Hello there"}]}]
WEATHER = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "The weather of a city",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                        "required": ["city"],
                    }
                },
            }
        },
        {"toolSpec": {"name": "get_time", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
    ]
}

# x-mock-* fields for the next call, added before the request is signed.
EXTRA = {}


def add_extra(request, **_):
    for name, value in EXTRA.items():
        request.headers[name] = value


def client(secret=SECRET):
    c = boto3.client(
        "bedrock-runtime",
        endpoint_url=BASE_URL,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=secret,
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    c.meta.events.register("before-sign.bedrock-runtime.*", add_extra)
    return c


def ok(check):
    print(f"ok: {check}", flush=True)


def extra(**fields):
    EXTRA.clear()
    EXTRA.update({name.replace("_", "-"): str(value) for name, value in fields.items()})


c = client()

extra(x_mock_stream_chunks=4)
answer = c.converse(modelId=MODEL, messages=HELLO, system=[{"text": "Be brief."}])
assert answer["output"]["message"]["role"] == "assistant", answer
assert answer["output"]["message"]["content"] == [{"text": " ".join(WORDS[:4])}], answer
assert answer["stopReason"] == "end_turn", answer
usage = answer["usage"]
assert usage["outputTokens"] == 4 and usage["inputTokens"] > 0, usage
assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"], usage
assert answer["metrics"]["latencyMs"] >= 0, answer
ok("converse text, stopReason and usage")

extra(x_mock_stream_chunks=8)
answer = c.converse(modelId=MODEL, messages=HELLO, inferenceConfig={"maxTokens": 3})
assert answer["stopReason"] == "max_tokens", answer
assert answer["output"]["message"]["content"][0]["text"] == " ".join(WORDS[:3]), answer
ok("converse maxTokens")

extra(x_mock_stream_chunks=5)
events = list(c.converse_stream(modelId=MODEL, messages=HELLO)["stream"])
kinds = [next(iter(e)) for e in events]
assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"], kinds
text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
assert text == " ".join(WORDS[:5]), text
assert events[-2]["messageStop"]["stopReason"] == "end_turn", events[-2]
assert events[-1]["metadata"]["usage"]["outputTokens"] == 5, events[-1]
ok("converse_stream events, text and usage")

extra()
answer = c.converse(modelId=MODEL, messages=HELLO, toolConfig=WEATHER)
assert answer["stopReason"] == "tool_use", answer
[block] = answer["output"]["message"]["content"]
use = block["toolUse"]
assert use["name"] == "get_weather" and use["toolUseId"], use
assert use["input"] == {"city": "mock city", "days": 1}, use
ok("tools: toolUse block")

round_trip = HELLO + [
    {"role": "assistant", "content": [block]},
    {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": {"temp_c": 21}}]}}]},
]
answer = c.converse(modelId=MODEL, messages=round_trip, toolConfig=WEATHER)
assert answer["stopReason"] == "end_turn", answer
ok("tools: toolResult round trip ends end_turn")

forced = dict(WEATHER, toolChoice={"tool": {"name": "get_time"}})
answer = c.converse(modelId=MODEL, messages=HELLO, toolConfig=forced)
assert answer["output"]["message"]["content"][0]["toolUse"]["name"] == "get_time", answer
ok("tools: toolChoice names the tool")

extra(x_mock_tool_calls=2)
events = list(c.converse_stream(modelId=MODEL, messages=HELLO, toolConfig=WEATHER)["stream"])
starts = [e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e]
assert [s["name"] for s in starts] == ["get_weather", "get_time"], starts
pieces = [
    e["contentBlockDelta"]["delta"]["toolUse"]["input"]
    for e in events
    if "contentBlockDelta" in e and e["contentBlockDelta"]["contentBlockIndex"] == 0
]
assert len(pieces) > 1 and "".join(pieces) == '{"city":"mock city","days":1}', pieces
assert events[-2]["messageStop"]["stopReason"] == "tool_use", events[-2]
ok("stream: toolUse input in pieces")

extra(x_mock_status=429)
try:
    c.converse(modelId=MODEL, messages=HELLO)
    raise AssertionError("no error")
except c.exceptions.ThrottlingException as e:
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429, e.response
ok("errors: 429 raises ThrottlingException")

extra(x_mock_status=400)
try:
    c.converse(modelId=MODEL, messages=HELLO)
    raise AssertionError("no error")
except c.exceptions.ValidationException:
    pass
extra()
try:
    c.converse(modelId=MODEL, messages=[])
    raise AssertionError("no error")
except c.exceptions.ValidationException:
    pass
ok("errors: ValidationException")

try:
    client(secret="not-the-secret").converse(modelId=MODEL, messages=HELLO)
    raise AssertionError("no error")
except botocore.exceptions.ClientError as e:
    error = e.response["Error"]
    assert error["Code"] == "InvalidSignatureException", error
    assert "signature we calculated does not match" in error["Message"], error
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.response
ok("errors: a wrong secret raises InvalidSignatureException")

extra(x_mock_stream_error_after=2)
try:
    for _ in c.converse_stream(modelId=MODEL, messages=HELLO)["stream"]:
        pass
    raise AssertionError("no error")
except botocore.exceptions.EventStreamError as e:
    # boto3 raises a stream's exception frame as EventStreamError, named
    # as the frame names it.
    assert e.response["Error"]["Code"] == "throttlingException", e.response
    assert "Too many requests" in e.response["Error"]["Message"], e.response
ok("stream: exception frame raises EventStreamError throttlingException")
