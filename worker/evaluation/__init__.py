"""Lead evaluation: documents in; score, label, recommendation, risk flags and fraud signals out.

`model` holds what every evaluator takes and gives, `documents` turns a stored document
into text, `rules` is the built-in evaluator (`jobtrail-rules-1`) and `llm` the client of an
OpenAI-compatible chat-completions endpoint.
"""
