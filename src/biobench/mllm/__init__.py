"""Multimodal LLMs through any OpenAI-compatible API (OpenRouter, OpenAI, a local vLLM or Ollama server).

The point, as in small_data_metrics (Stevens et al.), is to compare multimodal LLMs with
frozen encoders + probes at the same number of training examples: an MLLM gets its
`n_train` training examples in the prompt instead of a probe.

- `registry`: context windows and prices of known models; config entries may add or override.
- `prompts`: images as base64 data URLs, single- and multi-turn prompts, fitting examples
  into the context window, parsing answers to class names.
- `client`: async requests through litellm with a concurrency limit, a requests-per-second
  limit, retries with exponential backoff and jitter (honouring Retry-After), costs, a
  budget, and an answer cache so an interrupted run never pays twice.
- `evaluate`: the classification loop tasks share (`classify`).

litellm is imported only when a client is built, so `biobench --help` stays fast.
"""
