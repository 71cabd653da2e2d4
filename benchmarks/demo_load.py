"""Load test of ``tron demo``: a real server, real HTTP clients (``gradio_client``) on its text endpoint.

    python benchmarks/demo_load.py                                   # N = 1, 4, 16 clients, 2 minutes each
    python benchmarks/demo_load.py --clients 4 --duration 30 --output_dir results/demo-load

It starts ``tron demo`` (every embedded pipeline, as a user would) in a subprocess on 127.0.0.1 and measures, in
order:

1. the first requests after a fresh start (the server's warm-up is on unless ``--no_warm_up``);
2. for each N of ``--clients``: N clients sending text requests at the page's defaults back to back for
   ``--duration`` seconds, each on its own session: completed requests, busy answers (the queue was full), failures,
   p50 / p95 latency, queue wait (latency minus the sampling time the server reports in its status line) and the
   server's resident memory before and after (it must not grow with the requests served);
3. the overload: ``--overload_clients`` clients against a server whose queue holds ``--overload_queue`` requests,
   for ``--overload_duration`` seconds: how many are refused at once with the busy answer and how fast, and how soon
   Stop ends a running request of a client while the queue is full.

Prints one table and writes ``demo-load.json`` to ``--output_dir``. Every figure depends on the machine and its
load: the JSON records the load average before and after.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from gradio_client import Client
from gradio_client.utils import QueueError
from harness import Section


PROMPTS = ["a bold seven leaning right", "a thin two", "an eight leaning left", "a bold three"]
# The sampling time of a request, as the status line of the page ends: "... · 0.9 s".
SERVER_SECONDS = re.compile(r"· (\d+(?:\.\d+)?) s$")


@dataclass
class RequestRecord:
    """One request of one client."""

    client: int
    seed: int
    started: float  # seconds since the phase began
    seconds: float  # latency seen by the client
    outcome: str  # "ok", "busy" (refused: the queue was full) or "failed"
    server_seconds: float | None = None  # the sampling time the server reports
    message: str = ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(port: int, extra_args: list[str], log: Path) -> subprocess.Popen:
    """``tron demo`` on 127.0.0.1:``port`` in a subprocess, its output in ``log``."""
    command = [sys.executable, "-m", "tron_pipelines.cli", "demo", "--port", str(port), *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)


def wait_until_serving(process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait for the line the server prints once it has loaded, warmed up (its own request included) and serves;
    the server already answers during its warm-up, so answering is not the sign."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"tron demo exited with {process.returncode}:\n{log.read_text()}")
        if any(line.startswith(("* Serving", "* Running on local URL")) for line in log.read_text().splitlines()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"tron demo did not serve in {timeout:.0f} s:\n{log.read_text()}")


def resident_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def text_request(client: Client, seed: int, prompt: str, **settings) -> tuple:
    """The text endpoint's outputs for ``prompt`` at the page's defaults (``settings`` change some)."""
    return client.predict(
        pipeline_name="tron-mnist-text", prompt=prompt, seed=seed, api_name="/generate_text", **settings
    )


def timed_request(client: Client, client_index: int, seed: int, phase_start: float, **settings) -> RequestRecord:
    """One request, its latency and outcome (never raises)."""
    started = time.perf_counter()
    record = RequestRecord(client_index, seed, started - phase_start, 0.0, "ok")
    try:
        outputs = text_request(client, seed, PROMPTS[seed % len(PROMPTS)], **settings)
        match = SERVER_SECONDS.search(outputs[-1])
        record.server_seconds = float(match.group(1)) if match else None
    except QueueError as error:
        record.outcome, record.message = "busy", str(error)
    except Exception as error:  # counted and reported: a load test records failures, it does not stop at one
        record.outcome, record.message = "failed", f"{type(error).__name__}: {error}"
    record.seconds = time.perf_counter() - started
    return record


def run_clients(url: str, clients: int, duration: float, first_seed: int = 0, **settings) -> list[RequestRecord]:
    """``clients`` threads, each with its own ``gradio_client.Client`` (its own session), sending requests back to
    back until ``duration`` seconds have passed; seeds ``first_seed + 1000 * client + k``."""
    records, lock = [], threading.Lock()
    connected = [Client(url, verbose=False, download_files=False) for _ in range(clients)]
    phase_start = time.perf_counter()

    def loop(index: int) -> None:
        seed = first_seed + 1000 * index
        while time.perf_counter() - phase_start < duration:
            record = timed_request(connected[index], index, seed, phase_start, **settings)
            with lock:
                records.append(record)
            seed += 1
            if record.outcome == "busy":
                time.sleep(1.0)  # as a person would: "try again" in a moment

    threads = [threading.Thread(target=loop, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize(records: list[RequestRecord], duration: float) -> dict:
    done = [r for r in records if r.outcome == "ok"]
    busy = [r for r in records if r.outcome == "busy"]
    latencies = [r.seconds for r in done]
    waits = [r.seconds - r.server_seconds for r in done if r.server_seconds is not None]
    return {
        "requests": len(records),
        "completed": len(done),
        "busy": len(busy),
        "failed": len(records) - len(done) - len(busy),
        "failures": sorted({r.message for r in records if r.outcome == "failed"})[:5],
        "per_minute": len(done) / duration * 60,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies, default=None),
        "sampling_p50_s": percentile([r.server_seconds for r in done if r.server_seconds is not None], 0.5),
        "wait_p50_s": percentile(waits, 0.5),
        "wait_p95_s": percentile(waits, 0.95),
        "busy_answer_max_s": max((r.seconds for r in busy), default=None),
    }


def stop_under_load(url: str, steps: int, **settings) -> dict:
    """While other clients keep the queue full, one client's long request (``steps`` Langevin steps) is stopped
    with the page's Stop (``/gradio_api/run/stop``, outside the queue, on the client's session): seconds from the
    press to the answer, and the answer's status line."""
    client = Client(url, verbose=False, download_files=False)
    refused = 0
    while True:  # the queue is full most of the time: try again, as a person would
        job = client.submit(
            pipeline_name="tron-mnist-text",
            prompt=PROMPTS[0],
            num_inference_steps=steps,
            api_name="/generate_text",
            **settings,
        )
        while job.status().code.name not in ("PROCESSING", "PROGRESS") and not job.done():
            time.sleep(0.2)  # queued behind the others
        if not job.done():
            break
        if not isinstance(job.exception(), QueueError):
            return {"status": f"finished before it was stopped: {job.exception() or job.result()[-1]}"}
        refused += 1
        time.sleep(1.0)
    time.sleep(1.0)
    pressed = time.perf_counter()
    answer = httpx.post(
        f"{url}/gradio_api/run/stop", json={"data": [], "session_hash": client.session_hash}, timeout=30
    )
    stop_seconds = time.perf_counter() - pressed
    status = job.result(timeout=600)[-1]
    return {
        "refused_before_it_ran": refused,
        "stop_answered_s": stop_seconds,
        "stop_http_status": answer.status_code,
        "result_after_press_s": time.perf_counter() - pressed,
        "status": status,
    }


def first_requests(url: str, count: int) -> list[dict]:
    client = Client(url, verbose=False, download_files=False)
    started = time.perf_counter()
    records = [timed_request(client, 0, seed, started) for seed in range(count)]
    return [{"seconds": r.seconds, "server_seconds": r.server_seconds, "outcome": r.outcome} for r in records]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="Clients per phase.")
    parser.add_argument("--duration", type=float, default=120.0, help="Seconds per phase.")
    parser.add_argument("--first_requests", type=int, default=3, help="Requests timed after the fresh start.")
    parser.add_argument("--overload_clients", type=int, default=16)
    parser.add_argument("--overload_queue", type=int, default=4, help="--max_queue of the overloaded server.")
    parser.add_argument("--overload_duration", type=float, default=60.0, help="0 skips the overload phase.")
    parser.add_argument("--stop_steps", type=int, default=200, help="Langevin steps of the request Stop ends.")
    parser.add_argument("--no_warm_up", action="store_true", help="Start the servers with `tron demo --no_warm_up`.")
    parser.add_argument("--server_args", nargs=argparse.REMAINDER, default=[], help="More `tron demo` options.")
    parser.add_argument("--output_dir", default=str(Path(__file__).resolve().parent / "results"))
    return parser.parse_args(argv)


def phase_with_server(args, clients_per_phase, duration, extra_args, with_stop=False) -> dict:
    """Start a server, time its first requests, run the phases, measure its memory; the server is stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    log = Path(args.output_dir) / f"demo-load-server-{port}.log"
    process = serve(port, [*extra_args, *(["--no_warm_up"] if args.no_warm_up else []), *args.server_args], log)
    result = {"server_args": extra_args}
    try:
        wait_until_serving(process, log, timeout=900)
        result["start_s"] = time.perf_counter() - started  # loading, warming up and launching
        # The server's own figures: "Warm: tron-mnist-text 1.2 s, ...", "Warm: a request through the server 3.4 s".
        result["warm_up"] = [line for line in log.read_text().splitlines() if line.startswith("Warm:")]
        result["first_requests"] = first_requests(url, args.first_requests) if args.first_requests else []
        result["phases"] = []
        for clients in clients_per_phase:
            before = resident_mib(process.pid)
            load_before = os.getloadavg()[0]
            stop = {}
            if with_stop:
                runner = threading.Thread(target=lambda: stop.update(stop_under_load(url, args.stop_steps)))
                threading.Timer(duration / 3, runner.start).start()
            records = run_clients(url, clients, duration, first_seed=10_000 * clients)
            if with_stop:
                while not stop:
                    time.sleep(0.5)
            phase = {
                "clients": clients,
                "duration_s": duration,
                **summarize(records, duration),
                "memory_mib_start": before,
                "memory_mib_end": resident_mib(process.pid),
                "load_average": [load_before, os.getloadavg()[0]],
                **({"stop_under_load": stop} if with_stop else {}),
            }
            result["phases"].append(phase)
            print(json.dumps(phase), flush=True)
    finally:
        process.terminate()
        process.wait(30)
    return result


def table(results: dict) -> str:
    lines = [
        "| server | clients | completed | busy | failed | per min | p50 s | p95 s | wait p50 / p95 s | memory MiB start "
        "-> end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def number(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, result in results["servers"].items():
        for p in result["phases"]:
            lines.append(
                f"| {name} | {p['clients']} | {p['completed']} | {p['busy']} | {p['failed']} | {p['per_minute']:.0f} | "
                f"{number(p['p50_s'])} | {number(p['p95_s'])} | {number(p['wait_p50_s'])} / "
                f"{number(p['wait_p95_s'])} | {p['memory_mib_start']:.0f} -> {p['memory_mib_end']:.0f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {"load_average_at_start": os.getloadavg(), "cpu_count": os.cpu_count(), "servers": {}}
    results["servers"]["default"] = phase_with_server(args, args.clients, args.duration, [])
    if args.overload_duration > 0:
        args.first_requests = 0
        results["servers"][f"--max_queue {args.overload_queue}"] = phase_with_server(
            args,
            [args.overload_clients],
            args.overload_duration,
            ["--max_queue", str(args.overload_queue)],
            with_stop=True,
        )
    results["load_average_at_end"] = os.getloadavg()
    (output_dir / "demo-load.json").write_text(json.dumps(results, indent=2))
    default = results["servers"]["default"]
    print(f"\nstart (loading, warm-up, launch): {default['start_s']:.1f} s; {'; '.join(default['warm_up'])}")
    print(f"first requests after a fresh start: {default['first_requests']}")
    print(table(results))
    return results


def run_section(args, sizes, report) -> None:
    results = main([*sizes["demo_load_argv"], "--output_dir", str(report.output_dir)])
    report.emit("tron demo under load (text endpoint, page defaults, 127.0.0.1)", table(results))


SECTION = Section(
    names=("demo-load",),
    summary="A `tron demo` server under 1, 4 and 16 HTTP clients, 2 minutes each, then overloaded (1 and 4 clients "
    "for 30 s with --quick); `demo_load.py` takes more options.",
    run=run_section,
    quick={"demo_load_argv": ["--clients", "1", "4", "--duration", "30", "--overload_duration", "30"]},
    full={"demo_load_argv": []},
)


if __name__ == "__main__":
    main()
