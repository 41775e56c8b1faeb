"""Registration of each follow-up scan to the previous session, behind one interface.

``build_registration(config)`` once per job, then ``registration.register(fixed, moving)`` per
image pair; ``register_pair`` is the file-level entry point of the Snakemake rule. Transforms map
follow-up (fixed) world points to previous-session (moving) world points, the ITK convention.
"""

from lesionlocator.register.api import Registration, RegistrationError
from lesionlocator.register.base import (
    build_registration,
    load_transform,
    register_pair,
    save_transform,
)

__all__ = [
    "Registration",
    "RegistrationError",
    "build_registration",
    "load_transform",
    "register_pair",
    "save_transform",
]
