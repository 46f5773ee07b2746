"""``python -m storeroom.demo``: serve the demo with uvicorn on 127.0.0.1."""

from __future__ import annotations

import uvicorn

from storeroom.demo.app import create_app
from storeroom.demo.settings import DemoSettings


def main() -> None:
    """Start the demo server."""
    settings = DemoSettings.from_env()
    print(f"storeroom demo on {settings.base_url}  (data in {settings.data_dir})", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
