"""What a failed command says: one line for each kind of error, the same
from a one-shot command (main.py) and from a mount daemon reporting to the
command that started it (mount.py)."""
from bucketdisk.errors import NotFound, StoreError, UserError


def failure_line(e: BaseException) -> str:
    """The one line (without the 'bucketdisk: error: ' lead) that says why
    `e` ended the command; the internal-error form names --debug."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, NotFound):  # an object the volume names is gone: fsck tells what that takes
        return f"storage error: {e} is missing; run 'bucketdisk fsck' to see what it takes"
    if isinstance(e, StoreError):
        return f"storage error: {e}"
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    return f"internal error: {type(e).__name__}: {e} (run 'bucketdisk --debug COMMAND ...' for details)"
