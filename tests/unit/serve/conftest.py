from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_harness import API_KEY, LiveServer, live_server, tiny_model

from clusterlm.data.tokenizer import EOS_TOKEN


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every serve test decodes small batches on a tiny model: see `one_thread` in tests/conftest.py."""
    yield


@pytest.fixture(scope="module")
def live(tokenizer) -> Iterator[LiveServer]:
    """The module's server: tiny Llama with a 1024-token context, batches of 16, an API key."""
    from clusterlm.serve.app import create_app

    model = tiny_model(tokenizer, max_seq_len=1024)
    app = create_app(model, tokenizer, model_name="tiny", eos_id=tokenizer.token_to_id(EOS_TOKEN),
                     max_new_tokens_limit=1000, max_batch=16, api_key=API_KEY)
    app.state.model = model
    with live_server(app) as server:
        yield server
