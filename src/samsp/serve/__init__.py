"""`samsp serve`: a web page and an HTTP API for one model (the optional `samsp[serve]` extra: FastAPI, uvicorn).

`schemas` holds the API's response models, `worker` the single model thread that every prediction queues for,
`app` the FastAPI application (routes, limits, error answers, the page), `server` loads a model and runs it,
and `static/` is the page itself (plain HTML, CSS and JavaScript, no build step).
"""
