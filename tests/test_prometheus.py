"""A mount's stats as Prometheus metrics: `bucketdisk stats --prometheus`
and the file `mount --stats-file` keeps for node_exporter's textfile
collector, read with prometheus_client's own parser and compared with
`stats --json` of the same live mount."""
import os
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bucketdisk.stats import COUNTERS
from conftest import ERROR_LINE_RE, MiB, assert_cli_error, is_mounted, wait_until, wait_until_clean

# What changes on an idle mount between two reads.
MOVING = {"uptime_seconds"}
# Monotonic since the mount started: counters for Prometheus (rate() needs them so).
COUNTED = set(COUNTERS) | {"fast_path_hits", "cache_dir_hits", "cache_dir_damaged", "cache_dir_errors",
                           "recovered_blocks", "recovered_torn_pages"}
TEXT = {"volume", "control_socket", "warning", "store_error", "disk_file", "fuse_adapter", "libfuse"}


def readme_sample() -> str:
    """The README's sample of the exposition: its ``` block of `# HELP` lines."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (block,) = re.findall(r"^```\n(# HELP bucketdisk_.*?)^```$", readme, re.M | re.S)
    return block


def parse(text: str) -> dict:
    """{stat name: (type, labels, value)} of an exposition, by the real parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("bucketdisk_"), family.name
        assert family.documentation, f"{family.name} has no HELP"
        (sample,) = family.samples
        name = sample.name.removeprefix("bucketdisk_")
        if family.type == "counter":
            assert name.endswith("_total"), sample.name
            name = name.removesuffix("_total")
        found[name] = (family.type, sample.labels, sample.value)
    return found


def busy_mount(bd, tmp_path, extra=()):
    """A mount of a fresh volume that stored and read back something, then
    went idle (no dirty block): its counters stand still."""
    volume = bd.create(size="16M", block_size="64K")
    m = bd.mount(volume, extra=extra)
    data = os.urandom(MiB)
    with open(m.file, "r+b") as f:
        f.write(data)
        os.fsync(f.fileno())
    wait_until_clean(bd, m)
    with open(m.file, "rb") as f:
        assert f.read(MiB) == data
    return volume, m


def assert_matches_json(metrics: dict, stats: dict, url: str) -> None:
    numeric = {k: v for k, v in stats.items() if isinstance(v, int) and k not in TEXT}
    assert set(numeric) <= set(metrics), f"stats missing from the metrics: {set(numeric) - set(metrics)}"
    for name, value in numeric.items():
        kind, labels, got = metrics[name]
        assert labels == {"volume": url}, (name, labels)
        assert kind == ("counter" if name in COUNTED else "gauge"), (name, kind)
        if name in MOVING:
            assert got >= value, (name, got, value)
        else:
            assert got == value, (name, got, value)
    # what the text fields say, as 0/1
    assert metrics["store_error"][2] == int("store_error" in stats)
    assert metrics["warning"][2] == int("warning" in stats)


def test_stats_prometheus_matches_json(bd, tmp_path):
    volume, m = busy_mount(bd, tmp_path)
    stats = bd.stats(m.path)
    proc = bd.ok("stats", m.path, "--prometheus")
    metrics = parse(proc.stdout)
    assert_matches_json(metrics, stats, volume.url)
    # kinds that matter for rate() and for alerts, named
    assert metrics["objects_put"][0] == "counter" and metrics["objects_put"][2] > 0
    assert metrics["bytes_put"][0] == "counter" and metrics["bytes_put"][2] > 0
    assert metrics["cache_bytes"][0] == "gauge" and metrics["dirty_blocks"] == ("gauge", {"volume": volume.url}, 0)
    assert proc.stdout.endswith("\n") and "\n\n" not in proc.stdout
    # what serves the mount, as the labels of an _info gauge
    assert metrics["info"] == ("gauge", {"volume": volume.url, "disk_file": stats["disk_file"],
                                         "fuse_adapter": stats["fuse_adapter"], "libfuse": stats["libfuse"]}, 1)
    # the README's sample says what the real output says
    sample = readme_sample()
    assert sample, "no sample in the README"
    live = {f.name: f for f in text_string_to_metric_families(proc.stdout)}
    for family in text_string_to_metric_families(sample):
        assert (live[family.name].type, live[family.name].documentation) == (family.type, family.documentation)
    bd.unmount(m)


def test_stats_file_for_node_exporter(bd, tmp_path):
    collector = tmp_path / "textfile"
    collector.mkdir()
    prom = collector / "bucketdisk-disk1.prom"
    volume, m = busy_mount(bd, tmp_path, extra=["--stats-file", prom, "--stats-every", "1s"])
    assert prom.is_file(), "the mount is live but wrote no stats file"
    first = parse(prom.read_text())
    # rewritten: uptime moves on, and the file always parses whole
    assert wait_until(lambda: parse(prom.read_text())["uptime_seconds"][2] > first["uptime_seconds"][2] + 1, 10)
    stats = bd.stats(m.path)
    assert wait_until(lambda: parse(prom.read_text())["uptime_seconds"][2] >= stats["uptime_seconds"], 5)
    assert_matches_json(parse(prom.read_text()), stats, volume.url)
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    # only the .prom file: the temp files of the rewrites were renamed over it
    assert sorted(os.listdir(collector)) == [prom.name]
    bd.unmount(m)
    assert not prom.exists(), "the stats file outlived its mount"


def test_label_escaping(bd, tmp_path):
    """A file:// volume whose path holds a quote, a backslash and an accent:
    the label says it exactly, as the parser reads it back."""
    from conftest import FilePlace

    place = FilePlace(tmp_path / 'we"ird\\dir é')
    volume = bd.create(size="4M", block_size="64K", place=place)
    m = bd.mount(volume)
    metrics = parse(bd.ok("stats", m.path, "--prometheus").stdout)
    assert metrics["cache_hits"][1] == {"volume": volume.url}
    bd.unmount(m)


def test_bad_stats_file_is_refused(bd, tmp_path):
    volume = bd.create(size="4M", block_size="64K")
    mp = tmp_path / "mp"
    mp.mkdir()
    cases = [
        (["--stats-file", tmp_path / "metrics.txt"], "must end in .prom"),
        (["--stats-file", tmp_path / "missing" / "x.prom"], "no such directory"),
        (["--stats-file", tmp_path / ".prom"], "must end in .prom"),
        (["--stats-every", "5s"], "--stats-every goes with --stats-file"),
        (["--stats-file", tmp_path / "x.prom", "--stats-every", "0s"], "not an interval"),
    ]
    for extra, said in cases:
        proc = bd.run("mount", volume.url, mp, *volume.store_args, *extra)
        line = assert_cli_error(proc)
        assert ERROR_LINE_RE.match(line) and said in line, line
        assert not is_mounted(mp)
    assert not any(p.suffix == ".prom" for p in tmp_path.iterdir())


def test_stats_prometheus_usage(bd, tmp_path):
    proc = bd.run("stats", tmp_path, "--prometheus", "--json")
    assert "not allowed with argument" in assert_cli_error(proc)
    proc = bd.run("stats", tmp_path, "--prometheus")
    assert "is not a bucketdisk mount" in assert_cli_error(proc)


def test_text_fields_become_flags():
    """A stats file while storing fails, from a rolled-back store: its text
    fields are 0/1 gauges, their words stay out of the metrics (free text
    makes poor label values), and a field this version does not know is
    left out rather than mistyped."""
    from bucketdisk.fs.metrics import parse_stats, prometheus_text

    text = ("volume: s3://b/disk\ncontrol_socket: /run/bucketdisk/1.sock\nwarning: ROLLBACK: the store showed map 7\n"
            "errors: 3\nstore_full: 1\nstore_error: no space left on device\nsome_new_text: words\n")
    out = prometheus_text(parse_stats(text))
    metrics = parse(out)
    assert metrics["store_error"] == ("gauge", {"volume": "s3://b/disk"}, 1.0)
    assert metrics["warning"][2] == 1.0 and metrics["store_full"][2] == 1.0
    assert metrics["errors"][:1] == ("counter",) and metrics["errors"][2] == 3.0
    assert "some_new_text" not in metrics and "control_socket" not in metrics
    assert "no space" not in out and "ROLLBACK" not in out and "/run/bucketdisk" not in out
