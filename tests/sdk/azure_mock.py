"""The official OpenAI SDK's Azure client as a client of `llm-proxy mock-upstream`.

Usage: azure_mock.py BASE_URL API_KEY
Prints `ok: <check>` for each check; exits non-zero on the first failure.
The last request it makes is a chat completion on deployment `gpt-4o-deploy`
with the `api-key` header, for the caller to inspect in /mock/last-request.
"""

import sys

import openai

BASE_URL, API_KEY = sys.argv[1], sys.argv[2]
API_VERSION = "2024-10-21"
DEPLOYMENT = "gpt-4o-deploy"
WORDS = "The quick brown fox jumps over the lazy dog while a mock model streams its answer".split()
HELLO = [{"role": "user", "content": "Hello there"}]


def azure(**auth):
    return openai.AzureOpenAI(
        azure_endpoint=BASE_URL, api_version=API_VERSION, max_retries=0, **auth
    )


def words(n):
    return {"x-mock-stream-chunks": str(n)}


def ok(check):
    print(f"ok: {check}", flush=True)


c = azure(api_key=API_KEY)

completion = c.chat.completions.create(model=DEPLOYMENT, messages=HELLO, extra_headers=words(4))
assert completion.model == DEPLOYMENT, completion.model
assert completion.choices[0].message.content == " ".join(WORDS[:4]), completion.choices
assert completion.choices[0].finish_reason == "stop", completion.choices
assert completion.usage.completion_tokens == 4 and completion.usage.prompt_tokens > 0, completion.usage
ok("azure chat")

chunks = list(
    c.chat.completions.create(
        model=DEPLOYMENT,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=words(5),
    )
)
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
assert text == " ".join(WORDS[:5]), text
assert all(ch.model == DEPLOYMENT for ch in chunks), [ch.model for ch in chunks]
assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop", chunks
assert chunks[-1].usage.completion_tokens == 5, chunks[-1]
ok("azure chat stream")

embeddings = c.embeddings.create(model="embed-deploy", input=["one", "two"])
assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) == 16, embeddings
assert embeddings.model == "embed-deploy", embeddings.model
ok("azure embeddings")

legacy = c.completions.create(model="instruct-deploy", prompt="Say", extra_headers=words(3))
assert legacy.model == "instruct-deploy" and legacy.choices[0].text == " ".join(WORDS[:3]), legacy
ok("azure completions")

token = azure(azure_ad_token=API_KEY)
completion = token.chat.completions.create(model=DEPLOYMENT, messages=HELLO)
assert completion.model == DEPLOYMENT, completion
ok("azure_ad_token")

try:
    azure(api_key="wrong-key").chat.completions.create(model=DEPLOYMENT, messages=HELLO)
    raise AssertionError("no error for a wrong key")
except openai.AuthenticationError as error:
    assert error.status_code == 401 and error.body["code"] == "401", error.body
ok("wrong key raises AuthenticationError")

try:
    c.chat.completions.create(model=DEPLOYMENT, messages=HELLO, extra_headers={"x-mock-status": "429"})
    raise AssertionError("no error for 429")
except openai.RateLimitError as error:
    assert error.status_code == 429, error
ok("429 raises RateLimitError")

v1 = openai.OpenAI(base_url=f"{BASE_URL}/openai/v1/", api_key=API_KEY, max_retries=0)
completion = v1.chat.completions.create(model=DEPLOYMENT, messages=HELLO, extra_headers=words(3))
assert completion.model == DEPLOYMENT, completion.model
assert completion.choices[0].message.content == " ".join(WORDS[:3]), completion.choices
chunks = list(v1.chat.completions.create(model=DEPLOYMENT, messages=HELLO, stream=True, extra_headers=words(3)))
assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == " ".join(WORDS[:3])
embeddings = v1.embeddings.create(model="embed-deploy", input="one")
assert len(embeddings.data) == 1 and embeddings.model == "embed-deploy", embeddings
ok("v1 GA chat, stream and embeddings")

try:
    openai.OpenAI(
        base_url=f"{BASE_URL}/openai/v1/", api_key="wrong-key", max_retries=0
    ).chat.completions.create(model=DEPLOYMENT, messages=HELLO)
    raise AssertionError("no error for a wrong key on v1")
except openai.AuthenticationError:
    pass
ok("v1 GA wrong key raises AuthenticationError")

# The last request: the caller checks its URL and key.
c.chat.completions.create(model=DEPLOYMENT, messages=HELLO)
print("all Azure OpenAI SDK checks passed")
