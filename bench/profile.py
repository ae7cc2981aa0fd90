"""`python -m bench.profile`: one pipeline run with the wallet process under pyinstrument.

The wallet runs as in `make bench` (its own process, the memory store, batch 500), started as
`python -m bench.profile --wallet SESSION`, which profiles it (a sample every millisecond) and
saves the session when the wallet stops. The parent then prints the call tree.

    uv run python -m bench.profile --commands 30000 --out build/wallet-profile.txt
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from types import FrameType

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from bench.pipeline import WalletProcess, run_pipeline
from bench.workload import build_workload
from shared.infra import Infrastructure


def profiled_wallet(session_path: Path) -> None:
    import uvicorn

    from wallet.__main__ import main as wallet_main

    profiler = Profiler(interval=0.001, async_mode="disabled")
    stop_on_exit = uvicorn.Server.handle_exit

    def save_then_exit(server: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
        # Saved on the stop signal itself: a slow shutdown under the profiler may end in SIGKILL.
        if profiler.is_running:
            profiler.stop().save(str(session_path))
        stop_on_exit(server, sig, frame)

    uvicorn.Server.handle_exit = save_then_exit  # type: ignore[method-assign,assignment]
    profiler.start()
    wallet_main()


async def profile(commands: int, batch_size: int, log_dir: Path | None) -> tuple[float, Session]:
    session_path = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "wallet.pyisession"
    how = WalletProcess(
        argv=(sys.executable, "-m", "bench.profile", "--wallet", str(session_path)),
        log_dir=log_dir,
    )
    async with Infrastructure.from_environment(log_dir=log_dir) as infra:
        workload = build_workload(commands, seed=11, tag="prof")
        run = await run_pipeline(infra.kafka_bootstrap_servers, workload, batch_size, how=how)
    if run.wrong:
        raise AssertionError(f"{len(run.wrong)} wrong answers under the profiler")
    return run.per_s, Session.load(str(session_path))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--wallet", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--commands", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("build/wallet-profile.txt"))
    args = parser.parse_args()
    if args.wallet is not None:
        profiled_wallet(args.wallet)
        return
    per_s, session = asyncio.run(profile(args.commands, args.batch, args.out.parent / "bench-logs"))
    text = ConsoleRenderer(unicode=True, color=False, show_all=False).render(session)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{per_s:,.0f} commands/s under the profiler\n{text}")
    print(f"{per_s:,.0f} commands/s under the profiler; call tree in {args.out}")


if __name__ == "__main__":
    main()
