"""Serving a checkpoint over HTTP: `completion` turns generation into response text, `app` is the FastAPI app.

Only `app` needs the optional `serve` extra (fastapi, uvicorn); nothing here imports it eagerly.
"""
