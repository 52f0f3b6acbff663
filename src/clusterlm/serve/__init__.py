"""Serving a checkpoint over HTTP with OpenAI's API: `app` (FastAPI routes), `protocol` (request
schemas), `completion` (a request's choices on the shared engine), `responses` (OpenAI's bodies),
`scheduler` (the decode thread), `errors` (error bodies, auth, body limit); the verb itself is
`clusterlm.api.serve`.

Only `app`, `errors` (and `completion`, which imports it) and `clusterlm.api.serve.serve` need
the optional `serve` extra (fastapi, uvicorn).
"""
