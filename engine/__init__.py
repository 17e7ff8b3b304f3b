"""bucketdisk: a disk that lives in an object store, with history.

Layers, top to bottom (data flows down, never back up):

    cli/            command line front end            (bucketdisk.cli)
    engine/fs       FUSE adapter: `file` and `stats`   (bucketdisk.fs)
    engine/device   block device, write-back cache     (bucketdisk.device)
    engine/volume   volume record, block map, journal  (bucketdisk.volume)
    engine/codec    zero detection, hashing, framing   (bucketdisk.codec)
    engine/store    object stores: file://, s3://      (bucketdisk.store)
"""

__version__ = "0.1.0"
