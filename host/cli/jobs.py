"""The commands that queue work for the gateway and show it: `deploy` (over the air, staged
rollouts, or over USB), `migrate`, `jobs` (and `jobs cancel`, `jobs rollouts`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from microfang import console
from microfang.cli.args import add_json, add_signing_keys, add_store, display, show_rows, store_of
from microfang.firmware.errors import MicrofangError


def _cancel(where: str, ids: list[int] | None, rollouts: list[int] | None) -> None:
    """Cancel jobs `ids`, rollouts `rollouts`, or (neither given) every running rollout and queued job."""
    from microfang.ops import cancel_jobs, cancel_rollouts

    problems: list[str] = []
    if rollouts or not ids:
        stopped, problems = cancel_rollouts(where, rollouts)
        if rollouts or stopped:
            console.info(f"cancelled {len(stopped)} rollouts" + (f": {', '.join(map(str, stopped))}" if stopped else ""))
    if ids or not rollouts:
        cancelled, more = cancel_jobs(where, ids)
        console.info(f"cancelled {len(cancelled)} queued jobs" + (f": {', '.join(map(str, cancelled))}" if cancelled else ""))
        problems += more
    if problems:
        raise MicrofangError("; ".join(problems))


def argparse_jobs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="the latest deploy, migration and control jobs and their results; "
                                    "`jobs rollouts` the staged rollouts; `jobs cancel [ID...]` cancels queued ones")
    p.add_argument("action", nargs="?", choices=["cancel", "rollouts"],
                   help="cancel: the queued jobs given (default: all, and every running rollout); rollouts: list them")
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="jobs to cancel")
    p.add_argument("--rollout", type=int, action="append", metavar="ID",
                   help="with cancel: stop this rollout (its boards not reached keep their version; repeat for several)")
    add_store(p)
    add_json(p)
    p.add_argument("-n", "--limit", type=int, default=20)


def do_jobs(args: argparse.Namespace) -> None:
    from microfang.ops import recent_jobs, recent_rollouts

    where = store_of(args)
    if args.action == "cancel":
        _cancel(where, args.ids or None, args.rollout)
        return
    if args.ids or args.rollout:
        raise MicrofangError("job ids and --rollout go with `jobs cancel`")
    if args.action == "rollouts":
        rollouts = recent_rollouts(where, args.limit)
        show_rows(rollouts, args.json, f"rollouts in {display(where)}: {len(rollouts)} shown",
                  ("id", "agent", "fleet", "plan", "state", "wave", "boards", "detail"), _rollout_cells)
        return
    jobs = recent_jobs(where, args.limit)
    show_rows(jobs, args.json, f"jobs in {display(where)}: {len(jobs)} shown",
              ("id", "kind", "agent", "board", "state", "progress", "rollout", "detail"), _job_cells)


def _job_cells(job: dict[str, Any]) -> list[str]:
    board = f"{job['device']} -> {job['target']}" if job["target"] else job["device"]
    progress = f"{job['progress']:,}/{job['size']:,} B" if job["size"] else "-"
    rollout = "-" if job["rollout"] is None else f"{job['rollout']} wave {job['wave'] + 1}"
    return [str(job["id"]), job["kind"], job["agent"], board, job["state"], progress, rollout, job["detail"]]


def _rollout_cells(r: dict[str, Any]) -> list[str]:
    plan = f"canary {r['canary']}, ramp {r['ramp']:g}, abort at {r['abort_at']:g}%"
    boards = ", ".join(f"{n} {state}" for state, n in sorted(r["jobs"].items()))
    return [str(r["id"]), f"{r['agent']} v{r['version']}", r["fleet"], plan, r["state"], f"{r['wave'] + 1}/{r['waves']}",
            boards, r["detail"]]


def argparse_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="install a bundle on boards: over the air through the gateway, or over USB")
    p.add_argument("bundle", type=Path, help="agent bundle (.mfa, signed here with the operator's key) or signed (.mfs)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", action="append", metavar="ID", help="a board (repeat for several)")
    where.add_argument("--fleet", metavar="NAME", help="every board of a fleet")
    where.add_argument("--port", metavar="PORT", help="a board on USB (mpremote): /dev/ttyUSB0, socket://host:port")
    add_store(p)
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the boards (default 120; a staged rollout: for each wave)")
    p.add_argument("--supersede", type=int, default=0, metavar="VERSION",
                   help="this bundle replaces installed VERSION although it is not newer (VERSION is withdrawn)")
    staged = p.add_argument_group("staged rollout (with --fleet): canary boards first, then growing waves")
    staged.add_argument("--canary", type=int, metavar="N", help="boards in the first wave")
    staged.add_argument("--ramp", type=float, metavar="X", help="each wave X times the last (default 2)")
    staged.add_argument("--abort-at", type=float, metavar="PERCENT",
                        help="stop once more than PERCENT of the boards reached failed (default 100: never)")
    add_signing_keys(p)


def _wait_jobs(db: str, job_ids: list[int], timeout: float) -> None:
    """Show the jobs' progress until they end, then each board's answer; raise if any failed."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from microfang.deploy import wait
    from microfang.gateway.jobs import JobsFailed

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[state]}"),
                  console=console.err_console, transient=True) as progress:
        bars: dict[int, Any] = {}

        def show(rows: list[dict[str, Any]]) -> None:
            for job in rows:
                if job["id"] not in bars:
                    label = f"{job['kind']} {job['agent']} -> {job['target'] or job['device']}"
                    bars[job["id"]] = progress.add_task(label, total=job["size"] or None, state=job["state"])
                progress.update(bars[job["id"]], completed=job["progress"], total=job["size"] or None,
                                state=job["state"])

        try:
            rows, failed = wait(db, job_ids, timeout, show), None
        except JobsFailed as e:
            rows, failed = e.jobs, e
    for job in rows:
        where = job["target"] or job["device"]
        if job["state"] == "done":
            console.info(f"{job['agent']} on {where}: {job['detail']}")
        elif job["state"] == "failed":
            console.error(f"{job['agent']} on {where}: refused: {job['detail']}")
        else:
            console.error(f"{job['agent']} on {where}: still {job['state']} after {timeout:.0f} s "
                          "(is the gateway running and the board online? the job stays queued)")
    if failed is not None:
        raise MicrofangError(f"{len(rows) - sum(j['state'] == 'done' for j in rows)} of {len(rows)} "
                             f"{rows[0]['kind']} jobs did not succeed")


def do_deploy(args: argparse.Namespace) -> None:
    if args.port is not None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        from microfang.usb import deploy_usb

        with Progress(TextColumn(f"copying {args.bundle.name}"), BarColumn(), DownloadColumn(),
                      console=console.err_console, transient=True) as progress:
            bar = progress.add_task("copy", total=None)
            done = deploy_usb(args.bundle, args.port, args.signing_keys,
                              lambda copied, total: progress.update(bar, completed=copied, total=total), args.supersede)
        console.info(f"{done.device}: {done.agent} version {done.version} {done.state} ({', '.join(done.figures)})")
        return
    if (args.canary, args.ramp, args.abort_at) != (None, None, None):
        _roll_out(args)
        return
    from microfang.deploy import queue_deploy

    where = store_of(args)
    _wait_jobs(where, queue_deploy(where, args.bundle, args.device, args.fleet, args.signing_keys, args.supersede),
               args.timeout)


def _roll_out(args: argparse.Namespace) -> None:
    from microfang.rollout import Plan, follow, start_rollout

    if args.fleet is None:
        raise MicrofangError("--canary, --ramp and --abort-at stage a rollout to a --fleet")
    plan = Plan(1 if args.canary is None else args.canary, 2.0 if args.ramp is None else args.ramp,
                100.0 if args.abort_at is None else args.abort_at, args.timeout)
    where = store_of(args)
    rollout, waves = start_rollout(where, args.bundle, args.fleet, plan, args.signing_keys, args.supersede)
    console.info(f"rollout {rollout}: {sum(map(len, waves))} boards in {len(waves)} waves "
                 f"({', '.join(str(len(w)) for w in waves)}); the gateway carries it out (`microfang jobs rollouts`, "
                 f"`microfang jobs cancel --rollout {rollout}`)")
    result = follow(where, rollout, lambda n, wave: console.info(f"wave {n + 1}: {len(wave)} boards ({', '.join(wave)})"))
    for job in result.rows:
        if job["state"] == "done":
            console.info(f"{job['agent']} on {job['device']}: {job['detail']}")
        else:
            console.error(f"{job['agent']} on {job['device']}: {job['state']}: {job['detail']}")
    reached, failed = len(result.rows), len(result.failed)
    if result.state != "done":
        raise MicrofangError(f"rollout {result.detail}; not deployed: {', '.join(result.untouched) or 'none'}")
    console.info(f"rollout done: {reached - failed} of {reached} boards took it")
    if failed:
        raise MicrofangError(f"{failed} of {reached} deploy jobs did not succeed")


def argparse_migrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="move a running agent, memory and memory log, to another board")
    p.add_argument("agent")
    p.add_argument("--from", dest="source", required=True, metavar="DEVICE")
    p.add_argument("--to", dest="target", required=True, metavar="DEVICE")
    add_store(p)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the boards (default 120)")
    p.add_argument("--supersede", type=int, default=0, metavar="VERSION",
                   help="this bundle replaces installed VERSION although it is not newer (VERSION is withdrawn)")
    add_signing_keys(p)


def do_migrate(args: argparse.Namespace) -> None:
    from microfang.deploy import queue_migrate

    where = store_of(args)
    _wait_jobs(where, queue_migrate(where, args.agent, args.source, args.target), args.timeout)
