"""The `noctispro` command: serve, the four services, migrate, users, facilities, nodes, import."""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from noctispro import __version__


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _prepare(args: argparse.Namespace) -> None:
    from noctispro.bootstrap import prepare, setup_django

    if getattr(args, "no_prepare", False):
        setup_django()
        return
    generated = prepare()
    if generated:
        from noctispro.conf import get_settings

        path = get_settings().secrets_dir / "admin_password"
        print(f"Created user 'admin' with password: {generated}  (stored in {path})")


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_serve(args: argparse.Namespace) -> int:
    from noctispro.supervisor import serve

    _prepare(args)
    return serve()


def _run_http(app: str, port: int | None, default_port: str, **options: object) -> int:
    import uvicorn

    from noctispro.conf import get_settings

    s = get_settings()
    uvicorn.run(
        app,
        host=s.bind,
        port=port or getattr(s, default_port),
        proxy_headers=True,
        log_level="info",
        **options,  # type: ignore[arg-type]
    )
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    _prepare(args)
    return _run_http("noctispro.web.asgi:application", args.port, "web_port", lifespan="off")


def cmd_api(args: argparse.Namespace) -> int:
    _prepare(args)
    return _run_http("noctispro.api.main:app", args.port, "api_port")


def cmd_dicom(args: argparse.Namespace) -> int:
    _prepare(args)
    from noctispro.conf import get_settings
    from noctispro.dimse.server import serve_processes
    from noctispro.dimse.tls import TLSSetupError

    settings = get_settings()
    try:
        return serve_processes(settings, args.processes or settings.dicom_processes, _stop_event())
    except TLSSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_worker(args: argparse.Namespace) -> int:
    _prepare(args)
    from noctispro.jobs.worker import run

    run(concurrency=args.concurrency)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from noctispro.bootstrap import prepare

    generated = prepare(verbosity=1)
    if generated:
        from noctispro.conf import get_settings

        path = get_settings().secrets_dir / "admin_password"
        print(f"Created user 'admin' with password: {generated}  (stored in {path})")
    return 0


def _read_password(given: str | None) -> tuple[str, bool]:
    """The password given, typed twice at a terminal, or a generated one (printed once)."""
    if given:
        return given, False
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password again: "):
            raise SystemExit("passwords differ")
        return first, False
    from noctispro.accounts.services import generate_password

    return generate_password(), True


def cmd_users(args: argparse.Namespace) -> int:
    _prepare(args)
    from django.core.exceptions import ValidationError

    from noctispro.accounts.models import User
    from noctispro.accounts.services import add_user

    if args.users_command == "add":
        password, generated = _read_password(args.password)
        try:
            user = add_user(
                args.name,
                role=args.role,
                password=password,
                facility_codes=args.facility or [],
                all_facilities=args.all_facilities,
            )
        except (ValueError, ValidationError) as exc:
            messages = exc.messages if isinstance(exc, ValidationError) else [str(exc)]
            print("error: " + "; ".join(messages), file=sys.stderr)
            return 2
        print(f"Added user {user.username} ({user.role})")
        if generated:
            print(f"Password: {password}  (shown once)")
        return 0
    rows = User.objects.order_by("username").prefetch_related("facilities")
    print(f"{'USER':<20} {'ROLE':<13} {'ACTIVE':<7} FACILITIES")
    for u in rows:
        facilities = (
            "(all)" if u.sees_all_facilities else ",".join(f.code for f in u.facilities.all())
        )
        print(f"{u.username:<20} {u.role:<13} {'yes' if u.is_active else 'no':<7} {facilities}")
    return 0


def cmd_facilities(args: argparse.Namespace) -> int:
    _prepare(args)
    from django.core.exceptions import ValidationError

    from noctispro.accounts.models import Facility
    from noctispro.accounts.services import add_facility

    if args.facilities_command == "add":
        try:
            facility = add_facility(args.code, args.name, args.ae or [])
        except ValidationError as exc:
            print("error: " + "; ".join(exc.messages), file=sys.stderr)
            return 2
        print(f"Added facility {facility.code}")
        return 0
    print(f"{'CODE':<16} {'DEFAULT':<8} {'NAME':<30} AE TITLES")
    for f in Facility.objects.prefetch_related("ae_titles"):
        aes = ",".join(a.ae_title for a in f.ae_titles.all())
        print(f"{f.code:<16} {'yes' if f.is_default else '':<8} {f.name:<30} {aes}")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    _prepare(args)
    from django.core.exceptions import ValidationError

    from noctispro.accounts import nodes
    from noctispro.accounts.models import DEFAULT_OPERATIONS

    if args.nodes_command == "add":
        try:
            operations = (
                DEFAULT_OPERATIONS
                if args.allow is None
                else nodes.parse_operations(args.allow.split(","))
            )
            node = nodes.add_node(
                args.name,
                ae_title=args.aet,
                host=args.host,
                port=args.port,
                facility_code=args.facility,
                operations=operations,
                tls=args.tls,
                description=args.description,
            )
        except ValidationError as exc:
            problems = [f"{f}: {m}" if f else m for f, m in nodes.field_problems(exc)]
            print("error: " + "; ".join(problems), file=sys.stderr)
            return 2
        except (ValueError, nodes.NodeConflict) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        allowed = ",".join(node.allowed_operations) or "echo only"
        print(f"Added node {node.name} ({node.ae_title}@{node.host}:{node.port}; {allowed})")
        return 0
    if args.nodes_command == "list":
        print(
            f"{'NAME':<20} {'AE TITLE':<16} {'HOST':<24} {'PORT':>5} {'FACILITY':<12} "
            f"{'ALLOW':<20} TLS"
        )
        for n in nodes.list_nodes():
            print(
                f"{n.name:<20} {n.ae_title:<16} {n.host:<24} {n.port:>5} "
                f"{n.facility.code if n.facility else '':<12} "
                f"{','.join(n.allowed_operations) or '-':<20} {'yes' if n.tls else ''}"
            )
        return 0
    try:
        node = nodes.get_node(args.name)
    except nodes.UnknownNode as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.nodes_command == "remove":
        nodes.remove_node(node.name)
        print(f"Removed node {node.name}")
        return 0
    # pynetdicom logs each failure as an error; the result line below already says it.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    result = nodes.echo_node(node, timeout=args.timeout)
    status = "none" if result.status is None else f"0x{result.status:04X}"
    print(
        f"{'OK' if result.ok else 'FAILED'} {node.name}: {result.detail} "
        f"(status {status}, {result.milliseconds:.1f} ms)"
    )
    return 0 if result.ok else 1


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.counts: Counter[str] = Counter()
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def step(self, status: str) -> None:
        self.counts[status] += 1
        self.done += 1
        now = time.monotonic()
        if self.tty and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            width = 30
            filled = int(width * min(self.done, self.total) / max(self.total, 1))
            rate = self.done / max(now - self.started, 1e-6)
            parts = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{rate:.0f}/s  {parts}   "
            )
            sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def cmd_import(args: argparse.Namespace) -> int:
    _prepare(args)
    from noctispro.accounts.models import Facility
    from noctispro.core.bundles import FileResult, iter_paths, store_file_or_zip
    from noctispro.core.ingest import Origin

    facility = None
    if args.facility:
        facility = Facility.objects.filter(code=args.facility).first()
        if facility is None:
            print(f"error: no such facility {args.facility!r}", file=sys.stderr)
            return 2
    paths = [Path(p) for p in args.paths]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    files = list(iter_paths(paths))
    origin = Origin(channel="import", facility=facility)
    progress = Progress(len(files))
    rejected: list[FileResult] = []
    counts: Counter[str] = Counter()
    for path in files:
        try:
            fp = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            result = FileResult(str(path), "rejected", "unreadable", str(exc))
            counts[result.status] += 1
            rejected.append(result)
            progress.step(result.status)
            continue
        with fp:
            for result in store_file_or_zip(str(path), fp, origin):
                counts[result.status] += 1
                if not result.ok:
                    rejected.append(result)
            progress.step(result.status)
    progress.finish()
    elapsed = time.monotonic() - progress.started
    print(
        f"Imported {len(files)} file(s) in {elapsed:.1f} s: "
        + ", ".join(
            f"{counts.get(k, 0)} {k}"
            for k in ("stored", "duplicate", "kept-first", "overwritten", "rejected")
        )
    )
    if rejected:
        by_reason = Counter(r.reason for r in rejected)
        print("Rejected: " + ", ".join(f"{n} {reason}" for reason, n in by_reason.most_common()))
        for r in rejected[:50]:
            print(f"  {r.name}: {r.message}")
        if len(rejected) > 50:
            print(f"  ... and {len(rejected) - 50} more")
    return 1 if rejected else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noctispro", description="NoctisPro PACS")
    parser.add_argument("--version", action="version", version=f"noctispro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def service(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--no-prepare", action="store_true", help=argparse.SUPPRESS)
        return p

    service("serve", "run web, api, DICOM SCP and worker under one supervisor").set_defaults(
        func=cmd_serve
    )
    p = service("web", "run the web UI (Django)")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_web)
    p = service("api", "run the API and DICOMweb (FastAPI)")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_api)
    p = service("dicom", "run the DICOM SCP")
    p.add_argument(
        "--processes", type=int, help="SCP processes sharing the port (NOCTISPRO_DICOM_PROCESSES)"
    )
    p.set_defaults(func=cmd_dicom)
    p = service("worker", "run the job worker")
    p.add_argument("--concurrency", type=int, default=1)
    p.set_defaults(func=cmd_worker)
    sub.add_parser("migrate", help="create or update the database").set_defaults(func=cmd_migrate)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument(
        "--role", required=True, choices=["admin", "radiologist", "technologist", "referring"]
    )
    add.add_argument("--facility", action="append", metavar="CODE")
    add.add_argument("--all-facilities", action="store_true")
    add.add_argument(
        "--password", help="omit to type it (at a terminal) or to have one generated and shown"
    )
    users_sub.add_parser("list", help="list users")
    users.set_defaults(func=cmd_users)

    facilities = sub.add_parser("facilities", help="manage facilities")
    fac_sub = facilities.add_subparsers(dest="facilities_command", required=True)
    fadd = fac_sub.add_parser("add", help="add a facility")
    fadd.add_argument("code")
    fadd.add_argument("--name", required=True)
    fadd.add_argument("--ae", action="append", metavar="AET", help="a sender AE title it owns")
    fac_sub.add_parser("list", help="list facilities")
    facilities.set_defaults(func=cmd_facilities)

    nodes = sub.add_parser("nodes", help="manage remote DICOM nodes")
    nodes_sub = nodes.add_subparsers(dest="nodes_command", required=True)
    nadd = nodes_sub.add_parser("add", help="add a node")
    nadd.add_argument("name", help="unique name, used in URLs")
    nadd.add_argument("--aet", required=True, metavar="AET", help="its AE title (unique)")
    nadd.add_argument("--host", required=True, help="host name or IP address")
    nadd.add_argument("--port", required=True, type=int)
    nadd.add_argument("--facility", metavar="CODE", help="the facility it acts for")
    nadd.add_argument(
        "--allow",
        metavar="OPS",
        help="what it may ask of us: store,find,move,get or none (default: store)",
    )
    nadd.add_argument("--tls", action="store_true", help="mark it as DICOM TLS (stored only)")
    nadd.add_argument("--description", default="")
    nodes_sub.add_parser("list", help="list nodes")
    nremove = nodes_sub.add_parser("remove", help="remove a node")
    nremove.add_argument("name")
    necho = nodes_sub.add_parser("echo", help="C-ECHO a node (exit code 0 when it answers)")
    necho.add_argument("name")
    necho.add_argument("--timeout", type=float, default=5.0, help="seconds per step (5)")
    nodes.set_defaults(func=cmd_nodes)

    imp = sub.add_parser("import", help="import DICOM files, folders (recursively) and zip files")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--facility", metavar="CODE", help="file the studies under this facility")
    imp.set_defaults(func=cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    _logging()
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        print(f"error: invalid configuration: {problems}", file=sys.stderr)
        return 2
