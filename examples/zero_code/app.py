"""A chat app with no quota and no OpenTelemetry code: `opentelemetry-instrument` adds both.

The quotas, the rule that picks the config and the alert handler are all in ``quotas.yaml``,
named by ``OTEL_LLM_QUOTA_CONFIG_FILE``; see README.md beside this file for the command line.
"""

from openai import OpenAI

client = OpenAI()  # OPENAI_API_KEY and OPENAI_BASE_URL from the environment
messages = [{"role": "user", "content": "Say hello"}]
for _ in range(2):
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    print(reply.choices[0].message.content)
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=messages,
    stream=True,
    stream_options={"include_usage": True},  # without it a stream carries no usage
)
print("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
