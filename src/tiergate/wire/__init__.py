"""Wire formats, one module per protocol, shared by the inbound dialect (``tiergate.dialects``) and the outbound
client (``tiergate.backends``), so that a conversion written once cannot drift between the two directions.

    openai.py     OpenAI Chat Completions: finish reasons, tool calls, image parts <-> data URLs
    anthropic.py  Anthropic Messages: tool calls as ``tool_use`` blocks
"""
