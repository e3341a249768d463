"""`python -m cua_dev.pull IMAGE`: one image pulled the agent's way, as its own process.

For tests that SIGKILL the agent in the middle of a download and start it again: this is
the agent's download path (`cua.agent.agent_downloader` + `DockerEngine.pull_image`)
without the MQTT side. Prints one `done/total` line per progress item; exits 1 with the
error on a failed pull.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cua.download.fetch import AgentDownloader
from cua.download.registry import RegistryClient
from cua.engine.base import PullFailedError
from cua.engine.docker import DockerEngine


async def pull(args: argparse.Namespace) -> int:
    mirrors = dict(entry.split("=", 1) for entry in args.mirror)
    downloader = AgentDownloader(Path(args.cache), RegistryClient(), rate=args.rate)
    engine = DockerEngine(args.engine, mirrors=mirrors, downloader=downloader)
    try:
        async for progress in engine.pull_image(args.image):
            print(f"{progress.done}/{progress.total}", flush=True)
    except PullFailedError as error:
        print(error, file=sys.stderr, flush=True)
        return 1
    finally:
        await engine.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="cua_dev.pull")
    parser.add_argument("image")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--mirror", action="append", default=[], help="REGISTRY=MIRROR")
    parser.add_argument("--rate", type=float, default=0.0, help="bytes/s (0: no limit)")
    return asyncio.run(pull(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
