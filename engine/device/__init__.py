"""The block device layer: byte ranges <-> cached blocks <-> the volume."""
from .device import BlockDevice, NoRoomError
from .flushing import FlushError

__all__ = ["BlockDevice", "FlushError", "NoRoomError"]
