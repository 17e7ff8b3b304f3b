#!/usr/bin/env bash
# The main job, end to end, on the embedded file:// store: create a volume,
# mount it, format it ext4, loop-mount it, write a file, read it back after a
# full unmount and remount.  Installs everything first (ci/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install.sh >/dev/null
BD=.venv/bin/bucketdisk
WORK=${DEMO_DIR:-/var/tmp/bucketdisk-demo}
VOLUME=file://$WORK/volume
DISK=$WORK/disk
FILES=$WORK/files

cleanup() {
    mountpoint -q "$FILES" && umount "$FILES"
    mountpoint -q "$DISK" && $BD unmount "$DISK"
    true
}
trap cleanup EXIT

# Start afresh, but never over anything the demo did not make itself.
if [ -e "$WORK" ]; then
    others=$(find "$WORK" -mindepth 1 -maxdepth 1 ! -name volume ! -name disk ! -name files ! -name sample)
    if [ -n "$others" ] || mountpoint -q "$DISK" || mountpoint -q "$FILES"; then
        echo "demo: $WORK holds something the demo did not make (or is mounted); set DEMO_DIR" >&2
        exit 1
    fi
fi
rm -rf "$WORK" && mkdir -p "$DISK" "$FILES"
set -x
$BD create "$VOLUME" --size 1G
$BD mount "$VOLUME" "$DISK"
mkfs.ext4 -q "$DISK/file"
mount -o loop "$DISK/file" "$FILES"
head -c 50M /dev/urandom > "$WORK/sample"
cp "$WORK/sample" "$FILES/sample"
umount "$FILES"
$BD unmount "$DISK"
$BD mount "$VOLUME" "$DISK"
mount -o loop "$DISK/file" "$FILES"
cmp "$WORK/sample" "$FILES/sample"
$BD stats "$DISK"
umount "$FILES"
$BD unmount "$DISK"
$BD info "$VOLUME"
set +x
echo "demo passed: the file came back intact from $VOLUME"
