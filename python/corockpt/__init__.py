"""corockpt: exact, asynchronous checkpoints of FSDP + expert-parallel models.

``corockpt.torch`` puts the engine under PyTorch's own API (DCP's storage writer and
reader, a loader); ``corockpt.errors`` holds the exceptions.
"""

from corockpt.errors import (AlreadyExists, Cancelled, Corrupt, Error, Internal, InvalidArgument, IoError,
                             NoSpace, NotFound, PermissionDenied, Timeout, Unavailable)

__version__ = "0.1.0"

__all__ = ["Error", "InvalidArgument", "NotFound", "AlreadyExists", "PermissionDenied", "NoSpace", "IoError",
           "Timeout", "Cancelled", "Unavailable", "Corrupt", "Internal"]
