"""A client request cut into jobs: TorchServe requests small enough to take turns on the worker.

TorchServe's queue is FIFO and its worker takes a batch at a time. A request of 64 long texts sent
whole would hold the worker for seconds while every other client waits behind it; the same texts
sent as jobs, one in flight per request, queue behind (and between) other clients' jobs, so the
worker's time is shared among requests (processor sharing): a light request waits for a few jobs,
not for the heavy request. Each job is surely within the handler's limit per TorchServe request,
since it is cut on an upper bound of its texts' tokens (facade/tokens.py).
"""

from facade.tokens import tokens_at_most

# Tokens per job at most (upper bound), and so about what one TorchServe batch costs (the handler's
# batch_budget_tokens is the same): a light request waits for a few jobs of other clients, so the
# smaller a job the sooner it is served, while every job costs a round trip and a batch's fixed
# cost. Half the handler's limit per TorchServe request; figures in docs/overload.md.
JOB_TOKENS = 1024


def job_slices(texts: list[str], job_tokens: int, max_text_tokens: int) -> list[slice]:
    """Return consecutive slices of `texts` whose upper-bound tokens stay within job_tokens (one text always fits)."""
    slices, start, total = [], 0, 0
    for index, text in enumerate(texts):
        cost = tokens_at_most(text, max_text_tokens)
        if index > start and total + cost > job_tokens:
            slices.append(slice(start, index))
            start, total = index, 0
        total += cost
    if texts:
        slices.append(slice(start, len(texts)))
    return slices
