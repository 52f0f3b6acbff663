"""Serving a checkpoint over HTTP with OpenAI's API: `app` (FastAPI routes), `protocol` (request
schemas), `completion` (a request's choices on the shared engine), `responses` (OpenAI's bodies),
`scheduler` (the decode thread), `errors` (error bodies, auth, body limit), `server` (the verb).

Only `app`, `errors` and `server.serve` need the optional `serve` extra (fastapi, uvicorn).
"""
