"""``tron demo``: serve the Gradio page of `tron_pipelines.commands.demo_app` for some pipelines.

    tron demo                                   # the embedded tron-mnist-text and tron-mnist, on 127.0.0.1:7860
    tron demo --pipeline my-pipeline --pipeline org/tron-biggan --max_steps 50

The page itself (and gradio) is imported only when the command runs, so that ``tron --help`` stays instant.
"""

import argparse

from ..utils.options import non_negative_int, positive_int


def run_demo(args: argparse.Namespace) -> None:
    try:
        from .demo_app import run_demo_command
    except ModuleNotFoundError as error:
        if error.name != "gradio":
            raise
        raise SystemExit("tron demo: error: the demo needs gradio: pip install 'tron-pipelines[demo]'") from None
    run_demo_command(args)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text}")
    return value


def register_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Serve an interactive web demo of pipelines (Gradio; pip install 'tron-pipelines[demo]').",
        description="Serve a web page to sample from TR0N pipelines: text, image, class and interpolation tabs, "
        "progress and Stop, energies, the translator's proposals, a zip download. Offline with the embedded "
        "pipelines; the page can use only the pipelines named here.",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=None,
        metavar="NAME_OR_PATH",
        help="Pipeline folder, embedded name or Hub id; repeat for several (default: tron-mnist-text and tron-mnist).",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network).",
    )
    parser.add_argument("--port", type=port_number, default=7860, help="Port (default 7860).")
    parser.add_argument("--max_images", type=positive_int, default=16, help="Most images per request (default 16).")
    parser.add_argument(
        "--max_steps", type=non_negative_int, default=200, help="Most Langevin steps per request (default 200)."
    )
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link (off by default).")
    parser.add_argument("--device", default="cpu", help="torch device of the pipelines, e.g. cpu or cuda.")
    parser.set_defaults(handler=run_demo)
