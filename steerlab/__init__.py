"""steerlab: a Jupyter-first workbench for activation steering of language models."""

__version__ = "0.1.0"
