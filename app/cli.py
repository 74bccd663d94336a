"""The `agent-tasks` command: serve the API, load the demo workflow, export the schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from app.settings import Settings


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(settings: Settings) -> int:
    import uvicorn

    from app.mongo.embedded import EmbeddedMongod, EmbeddedMongoError
    from app.server import create_app

    embedded: EmbeddedMongod | None = None
    if settings.mongodb_uri is None:
        # Started here rather than in the lifespan so that a failure ends in one clear sentence, not a
        # traceback from uvicorn, and so that Ctrl-C stops mongod only after the server has drained.
        embedded = EmbeddedMongod(settings.data_dir, settings.embedded_mongo_port)
        try:
            uri = embedded.start()
        except EmbeddedMongoError as exc:
            print(f"agent-tasks: {exc}", file=sys.stderr)
            return 1
        settings = settings.model_copy(update={"mongodb_uri": uri})
        print(f"agent-tasks: embedded MongoDB ready at {uri} (data in {settings.data_dir})", file=sys.stderr)
    # uvicorn drains gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that was in
    # place before it; turning that into SystemExit lets the `finally` below stop mongod afterwards.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    try:
        print(f"agent-tasks: GraphiQL at http://{settings.host}:{settings.port}/graphql", file=sys.stderr)
        uvicorn.run(
            create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
        )
    except SystemExit:
        pass
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


async def _load_demo(settings: Settings, reset: bool) -> None:
    from app.demo import DEMO_WORKFLOW_ID, load_demo
    from app.server import open_resources

    async with open_resources(settings) as state:
        await load_demo(state.store.db, reset=reset, events=True, settle=state.hub.settle)
    print(f"agent-tasks: demo workflow {DEMO_WORKFLOW_ID!r} loaded into database {settings.mongodb_db!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent-tasks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve the GraphQL API (embedded MongoDB unless MONGODB_URI is set)"
    )
    serve.add_argument("--host", help="interface to bind (default from HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from PORT, else 8000)")
    serve.add_argument("--demo", action="store_true", help="load the demo workflow before serving")
    demo = commands.add_parser("demo", help="load the demo workflow into the database and exit")
    demo.add_argument("--reset", action="store_true", help="put the demo documents back as they were")
    export = commands.add_parser("export-schema", help="print the GraphQL SDL (schema/schema.graphql)")
    export.add_argument("--output", type=Path, help="write to this file instead of standard output")
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        from app.api.schema import export_sdl

        sdl = export_sdl()
        if args.output:
            args.output.write_text(sdl, encoding="utf-8")
        else:
            sys.stdout.write(sdl)
        return 0

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
        if args.demo:
            overrides["load_demo"] = True
        return _serve(settings.model_copy(update=overrides))
    if args.command == "demo":
        from app.mongo.embedded import EmbeddedMongoError

        try:
            asyncio.run(_load_demo(settings, args.reset))
        except EmbeddedMongoError as exc:
            print(f"agent-tasks: {exc}", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
