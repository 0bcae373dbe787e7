"""Image loading off the critical path: the next batches load in a worker thread while the model runs, and the
answers are those of loading each batch just before it runs."""

import threading

import pytest

from lmms_futuremask.runtime.errors import ERROR_MARKER
from lmms_futuremask.runtime.runner import Request, Runner
from lmms_futuremask.runtime.vlm import Generation, GenerationSettings, Sample

from ..helpers import generate_requests, make_model, texts


class StandInVLM:
    """A VLM stand-in: a batch's answer names its samples; ``on_generate`` runs inside the model's turn."""

    def __init__(self, on_generate=lambda batch: None):
        self.on_generate = on_generate
        self.host_lock = threading.RLock()

    def estimated_length(self, text, _n_images):
        return len(text)

    def generate_batch(self, samples, _settings):
        self.on_generate([s.where for s in samples])
        return [Generation(f"answer of {s.where}") for s in samples]

    def use_variant(self, variant):
        assert variant is None

    def probe(self):
        pass


def requests(n, on_load=lambda doc_id: None):
    def loader(doc_id):
        def load():
            on_load(doc_id)
            return Sample(f"question {doc_id}", [], f"doc {doc_id}"), None

        return load

    # Contexts of decreasing length keep the runner's longest-first order equal to doc order.
    return [
        Request("generate", "toy", i, "x" * (100 - i), None, loader(i), settings=GenerationSettings()) for i in range(n)
    ]


def test_the_next_batch_loads_while_the_model_runs_the_current_one():
    started = {i: threading.Event() for i in range(4)}
    seen_during_first_batch = []

    def on_generate(batch):
        if batch == ["doc 0"]:  # the model's turn on batch 0: batch 1 is loading meanwhile, in another thread
            seen_during_first_batch.append(started[1].wait(timeout=10))

    threads = set()

    def on_load(doc_id):
        threads.add(threading.current_thread().name)
        started[doc_id].set()

    answers = Runner(StandInVLM(on_generate), show_progress=False, prefetch=1).generate(requests(4, on_load))
    assert seen_during_first_batch == [True]
    assert [a.text for a in answers] == [f"answer of doc {i}" for i in range(4)]
    assert all(name.startswith("futuremask-load") for name in threads)


def test_without_prefetch_nothing_loads_during_the_models_turn():
    """The guard: with prefetch=0 the event above never fires while batch 0 runs."""
    started = threading.Event()
    seen = []

    def on_load(doc_id):
        if doc_id == 1:
            started.set()

    def on_generate(batch):
        if batch == ["doc 0"]:
            seen.append(started.wait(timeout=0.5))

    Runner(StandInVLM(on_generate), show_progress=False, prefetch=0).generate(requests(3, on_load))
    assert seen == [False]


def test_a_sample_that_fails_to_load_in_the_worker_is_its_own_failure():
    def on_load(doc_id):
        if doc_id == 2:
            raise OSError("cannot identify image file")

    answers = Runner(StandInVLM(), show_progress=False, prefetch=2, batch_size=2).generate(requests(5, on_load))
    assert answers[2].text.startswith(ERROR_MARKER) and "cannot identify image file" in answers[2].text
    assert [a.text for i, a in enumerate(answers) if i != 2] == [f"answer of doc {i}" for i in (0, 1, 3, 4)]


def test_prefetch_is_checked():
    with pytest.raises(ValueError, match="prefetch must be >= 0"):
        Runner(StandInVLM(), prefetch=-1)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_prefetched_images_give_the_same_answers_on_the_tiny_model(tiny_model_dir, batch_size):
    """The toy task through lmms-eval's model class: images opened in the worker thread (prefetch=2) or just before
    each batch (prefetch=0), same answers and token counts."""
    results = {}
    for prefetch in (0, 2):
        model = make_model(tiny_model_dir, batch_size=batch_size, prefetch=prefetch)
        results[prefetch] = model.generate_until(generate_requests())
    assert texts(results[2]) == texts(results[0])
    assert [r.token_counts for r in results[2]] == [r.token_counts for r in results[0]]
