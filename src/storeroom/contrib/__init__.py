"""Framework integrations: thin wiring of storeroom's parts into Litestar, FastAPI and Flask.

Each module is imported only when used, so a framework is needed only if you use its module.
"""
