"""The web service: `dmha serve MODEL_DIR`.

`settings` (limits) and `batcher` (micro-batching) need only the standard library; `app`, `server`,
`protocol` and `uploads` need the `[serve]` extra (FastAPI, uvicorn, python-multipart) and are imported only
by `dmha serve`, so the rest of dmha works without them.
"""
