"""Errors steerlab raises on bad input: each names what was wrong and how to fix it."""

from __future__ import annotations


class SteerlabError(Exception):
    """Base class for every error steerlab raises on purpose."""


class UnknownModelError(SteerlabError, ValueError):
    """A model name that is neither embedded, a local directory, nor reachable on the hub."""


class LayerError(SteerlabError, IndexError):
    """A layer index outside ``0 .. n_layers - 1``."""


class VectorMismatchError(SteerlabError, ValueError):
    """A steering vector that does not fit the model (other model, other width, other layers)."""


class InvalidVectorError(SteerlabError, ValueError):
    """A steering vector with NaN/inf values, or a file that is not a valid vector file."""


class EmptyInputError(SteerlabError, ValueError):
    """An empty prompt list (or an empty string where a prompt was expected)."""


class OptionError(SteerlabError, ValueError):
    """An option outside its allowed set (position mode, reduction, backend, ...)."""


class SiteError(SteerlabError, ValueError):
    """A hook site the model does not have (the message names the sites it has)."""


class BackendMismatchError(SteerlabError, RuntimeError):
    """A call on one backend while edits (steering) are live on another of the same model."""


class DeviceError(SteerlabError, ValueError):
    """A device that is not a device, or is not on this machine (the message lists those that
    are)."""


class ReceiptError(SteerlabError, RuntimeError):
    """An intervention that did not do what was asked: an edit that did not run in a forward
    it applies to, ran in the other phase, ran twice, or changed the activations by another
    amount than requested (:mod:`steerlab.receipts`)."""


class ReceiptWarning(UserWarning):
    """A receipt guard's finding where the caller asked to be warned (``guards="warn"``)."""
