"""Running models on samples: loading, prompts, batched generation and scoring, caches, failure policy."""
