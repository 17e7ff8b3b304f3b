"""The block device layer: byte ranges <-> cached blocks <-> the volume."""
from .device import BlockDevice, FlushError, NoRoomError

__all__ = ["BlockDevice", "FlushError", "NoRoomError"]
