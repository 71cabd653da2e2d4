"""The ``tron`` command line (`tron_cli.main`), one module per command, the top layer of the package.

Nothing in the library imports this package. Every command module imports only the standard library and the
package's light modules at the top, and the heavy stacks (torch, diffusers, accelerate, gradio) inside the functions
that run the command, so that ``tron --help`` stays instant.
"""
