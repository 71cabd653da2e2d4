"""TR0N's interactive demo as a Hugging Face Space: the app of `tron demo`, on the pipelines embedded in the package.

Runs unchanged locally (`python examples/space/app.py`, then open http://127.0.0.1:7860) and as a Space, where
Gradio's `GRADIO_SERVER_NAME=0.0.0.0` makes it listen for the Space's proxy.
"""

from tron_pipelines.commands.demo_app import DEFAULT_PIPELINES, build_demo, launch_demo


demo = build_demo(list(DEFAULT_PIPELINES))

if __name__ == "__main__":
    launch_demo(demo)
